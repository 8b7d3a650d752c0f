"""edge.images, the one decoder: every format's size read from its header, header bombs refused before
anything is decoded, images too small for a face refused, and every failure an ImageError naming the
file. Then the commands that read photos: `facelock embed` keeps going past a bad image, `facelock
enroll` names it."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from support.hostile import CLAIMING, FORMATS, MAX_SIDE, encoded, png_claiming

from edge.errors import FacelockError, ImageError
from edge.images import MAX_FILE_BYTES, MAX_PIXELS, MIN_SIDE, decode_image_rgb, image_size, read_image_rgb


def _image(h=37, w=53) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", FORMATS)
def test_every_format_size_from_the_header_and_decoded_as_rgb(ext):
    image = _image()
    data = encoded(ext, image)
    assert image_size(data) == (53, 37)
    rgb = decode_image_rgb(data, f"x{ext}")
    assert rgb.shape == (37, 53, 3) and rgb.dtype == np.uint8
    if ext in (".png", ".bmp", ".tif", ".ppm"):  # lossless: the same pixels, in RGB order
        np.testing.assert_array_equal(rgb, image)


@pytest.mark.parametrize("fmt", sorted(CLAIMING))
def test_header_claims_are_read_for_every_format(fmt):
    assert image_size(CLAIMING[fmt](1234, 567)) == (1234, 567)


def test_the_62_byte_png_claiming_40000_by_40000_is_refused_before_decoding(tmp_path):
    """Measured on the old decoder: cv2.error (OpenCV's own pixel limit), exit 1 on every restart."""
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(40000, 40000))
    assert path.stat().st_size < 80
    with pytest.raises(ImageError, match=r"bomb\.png: PNG claims 40000x40000 pixels, at most 40 MP"):
        read_image_rgb(path)


@pytest.mark.parametrize("fmt", sorted(CLAIMING))
def test_header_bombs_of_every_format_are_refused(fmt):
    side = min(MAX_SIDE[fmt], 60000)
    with pytest.raises(ImageError, match=rf"claims {side}x{side} pixels"):
        decode_image_rgb(CLAIMING[fmt](side, side), f"bomb-{fmt}")


def test_a_bomb_under_opencvs_own_limit_is_refused_too():
    """20000 x 20000 is under OpenCV's 2**30-pixel limit: it would try to allocate 1.2 GB on the board."""
    assert 20000 * 20000 > MAX_PIXELS
    with pytest.raises(ImageError, match="claims 20000x20000"):
        decode_image_rgb(png_claiming(20000, 20000), "big.png")


@pytest.mark.parametrize("h, w", [(1, 1), (MIN_SIDE - 1, 200), (200, 2)])
def test_images_too_small_for_a_face(tmp_path, h, w):
    path = tmp_path / "tiny.png"
    path.write_bytes(encoded(".png", np.zeros((h, w, 3), np.uint8)))
    with pytest.raises(ImageError, match=rf"tiny\.png: {w}x{h} pixels, too small to hold a face"):
        read_image_rgb(path)
    assert read_image_rgb(_write(tmp_path / "ok.png", encoded(".png", np.zeros((MIN_SIDE, MIN_SIDE, 3),
                                                                                np.uint8)))).shape[:2] == (16, 16)


def _write(path, data):
    path.write_bytes(data)
    return path


def test_not_files_and_not_images(tmp_path):
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageError, match=r"dir\.png: a folder"):
        read_image_rgb(tmp_path / "dir.png")
    with pytest.raises(ImageError, match=r"missing\.jpg: cannot read"):
        read_image_rgb(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match=r"empty\.png: empty file"):
        read_image_rgb(_write(tmp_path / "empty.png", b""))
    with pytest.raises(ImageError, match=r"random\.jpg: not a decodable image \(its format is none of PNG"):
        read_image_rgb(_write(tmp_path / "random.jpg", os.urandom(500)))
    hdr = tmp_path / "x.hdr"  # OpenCV decodes Radiance HDR, but its size is not read here: refused
    hdr.write_bytes(encoded(".hdr", _image()))
    with pytest.raises(ImageError, match="its format is none of"):
        read_image_rgb(hdr)


def test_a_fifo_is_refused_rather_than_read_forever(tmp_path):
    fifo = tmp_path / "frame.png"
    os.mkfifo(fifo)
    result: list[BaseException] = []
    reader = threading.Thread(target=lambda: _capture(result, read_image_rgb, fifo), daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():  # unblock the reader before failing
        with open(fifo, "wb"):
            pass
        pytest.fail("reading a FIFO blocked")
    assert isinstance(result[0], ImageError) and "not a regular file" in str(result[0])


def _capture(out, fn, *args):
    try:
        fn(*args)
    except BaseException as exc:  # noqa: BLE001 -- the test looks at it
        out.append(exc)


def test_a_file_over_the_size_cap_is_not_read(tmp_path):
    path = tmp_path / "huge.png"
    with open(path, "wb") as fh:  # sparse: costs no disk
        fh.write(encoded(".png", _image()))
        fh.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(ImageError, match=rf"huge\.png: {MAX_FILE_BYTES + 1} bytes, at most"):
        read_image_rgb(path)


def test_truncated_corrupt_and_junk(tmp_path):
    data = encoded(".png", _image())
    with pytest.raises(ImageError, match=r"cut\.png: not a decodable image \(corrupt or truncated PNG\)"):
        read_image_rgb(_write(tmp_path / "cut.png", data[: len(data) // 2]))
    with pytest.raises(ImageError, match="PNG header without a readable size"):
        decode_image_rgb(data[:20], "head.png")
    assert read_image_rgb(_write(tmp_path / "junk.png", data + b"junk" * 100)).shape == (37, 53, 3)
    jpeg = encoded(".jpg", _image())
    with pytest.raises(ImageError, match="JPEG"):
        decode_image_rgb(jpeg[:200], "cut.jpg")


# -- the commands that read photos ------------------------------------------------------------------------


class _Embedder:
    name = "fake"

    def embed(self, chips):
        return np.ones((len(chips), 8), np.float32)


@pytest.fixture
def photos(tmp_path, fixtures_dir):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "good.png").write_bytes((fixtures_dir / "astronaut.png").read_bytes())
    (folder / "bomb.png").write_bytes(png_claiming(40000, 40000))
    (folder / "one-pixel.png").write_bytes(encoded(".png", np.zeros((1, 1, 3), np.uint8)))
    (folder / "random.jpg").write_bytes(os.urandom(300))
    (folder / "folder.jpg").mkdir()
    return folder


def test_embed_writes_an_error_line_for_each_bad_image_and_goes_on(photos, detector_path):
    """The old `embed --json` died on the bomb (cv2.error) and on the 1x1 PNG (the detector's ImageError)."""
    from edge.vision.align import FaceAligner
    from edge.vision.detect import BlazeFaceDetector
    from facelock.commands.embed import ImageEmbedder

    embedder = ImageEmbedder(BlazeFaceDetector(detector_path), FaceAligner(), _Embedder())
    names = ["bomb.png", "one-pixel.png", "random.jpg", "folder.jpg", "good.png"]
    results = [embedder.embed_file(photos / n, n) for n in names]
    assert [r.file for r in results] == names
    errors = {r.file: r.error for r in results}
    assert "claims 40000x40000" in errors["bomb.png"] and "too small to hold a face" in errors["one-pixel.png"]
    assert "not a decodable image" in errors["random.jpg"] and "a folder" in errors["folder.jpg"]
    assert errors["good.png"] is None and results[-1].embedding is not None
    assert all(r.embedding is None for r in results[:-1])
    # A terminal's line names the file once (the error already does), then says what is wrong.
    for r in results[:-1]:
        line = r.to_text()
        assert line.count(r.file) == 1 and line.startswith(str(photos / r.file) + ": ") and line == r.error
    assert results[-1].to_text().startswith("good.png: ") and "-d [" in results[-1].to_text()


def test_enroll_names_every_unusable_photo(photos, detector_path):
    from edge.vision.align import FaceAligner
    from edge.vision.detect import BlazeFaceDetector
    from edge.vision.pipeline import FacePipeline
    from edge.vision.quality import QualityGate
    from facelock.commands.people import _embed_photos

    pipeline = FacePipeline(BlazeFaceDetector(detector_path), FaceAligner(), _Embedder(), QualityGate())
    bad = [str(photos / n) for n in ("bomb.png", "one-pixel.png", "random.jpg")]
    with pytest.raises(FacelockError, match="3 of 4 photos unusable, nothing enrolled") as err:
        _embed_photos(pipeline, [*bad, str(photos / "good.png")])
    assert all(b in str(err.value) for b in bad) and "claims 40000x40000" in str(err.value)

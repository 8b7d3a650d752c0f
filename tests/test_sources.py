"""Frame sources with real files: folder replay (corrupt images skipped), OpenCV video, picamera2 formats."""

import itertools
import logging
import time

import cv2
import numpy as np
import pytest

from edge.device.sources import FolderSource, OpenCVSource, SourceOptions, open_source, picamera_to_rgb
from edge.errors import SourceError

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def write_rgb(path, rgb, size=(48, 64)):
    img = np.zeros((*size, 3), np.uint8)
    img[:] = rgb
    assert cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


@pytest.fixture
def folder(tmp_path):
    write_rgb(tmp_path / "01.png", RED)
    (tmp_path / "02.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 10)  # corrupt
    write_rgb(tmp_path / "03.png", GREEN)
    (tmp_path / "04.png").write_bytes(b"")  # empty
    write_rgb(tmp_path / "05.jpg", BLUE)
    (tmp_path / "notes.txt").write_text("not an image, not even tried")
    return tmp_path


def test_folder_replay_skips_corrupt_images(folder, caplog):
    caplog.set_level(logging.WARNING, logger="edge.device.sources")
    with open_source(SourceOptions(uri=str(folder), fps=0)) as src:
        assert isinstance(src, FolderSource)
        frames = list(src.frames())
    assert [f.label for f in frames] == ["01.png", "03.png", "05.jpg"]
    assert [f.index for f in frames] == [0, 1, 2]
    for f, rgb in zip(frames, (RED, GREEN, BLUE)):
        assert f.image.dtype == np.uint8 and f.image.shape == (48, 64, 3)
        np.testing.assert_allclose(f.image.reshape(-1, 3).mean(0), rgb, atol=3)  # RGB order, not BGR
    assert all(b.timestamp >= a.timestamp for a, b in itertools.pairwise(frames))
    assert "02.jpg: skipped" in caplog.text and "04.png: skipped" in caplog.text
    assert sorted(p.name for p in src.skipped) == ["02.jpg", "04.png"]


def test_folder_loop_and_pacing(folder):
    src = open_source(SourceOptions(kind="folder", uri=str(folder), fps=50, loop=True))
    start = time.monotonic()
    frames = []
    for f in src.frames():
        frames.append(f)
        if len(frames) == 7:
            break
    elapsed = time.monotonic() - start
    assert [f.label for f in frames] == ["01.png", "03.png", "05.jpg"] * 2 + ["01.png"]
    assert elapsed >= 6 / 50 - 0.01  # 7 frames at 50 fps: at least 6 periods
    gaps = np.diff([f.timestamp for f in frames])
    assert gaps.min() >= 1 / 50 - 0.005


def test_a_late_wake_up_never_squeezes_two_frames_closer_than_the_rate(folder, monkeypatch):
    """A loaded board oversleeps: the pacer used to aim each frame at the time the previous one was due,
    so the frame after a late one came early (7 ms apart at 50 fps here). Every sleep here is 15 ms late."""
    from edge.device import sources

    real_sleep = time.sleep
    monkeypatch.setattr(sources.time, "sleep", lambda s: real_sleep(s + 0.015))
    src = open_source(SourceOptions(kind="folder", uri=str(folder), fps=50, loop=True))
    frames = list(itertools.islice(src.frames(), 6))
    gaps = np.diff([f.timestamp for f in frames])
    assert gaps.min() >= 1 / 50, gaps


def test_folder_errors(tmp_path):
    with pytest.raises(SourceError, match="no images"):
        open_source(SourceOptions(kind="folder", uri=str(tmp_path)))
    (tmp_path / "a.png").write_bytes(b"junk")
    src = open_source(SourceOptions(kind="folder", uri=str(tmp_path), loop=True))
    with pytest.raises(SourceError, match="none of its 1 images could be decoded"):
        next(src.frames())  # looping over only bad images must not spin forever
    with pytest.raises(SourceError, match="nope: not a folder"):
        open_source(SourceOptions(kind="folder", uri=str(tmp_path / "nope")))


def test_folder_skips_header_bombs_and_tiny_images_with_one_line_each(tmp_path, caplog):
    """A 62-byte PNG claiming 40000 x 40000 pixels used to raise cv2.error out of the source (the service
    exited, and again on every restart); a 1x1 PNG reached the detector. Both are skipped, logged once."""
    from support.hostile import jpeg_claiming, png_claiming

    write_rgb(tmp_path / "01.png", RED)
    (tmp_path / "02.png").write_bytes(png_claiming(40000, 40000))
    (tmp_path / "03.png").write_bytes(cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes())
    (tmp_path / "04.jpg").write_bytes(jpeg_claiming(65535, 65535))
    (tmp_path / "05.jpg").mkdir()  # a folder named like an image is not listed
    write_rgb(tmp_path / "06.png", GREEN)
    caplog.set_level(logging.DEBUG, logger="edge.device.sources")
    src = open_source(SourceOptions(uri=str(tmp_path), fps=0, loop=True))
    frames = list(itertools.islice(src.frames(), 6))  # three passes over the two good images
    assert [f.label for f in frames] == ["01.png", "06.png"] * 3
    assert [p.name for p in src.skipped] == ["02.png", "03.png", "04.jpg"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3, warnings  # one line per bad file, not one per pass
    assert "02.png: skipped, PNG claims 40000x40000 pixels" in warnings[0]
    assert "03.png: skipped, 1x1 pixels, too small to hold a face" in warnings[1]
    assert "04.jpg: skipped, JPEG claims 65535x65535" in warnings[2]


def test_opencv_reads_a_video_file(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    for i in range(8):
        rgb = RED if i % 2 == 0 else BLUE
        writer.write(np.full((48, 64, 3), rgb[::-1], np.uint8))  # the writer takes BGR
    writer.release()
    with open_source(SourceOptions(uri=str(path), fps=0)) as src:
        assert isinstance(src, OpenCVSource)
        frames = list(src.frames())
    assert len(frames) == 8
    for i, f in enumerate(frames):
        assert f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8
        mean = f.image.reshape(-1, 3).mean(0)
        if i % 2 == 0:
            assert mean[0] > 200 and mean[2] < 50  # red stays red: BGR was converted to RGB
        else:
            assert mean[2] > 200 and mean[0] < 50
    # loop: more frames than the file holds
    src = open_source(SourceOptions(uri=str(path), fps=0, loop=True))
    it = src.frames()
    assert len([next(it) for _ in range(20)]) == 20
    src.close()


def test_opencv_errors_name_the_target(tmp_path):
    with pytest.raises(SourceError, match="missing.mp4: no such file"):
        open_source(SourceOptions(uri=str(tmp_path / "missing.mp4")))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 2048)
    with pytest.raises(SourceError, match="bad.mp4"):
        src = open_source(SourceOptions(uri=str(bad)))
        next(src.frames())
    with pytest.raises(SourceError, match="source kind 'webcam'"):
        open_source(SourceOptions(kind="webcam"))


def test_picamera_formats():
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
    bgr = rgb[..., ::-1]
    alpha = np.full((2, 3, 1), 255, np.uint8)
    np.testing.assert_array_equal(picamera_to_rgb(bgr, "RGB888"), rgb)  # "RGB888" is B, G, R in memory
    np.testing.assert_array_equal(picamera_to_rgb(rgb, "BGR888"), rgb)
    np.testing.assert_array_equal(picamera_to_rgb(np.concatenate([rgb, alpha], 2), "XBGR8888"), rgb)
    np.testing.assert_array_equal(picamera_to_rgb(np.concatenate([bgr, alpha], 2), "XRGB8888"), rgb)
    assert picamera_to_rgb(bgr, "RGB888").flags.c_contiguous
    with pytest.raises(SourceError, match=r"expected \(H, W, 4\)"):
        picamera_to_rgb(rgb, "XBGR8888")
    with pytest.raises(SourceError, match="YUV420"):
        picamera_to_rgb(rgb, "YUV420")


def test_picamera_missing_says_how_to_install():
    try:
        import picamera2  # noqa: F401
        pytest.skip("picamera2 is installed here")
    except ImportError:
        pass
    with pytest.raises(SourceError, match="picamera2 camera 0.*apt.*system-site-packages"):
        open_source(SourceOptions(uri="picamera2"))

"""BlazeFace: anchors and decoding against the model's layout, and the real model on the fixture portraits."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import ImageError, ModelError
from edge.types import Keypoint
from edge.vision.detect import (
    NUM_ANCHORS,
    BlazeFaceDetector,
    DetectorOptions,
    decode,
    letterbox,
    ssd_anchors,
    weighted_nms,
)

# Where the faces are in the fixtures; dlib's HOG detector, an independent reference, puts them at
# (175, 76)-(265, 166) and (180, 139)-(366, 325).
ASTRONAUT_FACE = (180, 80, 270, 175)  # x0, y0, x1, y1
HOPPER_FACE = (170, 145, 360, 340)


@pytest.fixture(scope="module")
def detector(detector_path) -> BlazeFaceDetector:
    return BlazeFaceDetector(detector_path, DetectorOptions(num_threads=1))


def inside(point, box, margin=0.0) -> bool:
    x, y = point
    return box[0] - margin <= x <= box[2] + margin and box[1] - margin <= y <= box[3] + margin


def test_anchor_layout_matches_the_model():
    a = ssd_anchors()
    assert a.shape == (NUM_ANCHORS, 2)
    # Stride 8: a 16x16 grid, two anchors per cell; then the merged stride-16 layers: 8x8, six per cell.
    assert np.allclose(a[0], [0.5 / 16, 0.5 / 16]) and np.allclose(a[1], a[0])
    assert np.allclose(a[2], [1.5 / 16, 0.5 / 16])
    assert np.allclose(a[511], [15.5 / 16, 15.5 / 16])
    assert np.allclose(a[512:518], [0.5 / 8, 0.5 / 8])
    assert np.allclose(a[518], [1.5 / 8, 0.5 / 8])
    assert np.allclose(a[-1], [7.5 / 8, 7.5 / 8])
    assert (a > 0).all() and (a < 1).all()


def test_decode_offsets_are_in_input_pixels_and_scores_are_clipped_sigmoids():
    anchors = ssd_anchors()
    raw = np.zeros((1, NUM_ANCHORS, 16), np.float32)
    raw[0, 0, :4] = [12.8, -6.4, 32, 16]  # +0.1, -0.05 of the input; 0.25 x 0.125 box
    raw[0, 0, 4:6] = [64, 0]  # first keypoint half the input to the right
    scores = np.full((1, NUM_ANCHORS, 1), -1e4, np.float32)
    scores[0, 0, 0] = 1e4
    boxes, kps, s = decode(raw, scores, anchors)
    cx, cy = anchors[0] + [0.1, -0.05]
    assert np.allclose(boxes[0], [cx - 0.125, cy - 0.0625, cx + 0.125, cy + 0.0625])
    assert np.allclose(kps[0, 0], anchors[0] + [0.5, 0])
    assert s[0] == pytest.approx(1.0) and np.all(np.isfinite(s)) and s[1] == pytest.approx(0.0)


def test_weighted_nms_blends_overlaps_and_keeps_separate_faces():
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.12, 0.1, 0.32, 0.3], [0.6, 0.6, 0.8, 0.8]])
    kps = np.zeros((3, 6, 2))
    kps[:, :, 0] = boxes[:, :1]
    scores = np.array([0.9, 0.6, 0.7])
    out = weighted_nms(boxes, kps, scores, iou_threshold=0.3, max_out=10)
    assert len(out) == 2
    (b0, k0, s0), (b1, _, s1) = out
    assert s0 == 0.9 and s1 == 0.7, "clusters keep their best score, best first"
    expected_x0 = (0.1 * 0.9 + 0.12 * 0.6) / 1.5
    assert b0[0] == pytest.approx(expected_x0) and k0[0, 0] == pytest.approx(expected_x0)
    assert np.allclose(b1, boxes[2])
    assert len(weighted_nms(boxes, kps, scores, 0.3, max_out=1)) == 1


def test_letterbox_keeps_aspect_and_maps_back():
    frame = np.zeros((100, 300, 3), np.uint8)
    frame[40:60, 140:160] = 255
    tensor, lb = letterbox(frame)
    assert tensor.shape == (128, 128, 3)
    assert lb.pad_x == 0 and lb.pad_y == (128 - 43) // 2
    assert tensor[: lb.pad_y].max() == 0 and tensor[lb.pad_y + 43:].max() == 0, "padding is black"
    # The white square's centre, found in the tensor, maps back to its centre in the frame.
    ys, xs = np.nonzero(tensor[..., 0] > 128)
    centre = lb.to_frame(np.array([(xs.mean() + 0.5) / 128, (ys.mean() + 0.5) / 128]))
    assert np.allclose(centre, [149.5, 49.5], atol=1.5)


def test_finds_the_astronaut_with_keypoints_in_place(detector, portraits):
    faces = detector.detect(portraits[0])
    assert len(faces) == 1
    face = faces[0]
    assert 0.8 <= face.score <= 1.0
    assert inside(face.center, ASTRONAUT_FACE)
    assert 70 <= face.width <= 120
    k = face.keypoints
    assert k.shape == (6, 2) and k.dtype == np.float32
    # Unmirrored photo: the subject's right eye is on the image's left.
    assert k[Keypoint.RIGHT_EYE, 0] < k[Keypoint.NOSE_TIP, 0] < k[Keypoint.LEFT_EYE, 0]
    assert k[Keypoint.RIGHT_EAR_TRAGION, 0] < k[Keypoint.RIGHT_EYE, 0]
    assert k[Keypoint.LEFT_EAR_TRAGION, 0] > k[Keypoint.LEFT_EYE, 0]
    eyes_y = k[[Keypoint.RIGHT_EYE, Keypoint.LEFT_EYE], 1].mean()
    assert eyes_y < k[Keypoint.NOSE_TIP, 1] < k[Keypoint.MOUTH_CENTER, 1]
    for p in k[:4]:
        assert inside(p, face.box)


def test_finds_grace_hopper(detector, portraits):
    faces = detector.detect(portraits[1])
    assert len(faces) == 1
    assert inside(faces[0].center, HOPPER_FACE)
    assert faces[0].score > 0.8


def test_letterboxed_frames_map_back_exactly(detector, portraits):
    # A square frame and its wide and tall crops shrink by the same factor (128/640), so the model sees
    # the same pixels up to the padding; any error in the letterbox maths shows up as a shift.
    square = np.zeros((640, 640, 3), np.uint8)
    square[64:576, 64:576] = portraits[0]
    (ref,) = detector.detect(square)
    for frame, offset in ((square[64:576], (0, 64)), (square[:, 64:576], (64, 0))):
        faces = detector.detect(np.ascontiguousarray(frame))
        assert len(faces) == 1
        moved = faces[0].keypoints + np.array(offset, np.float32)
        assert np.abs(moved - ref.keypoints).max() < 2.0
        assert np.abs(np.array(faces[0].box) + np.array(offset * 2) - np.array(ref.box)).max() < 2.0


def test_mirror_image_mirrors_keypoints(detector, portraits):
    image = portraits[0]
    w = image.shape[1]
    base = detector.detect(image)[0].keypoints
    mirrored = detector.detect(np.ascontiguousarray(image[:, ::-1]))[0].keypoints
    # The model cannot know the photo is mirrored: the eye on the image's left is still "right eye".
    assert mirrored[Keypoint.RIGHT_EYE, 0] < mirrored[Keypoint.LEFT_EYE, 0]
    # The network is not exactly mirror-symmetric: a few pixels on a ~95 px face.
    assert abs((w - 1 - mirrored[Keypoint.RIGHT_EYE, 0]) - base[Keypoint.LEFT_EYE, 0]) < 6
    assert abs(mirrored[Keypoint.RIGHT_EYE, 1] - base[Keypoint.LEFT_EYE, 1]) < 6


def test_two_faces_sorted_by_score_and_capped(detector, portraits):
    import cv2

    # Crops of both portraits with faces of similar size side by side (the short-range model wants faces
    # larger than about a tenth of the frame).
    a = portraits[0][0:256, 97:353]
    b = cv2.resize(portraits[1][42:442, 65:465], (256, 256), interpolation=cv2.INTER_AREA)
    both = np.concatenate([a, b], axis=1)
    faces = detector.detect(both)
    assert len(faces) == 2
    assert faces[0].score >= faces[1].score
    assert sorted(f.center[0] < 256 for f in faces) == [False, True], "one face in each half"
    capped = BlazeFaceDetector(detector.model.path, DetectorOptions(max_faces=1, num_threads=1))
    (best,) = capped.detect(both)
    assert best.score == faces[0].score


def test_no_face_in_blank_or_noise(detector):
    assert detector.detect(np.zeros((240, 320, 3), np.uint8)) == []
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    assert detector.detect(noise) == []


def test_rejects_frames_that_are_not_rgb_uint8(detector):
    with pytest.raises(ImageError, match="uint8 RGB"):
        detector.detect(np.zeros((100, 100), np.uint8))
    with pytest.raises(ImageError, match="uint8 RGB"):
        detector.detect(np.zeros((100, 100, 3), np.float32))


def test_truncated_or_foreign_model_is_a_model_error(detector_path, tmp_path):
    bad = tmp_path / "half.tflite"
    bad.write_bytes(detector_path.read_bytes()[:100_000])
    with pytest.raises(ModelError) as err:
        BlazeFaceDetector(bad)
    assert str(bad) in str(err.value)
    other = tmp_path / "photo.tflite"
    other.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 100)
    with pytest.raises(ModelError, match="not a TFLite model"):
        BlazeFaceDetector(other)


def test_pixels_quantize_the_same_on_the_fast_path_as_by_the_formula():
    from edge.vision.interpreter import quantize_input

    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    pixel_model = {"dtype": np.int8, "quantization": (1.0, -128)}  # the facelock embedders' input
    other = {"dtype": np.int8, "quantization": (0.5, -3)}
    fast = quantize_input(pixel_model, pixels)
    assert fast.dtype == np.int8 and fast.shape == pixels.shape
    assert np.array_equal(fast, quantize_input(pixel_model, pixels.astype(np.float32)))
    assert np.array_equal(fast.astype(int), pixels.astype(int) - 128)
    assert np.array_equal(quantize_input(other, pixels), np.clip(np.round(pixels / 0.5 - 3), -128, 127))


def test_interpreter_wrapper_runs_and_checks_inputs(detector_path):
    from edge.vision.interpreter import load_interpreter

    model = load_interpreter(detector_path, num_threads=1)
    assert model.backend in ("ai_edge_litert", "tflite_runtime", "tensorflow") and model.delegate is None
    boxes, scores = sorted(model.run([np.zeros((1, 128, 128, 3), np.float32)]), key=lambda a: -a.shape[-1])
    assert boxes.shape == (1, NUM_ANCHORS, 16) and scores.shape == (1, NUM_ANCHORS, 1)
    with pytest.raises(ValueError, match="expects"):
        model.run([np.zeros((1, 64, 64, 3), np.float32)])


def test_missing_edgetpu_falls_back_or_refuses(detector_path, caplog, monkeypatch):
    import ctypes

    from edge.vision import interpreter

    def no_library(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_library)
    with caplog.at_level("WARNING", logger="edge.vision.interpreter"):
        model = interpreter.load_interpreter(detector_path, edgetpu=True)
    assert model.delegate is None and "running on the CPU" in caplog.text
    with pytest.raises(ModelError, match="libedgetpu"):
        interpreter.load_interpreter(detector_path, edgetpu=True, require_delegate=True)


def test_no_runtime_at_all_is_a_clear_model_error(detector_path, monkeypatch):
    import importlib

    from edge.vision import interpreter

    def no_module(name, *args, **kwargs):
        raise ImportError(name)

    monkeypatch.setattr(importlib, "import_module", no_module)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModelError, match="no TFLite runtime installed"):
        interpreter.load_interpreter(detector_path)


def test_face_cut_by_the_frame_edge_keeps_its_real_box(detector, portraits):
    # Crop through the face (it spans about x = 178..272): the box must reach past the frame's left edge
    # so that the quality gate can tell a cut face from a whole one.
    (face,) = detector.detect(np.ascontiguousarray(portraits[0][:, 195:]))
    assert face.box[0] < -5
    assert face.width > 70

"""The Keras port must be the same function as dlib's own ResNet (dlib-bin), on real aligned face chips."""

from __future__ import annotations

import numpy as np
import pytest

dlib = pytest.importorskip("dlib", reason="dlib-bin (the [dev] extra) is the reference implementation")

from convert.dlib_port import build_keras_model, read_dlib_resnet
from edge.errors import ModelError

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def dlib_paths(models_dir):
    return (
        models_dir / "dlib_face_recognition_resnet_model_v1.dat",
        models_dir / "shape_predictor_5_face_landmarks.dat",
    )


@pytest.fixture(scope="module")
def keras_port(dlib_paths):
    return build_keras_model(read_dlib_resnet(dlib_paths[0]))


def dlib_chips(image: np.ndarray, shape_predictor, count: int) -> np.ndarray:
    """dlib's own alignment (HOG + 5 landmarks + get_face_chip), then dlib's jitter for more real chips."""
    detector = dlib.get_frontal_face_detector()
    boxes = detector(image, 1)
    assert len(boxes) >= 1, "dlib found no face in a fixture portrait"
    chip = dlib.get_face_chip(image, shape_predictor(image, boxes[0]), size=150, padding=0.25)
    jittered = dlib.jitter_image(chip, num_jitters=count - 1)
    return np.stack([chip, *jittered]).astype(np.uint8)


def max_abs_difference(model, reference, chips: np.ndarray) -> float:
    ours = model(chips.astype(np.float32), training=False).numpy()
    theirs = np.array([np.array(reference.compute_face_descriptor(c)) for c in chips])
    assert theirs.shape == ours.shape == (len(chips), 128)
    return float(np.abs(ours - theirs).max())


def test_weights_are_read_completely(dlib_paths):
    weights = read_dlib_resnet(dlib_paths[0])
    assert weights.parameter_count == 5_614_592
    np.testing.assert_allclose(weights.input_means, [122.782, 117.001, 104.298], atol=1e-4)


def test_port_matches_dlib_on_fixture_chips(keras_port, dlib_paths, portraits):
    reference = dlib.face_recognition_model_v1(str(dlib_paths[0]))
    predictor = dlib.shape_predictor(str(dlib_paths[1]))
    chips = np.concatenate([dlib_chips(img, predictor, 12) for img in portraits])
    assert len(chips) >= 20
    assert max_abs_difference(keras_port, reference, chips) <= TOLERANCE


@pytest.mark.lfw
def test_port_matches_dlib_on_lfw_chips(keras_port, dlib_paths, lfw_dir):
    import cv2

    reference = dlib.face_recognition_model_v1(str(dlib_paths[0]))
    predictor = dlib.shape_predictor(str(dlib_paths[1]))
    detector = dlib.get_frontal_face_detector()
    people = sorted(p for p in lfw_dir.iterdir() if p.is_dir())[:200:5]
    chips = []
    for person in people:
        image = cv2.cvtColor(cv2.imread(str(next(person.glob("*.jpg")))), cv2.COLOR_BGR2RGB)
        boxes = detector(image, 1)
        if boxes:
            chips.append(dlib.get_face_chip(image, predictor(image, boxes[0]), size=150, padding=0.25))
    assert len(chips) >= 20
    assert max_abs_difference(keras_port, reference, np.stack(chips)) <= TOLERANCE


def test_truncated_model_is_refused_naming_the_file(dlib_paths, tmp_path):
    truncated = tmp_path / "resnet.dat"
    truncated.write_bytes(dlib_paths[0].read_bytes()[:1_000_000])
    with pytest.raises(ModelError, match="resnet.dat"):
        read_dlib_resnet(truncated)


def test_other_dlib_file_is_refused(dlib_paths):
    with pytest.raises(ModelError, match="shape_predictor_5_face_landmarks.dat"):
        read_dlib_resnet(dlib_paths[1])


def test_missing_model_says_how_to_fetch(tmp_path):
    with pytest.raises(ModelError, match="facelock models fetch"):
        read_dlib_resnet(tmp_path / "absent.dat")

"""convert.compress.face_conditions: the dim- and soft-face thresholds, from door frames made, found and
aligned with the real models, and chosen on their scores."""

import cv2
import numpy as np
import pytest


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_a_condition_threshold_keeps_the_false_accept_rate_and_is_never_below_the_threshold():
    """Dim probes whose scores spread wider than the lit ones need a higher bar for the same FAR."""
    from convert.compress.face_conditions import choose_condition_threshold

    rng = np.random.default_rng(0)
    people, photos, dim = 60, 3, 128
    centres = _unit(rng.normal(size=(people, dim)))
    labels = np.repeat(np.arange(people), photos)
    enrol = _unit(centres[labels] + 0.08 * rng.normal(size=(len(labels), dim)))
    index = np.arange(0, len(labels), 2)
    probes = _unit(centres[labels[index]] + 0.2 * rng.normal(size=(len(index), dim)))  # noisier: dim light
    out = choose_condition_threshold(probes, labels[index], index, enrol, labels, 1e-2, threshold=-1.0)
    impostor = (probes @ enrol.T)[labels[index][:, None] != labels[None, :]]
    assert out["impostor_pairs"] == impostor.size and out["probes"] == len(index)
    assert np.mean(impostor >= out["cosine"]) <= 1e-2 < np.mean(impostor >= out["cosine"] - 0.02)
    assert out["train_far"] <= 1e-2 and 0 <= out["train_frr"] <= 1 and out["genuine_pairs"] > 0
    high = choose_condition_threshold(probes, labels[index], index, enrol, labels, 1e-2, threshold=0.99)
    assert high["cosine"] == 0.99  # never a lower bar than a lit face's
    with pytest.raises(ValueError, match="faces of two different people"):
        choose_condition_threshold(probes[:1], labels[:1], index[:1], enrol[:3], labels[:3], 1e-2, threshold=0.5)


def test_dim_probes_are_the_faces_the_lock_calls_dim_in_door_frames_at_the_floor(tmp_path, stages, portraits):
    """The real detector and landmark model on the portraits in FLOOR-light door frames: every face kept is
    one the lock's default gates pass as dim, aligned to a chip; in blurred ones, as soft; `condition_threshold`
    refuses to choose on few."""
    from convert.compress.face_conditions import condition_probes, condition_threshold
    from edge.types import FaceCondition
    from edge.vision.align import FaceAligner
    from edge.vision.pipeline import FacePipeline
    from edge.vision.quality import QualityOptions

    detector, landmarker = stages
    faces = FacePipeline(detector, FaceAligner(landmarker=landmarker), None, landmarker=landmarker)
    for i, image in enumerate(portraits):  # cut as LFW's photos are: 150x150, the face 62 px wide in the middle
        face = detector.detect(image)[0]
        half = face.width * 150 / 62 / 2
        (cx, cy), m = face.center, np.float32([[1, 0, 0], [0, 1, 0]]) * 150 / (2 * half)
        m[:, 2] = [75 - cx * 150 / (2 * half), 75 - cy * 150 / (2 * half)]
        lfw_like = cv2.warpAffine(image, m, (150, 150), flags=cv2.INTER_AREA)
        cv2.imwrite(str(tmp_path / f"{i}.png"), cv2.cvtColor(lfw_like, cv2.COLOR_RGB2BGR))
    files = ("0.png", "1.png") * 4
    chips, index, min_contrast = condition_probes(FaceCondition.DIM, tmp_path, files, faces)
    assert min_contrast == 8.0 and len(chips) == len(index) >= 4, index  # most portraits come out dim
    assert chips.shape[1:] == (150, 150, 3) and chips.dtype == np.uint8 and set(index) <= set(range(len(files)))
    assert 5 < float(chips.mean()) < 60  # dim: a quarter of the light or less

    class Train:
        labels = np.array([0, 1] * 4)

    Train.files = files
    assert condition_threshold(FaceCondition.DIM, tmp_path, Train, faces, None, {"cosine": 0.9, "target_far": 1e-3},
                               None) is None
    files = ("0.png", "0.png", "1.png", "1.png") * 2  # each portrait at both widths (60 px, 120 px)
    chips, index, min_sharpness = condition_probes(FaceCondition.SOFT, tmp_path, files, faces)
    assert min_sharpness == QualityOptions().min_sharpness and len(chips) == len(index) >= 2, index
    assert float(chips.mean()) > 60 and set(index) <= set(range(len(files)))  # blurred, in full light

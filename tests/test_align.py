"""Alignment: the similarity fit, the packaged template, and chips that agree with dlib's own."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edge.errors import ConfigError
from edge.types import CHIP_SIZE, Face, Keypoint
from edge.vision.align import (
    TEMPLATE_FILE,
    AlignOptions,
    AlignTemplate,
    FaceAligner,
    estimate_similarity,
    load_template,
    pyramid_levels,
    transform_points,
)
from edge.vision.detect import BlazeFaceDetector, DetectorOptions


@pytest.fixture(scope="module")
def detector(detector_path):
    return BlazeFaceDetector(detector_path, DetectorOptions(num_threads=1))


@pytest.fixture(scope="module")
def aligner():
    return FaceAligner()


def similarity(scale, angle_deg, tx, ty):
    a = math.radians(angle_deg)
    r = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return np.hstack([r, [[tx], [ty]]])


def test_estimate_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (6, 2))
    m = similarity(1.7, -23.0, 12.0, -40.0)
    dst = transform_points(m, src)
    assert np.allclose(estimate_similarity(src, dst), m, atol=1e-9)
    weights = np.array([1, 2, 3, 1, 0.5, 0.1])
    assert np.allclose(estimate_similarity(src, dst, weights), m, atol=1e-9)


def test_zero_weight_points_are_ignored():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, (6, 2))
    m = similarity(0.5, 10.0, 3.0, 4.0)
    dst = transform_points(m, src)
    dst[5] += [80, -50]  # a wild outlier that carries no weight
    assert np.allclose(estimate_similarity(src, dst, [1, 1, 1, 1, 1, 0]), m, atol=1e-9)
    assert not np.allclose(estimate_similarity(src, dst), m, atol=1e-3)


def test_mirrored_points_give_a_rotation_not_a_reflection():
    src = np.array([[0, 0], [10, 0], [0, 5], [7, 9]], float)
    dst = src * [-1, 1]
    m = estimate_similarity(src, dst)
    assert np.linalg.det(m[:, :2]) > 0


def test_estimate_similarity_rejects_degenerate_input():
    with pytest.raises(ValueError):
        estimate_similarity(np.zeros((4, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError):
        estimate_similarity(np.eye(2), np.eye(2), [1, 0])


def test_packaged_template_is_sane_and_round_trips():
    data = json.loads(TEMPLATE_FILE.read_text())
    t = load_template()
    p = t.points
    assert t.chip_size == CHIP_SIZE and data["provenance"]["faces"] >= 1000
    assert p[Keypoint.RIGHT_EYE, 0] < CHIP_SIZE / 2 < p[Keypoint.LEFT_EYE, 0], "right eye on the chip's left"
    assert abs(p[Keypoint.RIGHT_EYE, 1] - p[Keypoint.LEFT_EYE, 1]) < 3, "eyes level"
    assert abs((p[Keypoint.RIGHT_EYE, 0] + p[Keypoint.LEFT_EYE, 0]) / 2 - CHIP_SIZE / 2) < 5, "centred"
    assert p[Keypoint.LEFT_EYE, 1] < p[Keypoint.NOSE_TIP, 1] < p[Keypoint.MOUTH_CENTER, 1]
    again = FaceAligner.from_template(t.to_dict())
    assert np.allclose(again.template.points, p, atol=1e-3) and again.cache_key == FaceAligner().cache_key


def test_malformed_template_is_a_config_error(tmp_path):
    bad = json.loads(TEMPLATE_FILE.read_text())
    bad["points"] = bad["points"][:4]
    with pytest.raises(ConfigError, match="5 points"):
        AlignTemplate.from_dict(bad, "t.json")
    path = tmp_path / "t.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=str(path)):
        load_template(path)


def test_chip_puts_the_keypoints_on_the_template(detector, aligner, portraits):
    for image in portraits:
        face = detector.detect(image)[0]
        out = aligner.align(image, face)
        assert out.chip.shape == (CHIP_SIZE, CHIP_SIZE, 3) and out.chip.dtype == np.uint8
        # The packaged template is made of the landmark model's points; the aligner adds them to the face.
        in_chip = transform_points(out.matrix, out.face.landmarks)
        used = aligner.template.weights > 0
        err = np.linalg.norm(in_chip[used] - aligner.template.points[used], axis=1)
        assert err[:2].max() < 4 and err.max() < 12, f"points {err.round(1)} px off the template"
        assert out.chip.mean() > 40, "the chip holds the face, not the black border"


def test_rotated_photo_gives_an_upright_chip(detector, aligner, portraits):
    import cv2

    image = portraits[0]
    base = aligner.align(image, detector.detect(image)[0])
    g = cv2.getRotationMatrix2D((225.0, 127.0), 30.0, 1.0)  # about the face, counter-clockwise on screen
    rotated = cv2.warpAffine(image, g, (512, 512), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    out = aligner.align(rotated, detector.detect(rotated)[0])
    # The chip transform must undo the rotation: chip(rotated(p)) ~ chip(p), so the composed map turns by
    # what the upright photo's map turns by (her head is tilted about 9 degrees in the original).
    composed = out.matrix[:, :2] @ g[:, :2]
    left = math.degrees(math.atan2(composed[1, 0], composed[0, 0])) - _angle(base.matrix)
    assert abs(left) < 3, f"chip of the rotated photo is turned {left:.1f} degrees from the upright one"
    diff = np.abs(out.chip.astype(np.float32) - base.chip.astype(np.float32)).mean()
    assert diff < 22, f"chip of the rotated photo differs by {diff:.1f} grey levels on average"


def _angle(m):
    return math.degrees(math.atan2(m[1, 0], m[0, 0]))


def test_big_faces_go_through_the_pyramid_and_match(detector, aligner, portraits):
    import cv2

    image = portraits[0]
    small = aligner.align(image, detector.detect(image)[0])
    big_image = cv2.resize(image, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    face = detector.detect(big_image)[0]
    m = aligner.matrix(aligner.refined(big_image, face))
    assert pyramid_levels(math.sqrt(np.linalg.det(m[:, :2]))) >= 1
    big = aligner.align(big_image, face)
    diff = np.abs(big.chip.astype(np.float32) - small.chip.astype(np.float32)).mean()
    assert diff < 8, f"4x photo gives a different chip ({diff:.1f} grey levels)"


def test_pyramid_levels():
    assert pyramid_levels(1.0) == 0 and pyramid_levels(0.5) == 0
    assert pyramid_levels(0.4) == 1 and pyramid_levels(0.25) == 1 and pyramid_levels(0.2) == 2


def test_pyramid_avoids_aliasing(aligner):
    # A fine stripe pattern far above the chip's resolution must come out as flat grey, not moire.
    stripes = np.zeros((1200, 1200, 3), np.uint8)
    stripes[:, ::2] = 255
    face = _face_for_box(aligner, 100, 1100)
    smooth = aligner.align(stripes, face).chip
    naive = FaceAligner(AlignOptions(max_bilinear_step=1e9), aligner.template).align(stripes, face).chip
    inner = slice(20, 130)
    assert smooth[inner, inner].std() < naive[inner, inner].std() / 3


def _face_for_box(aligner, lo, hi):
    """A face in a square box of the frame whose landmarks are the template's points scaled into it."""
    scale = (hi - lo) / CHIP_SIZE
    points = (aligner.template.points * scale + lo).astype(np.float32)
    return Face(box=(lo, lo, hi, hi), keypoints=np.zeros((6, 2), np.float32), score=1.0, landmarks=points,
                presence=1.0)


def test_face_outside_the_frame_gives_a_black_chip(aligner):
    frame = np.full((100, 100, 3), 200, np.uint8)
    out = aligner.align(frame, _face_for_box(aligner, 1000, 1150))
    assert out.chip.max() == 0


@pytest.fixture(scope="module")
def dlib_reference(models_dir):
    dlib = pytest.importorskip("dlib", reason="dlib-bin (the [dev] extra) is the reference")
    from edge.models.store import DLIB_RESNET, DLIB_SHAPE5, model_path

    return (dlib, dlib.get_frontal_face_detector(), dlib.shape_predictor(str(model_path(DLIB_SHAPE5))),
            dlib.face_recognition_model_v1(str(model_path(DLIB_RESNET))))


def _agreement(dlib_reference, detector, aligner, image):
    dlib, hog, sp, net = dlib_reference
    rects = hog(image, 1)
    if not rects:
        return None
    rect = max(rects, key=lambda r: r.width() * r.height())
    shape = sp(image, rect)
    ref = np.array(net.compute_face_descriptor(dlib.get_face_chip(image, shape, 150, 0.25)))
    faces = [f for f in detector.detect(image) if rect.left() <= f.center[0] <= rect.right()]
    if not faces:
        return None
    ours = np.array(net.compute_face_descriptor(aligner.align(image, faces[0]).chip))
    return float(ref @ ours / np.linalg.norm(ref) / np.linalg.norm(ours))


def test_chips_agree_with_dlibs_own_on_the_portraits(dlib_reference, detector, aligner, portraits):
    for image in portraits:
        cos = _agreement(dlib_reference, detector, aligner, image)
        assert cos is not None and cos > 0.97, f"dlib descriptor of our chip vs dlib's chip: cosine {cos}"


@pytest.mark.lfw
def test_chips_agree_with_dlibs_own_on_lfw_test_people(dlib_reference, detector, aligner, lfw_dir):
    import csv

    from edge.images import read_image_rgb

    with open(lfw_dir / "split.csv", newline="") as fh:
        people = sorted(r["name"] for r in csv.DictReader(fh) if r["split"] == "test")
    cos = []
    for person in people[::80][:20]:
        c = _agreement(dlib_reference, detector, aligner, read_image_rgb(min((lfw_dir / person).glob("*.jpg"))))
        if c is not None:
            cos.append(c)
    assert len(cos) >= 15
    assert np.median(cos) > 0.98 and min(cos) > 0.9, f"cosines {np.round(cos, 3)}"

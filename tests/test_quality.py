"""Quality gates and subject selection on synthetic frames with real OpenCV."""

import math

import cv2
import numpy as np
import pytest

from edge.types import Face
from edge.vision.quality import (
    BLURRY,
    EYES_TOO_CLOSE,
    LOW_CONTRAST,
    OUTSIDE_FRAME,
    ROLL,
    TOO_SMALL,
    YAW,
    QualityGate,
    QualityOptions,
    head_pose,
    select_subject,
)

# A head in centimetres: x to the image's right, y down, z toward the camera. Right eye = subject's right.
HEAD = np.array([
    [-3.2, 0.0, 0.0],  # right eye
    [3.2, 0.0, 0.0],  # left eye
    [0.0, 3.5, 2.5],  # nose tip
    [0.0, 6.5, 1.0],  # mouth centre
    [-7.3, 2.0, -8.0],  # right ear tragion
    [7.3, 2.0, -8.0],  # left ear tragion
])


def project(yaw_deg=0.0, roll_deg=0.0, centre=(320.0, 240.0), px_per_cm=10.0):
    a = math.radians(yaw_deg)
    rot_y = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    pts = HEAD @ rot_y.T
    r = math.radians(roll_deg)
    rot_z = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
    return (pts[:, :2] @ rot_z.T) * px_per_cm + np.array(centre)


def face_at(cx, cy, size, yaw=0.0, roll=0.0):
    kps = project(yaw, roll, (cx, cy - size * 0.1), size / 16.0).astype(np.float32)
    return Face(box=(cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2), keypoints=kps, score=0.9)


def textured_frame(h=480, w=640, seed=0):
    """Grey-level detail at 4, 16 and 64 px scales (fine texture, features, shading, as a face has), mean
    128, standard deviation 60 (a little clipped)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for cell in (4, 16, 64):
        small = rng.normal(0, 1, (h // cell + 1, w // cell + 1, 3)).astype(np.float32)
        img += cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(128 + 60 * img / img.std(), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("yaw", [0.0, 15.0, -25.0, 40.0])
def test_yaw_estimate(yaw):
    est, roll = head_pose(project(yaw))
    assert est == pytest.approx(yaw, abs=3.0)
    assert roll == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("roll", [0.0, 10.0, -35.0])
def test_roll_estimate_ignores_scale_and_position(roll):
    yaw, est = head_pose(project(0.0, roll, centre=(50, 400), px_per_cm=3.0))
    assert est == pytest.approx(roll, abs=1e-4)
    assert yaw == pytest.approx(0.0, abs=1e-4)


def test_good_face_passes():
    v = QualityGate().check(textured_frame(), face_at(320, 240, 160))
    assert v.ok and v.failures == () and v.reason == ""
    assert v.face_px == pytest.approx(160) and v.eye_distance_px == pytest.approx(64, abs=0.1)
    assert v.sharpness > QualityOptions().min_sharpness and v.contrast > QualityOptions().min_contrast


@pytest.mark.parametrize("face, code", [
    (face_at(320, 240, 24), TOO_SMALL),
    (face_at(320, 240, 160, yaw=45), YAW),
    (face_at(320, 240, 160, roll=35), ROLL),
    (face_at(600, 240, 160), OUTSIDE_FRAME),  # right half outside the 640-px frame
])
def test_each_gate_rejects(face, code):
    v = QualityGate().check(textured_frame(), face)
    assert not v.ok and code in v.failures and v.reason


@pytest.mark.parametrize("yaw, usable", [(-33.0, True), (33.0, True), (37.0, False), (-37.0, False)])
def test_default_yaw_limit_is_35_degrees(yaw, usable):
    """30-35 degrees let strangers through no more often than frontal faces on door frames (QualityOptions.
    max_yaw_deg): the default takes them; further turns, which do, stay refused."""
    v = QualityGate().check(textured_frame(), face_at(320, 240, 160, yaw=yaw))
    assert v.ok is usable and (YAW in v.failures) is not usable


def test_eyes_too_close_gate():
    v = QualityGate(QualityOptions(min_face_px=10, min_eye_distance_px=30)).check(textured_frame(), face_at(320, 240, 60))
    assert v.failures == (EYES_TOO_CLOSE,) and "eyes 24 px apart, need >= 30" in v.reason


def test_blur_gate_and_size_normalisation():
    frame = textured_frame()
    gate = QualityGate()
    sharp = gate.check(frame, face_at(320, 240, 160))
    blurred = gate.check(cv2.GaussianBlur(frame, (0, 0), 6), face_at(320, 240, 80))
    assert sharp.ok and blurred.failures == (BLURRY,) and "sharpness" in blurred.reason
    # The same picture at half the size scores about the same (normalised), not 4x less or more.
    half = cv2.resize(frame, (320, 240), interpolation=cv2.INTER_AREA)
    small = gate.check(half, face_at(160, 120, 80))
    assert 0.5 < small.sharpness / sharp.sharpness < 2.0


def test_sharpness_does_not_depend_on_the_light():
    """Dimming a face dims its Laplacian with it: the sharpness stays, the contrast falls (the Laplacian's
    variance alone fell 4x at half the light)."""
    frame = textured_frame().astype(np.float32)
    full = QualityGate().check(frame.astype(np.uint8), face_at(320, 240, 160))
    dim = QualityGate().check((frame * 0.5).astype(np.uint8), face_at(320, 240, 160))
    assert dim.sharpness == pytest.approx(full.sharpness, rel=0.05)
    assert dim.contrast == pytest.approx(full.contrast / 2, rel=0.05)


def test_a_face_in_the_dark_is_refused_as_too_dark_not_blurry():
    """A dim face is refused for its light (false accepts rise there, see edge.vision.quality), named as
    such: "more light", not "hold still"."""
    gate = QualityGate(QualityOptions(min_contrast=20.0))
    frame = textured_frame().astype(np.float32)
    for light in (0.5, 0.1):
        v = gate.check((frame * light).astype(np.uint8), face_at(320, 240, 160))
        assert v.failures == (LOW_CONTRAST,) and "too dark" in v.reason and "sharpness" not in v.reason
    lenient = QualityGate(QualityOptions(min_contrast=10.0)).check((frame * 0.5).astype(np.uint8),
                                                                   face_at(320, 240, 160))
    assert lenient.ok, lenient.reason


def test_a_face_in_dim_light_passes_as_dim_and_one_darker_than_the_floor_is_refused():
    """Defaults: from `min_contrast` up to `dim_contrast` a face passes, marked dim (it votes at the
    dim-light threshold); under `min_contrast` it is refused as too dark; in good light it is not dim."""
    o = QualityOptions()
    assert o.min_contrast < o.dim_contrast
    gate, frame, face = QualityGate(), textured_frame().astype(np.float32), face_at(320, 240, 160)
    lit = gate.check(frame.astype(np.uint8), face)
    assert lit.ok and not lit.dim and lit.contrast >= o.dim_contrast
    for light in ((o.min_contrast + 1) / lit.contrast, (o.dim_contrast - 1) / lit.contrast):
        v = gate.check((frame * light).astype(np.uint8), face)
        assert v.ok and v.dim and o.min_contrast <= v.contrast < o.dim_contrast, (light, v)
    dark = gate.check((frame * (o.min_contrast - 1) / lit.contrast).astype(np.uint8), face)
    assert dark.failures == (LOW_CONTRAST,) and not dark.ok
    from edge.errors import ConfigError

    with pytest.raises(ConfigError, match="dim_contrast"):
        QualityOptions(min_contrast=20.0, dim_contrast=10.0).validate()


def test_a_slightly_blurred_face_passes_as_soft_and_a_sharp_one_does_not():
    """Defaults: from `min_sharpness` up to `soft_sharpness` a face passes, marked soft (it votes at the
    soft-face threshold); blurrier is refused as blurry; sharp is not soft; `conditions` names the marks (a
    soft face in dim light: both); `soft_sharpness` 0: no face is soft."""
    from edge.types import FaceCondition

    o = QualityOptions()
    assert o.min_sharpness < o.soft_sharpness
    frame, face, gate = textured_frame(), face_at(320, 240, 160), QualityGate()
    sharp = gate.check(frame, face)
    assert sharp.ok and not sharp.soft and sharp.conditions == frozenset()
    blurred = {sigma: cv2.GaussianBlur(frame, (0, 0), sigma) for sigma in np.arange(0.5, 8, 0.25)}
    verdicts = {sigma: gate.check(f, face) for sigma, f in blurred.items()}
    soft = [s for s, v in verdicts.items() if o.min_sharpness <= v.sharpness < o.soft_sharpness]
    assert soft and all(verdicts[s].ok and verdicts[s].conditions == {FaceCondition.SOFT} for s in soft)
    assert all(v.failures == (BLURRY,) for v in verdicts.values() if v.sharpness < o.min_sharpness)
    mid = min(soft, key=lambda s: abs(verdicts[s].sharpness - (o.min_sharpness + o.soft_sharpness) / 2))
    lit = verdicts[mid].contrast
    dim = gate.check(np.round(blurred[mid] * ((o.dim_contrast - 2) / lit)).astype(np.uint8), face)
    assert dim.ok and dim.conditions == {FaceCondition.DIM, FaceCondition.SOFT}, dim
    assert not QualityGate(QualityOptions(soft_sharpness=0.0)).check(blurred[mid], face).soft


def test_a_sharpness_threshold_in_the_old_unit_is_refused():
    """`min_sharpness` was the Laplacian's variance (50); a config still saying 50 would refuse every face."""
    from edge.errors import ConfigError

    with pytest.raises(ConfigError, match="min_sharpness"):
        QualityOptions(min_sharpness=50.0).validate()


def test_select_largest_and_most_central():
    frame_shape = (480, 640, 3)
    big_corner = face_at(120, 120, 150)
    mid_centre = face_at(320, 240, 140)
    small_centre = face_at(320, 240, 40)
    assert select_subject([big_corner, mid_centre], frame_shape) is mid_centre  # nearly as big, central
    assert select_subject([small_centre, big_corner], frame_shape) is big_corner  # central but tiny
    assert select_subject([big_corner, mid_centre], frame_shape, center_weight=0.0) is big_corner
    assert select_subject([], frame_shape) is None


def test_options_validated():
    from edge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"quality.center_weight = 2: expected in \[0, 1\]"):
        QualityGate(QualityOptions(center_weight=2))

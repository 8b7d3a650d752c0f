"""The thresholds of the face conditions (edge.types.FaceCondition): for a dim face (too little light) and a
soft one (a little out of focus), the cosine at which it passes for a stranger no more often than a clear face
does at the bundle's threshold.

Why: at the threshold chosen on clear photos, faces the lock tries in dim light (a porch at dusk) let
strangers through 2-3x as often as the threshold promises, and soft ones (sharpness just over the gate's
floor) about 1.5x (benchmarks/quality_gates.py), so the lock tries them at these higher bars
(edge.vision.quality: `dim_contrast`, `soft_sharpness`; edge.identity.vote).

How, on the training photos (the people the threshold was chosen on): each photo is placed in a 640x480 door
frame (convert.bench.door.door_frame), 60 or 120 px wide by turns, in the picture where the condition's
faces come out near the floor of the gate they are closest to failing: dim, the light and sensor noise where
a face's contrast is about `[quality] min_contrast` (FLOOR); soft, the blur where its sharpness is about
`min_sharpness` (Gaussian sigma 1.2 px at 60 px, 2 px at 120 px). Then it is found and aligned the way the
lock does. The faces the lock's default gates pass under the condition (soft ones: those under sharpness
SOFT_CHOSEN_UNDER, the blurriest) are embedded and compared, as probes, with every other person's photo
embedded as it is (the enrolments): the threshold is the cosine at the target false-accept rate over those
comparisons, never below the clear one. Faces at the floor are the ones strangers pass for most often of all
those the lock tries (quality_gates.py's figures by contrast and by sharpness), so the threshold holds for
the rest of the condition's faces as well.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from convert.bench.door import CONDITIONS, FLOOR, door_frame, placed_face
from edge.images import read_image_rgb
from edge.models.bundle import CONDITION_FLOOR
from edge.types import FaceCondition
from edge.vision.quality import QualityGate, QualityVerdict

# Per condition: the door-frame picture (convert.bench.door.CONDITIONS) at each face width (px), whether
# the gates' verdict has the condition, and the gate floor the faces are near: its name and value.
PICTURES: dict[FaceCondition, dict[int, str]] = {FaceCondition.DIM: {60: FLOOR, 120: FLOOR},
                                                 FaceCondition.SOFT: {60: "blur", 120: "blur2"}}
# Soft faces the threshold is chosen on: under this sharpness, the blurriest (well-lit door frames of LFW
# train people pass strangers 0.17-0.19% of the time at the threshold at 0.16-0.2, 0.12-0.13% at 0.2-0.3,
# benchmarks/quality_gates.py); the lock holds every soft face (`[quality] soft_sharpness`) to it.
SOFT_CHOSEN_UNDER = 0.2
HAS: dict[FaceCondition, Callable[[QualityVerdict], bool]] = {
    FaceCondition.DIM: lambda v: v.dim, FaceCondition.SOFT: lambda v: v.soft and v.sharpness < SOFT_CHOSEN_UNDER}
FLOOR_FIELD = CONDITION_FLOOR  # the bundle's key for the floor is the gate option's own name
MAX_PHOTOS = 1500  # about 40% come out dim, 35% soft; each frame costs ~55 ms (render, detect, landmarks, align)


def condition_probes(condition: FaceCondition, root, files: tuple[str, ...], faces,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """(chips of the photos whose door-frame face the gates pass under `condition`, (N, S, S, 3) uint8; their
    indices into `files`; the gates' floor for it, FLOOR_FIELD). `faces`: the lock's FacePipeline (detector,
    landmarks, subject rule, aligner)."""
    from convert.progress import bar

    gate = QualityGate()
    rng = np.random.default_rng(seed)
    widths = sorted(PICTURES[condition])
    chips, index = [], []
    for i in bar(range(len(files)), desc=f"{condition.value} door frames", unit="photo", leave=False):
        width = widths[i % len(widths)]
        frame, centre = door_frame(read_image_rgb(root / files[i]), width, rng, PICTURES[condition][width])
        face = faces.subject(frame).face
        if face is None or not placed_face(face.center, centre, width):
            continue  # no face, or not the one placed there
        verdict = gate.check(frame, face)
        if verdict.ok and HAS[condition](verdict):
            chips.append(faces.aligner.align(frame, face).chip)
            index.append(i)
    return (np.stack(chips) if chips else np.zeros((0, 0, 0, 3), np.uint8)), np.asarray(index, int), \
        float(getattr(gate.options, FLOOR_FIELD[condition]))


def choose_condition_threshold(probes: np.ndarray, probe_labels: np.ndarray, probe_index: np.ndarray,
                               enrolments: np.ndarray, labels: np.ndarray, target_far: float,
                               threshold: float) -> dict:
    """A condition's operating point: its `probes` (unit embeddings, the photos `probe_index` of `labels`)
    against every clear embedding in `enrolments` of another person (impostors) or of the same person's
    other photos (genuine); never below `threshold`."""
    from convert.compress.metrics import threshold_at_far

    scores = probes @ enrolments.T
    same = probe_labels[:, None] == labels[None, :]
    other_photo = probe_index[:, None] != np.arange(len(labels))[None, :]
    impostor, genuine = scores[~same], scores[same & other_photo]
    if len(impostor) == 0:
        raise ValueError("no faces of two different people under the condition to choose its threshold on")
    cosine = max(threshold, threshold_at_far(impostor, target_far))
    return {"cosine": cosine, "train_far": float(np.mean(impostor >= cosine)),
            "train_frr": float(np.mean(genuine < cosine)) if len(genuine) else None,
            "probes": len(probes), "impostor_pairs": int(impostor.size), "genuine_pairs": int(genuine.size)}


def condition_threshold(condition: FaceCondition, root, train, faces, embed, threshold: dict,
                        enrolments: np.ndarray, photos: int | None = None) -> dict | None:
    """The bundle's `threshold.dim` / `threshold.soft` ({cosine, min_contrast or min_sharpness, chosen_on,
    train_far, train_frr, ...}) for the training ChipSet `train` (photos under `root`; its first `photos`,
    spread over people, as probes; None: MAX_PHOTOS), `enrolments` its clear embeddings, `embed(chips)` the
    int8 embedder; None when fewer than 50 of those faces came out under the condition."""
    photos = photos or MAX_PHOTOS
    chips, index, floor = condition_probes(condition, root, train.files[:photos], faces)
    if len(index) < 50:
        return None
    labels = np.asarray(train.labels)
    out = choose_condition_threshold(embed(chips), labels[index], index, enrolments, labels,
                                     threshold["target_far"], threshold["cosine"])
    out[FLOOR_FIELD[condition]] = floor
    pictures = ", ".join(f"{w} px: {p} {describe(p)}" for w, p in sorted(PICTURES[condition].items()))
    pictures += f"; sharpness under {SOFT_CHOSEN_UNDER:g}" if condition is FaceCondition.SOFT else ""
    out["chosen_on"] = (f"{root} (train people: {len(index)} of {min(len(train), photos)} photos "
                        f"{condition.value} in door frames; {pictures})")
    return out


def condition_thresholds(root, train, faces, embed, threshold: dict, enrolments: np.ndarray,
                         photos: int | None = None, say=print) -> dict[str, dict]:
    """{condition name: its `condition_threshold`} for every condition that has one (the bundle's threshold
    keys); `embed(name, chips)`. Says each, or that a condition has none."""
    out = {}
    for c in FaceCondition:
        t = condition_threshold(c, root, train, faces, lambda chips, c=c: embed(c.value, chips), threshold,
                                enrolments, photos)
        say(f"{c.value}-face threshold {t['cosine']:.4f} ({t['probes']} faces)" if t
            else f"no {c.value}-face threshold")
        out.update({c.value: t} if t is not None else {})
    return out


def describe(picture: str) -> str:
    """A door-frame picture's light, noise and blur, in words."""
    light, noise, blur = CONDITIONS[picture]
    return f"({light:g} of the light, noise sigma {noise:g}, blur sigma {blur:g} px)"

"""The dim-light threshold: the cosine at which a face in dim light passes for a stranger no more often than a
well-lit face does at the bundle's threshold.

Why: at the threshold chosen on well-lit photos, faces in dim light (a porch at dusk) let strangers through
2-3x as often as the threshold promises (benchmarks/quality_gates.py), so the lock refused them as too dark
and did not open at dusk at all. It now tries them at this higher bar (edge.vision.quality: `dim_contrast`,
`min_contrast`; edge.identity.vote).

How, on the training photos (the people the threshold was chosen on): each photo is placed in a 640x480 door
frame (convert.bench.door.door_frame, condition FLOOR: the light and sensor noise where a face's contrast
is about `QualityOptions.min_contrast`, the darkest the lock tries), 60 or 120 px wide by turns, then found
and aligned the way the lock does. The faces the lock's default gates call dim (contrast from `min_contrast`
up to `dim_contrast`, every other gate passed) are embedded and compared, as probes, with every other
person's photo embedded as it is (the enrolments): the threshold is the cosine at the target false-accept
rate over those comparisons, never below the well-lit one. Faces at the floor are the ones strangers pass
for most often of all those the lock tries (quality.py's figures by contrast), so the threshold holds for
the brighter dim faces as well.
"""

from __future__ import annotations

import numpy as np

from convert.bench.door import CONDITIONS, FLOOR, door_frame, placed_face
from edge.images import read_image_rgb
from edge.vision.quality import QualityGate

WIDTHS = (60, 120)
MAX_PHOTOS = 1500  # about 40% come out dim; each frame costs ~55 ms (render, detect, landmarks, align)


def dim_probes(root, files: tuple[str, ...], faces, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """(chips of the photos whose door-frame face is dim, (N, S, S, 3) uint8; their indices into `files`;
    the gates' `min_contrast`). `faces`: the lock's FacePipeline (detector, landmarks, subject rule, aligner)."""
    from convert.progress import bar

    gate = QualityGate()
    rng = np.random.default_rng(seed)
    chips, index = [], []
    for i in bar(range(len(files)), desc="dim door frames", unit="photo", leave=False):
        width = WIDTHS[i % len(WIDTHS)]
        frame, centre = door_frame(read_image_rgb(root / files[i]), width, rng, FLOOR)
        face = faces.subject(frame).face
        if face is None or not placed_face(face.center, centre, width):
            continue  # no face, or not the one placed there
        verdict = gate.check(frame, face)
        if verdict.ok and verdict.dim:
            chips.append(faces.aligner.align(frame, face).chip)
            index.append(i)
    return (np.stack(chips) if chips else np.zeros((0, 0, 0, 3), np.uint8)), np.asarray(index, int), \
        gate.options.min_contrast


def choose_dim_threshold(probes: np.ndarray, probe_labels: np.ndarray, probe_index: np.ndarray,
                         enrolments: np.ndarray, labels: np.ndarray, target_far: float, threshold: float) -> dict:
    """The dim-light operating point: dim `probes` (unit embeddings, the photos `probe_index` of `labels`)
    against every well-lit embedding in `enrolments` of another person (impostors) or of the same person's
    other photos (genuine); never below `threshold`."""
    from convert.compress.metrics import threshold_at_far

    scores = probes @ enrolments.T
    same = probe_labels[:, None] == labels[None, :]
    other_photo = probe_index[:, None] != np.arange(len(labels))[None, :]
    impostor, genuine = scores[~same], scores[same & other_photo]
    if len(impostor) == 0:
        raise ValueError("no dim faces of two different people to choose a dim-light threshold on")
    cosine = max(threshold, threshold_at_far(impostor, target_far))
    return {"cosine": cosine, "train_far": float(np.mean(impostor >= cosine)),
            "train_frr": float(np.mean(genuine < cosine)) if len(genuine) else None,
            "probes": len(probes), "impostor_pairs": int(impostor.size), "genuine_pairs": int(genuine.size)}


def dim_threshold(root, train, faces, embed, threshold: dict, enrolments: np.ndarray,
                  photos: int = MAX_PHOTOS) -> dict | None:
    """The bundle's `threshold.dim` ({cosine, min_contrast, chosen_on, train_far, train_frr, ...}) for the
    training ChipSet `train` (photos under `root`; its first `photos`, spread over people, as probes),
    `enrolments` its well-lit embeddings, `embed(chips)` the int8 embedder; None when fewer than 50 of
    those faces came out dim."""
    chips, index, min_contrast = dim_probes(root, train.files[:photos], faces)
    if len(index) < 50:
        return None
    labels = np.asarray(train.labels)
    dim = choose_dim_threshold(embed(chips), labels[index], index, enrolments, labels, threshold["target_far"],
                               threshold["cosine"])
    light, noise, _ = CONDITIONS[FLOOR]
    dim["min_contrast"] = min_contrast
    dim["chosen_on"] = (f"{root} (train people: {len(index)} of {min(len(train), photos)} photos dim in door "
                        f"frames at {light:g} of the light, noise sigma {noise:g}, faces "
                        f"{'/'.join(map(str, WIDTHS))} px)")
    return dim

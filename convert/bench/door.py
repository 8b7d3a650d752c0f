"""Section 7, door distance: does the lock see its owner 1-2 m from the camera?

Frames: each LFW `test` person with two or more photos is enrolled from their first photo (the 150x150 LFW
picture as it is, through each pipeline's still-photo path) and probed with their second, placed in a
640x480 frame (`door_frame`) with the face 40, 60, 80, 120 or 160 px wide, turned by up to +-5 degrees, at a
random place in the middle of the frame, on a smooth grey wall with sensor noise, saved as JPEG (quality
85). Three variants of every frame: `clean`, `low_light` (a quarter of the light, sensor noise sigma 3:
what a porch at dusk gives) and `blur` (Gaussian sigma 1.2 px: a camera out of focus or a person moving).
Face width: LFW's 150x150 photos are scaled by width / 62, 62 px being the median face-box width in them of
both dlib's HOG detector and BlazeFace (measured: 63 and 62 px on 150 test photos).

Per size and variant, for facelock (the bundle's stages: the lock's own subject rule, alignment and
embedder; no quality gates, so the figure is the recognition itself; `gated` says how many of those frames
the lock's default gates would refuse), for facelock as it was before the landmark model (short-range
BlazeFace on the whole frame, keypoint template, the same model run once per chip) and for face_recognition
(dlib HOG with one upsample, largest face, 5 points, dlib's ResNet), on the same frames in the same run:
- lost: frames where the pipeline found no face, or a face that is not the person (its centre farther than
  half the face width from where the face was put);
- TAR at FAR 1e-2 and 1e-3: every probe against every enrolment (one genuine, n - 1 impostors each), the
  pipeline's own score (cosine; the peer: -Euclidean distance); a lost probe rejects all its comparisons.

Stability: the enrolment portrait itself (convert/portraits/astronaut.png) in the frames `make demo` plays
(80% of the frame height, +-3 degrees, +-15 px: `convert.demo_faces.door_frame`), cosine against its own
enrolment: the median over 40 frames, per model.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WIDTHS = (40, 60, 80, 120, 160)
VARIANTS = ("clean", "low_light", "blur")
# Every picture condition `door_frame` makes: (light, sensor noise sigma, Gaussian blur sigma in px), the blur
# before the light and noise. The door section reports VARIANTS; benchmarks/quality_gates.py the darker and
# blurrier ones too. FLOOR: the light at which a face's contrast is about the lock's `min_contrast` (8; well
# lit ~43), the darkest it tries: `facelock convert` chooses the dim-light threshold there
# (convert.compress.face_conditions).
FLOOR = "dim_floor"
CONDITIONS = {"clean": (1.0, 0.0, 0.0), "low_light": (0.25, 3.0, 0.0), "blur": (1.0, 0.0, 1.2),
              "dark": (0.125, 3.0, 0.0), "blur2": (1.0, 0.0, 2.0), FLOOR: (0.18, 3.0, 0.0)}
LFW_FACE_PX = 62.0
FRAME_SIZE = (640, 480)
STABILITY_FRAMES = 40
FACELOCK = "facelock"
BEFORE = "facelock before (short-range, keypoints)"
PEER = "face_recognition (dlib)"


@dataclass(frozen=True)
class DoorPerson:
    name: str
    enrol: Path
    probe: Path


def door_people(root: Path, limit: int | None = None, seed: int = 0, split: str = "test") -> list[DoorPerson]:
    """LFW `split` people (`test` to report, `train` to tune on) with two or more photos (all of them, or
    `limit` drawn with `seed`): photo 1 enrols, photo 2 probes. Without a split.csv (the demo faces), every
    person folder, first and second file."""
    table = root / "split.csv"
    if table.is_file():
        with open(table, newline="") as fh:
            names = sorted(r["name"] for r in csv.DictReader(fh) if r["split"] == split and int(r["images"]) >= 2)
        pick = lambda n: (root / n / "1.jpg", root / n / "2.jpg")
    else:
        names = sorted(p.name for p in root.iterdir() if p.is_dir())
        pick = lambda n: tuple(sorted((root / n).glob("*.jpg"), key=lambda p: int(p.stem))[:2])
    if limit is not None and limit < len(names):
        rng = np.random.default_rng(seed)
        names = sorted(names[i] for i in rng.choice(len(names), limit, replace=False))
    return [DoorPerson(n, *pick(n)) for n in names]


def _wall(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    import cv2

    base = rng.uniform(70, 160)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    grey = base + rng.uniform(-30, 30) * xx / w + rng.uniform(-30, 30) * yy / h
    wall = np.repeat(grey[..., None], 3, axis=2) + rng.normal(0, 2, (h, w, 3)).astype(np.float32)
    return cv2.GaussianBlur(wall, (0, 0), 1.0)


def door_frame(photo: np.ndarray, width_px: float, rng: np.random.Generator, variant: str = "clean",
               size: tuple[int, int] = FRAME_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(RGB frame, where the face's centre is in it): see the module docstring."""
    import cv2

    w, h = size
    s = width_px / LFW_FACE_PX
    ph, pw = photo.shape[:2]
    centre = np.array([rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.6) * h])
    m = cv2.getRotationMatrix2D((pw / 2, ph / 2), rng.uniform(-5, 5), s)
    m[:, 2] += centre - [pw / 2, ph / 2]
    flags = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    person = cv2.warpAffine(photo.astype(np.float32), m, (w, h), flags=flags)
    mask = cv2.warpAffine(np.ones((ph, pw), np.float32), m, (w, h))
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, 2 * s))[..., None]  # the photo's edge fades into the wall
    frame = _wall(rng, w, h) * (1 - mask) + person * mask
    if variant not in CONDITIONS:
        raise ValueError(f"unknown variant {variant!r} (expected one of {', '.join(CONDITIONS)})")
    light, noise, blur = CONDITIONS[variant]
    if blur:
        frame = cv2.GaussianBlur(frame, (0, 0), blur)
    if light != 1.0 or noise:
        frame = frame * light + rng.normal(0, noise, frame.shape)
    frame = np.clip(frame, 0, 255).astype(np.uint8)
    _ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), centre


def placed_face(where, centre: np.ndarray, width_px: float) -> bool:
    """Whether a face found with its centre at `where` (None: no face) is the one `door_frame` put at
    `centre`, `width_px` wide: its centre within half that width (otherwise the frame lost its person)."""
    return where is not None and bool(np.hypot(*(np.asarray(where) - centre)) <= width_px / 2)


class OursAtTheDoor:
    """facelock's stages (edge.vision.build.Stages) as the door benchmark runs them."""

    def __init__(self, stages, gate=None):
        from edge.vision.pipeline import FacePipeline
        from edge.vision.quality import QualityGate

        self.stages = stages
        self.gate = gate or QualityGate()
        self.pipeline = FacePipeline(stages.detector, stages.aligner, stages.embedder, self.gate,
                                     landmarker=stages.landmarker, near_detector=stages.near_detector)

    def embed(self, image: np.ndarray) -> tuple[np.ndarray | None, tuple[float, float] | None, bool]:
        """(unit embedding or None, the chosen face's centre, whether the lock's gates pass it)."""
        e, centre, verdict = self.embed_checked(image)
        return e, centre, verdict is not None and verdict.ok

    def embed_checked(self, image: np.ndarray):
        """(unit embedding or None, the chosen face's centre or None, the gates' QualityVerdict or None)."""
        face = self.pipeline.subject(image).face
        if face is None:
            return None, None, None
        chip = self.stages.aligner.align(image, face).chip
        e = np.asarray(self.stages.embedder.embed(chip[None]), dtype=np.float32)[0]
        return e, face.center, self.gate.check(image, face)


class PeerAtTheDoor:
    """face_recognition's pipeline (convert.bench.peer): HOG with one upsample, the largest face."""

    def __init__(self):
        import dlib

        from edge.models.store import DLIB_RESNET, DLIB_SHAPE5, model_path

        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(model_path(DLIB_SHAPE5)))
        self.resnet = dlib.face_recognition_model_v1(str(model_path(DLIB_RESNET)))

    def embed(self, image: np.ndarray) -> tuple[np.ndarray | None, tuple[float, float] | None, bool]:
        boxes = self.detector(image, 1)
        if not len(boxes):
            return None, None, False
        r = max(boxes, key=lambda b: b.area())
        d = self.resnet.compute_face_descriptor(image, self.predictor(image, r), 1)
        return np.asarray(d, dtype=np.float32), ((r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2), True


def _scores(probes: np.ndarray, found: np.ndarray, gallery: np.ndarray, enrolled: np.ndarray,
            euclidean: bool) -> tuple[np.ndarray, np.ndarray]:
    """(scores, same) of every probe against every enrolment; -inf where either side has no face."""
    if euclidean:
        s = -np.linalg.norm(probes[:, None, :] - gallery[None, :, :], axis=2)
    else:
        s = probes @ gallery.T
    s = np.where(found[:, None] & enrolled[None, :], s, -np.inf)
    return s.reshape(-1), np.eye(len(probes), dtype=bool).reshape(-1)


def _cell(pipe, name: str, people: list[DoorPerson], probes: list, gallery: np.ndarray, enrolled: np.ndarray,
          widths_px: float) -> dict:
    from convert.compress.metrics import roc_curve, tar_at_far

    emb = np.zeros((len(people), gallery.shape[1]), np.float32)
    found = np.zeros(len(people), bool)
    gated = 0
    for i, (frame, centre) in enumerate(probes):
        e, where, ok = pipe.embed(frame)
        if e is None or not placed_face(where, centre, widths_px):
            continue
        emb[i], found[i] = e, True
        gated += not ok
    scores, same = _scores(emb, found, gallery, enrolled, euclidean=name == PEER)
    roc = roc_curve(scores, same)
    return {"frames": len(people), "lost": int((~found).sum()), "gated": gated,
            "tar_1e2": tar_at_far(roc, 1e-2), "tar_1e3": tar_at_far(roc, 1e-3)}


def door_table(pipes: dict, root: Path, people: list[DoorPerson], widths=WIDTHS, variants=VARIANTS,
               seed: int = 0, progress: bool = False) -> dict:
    """{pipeline: {variant: {width: cell}}}, every pipeline on the same frames (see the module docstring)."""
    from convert.bench.util import bar
    from edge.images import read_image_rgb

    enrol_photos = [read_image_rgb(p.enrol) for p in people]
    probe_photos = [read_image_rgb(p.probe) for p in people]
    galleries = {}
    for name, pipe in pipes.items():
        embs = [pipe.embed(photo)[0] for photo in enrol_photos]
        dim = next((len(e) for e in embs if e is not None), 128)
        galleries[name] = (np.stack([e if e is not None else np.zeros(dim, np.float32) for e in embs]),
                           np.array([e is not None for e in embs]))
    out: dict = {name: {v: {} for v in variants} for name in pipes}
    cells = [(v, w) for v in variants for w in widths]
    for vi, (variant, width) in enumerate(bar(cells, "door frames", progress)):
        rng = np.random.default_rng([seed, vi, width])
        probes = [door_frame(photo, width, rng, variant) for photo in probe_photos]
        for name, pipe in pipes.items():
            gallery, enrolled = galleries[name]
            out[name][variant][width] = _cell(pipe, name, people, probes, gallery, enrolled, width)
    return {"results": out, "people": len(people), "enrolled": {n: int(g[1].sum()) for n, g in galleries.items()},
            "widths": list(widths), "variants": list(variants), "source": str(root)}


def stability(pipes: dict, portrait: np.ndarray, frames: int = STABILITY_FRAMES, seed: int = 0) -> dict:
    """Median (and min) cosine of the portrait in `make demo`'s door frames against its own enrolment."""
    from convert.demo_faces import door_frame as demo_frame

    out = {}
    for name, pipe in pipes.items():
        ref = pipe.embed(portrait)[0]
        rng = np.random.default_rng(seed)
        cos = []
        for _ in range(frames):
            e = pipe.embed(demo_frame(portrait, rng))[0]
            cos.append(-1.0 if e is None or ref is None else
                       float(e @ ref / (np.linalg.norm(e) * np.linalg.norm(ref))))
        out[name] = {"median_cosine": float(np.median(cos)), "min_cosine": float(np.min(cos)), "frames": frames}
    return out

"""Named alignment templates, so a face CNN other than dlib's gets chips cut the way it was trained on
(`facelock convert --template NAME`; the bundle then carries the points, scaled to its chip size).

All three are in the landmark point set (eye centres, nose tip, mouth corners: `edge.types.Landmark`),
which is what the face-landmark model gives and what 5-point face-alignment templates are made of:

- `dlib150`: the packaged template (`alignment_template.json`, measured against dlib's own chips on LFW
  train people by `benchmarks/derive_template.py`). dlib's ResNet port, the product's model.
- `arcface112`: InsightFace's standard 5-point template for 112x112 ArcFace chips (`arcface_dst` in
  insightface/utils/face_align.py: left eye (38.2946, 51.6963), right eye (73.5318, 51.5014), nose
  (56.0252, 71.7366), mouth corners (41.5493, 92.3655) and (70.7299, 92.2041), "left" meaning image-left,
  i.e. the subject's right). Equal weights, as InsightFace's unweighted similarity fit.
- `facenet160`: FaceNet has no published landmark template (its chips are MTCNN boxes with a 32 px margin,
  resized to 160). Derived, not measured: arcface112 scaled to a 128 px face region and centred in 160
  (16 px margin on each side). Check a FaceNet model's figures in `convert`'s report before trusting it.

A preset asked for at another chip size is scaled about the chip (pixel centres on integers:
x' = (x + 0.5) * size / native - 0.5), e.g. `arcface112` at 128.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from edge.errors import ConfigError
from edge.vision.align import LANDMARK_NAMES, AlignTemplate, load_template

# InsightFace arcface_dst, by landmark name (right = the subject's right = image-left).
ARCFACE_112 = {
    "right_eye": (38.2946, 51.6963),
    "left_eye": (73.5318, 51.5014),
    "nose_tip": (56.0252, 71.7366),
    "right_mouth_corner": (41.5493, 92.3655),
    "left_mouth_corner": (70.7299, 92.2041),
}
PRESETS = {"dlib150": 150, "arcface112": 112, "facenet160": 160}  # name -> native chip size


def scale_template(template: AlignTemplate, chip_size: int) -> AlignTemplate:
    """The same template for chips of `chip_size` (points scaled about the chip, weights kept)."""
    if chip_size == template.chip_size:
        return template
    s = chip_size / template.chip_size
    meta = dict(template.meta or {})
    meta["scaled_from"] = template.chip_size
    return replace(template, points=(template.points + 0.5) * s - 0.5, chip_size=chip_size, meta=meta)


def _arcface112() -> AlignTemplate:
    points = np.array([ARCFACE_112[n] for n in LANDMARK_NAMES], dtype=np.float64)
    return AlignTemplate(points=points, weights=np.ones(len(points)), chip_size=112, meta={
        "preset": "arcface112", "weights_name": "equal",
        "reference": "InsightFace arcface_dst (insightface/utils/face_align.py), 5 points on 112x112 chips",
        "coordinates": "chip pixels, pixel centres on integers"})


def _facenet160() -> AlignTemplate:
    arc = _arcface112()
    points = arc.points * (128 / 112) + 16.0
    return AlignTemplate(points=points, weights=arc.weights.copy(), chip_size=160, meta={
        "preset": "facenet160", "weights_name": "equal",
        "reference": "derived: arcface112 scaled to a 128 px face region, centred in a 160x160 chip (16 px "
                     "margin); FaceNet itself publishes no landmark template",
        "coordinates": "chip pixels, pixel centres on integers"})


def preset_template(name: str, chip_size: int | None = None) -> AlignTemplate:
    """A named template (`PRESETS`), at its native chip size or scaled to `chip_size`."""
    if name == "dlib150":
        base = load_template()
        base = replace(base, meta={**(base.meta or {}), "preset": "dlib150"})
    elif name == "arcface112":
        base = _arcface112()
    elif name == "facenet160":
        base = _facenet160()
    else:
        raise ConfigError(f"alignment template {name!r}: not a preset (one of {', '.join(PRESETS)}) "
                          "nor a template file")
    return scale_template(base, chip_size) if chip_size else base


def native_preset(chip_size: int) -> str | None:
    """The preset made for chips of this size, or None."""
    return next((name for name, size in PRESETS.items() if size == chip_size), None)


def resolve_template(spec: str | Path, chip_size: int) -> tuple[str, AlignTemplate]:
    """(name, template) for `spec`: a preset name (scaled to `chip_size`) or a template JSON file, which
    must be made for `chip_size`. The name is the preset's, or "custom" for a file."""
    if str(spec) in PRESETS:
        return str(spec), preset_template(str(spec), chip_size)
    path = Path(spec)
    if path.suffix != ".json" and not path.exists():
        preset_template(str(spec))  # raises: neither a preset nor a file
    template = load_template(path)
    if template.chip_size != chip_size:
        raise ConfigError(f"{path}: a template for {template.chip_size}x{template.chip_size} chips, the "
                          f"model takes {chip_size}x{chip_size}")
    return "custom", template

"""The operating point the service runs at: the cosine a vote needs for a clear face, a dim one and a soft
one (edge.types.FaceCondition), and the contrast under which a face is refused as too dark.

The config's values where it sets them; otherwise the bundle's, chosen by `facelock convert` on its own
model's scores at the target false-accept rate (no default fits every model): `threshold` on training
people's photos, `dim_threshold` and `soft_threshold` on their photos in dim and blurred door frames
(edge.models.bundle). Without a dim-light threshold (an older bundle, a bare model) dim faces are refused as
too dark, as before there was one, unless the config sets `[quality] min_contrast` itself; without a
soft-face threshold soft faces vote at `threshold`, as before there was one.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from edge.identity.decide import DecideOptions
from edge.vision.quality import QualityOptions

log = logging.getLogger(__name__)

# Per face condition (edge.types.FaceCondition): its key in the bundle's threshold, the `[decide]` field it
# fills, the `[quality]` fields of the gate's floor and of the condition's upper limit, and words for the log.
_CONDITIONS = (("dim", "dim_threshold", "min_contrast", "dim_contrast", "dim-light", "contrast",
                ("darkest", "darker")),
               ("soft", "soft_threshold", "min_sharpness", "soft_sharpness", "soft-face", "sharpness",
                ("blurriest", "blurrier")))


def operating_point(config: Any, bundle: Any = None) -> tuple[DecideOptions, QualityOptions]:
    """(`[decide]`, `[quality]`) for `config` (edge.service.config.Config) with `bundle`
    (edge.models.bundle.Bundle, or None for a bare model): see the module docstring."""
    decide, quality = config.decide, config.quality
    if bundle is not None and not config.is_set("decide", "threshold"):
        decide = replace(decide, threshold=bundle.threshold.cosine)
        log.info("decide: threshold %.4f from the bundle", decide.threshold)
    for key, field, floor, upper, name, measure, extreme in _CONDITIONS:
        chosen = getattr(bundle.threshold, key) if bundle is not None else None
        if chosen is None or config.is_set("decide", field):
            continue
        decide = replace(decide, **{field: chosen.cosine})
        log.info("decide: %s threshold %.4f from the bundle (faces of %s %g-%g)", name, chosen.cosine, measure,
                 chosen.floor, getattr(quality, upper))
        if getattr(quality, floor) < chosen.floor:
            log.warning("[quality] %s %g is under %g, the %s faces the bundle's %s threshold was chosen on: "
                        "%s faces let strangers through more often", floor, getattr(quality, floor), chosen.floor,
                        extreme[0], name, extreme[1])
    if decide.dim_threshold <= 0 and not config.is_set("quality", "min_contrast") \
            and quality.min_contrast < quality.dim_contrast:
        quality = replace(quality, min_contrast=quality.dim_contrast)
        log.info("quality: no dim-light threshold, so faces under contrast %g are refused as too dark",
                 quality.dim_contrast)
    return decide, quality

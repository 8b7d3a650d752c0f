"""The operating point the service runs at: the cosine a vote needs, in good light and in dim light, and
the contrast under which a face is refused as too dark.

The config's values where it sets them; otherwise the bundle's, chosen by `facelock convert` on its own
model's scores at the target false-accept rate (no default fits every model): `threshold` on training
people's photos, `dim_threshold` on their photos in dim door frames (edge.models.bundle). Without a dim-light
threshold (an older bundle, a bare model) dim faces are refused as too dark, as before there was one,
unless the config sets `[quality] min_contrast` itself.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from edge.identity.decide import DecideOptions
from edge.vision.quality import QualityOptions

log = logging.getLogger(__name__)


def operating_point(config: Any, bundle: Any = None) -> tuple[DecideOptions, QualityOptions]:
    """(`[decide]`, `[quality]`) for `config` (edge.service.config.Config) with `bundle`
    (edge.models.bundle.Bundle, or None for a bare model): see the module docstring."""
    decide, quality = config.decide, config.quality
    if bundle is not None and not config.is_set("decide", "threshold"):
        decide = replace(decide, threshold=bundle.threshold.cosine)
        log.info("decide: threshold %.4f from the bundle", decide.threshold)
    dim = bundle.threshold.dim if bundle is not None else None
    if dim is not None and not config.is_set("decide", "dim_threshold"):
        decide = replace(decide, dim_threshold=dim.cosine)
        log.info("decide: dim-light threshold %.4f from the bundle (faces of contrast %g-%g)", dim.cosine,
                 dim.min_contrast, quality.dim_contrast)
        if quality.min_contrast < dim.min_contrast:
            log.warning("[quality] min_contrast %g is under %g, the darkest faces the bundle's dim-light "
                        "threshold was chosen on: darker faces let strangers through more often",
                        quality.min_contrast, dim.min_contrast)
    if decide.dim_threshold <= 0 and not config.is_set("quality", "min_contrast") \
            and quality.min_contrast < quality.dim_contrast:
        quality = replace(quality, min_contrast=quality.dim_contrast)
        log.info("quality: no dim-light threshold, so faces under contrast %g are refused as too dark",
                 quality.dim_contrast)
    return decide, quality

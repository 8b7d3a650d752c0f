"""Decoding image files into the frames `edge` works on: uint8 RGB (see edge/types.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.errors import ImageError


def read_image_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 RGB, with an error that names the file."""
    import cv2

    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from exc
    if data.size == 0:
        raise ImageError(f"{path}: empty file")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"{path}: not a decodable image (corrupt, truncated or unsupported format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

"""Plane geometry the vision stages share: least-squares similarity transforms, and sampling a square
patch of a frame through one (with a Gaussian pyramid when the patch is much smaller than what it covers).

Coordinates: pixel centres on integers (OpenCV's and dlib's convention).
"""

from __future__ import annotations

import math

import numpy as np


def estimate_similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The similarity transform (2, 3) that maps `src` points onto `dst` with the least weighted squared
    error (Umeyama 1991, with the reflection case excluded so a mirrored keypoint set cannot flip the chip).
    `dst ~= M[:, :2] @ src + M[:, 2]`."""
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape:
        raise ValueError(f"estimate_similarity: src {src.shape} and dst {dst.shape} differ")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (len(src),) or np.any(w < 0) or np.count_nonzero(w) < 2:
        raise ValueError("estimate_similarity: need one non-negative weight per point, two or more non-zero")
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    var_s = w @ (xs**2).sum(1)
    if var_s <= 1e-12:
        raise ValueError("estimate_similarity: source points coincide")
    cov = (xd * w[:, None]).T @ xs
    u, d, vt = np.linalg.svd(cov)
    s = np.array([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) >= 0 else -1.0])
    r = (u * s) @ vt
    c = (d * s).sum() / var_s
    t = mu_d - c * r @ mu_s
    return np.hstack([c * r, t[:, None]])


def invert_similarity(m: np.ndarray) -> np.ndarray:
    a = np.asarray(m, dtype=np.float64)[:, :2]
    inv = np.linalg.inv(a)
    return np.hstack([inv, -inv @ np.asarray(m, dtype=np.float64)[:, 2:]])


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ np.asarray(m, dtype=np.float64)[:, :2].T + np.asarray(m, dtype=np.float64)[:, 2]


def pyramid_levels(scale: float, max_step: float = 2.0) -> int:
    """How many times to halve a frame so that `scale` (chip px per frame px) is >= 1/max_step."""
    if scale <= 0:
        raise ValueError("scale must be positive")
    if scale * max_step >= 1.0:
        return 0
    return math.ceil(math.log2(1.0 / (scale * max_step)) - 1e-9)


def warp_chip(frame: np.ndarray, matrix: np.ndarray, size: int, max_step: float = 2.0) -> np.ndarray:
    """Sample the chip `matrix` (frame -> chip) describes, through a Gaussian pyramid when the face is big.
    Only the part of the frame the chip needs is pyramided, so a face in a 12 MP photo stays cheap."""
    import cv2

    m = np.asarray(matrix, dtype=np.float64)
    scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
    levels = pyramid_levels(scale, max_step)
    if levels:
        h, w = frame.shape[:2]
        corners = transform_points(invert_similarity(m), [[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]])
        margin = 4 * 2**levels  # covers the 5-tap kernel at every level
        x0 = int(max(0, math.floor(corners[:, 0].min()) - margin))
        y0 = int(max(0, math.floor(corners[:, 1].min()) - margin))
        x1 = int(min(w, math.ceil(corners[:, 0].max()) + margin + 1))
        y1 = int(min(h, math.ceil(corners[:, 1].max()) + margin + 1))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            src = frame[y0:y1, x0:x1]
            done = 0
            while done < levels and min(src.shape[:2]) >= 4:
                src = cv2.pyrDown(src)  # level pixel p sits at 2p in the level above
                done += 1
            f = 2.0**done
            m = np.hstack([m[:, :2] * f, (m[:, :2] @ np.array([x0, y0], dtype=np.float64) + m[:, 2])[:, None]])
            frame = src
        # else: the chip lies outside the frame; sampling the full frame gives the (black) chip.
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))

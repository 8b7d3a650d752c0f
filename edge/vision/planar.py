"""Plane or not: the geometry the liveness checks share (edge.vision.liveness, .texture, .challenge).

Every view of a plane (a print, a screen) is a homography of every other; a rigid 3D shape adds, to first
order, a shift of each point in proportion to its depth. `depth_fit` fits both in one linear DLT and
`parallax` measures the depth term. Points are (N, 2) frame px; figures are in face radii (`radius`).
"""

from __future__ import annotations

import math

import numpy as np


def _normaliser(pts: np.ndarray) -> np.ndarray:
    """Hartley's normalisation (3, 3): centroid to the origin, mean distance sqrt(2)."""
    c = pts.mean(0)
    d = float(np.sqrt(((pts - c) ** 2).sum(1)).mean())
    s = math.sqrt(2.0) / max(d, 1e-12)
    return np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1.0]])


def apply_homography(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    x, y = pts[:, 0], pts[:, 1]  # written out: a BLAS call per tiny product costs more than the sums
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    return np.column_stack([(h[0, 0] * x + h[0, 1] * y + h[0, 2]) / w, (h[1, 0] * x + h[1, 1] * y + h[1, 2]) / w])


def _null_vector(rows: np.ndarray) -> np.ndarray:
    """The unit vector v minimising |rows @ v|: the normal equations' smallest eigenvector (11 x 11 at most;
    well conditioned on Hartley-normalised points, and ~20x cheaper than the SVD of the 936-row system)."""
    return np.linalg.eigh(rows.T @ rows)[1][:, 0]


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 least-squares similarity taking `src` to `dst` (Umeyama, no reflection)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    u, d, vt = np.linalg.svd(xd.T @ xs)
    s = np.array([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) >= 0 else -1.0])
    r = (u * s) @ vt
    c = (d * s).sum() / max(float((xs**2).sum()), 1e-12)
    m = np.eye(3)
    m[:2, :2], m[:2, 2] = c * r, mu_d - c * r @ mu_s
    return m


def radius(pts: np.ndarray) -> float:
    """The face's size: RMS distance of the mesh points from their centroid (about 0.3 face widths)."""
    return float(np.sqrt(((pts - pts.mean(0)) ** 2).sum(1).mean()))


def rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).sum(1).mean()))


def depth_fit(ref: np.ndarray, ref_z: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The joint fit of `parallax()`: (the homography part applied to `ref`, that plus the depth term),
    both (N, 2) frame px. Their difference is how each point moved because of its depth: on a turning head
    the nose's points move the way the head turned, against the eye plane."""
    ts, td = _normaliser(ref), _normaliser(pts)
    a, b = apply_homography(ts, ref), apply_homography(td, pts)
    z = (ref_z - ref_z.mean()) * ts[0, 0]
    n = len(a)
    rows = np.zeros((2 * n, 11))
    rows[0::2, 0:2], rows[0::2, 2] = a, 1.0
    rows[0::2, 6:8], rows[0::2, 8], rows[0::2, 9] = -b[:, :1] * a, -b[:, 0], z
    rows[1::2, 3:5], rows[1::2, 5] = a, 1.0
    rows[1::2, 6:8], rows[1::2, 8], rows[1::2, 10] = -b[:, 1:] * a, -b[:, 1], z
    theta = _null_vector(rows)
    h = theta[:9].reshape(3, 3)
    w = h[2, 0] * a[:, 0] + h[2, 1] * a[:, 1] + h[2, 2]
    u = h[0, 0] * a[:, 0] + h[0, 1] * a[:, 1] + h[0, 2]
    v = h[1, 0] * a[:, 0] + h[1, 1] * a[:, 1] + h[1, 2]
    back = np.linalg.inv(td)
    flat = apply_homography(back, np.column_stack([u / w, v / w]))
    full = apply_homography(back, np.column_stack([(u + z * theta[9]) / w, (v + z * theta[10]) / w]))
    return flat, full


def parallax(ref: np.ndarray, ref_z: np.ndarray, pts: np.ndarray) -> tuple[float, float, np.ndarray]:
    """How far `pts` (N, 2) moved from `ref` (N, 2) in the way depth makes points move, and what is left.

    Any view of a rigid 3D point set is, to first order, a homography of another plus a shift proportional
    to each point's depth (z x a 2D vector: the out-of-plane turn). One linear DLT fits both (11 unknowns,
    Hartley-normalised; `ref_z` is the model's depth of the reference points, used only as the shape of
    that shift). Returns (the depth term's RMS size, the joint fit's RMS residual) in face radii, and the
    fit's homography part applied to `ref` (frame px). On a plane the depth term is ~0 however the plane
    moves; the jitter of the mesh, spread over 468 points, hardly feeds it (it is one 2D vector), which is
    why this is steadier than the plain homography residual. `depth_fit` gives the term itself."""
    flat, full = depth_fit(ref, ref_z, pts)
    size = radius(pts)
    return rms(full, flat) / size, rms(full, pts) / size, flat

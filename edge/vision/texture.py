"""Texture parallax: how the face's own skin and features move between two frames, tracked in the pixels.

The landmark model's mesh is a learned guess of a face's 3D shape: shown a print tilted by 20 degrees, it
takes part of the foreshortening for a head turn and moves its nose points as a head's would (up to 0.06
face radii of depth term on hand-held prints of LFW train people, as much as a head turned 8 degrees).
The picture itself cannot lie that way: every point of a print or a screen moves by one homography,
whatever the model makes of it. So the passive check's depth evidence comes from points tracked in the
image (corners of the eyes, brows, nostrils, lips, skin texture): `face_patch` keeps a small grey patch of
the face per frame; `tracked_pairs` warps a later frame's patch onto the first by the homography of the
two meshes (the model's guess of the motion, hallucination included), tracks the first frame's corners
into it with pyramidal Lucas-Kanade (forward and back, so a lost track is dropped), and fits the tracked
points (`tracked_pairs`, `texture_depth`: `edge.vision.planar.depth_fit`, homography plus a depth term shaped by the mesh's z at each
point). On a plane the depth term is the tracking noise; on a head it is the nose moving against the eyes.

Cost: the corners once per run, then one forward-backward track per new frame (1.5-2.5 ms on the
benchmark machine's AMD EPYC, 96-px patches, 80 corners); a sample keeps its patch (<= ~12 KB).

Units: patches are at most PATCH_FACE_PX wide per face (smaller faces keep their frame pixels); figures are
in face radii of the mesh, like the other liveness figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.vision.planar import depth_fit, radius, rms

PATCH_FACE_PX = 96.0  # the face's width in a patch at most: more pixels add cost, not evidence
MIN_TRACKS = 12  # fewer tracked points than this give no figure (a blurred or dark face)
DETAIL_SIGMA_PX = 4.0  # what changes over more than ~this many patch px is taken for light, not texture
FINE_SIGMA_PX = 1.2  # ... and what changes over fewer than ~this, for moire
DETAIL_GAIN = 300.0  # log-brightness detail to uint8 levels (the tracker wants 8-bit images)
FB_MAX_PX = 0.6  # a track that does not come back to within this (patch px) of its start is dropped


@dataclass(frozen=True, eq=False)
class TexturePatch:
    """A frame's grey face patch: `grey` (h, w) uint8; patch px = (frame px - origin) * scale."""

    grey: np.ndarray
    origin: np.ndarray  # (2,) frame px of the patch's top-left pixel
    scale: float

    @property
    def from_frame(self) -> np.ndarray:
        """The 3x3 map frame px -> patch px."""
        s, (x, y) = self.scale, self.origin
        return np.array([[s, 0.0, -s * x], [0.0, s, -s * y], [0.0, 0.0, 1.0]])


def face_patch(frame: np.ndarray | None, points: np.ndarray) -> TexturePatch | None:
    """The grey patch around the mesh's `points` (N, 2, frame px) in an RGB (or grey) `frame`; None when
    there is no frame or the face is too small or off the frame."""
    if frame is None:
        return None
    import cv2

    lo, hi = points.min(0), points.max(0)
    width = float(hi[0] - lo[0])
    h, w = frame.shape[:2]
    margin = 0.12 * width
    x0, y0 = (max(0, int(np.floor(v - margin))) for v in lo)
    x1, y1 = min(w, int(np.ceil(hi[0] + margin))), min(h, int(np.ceil(hi[1] + margin)))
    if width < 16 or x1 - x0 < 16 or y1 - y0 < 16:
        return None
    crop = frame[y0:y1, x0:x1]
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else np.ascontiguousarray(crop)
    scale = min(1.0, PATCH_FACE_PX / width)
    if scale < 1.0:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return TexturePatch(_detail(grey), np.array([x0, y0], np.float64), scale)


def _detail(grey: np.ndarray) -> np.ndarray:
    """The patch's detail: log brightness, a little blurred, less its wider blur, as uint8 around 128. Light
    that changes slowly across the face (a screen's refresh bands rolling down it, a cloud, the camera's
    exposure) is a gain, an offset in log brightness, which the wide blur takes away; the fine blur takes
    most of a screen's moire (fringes of 3-7 px where the screen's pixel grid beats with the sensor's, which
    move with the camera rather than with the screen). The tracker would follow either otherwise."""
    import cv2

    log = cv2.GaussianBlur(np.log1p(grey.astype(np.float32)), (0, 0), FINE_SIGMA_PX)
    high = log - cv2.GaussianBlur(log, (0, 0), DETAIL_SIGMA_PX)
    return np.clip(128.0 + DETAIL_GAIN * high, 0, 255).astype(np.uint8)


def texture_corners(patch: TexturePatch, points: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the reference frame's trackable corners inside the face (K, 2, frame px), the mesh's depth at each
    (K,): the mean z of its three nearest mesh points)."""
    import cv2

    hull = cv2.convexHull(((points - patch.origin) * patch.scale).astype(np.float32))
    mask = np.zeros(patch.grey.shape, np.uint8)
    cv2.fillConvexPoly(mask, np.round(hull[:, 0]).astype(np.int32), 255)
    mask = cv2.erode(mask, np.ones((5, 5), np.uint8))
    found = cv2.goodFeaturesToTrack(patch.grey, maxCorners=80, qualityLevel=0.01, minDistance=3, mask=mask,
                                    blockSize=5)
    if found is None:
        return np.zeros((0, 2)), np.zeros(0)
    pts = found[:, 0].astype(np.float64) / patch.scale + patch.origin
    d2 = ((pts[:, None, :] - points[None, :, :]) ** 2).sum(2)
    near = np.argpartition(d2, 3, axis=1)[:, :3]
    return pts, depth[near].mean(1)


def track(ref: TexturePatch, cur: TexturePatch, ref_pts: np.ndarray, motion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(where `ref_pts` (K, 2, frame px of the reference) are in the current frame (K, 2, frame px), which
    tracks held (K,) bool). `motion`: the 3x3 homography reference frame px -> current frame px that the
    current patch is warped by before tracking, so that only the residual is tracked."""
    import cv2

    to_cur = cur.from_frame @ motion @ np.linalg.inv(ref.from_frame)  # reference patch px -> current patch px
    h, w = ref.grey.shape
    warped = cv2.warpPerspective(cur.grey, to_cur, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_REPLICATE)
    p0 = ((ref_pts - ref.origin) * ref.scale).astype(np.float32).reshape(-1, 1, 2)
    lk = {"winSize": (11, 11), "maxLevel": 2, "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)}
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(ref.grey, warped, p0, None, **lk)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(warped, ref.grey, p1, p0.copy(), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **lk)
    ok = (st1[:, 0] == 1) & (st2[:, 0] == 1) & (np.linalg.norm((back - p0)[:, 0], axis=1) < FB_MAX_PX)
    q = p1[:, 0].astype(np.float64)
    q = np.column_stack([q, np.ones(len(q))]) @ to_cur.T
    q = q[:, :2] / q[:, 2:]
    return q / cur.scale + cur.origin, ok


def mesh_homography(ref: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """The least-squares homography taking the reference mesh's points to the current one's (frame px)."""
    import cv2

    h, _ = cv2.findHomography(ref.astype(np.float32), cur.astype(np.float32), 0)
    return np.eye(3) if h is None else h


def tracked_pairs(ref_patch: TexturePatch, ref_points: np.ndarray, tracked: tuple[np.ndarray, np.ndarray],
                  cur_patch: TexturePatch, cur_points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The reference frame's corners `tracked` = (frame px, mesh depth) that held when tracked into the
    current frame: (their reference px (K, 2), depth (K,), current px (K, 2)); None under MIN_TRACKS."""
    pts, z = tracked
    if len(pts) < MIN_TRACKS:
        return None
    moved, ok = track(ref_patch, cur_patch, pts, mesh_homography(ref_points, cur_points))
    if ok.sum() < MIN_TRACKS:
        return None
    return pts[ok], z[ok], moved[ok]


def texture_depth(a: np.ndarray, az: np.ndarray, b: np.ndarray, cur_points: np.ndarray) -> float:
    """The depth term (`depth_fit`) of tracked points `a` (reference px, depth `az`) -> `b` (current px), in
    radii of the current mesh `cur_points`; refitted once without the worst tracks (an eyelid, a glint)."""
    flat, full = depth_fit(a, az, b)
    err = np.linalg.norm(full - b, axis=1)
    keep = err <= max(3.0 * float(np.median(err)), 0.5)
    if keep.sum() >= MIN_TRACKS and not keep.all():
        flat, full = depth_fit(a[keep], az[keep], b[keep])
    return rms(full, flat) / radius(cur_points)

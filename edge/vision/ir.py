"""Near-infrared evidence: is the face the colour camera sees there in the near-infrared view too?

For builds with a NoIR camera and an 850 nm illuminator (edge.device.ir gives each frame its IR view). A
phone or tablet screen emits visible light only, and its LCD or OLED stack passes little of the
illuminator's light back: in the IR view (a second camera behind an IR-pass filter, or the illuminator-lit
frame minus the unlit one) a face on a screen is not there, only dark glass and perhaps the illuminator's
glint. Skin reflects 850 nm well, so a real face is. The face-landmark model is what looks: its
face-presence score on the IR view, at the colour frame's face (grey, as three channels; the model's crop
is stretched to its own contrast, so a dim IR view still counts).

What it stops: faces shown on a screen (a photo or a replayed video: the one attack the passive 3D checks
cannot stop). What it does not: paper prints reflect near-infrared as skin does, and carbon inks and toner
show the face in it (some dye inks do not) — the passive 3D checks and the challenge are for prints — nor a
mask. The presence figure needs the two views registered: the same camera (alternate mode), or two cameras
side by side with the same field of view (the model's crop has margin for their parallax at door distance).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge.types import Face, LivenessVerdict
from edge.vision.landmarks import detection_roi, mesh_roi
from edge.vision.layered import median_verdict


def ir_view(ir: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The IR view (H, W) or (H, W, 3) as a (h, w, 3) uint8 image on the colour frame's pixel grid."""
    import cv2

    a = np.asarray(ir)
    if a.ndim == 3:
        a = a.mean(axis=2)
    a = np.clip(a, 0, 255).astype(np.uint8)
    h, w = shape[:2]
    if a.shape != (h, w):
        a = cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA if a.shape[1] > w else cv2.INTER_LINEAR)
    return np.repeat(a[:, :, None], 3, axis=2)


class IrLayer:
    """The IR view as a liveness layer (edge.vision.layered): per frame the landmark model's face-presence
    score on the IR view at the face, over the attempt the median of the latest against `min_presence`."""

    name = "ir"

    def __init__(self, landmarker, min_presence: float = 0.5, min_frames: int = 3, max_frames: int = 15):
        self.landmarker = landmarker
        self.min_presence, self.min_frames, self.max_frames = min_presence, min_frames, max_frames

    def score(self, frame: np.ndarray, face: Face, ir: np.ndarray | None = None) -> float | None:
        """The face-presence score in the IR view (None: this frame came without one)."""
        if ir is None:
            return None
        # One run, on the crop the colour frame's mesh gives (the detection's, without a mesh): the views
        # are registered, and only the presence is wanted, not refined points.
        matrix = mesh_roi(np.asarray(face.mesh, np.float64)) if face.mesh is not None else detection_roi(face)
        return float(self.landmarker.mesh(ir_view(ir, frame.shape), matrix)[1])

    def verdict(self, scores: Sequence[float]) -> LivenessVerdict:
        return median_verdict(self.name, scores, self.min_presence, self.min_frames, self.max_frames,
                              "face presence in the near-infrared view",
                              "no face there, as on a phone or tablet screen")

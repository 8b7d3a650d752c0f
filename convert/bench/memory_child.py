"""The child process of the peak-memory measurement: load one pipeline, run it on some frames, print its
peak resident set as JSON. One process per pipeline, so that the peak is that pipeline's alone; the facelock
ones import `edge` only (what the board runs: no TensorFlow), and so does this module at import time.

    python -m convert.bench.memory_child ours|peer MODEL THREADS FILE...
"""

from __future__ import annotations

import json
import resource
import sys


def run_ours(model: str, threads: int, frames: list) -> None:
    from edge.models.store import DETECTOR, model_path
    from edge.vision.align import FaceAligner
    from edge.vision.build import Stages, detector, landmarker
    from edge.vision.embed import TFLiteEmbedder

    marks = landmarker(num_threads=threads)
    al, emb = FaceAligner(landmarker=marks), TFLiteEmbedder(model, num_threads=threads)
    pipeline = Stages(detector(num_threads=threads), al, emb, marks,
                      detector(model_path(DETECTOR), num_threads=threads)).pipeline()
    for f in frames:
        face = pipeline.subject(f).face
        if face is not None:
            emb.embed(al.align(f, face).chip[None])


def run_peer(frames: list) -> None:
    import dlib

    from edge.models.store import DLIB_RESNET, DLIB_SHAPE5, model_path

    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(model_path(DLIB_SHAPE5)))
    net = dlib.face_recognition_model_v1(str(model_path(DLIB_RESNET)))
    for f in frames:
        b = det(f, 1)
        if len(b):
            net.compute_face_descriptor(f, sp(f, b[0]))


def vmhwm_kib() -> int | None:
    """This process's peak resident set (VmHWM) in KiB, from /proc/self/status."""
    hwm = None
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return hwm


def main(argv: list[str]) -> int:
    kind, model, threads, files = argv[0], argv[1], int(argv[2]), argv[3:]
    from edge.images import read_image_rgb

    frames = [read_image_rgb(f) for f in files]
    if kind == "peer":
        run_peer(frames)
    else:
        run_ours(model, threads, frames)
    print(json.dumps({"ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "vmhwm_kib": vmhwm_kib(),
                      "modules_tensorflow": "tensorflow" in sys.modules}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

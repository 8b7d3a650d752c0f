"""`facelock bench`: measure facelock on this machine against face_recognition's pipeline, and write
`docs/benchmarks.md` with PNG plots.

Sections (each measured in this one run, on this machine, unless it says "cached"):
 1. accuracy (`accuracy`): ROC curves on LFW View 2 folds 6-10 (quick mode: the embedded demo faces) for the
    peer (`peer`: face_recognition's pipeline: dlib HOG detector, 5 landmarks, dlib ResNet), our float Keras
    port, the pruned float model, int8 (and the Edge TPU model when a bundle has one);
 2. speed (`speed`): per-stage latency (detect, align, embed, match) for float TFLite, int8 and the peer, on
    the same frames, at each thread count; model file sizes; peak resident memory of a child process per
    pipeline (`memory`, `memory_child`);
 3. the cost curve (`cost`): accuracy and int8 embed latency against sparsity, one `facelock convert` per
    sparsity (`conversions`: cached in the work folder, so a rerun with the same options reuses the bundle
    and its report);
 4. scaling (`scaling`): one match against 10 ... 100,000 templates;
 5. figure of merit (`merit`): the embedder's MACs per face (from the TFLite graph), the int8 MAC/s it
    achieves, and the int8 MAC/s the same runtime reaches on a large int8 convolution built here (the
    machine's peak).
`data` holds the options and the data set, `machine` the machine's description, `report` the markdown, and
`run` runs it all (`run_bench`).

The LFW rule (../shared/data/INDEX.md): everything tuned (fine-tune, calibration, threshold) uses `train`
people only; the numbers reported are on the pairs of folds 6-10, whose people are all `test` people.

Reuses convert.compress.run (the conversions), convert.compress.validate/metrics (ROC, AUC, TAR@FAR),
convert.datasets (aligned chips, cached) and edge (detector, aligner, embedders, matcher). The scripts in
benchmarks/ import their shared parts (the peer pipeline, latency loop, synthetic galleries) from here.

The names below are imported on first use, so that `python -m convert.bench.memory_child` loads `edge` only.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "BenchOptions": "data",
    "count_macs": "merit",
    "render": "report",
    "run_bench": "run",
    "summary": "report",
}
__all__ = ["BenchOptions", "count_macs", "render", "run_bench", "summary"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)

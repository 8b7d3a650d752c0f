"""Edge TPU readiness: list every op and tensor type of a TFLite model and check the Edge TPU compiler's
rules (fully 8-bit, static shapes, at most 3 dimensions larger than 1, supported ops; the compiler maps ops up
to the first unsupported one and leaves the rest to the CPU). Runs `edgetpu_compiler` when it is on PATH
(Coral's apt repository, x86-64 Debian only)."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Ops the Edge TPU compiler maps (Coral's published list), as TFLite builtin names.
EDGETPU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM",
    "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1",
    "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH",
    "SPLIT", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE",
    "TRANSPOSE_CONV", "HARD_SWISH", "DEQUANTIZE",
})
PARAMETER_CACHE_BYTES = 8 * 1024 * 1024  # on-chip; larger models stream parameters from the host each run


@dataclass(frozen=True)
class EdgeTpuReport:
    ops: dict[str, int]
    tensor_types: dict[str, int]
    problems: tuple[str, ...]
    parameter_bytes: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ready(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"ready": self.ready, "ops": self.ops, "tensor_types": self.tensor_types,
                "problems": list(self.problems), "parameter_bytes": self.parameter_bytes, "notes": list(self.notes)}


def _plain_interpreter(model_path: Path):
    """An interpreter without the default XNNPACK delegate, which would hide the model's own ops behind a
    single DELEGATE node."""
    from edge.vision.interpreter import check_tflite_file

    check_tflite_file(model_path)
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:  # pragma: no cover - convert installs ai_edge_litert with the edge extra
        import tensorflow as tf

        Interpreter, OpResolverType = tf.lite.Interpreter, tf.lite.experimental.OpResolverType
    interp = Interpreter(model_path=str(model_path),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    return interp


def check_edgetpu(model_path: str | Path) -> EdgeTpuReport:
    interp = _plain_interpreter(Path(model_path))
    ops = interp._get_ops_details()  # the public API has no op listing
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    problems: list[str] = []
    op_counts = Counter(op["op_name"] for op in ops)
    for name in sorted(op_counts):
        if name not in EDGETPU_OPS:
            problems.append(f"op {name} is not supported by the Edge TPU (it and everything after it run on CPU)")

    produced = {o for op in ops for o in op["outputs"] if o >= 0}
    model_inputs = {d["index"] for d in interp.get_input_details()}
    activations = produced | model_inputs
    constants = {i for op in ops for i in op["inputs"] if i >= 0} - activations
    type_counts: Counter[str] = Counter()
    dynamic: list[str] = []
    for idx in sorted(activations):
        t = tensors[idx]
        dtype = np.dtype(t["dtype"]).name
        type_counts[f"activation {dtype}"] += 1
        if dtype not in ("int8", "uint8"):
            problems.append(f"tensor {t['name']!r} is {dtype}, not 8-bit")
        if any(int(d) < 0 for d in t.get("shape_signature", t["shape"])):
            dynamic.append(t["name"])
        # Only the innermost three dimensions may be larger than 1.
        if any(int(d) > 1 for d in t["shape"][:-3]):
            problems.append(f"tensor {t['name']!r} has more than 3 dimensions larger than 1: {list(t['shape'])}")
    if dynamic:
        problems.append(f"{len(dynamic)} tensors have a dynamic shape (e.g. {dynamic[0]!r}); convert with a "
                        "fixed batch of 1")
    parameter_bytes = 0
    for idx in constants:
        t = tensors[idx]
        dtype = np.dtype(t["dtype"]).name
        type_counts[f"constant {dtype}"] += 1
        parameter_bytes += int(np.prod(t["shape"])) * np.dtype(t["dtype"]).itemsize
        if dtype not in ("int8", "uint8", "int32"):  # int32: biases, paddings, axes
            problems.append(f"constant {t['name']!r} is {dtype}, not 8-bit")
    notes = []
    if parameter_bytes > PARAMETER_CACHE_BYTES:
        notes.append(f"parameters ({parameter_bytes / 2**20:.1f} MiB) exceed the ~8 MiB on-chip cache: "
                     "they stream from the host on every inference (slower, still correct)")
    return EdgeTpuReport(dict(op_counts), dict(type_counts), tuple(dict.fromkeys(problems)), parameter_bytes,
                         tuple(notes))


def compile_edgetpu(model_path: str | Path, out_dir: str | Path) -> tuple[Path | None, str]:
    """Run edgetpu_compiler when available. Returns (compiled path or None, log / reason)."""
    compiler = shutil.which("edgetpu_compiler")
    if compiler is None:
        return None, ("edgetpu_compiler is not on PATH (it comes from Coral's apt repository and runs on x86-64 "
                      "Debian only); the bundle has no Edge TPU model")
    model_path, out_dir = Path(model_path), Path(out_dir)
    proc = subprocess.run([compiler, "-s", "-o", str(out_dir), str(model_path)], capture_output=True, text=True,
                          check=False)
    compiled = out_dir / f"{model_path.stem}_edgetpu.tflite"
    if proc.returncode != 0 or not compiled.is_file():
        return None, f"edgetpu_compiler failed ({proc.returncode}): {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return compiled, proc.stdout

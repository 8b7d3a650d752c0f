"""One way to run a .tflite model on any host: ai_edge_litert, else tflite_runtime, else TensorFlow's
tf.lite, with the Edge TPU delegate when asked for and available.

The board has no TensorFlow. tf.lite is only a last resort on a workstation that has nothing lighter, and
is imported inside `load_interpreter`, never at module import, so `import edge...` never pulls it in.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import logging
import mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import ModelError
from edge.vision.tflite_bounds import Truncated, check_bounds

log = logging.getLogger(__name__)

EDGETPU_LIBRARY = "libedgetpu.so.1"
# Offset 4..8 of every TFLite flatbuffer holds this file identifier.
TFLITE_MAGIC = b"TFL3"


@dataclass
class TFLiteModel:
    """A loaded interpreter with its tensors allocated. `run` takes inputs in `input_details` order and
    returns copies of the outputs in `output_details` order."""

    path: Path
    interpreter: Any
    backend: str  # "ai_edge_litert" | "tflite_runtime" | "tensorflow"
    delegate: str | None  # "edgetpu" or None (CPU, XNNPACK where the backend has it)
    num_threads: int
    input_details: list[dict] = field(default_factory=list)
    output_details: list[dict] = field(default_factory=list)

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(inputs) != len(self.input_details):
            raise ValueError(f"{self.path.name}: expected {len(self.input_details)} inputs, got {len(inputs)}")
        for detail, x in zip(self.input_details, inputs):
            x = np.asarray(x)
            if tuple(x.shape) != tuple(detail["shape"]) or x.dtype != detail["dtype"]:
                raise ValueError(
                    f"{self.path.name}: input {detail['name']!r} expects {tuple(detail['shape'])} "
                    f"{np.dtype(detail['dtype']).name}, got {x.shape} {x.dtype}"
                )
            self.interpreter.set_tensor(detail["index"], x)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(d["index"]).copy() for d in self.output_details]

    @property
    def description(self) -> str:
        return f"{self.backend}, delegate {self.delegate or 'none (CPU)'}, {self.num_threads} threads"


def quantize_input(detail: dict, x: np.ndarray) -> np.ndarray:
    """`x` (float pixels, batch included) as the input tensor `detail` takes it: as is for a float model,
    else rounded with the tensor's own scale and zero point (the facelock models: 1 and -128, exact)."""
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail["quantization"] if dtype != np.float32 else (1.0, 0)
    if dtype == np.int8 and scale == 1.0 and zero == -128 and np.asarray(x).dtype == np.uint8:
        return (np.asarray(x) ^ np.uint8(128)).view(np.int8)  # p - 128, exact, without a float copy
    x = np.asarray(x, dtype=np.float32)
    if dtype == np.float32:
        return x
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def dequantize_output(detail: dict, y: np.ndarray) -> np.ndarray:
    """An output tensor's values as float32 (its scale and zero point for an int8 one)."""
    if np.dtype(detail["dtype"]) == np.float32:
        return np.asarray(y, dtype=np.float32)
    scale, zero = detail["quantization"]
    return (np.asarray(y).astype(np.float32) - zero) * scale


def _backend() -> tuple[str, Any, Any] | None:
    """(name, Interpreter class, load_delegate) of the best backend that imports, or None."""
    for name, module in (("ai_edge_litert", "ai_edge_litert.interpreter"),
                         ("tflite_runtime", "tflite_runtime.interpreter")):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        return name, mod.Interpreter, getattr(mod, "load_delegate", None)
    if importlib.util.find_spec("tensorflow") is not None:
        # The last resort the design allows (a workstation without either runtime), imported by name only
        # here and only then: the board has no TensorFlow, and the edge path never loads it otherwise.
        try:
            tf = importlib.import_module("tensorflow")
        except ImportError:
            return None
        return "tensorflow", tf.lite.Interpreter, tf.lite.experimental.load_delegate
    return None


def check_tflite_file(path: Path) -> None:
    """Cheap checks that turn 'not a model' into a message naming the file, before any native code
    sees it (some runtimes abort the process on a malformed flatbuffer): the identifier, and that every
    part of the model lies inside the file (`edge.vision.tflite_bounds`)."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 16 or fh.read(8)[4:8] != TFLITE_MAGIC:
                raise ModelError(f"{path}: not a TFLite model (no {TFLITE_MAGIC.decode()} identifier at byte 4)")
            # A file cut short keeps its identifier; tflite-runtime 2.14 would follow its offsets out of the
            # file. Mapped, not read: only the tables are touched, not the weights.
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
                check_bounds(data)
    except FileNotFoundError:
        raise ModelError(f"{path}: no such model file") from None
    except Truncated as exc:
        raise ModelError(f"{path}: not a loadable TFLite model, truncated or corrupt ({exc})") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model ({exc.strerror})") from exc


def load_interpreter(model_path: str | os.PathLike, num_threads: int = 2, edgetpu: bool = False,
                     require_delegate: bool = False) -> TFLiteModel:
    """Load a .tflite model on the best available backend. With `edgetpu`, try the Edge TPU delegate and fall
    back to the CPU if it cannot be loaded (unless `require_delegate`, then raise ModelError)."""
    path = Path(model_path)
    check_tflite_file(path)
    backend = _backend()
    if backend is None:
        raise ModelError(
            f"{path}: no TFLite runtime installed (install ai-edge-litert, or tflite-runtime on 32-bit ARM)"
        )
    name, interpreter_cls, load_delegate = backend

    delegates = []
    delegate_name = None
    if edgetpu:
        try:
            if load_delegate is None:
                raise ValueError(f"{name} cannot load delegates")
            # Probe the library first: a failed load_delegate leaves a half-built object whose destructor
            # prints a traceback on some runtimes.
            ctypes.CDLL(EDGETPU_LIBRARY)
            delegates = [load_delegate(EDGETPU_LIBRARY)]
            delegate_name = "edgetpu"
        except (ValueError, OSError, RuntimeError) as exc:
            if require_delegate:
                raise ModelError(f"{path}: Edge TPU delegate {EDGETPU_LIBRARY} not loadable ({exc})") from exc
            log.warning("%s: Edge TPU delegate %s not loadable (%s); running on the CPU", path.name,
                        EDGETPU_LIBRARY, exc)
    try:
        kwargs: dict[str, Any] = {"model_path": str(path), "num_threads": num_threads}
        if delegates:
            kwargs["experimental_delegates"] = delegates
        interpreter = interpreter_cls(**kwargs)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        if delegates:
            what = "an Edge TPU model needs the Edge TPU; a CPU model cannot be compiled for it here"
            raise ModelError(f"{path}: failed to load with the Edge TPU delegate ({exc}); {what}") from exc
        raise ModelError(f"{path}: not a loadable TFLite model, truncated or corrupt ({exc})") from exc

    model = TFLiteModel(
        path=path,
        interpreter=interpreter,
        backend=name,
        delegate=delegate_name,
        num_threads=num_threads,
        input_details=list(interpreter.get_input_details()),
        output_details=list(interpreter.get_output_details()),
    )
    log.info("%s: %s", path.name, model.description)
    return model

"""Read dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) and rebuild it as a
tf_keras functional model that computes the same function.

The reader is our own, written from the file format (see ../shared/dlib_format.md in the project's
workspace): dlib serializes a nested chain of C++ layer objects, so the file is the version tags of every
wrapper outermost-first, then the input layer, then each layer's details innermost-first. Tag and skip
wrappers look identical in the bytes, so we walk the *known* network structure (`ANET_LAYERS`) and use each
record's version string as a checksum of where we are.

The Keras model differs from dlib's graph only where the result is provably the same:
- the input takes RGB pixel values in [0, 255]; dlib's `(x - mean) / 256` is folded into the first
  convolution (exact: that convolution has no padding, so no zero-padded pixels see the shift). This also
  makes the int8 input quantization exact (scale 1, zero point -128);
- each per-channel affine (dlib's frozen batch norm) is folded into the convolution before it;
- dlib's zero-padded residual add (both tensors anchored at index 0, result of the larger shape) is a fixed,
  non-trainable 1x1 convolution that places the shortcut's channels first and zeros after them, plus a
  bottom/right `ZeroPadding2D` on the smaller spatial map. These are built-in layers only, so the model
  saves, prunes and converts to TFLite without custom objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convert.errors import ConvertError
from edge.errors import ModelError
from edge.types import CHIP_SIZE, EMBEDDING_DIM

KERAS_MODEL_NAME = "dlib_resnet_v1"

# --------------------------------------------------------------------------------------------------
# The network, input -> output, as dlib's `anet_type` unrolls. Each entry is (kind, arg).


def _ares(n: int) -> list[tuple[str, int]]:
    # relu(affine(con(relu(affine(con(x))))) + x), with tag1 marking x
    return [("tag1", 0), ("con", n), ("affine", n), ("relu", 0), ("con", n), ("affine", n),
            ("add_prev1", 0), ("relu", 0)]


def _ares_down(n: int) -> list[tuple[str, int]]:
    # relu(avg_pool(x) (+) affine(con(relu(affine(con_s2(x)))))), tag1 = x, tag2 = block output
    return [("tag1", 0), ("con_s2", n), ("affine", n), ("relu", 0), ("con", n), ("affine", n),
            ("tag2", 0), ("skip1", 0), ("avg_pool", 2), ("add_prev2", 0), ("relu", 0)]


ANET_LAYERS: list[tuple[str, int]] = (
    [("con7", 32), ("affine", 32), ("relu", 0), ("max_pool", 3)]
    + _ares(32) * 3
    + _ares_down(64) + _ares(64) * 3
    + _ares_down(128) + _ares(128) * 2
    + _ares_down(256) + _ares(256) * 2
    + _ares_down(256)
    + [("avg_pool_everything", 0), ("fc", EMBEDDING_DIM)]
)
_WRAPPERS_ONLY = {"tag1", "tag2", "skip1"}  # no details record; version 1 in the file

# --------------------------------------------------------------------------------------------------
# Serialization primitives (dlib/serialize.h)


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data = data
        self.pos = 0
        self.path = path

    def fail(self, what: str) -> ModelError:
        return ModelError(
            f"{self.path}: not a dlib face-recognition ResNet file, or truncated/corrupt "
            f"(at byte {self.pos} of {len(self.data)}: {what})"
        )

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail(f"needed {n} more bytes")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def integer(self, unsigned: bool = False) -> int:
        control = self.take(1)[0]
        n = control & 0x0F
        if n == 0 or n > 8 or control & 0x70 or (unsigned and control & 0x80):
            raise self.fail(f"bad integer control byte 0x{control:02x}")
        value = int.from_bytes(self.take(n), "little")
        return -value if control & 0x80 else value

    def boolean(self) -> bool:
        b = self.take(1)
        if b not in (b"0", b"1"):
            raise self.fail(f"bad bool byte {b!r}")
        return b == b"1"

    def string(self) -> str:
        length = self.integer(unsigned=True)
        if length > 256:
            raise self.fail(f"implausible string length {length}")
        return self.take(length).decode("ascii", errors="replace")

    def expect_string(self, *allowed: str) -> str:
        s = self.string()
        if s not in allowed:
            raise self.fail(f"expected record {' or '.join(allowed)!r}, found {s!r}")
        return s

    def real(self) -> float:
        mantissa = self.integer()
        exponent = self.integer()
        if exponent == 32000:
            return float("inf")
        if exponent == 32001:
            return float("-inf")
        if exponent == 32002:
            return float("nan")
        return float(np.ldexp(float(mantissa), exponent))

    def tensor(self) -> np.ndarray:
        version = self.integer()
        if version != 2:
            raise self.fail(f"tensor version {version}, expected 2")
        shape = tuple(self.integer() for _ in range(4))
        if any(d < 0 for d in shape):
            raise self.fail(f"negative tensor shape {shape}")
        count = int(np.prod(shape, dtype=np.int64))
        raw = self.take(4 * count)
        return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        version = self.integer()
        if version != 1:
            raise self.fail(f"alias_tensor version {version}, expected 1")
        return tuple(self.integer() for _ in range(4))  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# Parsed weights


@dataclass(frozen=True)
class DlibWeights:
    """The numbers of dlib's ResNet, in input -> output order, in dlib's own layouts."""

    input_means: np.ndarray  # (3,) R, G, B
    convs: list[tuple[np.ndarray, np.ndarray, int]]  # (W (O,C,kh,kw), bias (O,), stride)
    affines: list[tuple[np.ndarray, np.ndarray]]  # (gamma (C,), beta (C,)), one per conv, same order
    fc: np.ndarray  # (256, 128): out = in @ fc

    @property
    def parameter_count(self) -> int:
        n = sum(w.size + b.size for w, b, _ in self.convs)
        n += sum(g.size + b.size for g, b in self.affines)
        return n + self.fc.size


def read_dlib_resnet(path: str | os.PathLike) -> DlibWeights:
    """Parse the .dat file. Raises ModelError naming the file when it is missing, truncated or not this net."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the dlib model ({exc.strerror}); run `facelock models fetch`") from exc
    if data[:3] == b"BZh":
        raise ModelError(f"{path}: is bzip2-compressed; decompress it first (bunzip2)")
    r = _Reader(data, path)

    if r.integer() != 1:
        raise r.fail("loss layer version is not 1")
    loss = r.expect_string("loss_metric_2", "loss_metric_")
    if loss == "loss_metric_2":
        r.real(), r.real()  # margin and distance threshold: training-only

    # Wrapper versions, outermost first: every layer but the innermost (input + first conv).
    for kind, _ in reversed(ANET_LAYERS[1:]):
        version = r.integer()
        expected = 1 if kind in _WRAPPERS_ONLY else 2
        if version != expected:
            raise r.fail(f"wrapper version {version} for {kind}, expected {expected}")

    # The innermost add_layer holds the input layer and the first convolution.
    if r.integer() != 3:
        raise r.fail("input layer version is not 3")
    r.expect_string("input_rgb_image_sized")
    means = np.array([r.real(), r.real(), r.real()], dtype=np.float32)
    rows, cols = r.integer(unsigned=True), r.integer(unsigned=True)
    if (rows, cols) != (CHIP_SIZE, CHIP_SIZE):
        raise r.fail(f"input is {rows}x{cols}, expected {CHIP_SIZE}x{CHIP_SIZE}")

    convs: list[tuple[np.ndarray, np.ndarray, int]] = []
    affines: list[tuple[np.ndarray, np.ndarray]] = []
    fc: np.ndarray | None = None

    def con_details(expected_out: int) -> None:
        r.expect_string("con_4")
        params = r.tensor().reshape(-1)
        n_out, kh, kw = r.integer(), r.integer(), r.integer()
        sy, sx = r.integer(), r.integer()
        r.integer(), r.integer()  # padding: fixed by dlib's defaults, checked through shapes instead
        f_shape = r.alias_tensor()
        b_shape = r.alias_tensor()
        for _ in range(4):
            r.real()
        n_w = int(np.prod(f_shape))
        if n_out != expected_out or f_shape[0] != n_out or n_w + n_out != params.size or b_shape[1] != n_out:
            raise r.fail(f"convolution with {n_out} filters {f_shape}, expected {expected_out}")
        convs.append((params[:n_w].reshape(f_shape), params[n_w:].copy(), sy))
        if sy != sx or kh != kw:
            raise r.fail("non-square convolution")

    def add_layer_tail(version: int) -> None:
        for _ in range(3):
            r.boolean()
        r.tensor(), r.tensor()  # x_grad, cached_output: empty in a saved net
        if version == 2:
            r.tensor()  # params_grad

    con_details(32)
    for _ in range(3):
        r.boolean()
    r.tensor(), r.tensor(), r.tensor()  # x_grad, cached_output, grad_final
    r.integer()  # sample expansion factor

    for kind, arg in ANET_LAYERS[1:]:
        if kind in _WRAPPERS_ONLY:
            continue
        if kind in ("con", "con_s2"):
            con_details(arg)
        elif kind == "affine":
            r.expect_string("affine_")
            params = r.tensor().reshape(-1)
            g_shape, _ = r.alias_tensor(), r.alias_tensor()
            if r.integer() != 0:
                raise r.fail("affine layer not in per-channel (CONV) mode")
            if g_shape[1] != arg or params.size != 2 * arg:
                raise r.fail(f"affine over {g_shape[1]} channels, expected {arg}")
            affines.append((params[:arg].copy(), params[arg:].copy()))
        elif kind == "relu":
            r.expect_string("relu_")
        elif kind in ("max_pool", "avg_pool", "avg_pool_everything"):
            r.expect_string("max_pool_2" if kind == "max_pool" else "avg_pool_2")
            window = (r.integer(), r.integer())
            stride = (r.integer(), r.integer())
            r.integer(), r.integer()
            expected_window = {"max_pool": (3, 3), "avg_pool": (2, 2), "avg_pool_everything": (0, 0)}[kind]
            if window != expected_window or stride != ((1, 1) if kind == "avg_pool_everything" else (2, 2)):
                raise r.fail(f"{kind} window {window} stride {stride}")
        elif kind in ("add_prev1", "add_prev2"):
            r.expect_string("add_prev_")
        elif kind == "fc":
            r.expect_string("fc_2")
            n_out, n_in = r.integer(unsigned=True), r.integer(unsigned=True)
            params = r.tensor().reshape(-1)
            r.alias_tensor(), r.alias_tensor()
            r.integer()  # bias mode: no bias in this net (checked through the parameter count)
            for _ in range(4):
                r.real()
            if (n_in, n_out) != (256, arg) or params.size != n_in * n_out:
                raise r.fail(f"fc {n_in}->{n_out}, expected 256->{arg} without bias")
            fc = params.reshape(n_in, n_out).copy()
        else:  # pragma: no cover - ANET_LAYERS is fixed
            raise AssertionError(kind)
        add_layer_tail(2)

    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} unexpected trailing bytes")
    assert fc is not None
    if len(convs) != 29 or len(affines) != 29:
        raise r.fail(f"found {len(convs)} convolutions and {len(affines)} affines, expected 29 each")
    return DlibWeights(input_means=means, convs=convs, affines=affines, fc=fc)


# --------------------------------------------------------------------------------------------------
# Keras model (tf_keras; the caller sets TF_USE_LEGACY_KERAS=1 before TensorFlow is first imported)


def keras_module():
    """tf_keras, the Keras 2 that tensorflow-model-optimization and TFLiteConverter.from_keras_model need."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    try:
        import tf_keras
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConvertError("tf_keras is not installed: install facelock with the [convert] extra") from exc
    return tf_keras


def _folded_conv(w: np.ndarray, b: np.ndarray, gamma: np.ndarray, beta: np.ndarray):
    """dlib (O,C,kh,kw) conv followed by a per-channel affine -> Keras (kh,kw,C,O) kernel and bias."""
    kernel = np.transpose(w, (2, 3, 1, 0)).astype(np.float64) * gamma.astype(np.float64)
    bias = b.astype(np.float64) * gamma + beta
    return kernel, bias


def build_keras_model(weights: DlibWeights):
    """The dlib ResNet as a tf_keras functional model: (N,150,150,3) RGB pixels in [0,255] -> (N,128),
    not normalised (dlib's descriptor exactly)."""
    keras = keras_module()
    L = keras.layers
    convs = iter(zip(weights.convs, weights.affines))

    def conv(x, name: str, relu: bool, padding: str):
        (w, b, stride), (gamma, beta) = next(convs)
        kernel, bias = _folded_conv(w, b, gamma, beta)
        layer = L.Conv2D(w.shape[0], w.shape[2], strides=stride, padding=padding,
                         activation="relu" if relu else None, name=name)
        y = layer(x)
        layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
        return y

    inp = keras.Input((CHIP_SIZE, CHIP_SIZE, 3), name="rgb_pixels")
    # First conv: fold (x - mean)/256 in. Valid padding, so every tap sees a real pixel: exact.
    (w, b, stride), (gamma, beta) = next(convs)
    w_scaled = w.astype(np.float64) / 256.0
    b_shifted = b.astype(np.float64) - np.einsum("ocij,c->o", w_scaled, weights.input_means.astype(np.float64))
    kernel, bias = _folded_conv(w_scaled, b_shifted, gamma, beta)
    stem = L.Conv2D(32, 7, strides=stride, padding="valid", activation="relu", name="conv1")
    x = stem(inp)
    stem.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    x = L.MaxPooling2D(3, 2, padding="valid", name="pool1")(x)

    unit = 0
    i = 4
    layers_ = ANET_LAYERS
    while layers_[i][0] == "tag1":
        unit += 1
        down = layers_[i + 1][0] == "con_s2"
        n = layers_[i + 1][1]
        name = f"unit{unit}"
        y = conv(x, f"{name}_conv_a", relu=True, padding="valid" if down else "same")
        y = conv(y, f"{name}_conv_b", relu=False, padding="same")
        if down:
            shortcut = L.AveragePooling2D(2, 2, padding="valid", name=f"{name}_shortcut_pool")(x)
            shortcut, y = _zero_padded_pair(keras, shortcut, y, name)
            i += 11
        else:
            shortcut = x
            i += 8
        x = L.Add(name=f"{name}_add")([y, shortcut])
        x = L.ReLU(name=f"{name}_relu")(x)
        assert n == x.shape[-1]
    x = L.GlobalAveragePooling2D(name="global_pool")(x)
    fc = L.Dense(EMBEDDING_DIM, use_bias=False, name="embedding")
    out = fc(x)
    fc.set_weights([weights.fc])
    return keras.Model(inp, out, name=KERAS_MODEL_NAME)


def _zero_padded_pair(keras, shortcut, block, name: str):
    """Bring both tensors of dlib's add_prev to the element-wise max shape, anchored at index 0 (top-left,
    channel 0) with zeros elsewhere."""
    L = keras.layers
    (hs, ws, cs), (hb, wb, cb) = shortcut.shape[1:], block.shape[1:]
    if cs < cb:
        expand = L.Conv2D(cb, 1, use_bias=False, trainable=False, name=f"{name}_shortcut_expand")
        shortcut = expand(shortcut)
        expand.set_weights([np.eye(cs, cb, dtype=np.float32)[None, None]])
    elif cb < cs:  # pragma: no cover - not in this net
        raise ConvertError("block branch narrower than its shortcut")
    h, w = max(hs, hb), max(ws, wb)
    if (hs, ws) != (h, w):
        shortcut = L.ZeroPadding2D(((0, h - hs), (0, w - ws)), name=f"{name}_shortcut_pad")(shortcut)
    if (hb, wb) != (h, w):
        block = L.ZeroPadding2D(((0, h - hb), (0, w - wb)), name=f"{name}_block_pad")(block)
    return shortcut, block


def build_keras_embedder(dat_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Read the .dat file, build the Keras model, save it (`.keras`), and return the path."""
    weights = read_dlib_resnet(dat_path)
    model = build_keras_model(weights)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, out)
    return out


def load_keras_model(path: str | os.PathLike):
    """Load a saved Keras embedder, with a clear error for a missing or broken file."""
    keras = keras_module()
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such Keras model; build it with `facelock models build`")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # tf_keras raises many types for a bad archive
        raise ModelError(f"{path}: not a loadable Keras model ({type(exc).__name__}: {exc})") from exc


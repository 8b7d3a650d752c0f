"""Section 5, the figure of merit: the embedder's MACs per face (counted from its TFLite graph), the int8
MAC/s it achieves here, and the int8 MAC/s the same runtime reaches on a large int8 convolution built here
(this machine's peak with this software)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from convert.bench.conversions import Conversion
from convert.bench.data import BenchOptions
from convert.bench.speed import tflite_fn, time_per_chip

PEAK_SHAPE = (56, 56, 256, 256, 3)  # H, W, Cin, Cout, k: 1.85 GMAC, compute-bound
MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


def _op_macs(name: str, out_shape, w, in_shape) -> int:
    if name == "CONV_2D":
        return int(np.prod(out_shape[:-1])) * int(np.prod(w))  # w: (Cout, kh, kw, Cin); batch 1
    if name == "DEPTHWISE_CONV_2D":
        return int(np.prod(out_shape)) * int(w[1] * w[2])
    if name == "FULLY_CONNECTED":
        return int(np.prod(out_shape[:-1])) * int(np.prod(w))  # w: (units, in)
    return int(np.prod(in_shape)) * int(np.prod(w[:-1]))  # TRANSPOSE_CONV


def count_macs(model_path: Path) -> dict:
    """Multiply-accumulates of one inference, from the TFLite graph: CONV_2D (out H*W*Cout * kh*kw*Cin),
    DEPTHWISE_CONV_2D (out H*W*C * kh*kw), FULLY_CONNECTED (out units * in features), TRANSPOSE_CONV (in
    H*W*Cin * kh*kw*Cout). Dense count: XNNPACK's int8 kernels do not skip zero weights, so pruned weights
    cost the same MACs (the `nonzero` figure counts only non-zero weights, for reference)."""
    from convert.compress.edgetpu import _plain_interpreter

    interp = _plain_interpreter(Path(model_path))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    total = nonzero = 0
    by_op: dict[str, int] = {}
    for op in interp._get_ops_details():
        name = op["op_name"]
        ins = [i for i in op["inputs"] if i >= 0]
        if name not in MAC_OPS or len(ins) < 2:
            continue
        w_index = ins[1]  # the weights, for all four (TRANSPOSE_CONV: output_shape, weights, input)
        in_shape = tensors[ins[2]]["shape"] if name == "TRANSPOSE_CONV" else None
        macs = _op_macs(name, tensors[op["outputs"][0]]["shape"], tensors[w_index]["shape"], in_shape)
        total += macs
        by_op[name] = by_op.get(name, 0) + macs
        try:
            weights = interp.get_tensor(w_index)
            nonzero += round(macs * np.count_nonzero(weights) / weights.size)
        except ValueError:
            nonzero += macs
    return {"macs": total, "nonzero_macs": nonzero, "by_op": by_op}


def peak_model(work: Path) -> Path:
    """An int8 TFLite model with one large 3x3 convolution (56x56x256 -> 256), quantized exactly as the
    embedder is (full-integer, int8 in/out), built once with TensorFlow and cached."""
    path = work / "peak_conv3x3_int8.tflite"
    if path.is_file():
        return path
    import tensorflow as tf
    import tf_keras

    h, w, cin, cout, k = PEAK_SHAPE
    inp = tf_keras.Input(batch_shape=(1, h, w, cin))
    model = tf_keras.Model(inp, tf_keras.layers.Conv2D(cout, k, padding="same", activation="relu")(inp))
    rng = np.random.default_rng(0)

    def rep():
        for _ in range(8):
            yield [rng.uniform(0, 1, (1, h, w, cin)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    work.mkdir(parents=True, exist_ok=True)
    path.write_bytes(conv.convert())
    return path


def time_invoke(model_path: Path, threads: int, runs: int) -> np.ndarray:
    from edge.vision.interpreter import load_interpreter

    m = load_interpreter(model_path, num_threads=threads)
    d = m.input_details[0]
    x = np.random.default_rng(0).integers(-128, 127, d["shape"], dtype=np.int8)
    m.run([x])
    ms = []
    for _ in range(runs):
        t = time.perf_counter()
        m.run([x])
        ms.append((time.perf_counter() - t) * 1e3)
    return np.array(ms)


def figure_of_merit(opts: BenchOptions, conv: Conversion, chips: np.ndarray) -> dict:
    int8_path = conv.bundle / "embedder.tflite"
    macs = count_macs(int8_path)
    peak_path = peak_model(opts.work)
    peak_macs = count_macs(peak_path)["macs"]
    rows = []
    for t in opts.threads:
        embed_ms = float(np.median(time_per_chip(tflite_fn(str(int8_path), t), chips, opts.repeat)))
        peak_ms = float(np.median(time_invoke(peak_path, t, 5 if opts.quick else 15)))
        achieved, peak = macs["macs"] / (embed_ms / 1e3), peak_macs / (peak_ms / 1e3)
        rows.append({"threads": t, "embed_ms": embed_ms, "achieved_gmacs": achieved / 1e9,
                     "peak_ms": peak_ms, "peak_gmacs": peak / 1e9, "ratio": achieved / peak})
    return {"macs": macs, "peak_model": {"shape": PEAK_SHAPE, "macs": peak_macs, "file": str(peak_path)},
            "rows": rows}

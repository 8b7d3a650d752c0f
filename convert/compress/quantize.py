"""Keras -> TFLite: float, and full-integer int8 (post-training, with a representative set of aligned chips).

The int8 model takes int8 input and gives int8 output, with builtin int8 kernels only (what the Edge TPU
compiler and every CPU delegate accept). The final L2 normalisation stays out of the model: `edge`
dequantizes and normalises (see `edge.vision.embed.l2_normalize`).
"""

from __future__ import annotations

import numpy as np

from convert.errors import ConvertError

MIN_REPRESENTATIVE = 300


def with_batch_of_one(model):
    """The same model with a static batch dimension of 1: Keras inputs have a dynamic batch (-1), which the
    Edge TPU compiler refuses and which costs every CPU runtime a resize check."""
    import tf_keras

    inp = tf_keras.Input(batch_shape=(1, *model.input_shape[1:]), name=model.input_names[0])
    return tf_keras.Model(inp, model(inp), name=model.name)


def to_tflite_float(model) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(with_batch_of_one(model))
    return converter.convert()


def representative_inputs(chips: np.ndarray):
    """Calibration inputs as the model sees them (RGB pixels as float). One pixel of the first chip is set to
    0 and one to 255, so the calibrated input range is exactly [0, 255]: the int8 input then has scale 1
    and zero point -128, and `edge` feeds camera pixels to the model without any rounding."""
    chips = np.asarray(chips)
    first = chips[0].copy()
    first[0, 0, :] = 0
    first[0, 1, :] = 255

    def generator():
        yield [first[None].astype(np.float32)]
        for chip in chips[1:]:
            yield [chip[None].astype(np.float32)]

    return generator


def to_tflite_int8(model, representative_chips: np.ndarray, minimum: int = MIN_REPRESENTATIVE) -> bytes:
    """Full-integer int8: TFLITE_BUILTINS_INT8 only, int8 input and output."""
    import tensorflow as tf

    if len(representative_chips) < minimum:
        raise ConvertError(
            f"int8 calibration needs at least {minimum} aligned chips, got {len(representative_chips)}; "
            "give --data a folder with more face photos"
        )
    converter = tf.lite.TFLiteConverter.from_keras_model(with_batch_of_one(model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_inputs(representative_chips)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    try:
        return converter.convert()
    except Exception as exc:  # the converter raises assorted internal error types
        raise ConvertError(f"int8 conversion failed: {type(exc).__name__}: {exc}") from exc


def tensor_io(detail: dict) -> dict:
    """A TFLite tensor as the manifest describes it: {size (without the batch), dtype, scale, zero_point}."""
    scale, zero = detail["quantization"]
    return {"size": [int(d) for d in detail["shape"][1:]], "dtype": np.dtype(detail["dtype"]).name,
            "scale": float(scale), "zero_point": int(zero)}

"""Any Keras face CNN into `convert`: the model card (edge.models.card) from `--input-size`, `--channels`,
`--normalize` and `--template`, the check that the model takes what they say, and the model that the rest
of `convert` prunes, calibrates and converts.

That model always takes RGB pixels 0..255 of the card's size. When the source model wants BGR or a
normalisation, a fixed (non-trainable, never pruned) 1x1 convolution in front does both: channel k of its
output is (pixel[perm(k)] - mean[k]) / std[k], exact in float. The int8 model's input then stays camera
pixels with scale 1 and zero point -128 (calibration spans exactly 0..255), so the board feeds the chip in
without rounding, and pruning, distillation, calibration and validation all see the chips the lock cuts.
The card records that (`preprocessing: "layer"`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convert.errors import ConvertError
from edge.errors import ModelError
from edge.models.card import CHANNEL_ORDERS, EmbedderCard, Normalization

PREPROCESS_LAYER = "pixels_to_model_input"


@dataclass(frozen=True)
class CardOptions:
    """What the user says about the source model (None: taken from the model, or the matching preset)."""

    input_size: int | None = None  # chip side; None: the model's own input size
    channels: str = "RGB"
    normalize: str = "none"  # parse_normalization's text
    template: str | None = None  # preset name or template JSON; None: the preset made for the input size
    mirror_average: bool = True  # embeddings: the mean of the chip's and its mirror image's (edge.models.card)

    def __post_init__(self):
        # One spelling ("RGB"), whatever the caller wrote: the CLI's `--channels rgb` and the default must
        # compare equal (`facelock bench` reuses a conversion only when its options are the same).
        object.__setattr__(self, "channels", str(self.channels).upper())


def parse_normalization(text: str, source: str = "--normalize") -> Normalization:
    """`none`, or `mean=M,std=S`, M and S one number or three (`R:G:B`, in the model's channel order):
    the model wants (pixel - M) / S. `mean=127.5,std=128`: ArcFace-style [-1, 1]; `mean=0,std=255`: [0, 1]."""
    clean = text.strip().lower().replace(" ", "")
    if clean in ("none", ""):
        return Normalization()
    values: dict[str, tuple[float, ...]] = {}
    for part in clean.split(","):
        key, sep, value = part.partition("=")
        if not sep or key not in ("mean", "std") or key in values:
            raise ConvertError(f"{source} {text!r}: expected 'none' or 'mean=M,std=S' (M, S one number or R:G:B)")
        try:
            nums = tuple(float(v) for v in value.split(":"))
        except ValueError:
            raise ConvertError(f"{source} {text!r}: {key} {value!r} is not a number (or R:G:B numbers)") from None
        if len(nums) not in (1, 3) or not all(math.isfinite(v) for v in nums):
            raise ConvertError(f"{source} {text!r}: {key} takes one finite number or three (R:G:B)")
        values[key] = nums * 3 if len(nums) == 1 else nums
    std = values.get("std", (1.0,) * 3)
    if any(s <= 0 for s in std):
        raise ConvertError(f"{source} {text!r}: std must be > 0")
    return Normalization(values.get("mean", (0.0,) * 3), std)  # type: ignore[arg-type]


def model_shapes(model, path: Path) -> tuple[tuple, int]:
    """(input shape without the batch, embedding dim) of a one-input, one-(batch, D)-output model."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConvertError(f"--model {path}: expected one input and one output, got {len(model.inputs)} and "
                           f"{len(model.outputs)}")
    shape = tuple(model.input_shape[1:])
    out = tuple(model.output_shape)
    if len(shape) != 3 or shape[2] != 3:
        raise ConvertError(f"--model {path}: input {(None, *shape)}, expected (batch, height, width, 3) pixels")
    if len(out) != 2 or not out[1]:
        raise ConvertError(f"--model {path}: output {out}, expected one embedding (batch, D)")
    return shape, int(out[1])


def make_card(model, path: Path, opts: CardOptions):
    """(card without space, alignment template) for `model` as `opts` describe it. Refuses, naming the model
    and both shapes, an --input-size the model does not take."""
    from edge.vision.align_presets import native_preset, resolve_template

    shape, dim = model_shapes(model, path)
    own = shape[0] if shape[0] is not None and shape[0] == shape[1] else None
    size = opts.input_size or own
    if size is None:
        raise ConvertError(f"--model {path}: input {(None, *shape)} has no fixed square size; pass --input-size")
    if any(s is not None for s in shape[:2]) and shape[:2] != (size, size):
        raise ConvertError(
            f"--model {path}: the model's input is {(None, *shape)}, but --input-size {size} expects "
            f"{(None, size, size, 3)}" + (f"; pass --input-size {own} (the model's own)" if own else ""))
    channels = opts.channels.upper()
    if channels not in CHANNEL_ORDERS:
        raise ConvertError(f"--channels {opts.channels!r}: expected rgb or bgr")
    norm = parse_normalization(opts.normalize)
    spec = opts.template or native_preset(size)
    if spec is None:
        raise ConvertError(f"--model {path}: no alignment preset is made for {size}x{size} chips; pass "
                           "--template dlib150, arcface112 or facenet160 (scaled to the size) or a template JSON")
    name, template = resolve_template(spec, size)
    try:
        card = EmbedderCard(input_size=(size, size), channels=channels, normalization=norm,
                            preprocessing="none" if channels == "RGB" and norm.identity else "layer",
                            embedding_dim=dim, template=name, mirror_average=opts.mirror_average)
    except ModelError as exc:
        raise ConvertError(f"--model {path}: {str(exc).removeprefix('model card: ')}") from exc
    return card, template


def preprocess_weights(card: EmbedderCard) -> list[np.ndarray]:
    """Kernel (1, 1, 3, 3) and bias of the 1x1 convolution: RGB pixels -> the source model's input."""
    kernel = np.zeros((1, 1, 3, 3), dtype=np.float32)
    src = (2, 1, 0) if card.channels == "BGR" else (0, 1, 2)  # output channel k reads input channel src[k]
    mean = np.asarray(card.normalization.mean, dtype=np.float64)
    std = np.asarray(card.normalization.std, dtype=np.float64)
    for k in range(3):
        kernel[0, 0, src[k], k] = 1.0 / std[k]
    return [kernel, (-mean / std).astype(np.float32)]


def pixel_model(model, card: EmbedderCard):
    """`model` taking RGB pixels 0..255 of the card's size, with a static spatial shape: the model itself
    when it already does; else a copy with the fixed preprocessing convolution in front (built-in layers
    only, one flat graph, so it saves, prunes and converts like any other model)."""
    import tf_keras

    h, w = card.input_size
    if not card.needs_preprocessing and tuple(model.input_shape[1:]) == (h, w, 3):
        return model
    if isinstance(model, tf_keras.Sequential):
        model = tf_keras.Model(model.inputs, model.outputs, name=model.name)
    try:
        cfg = copy.deepcopy(model.get_config())
        cfg["layers"], cfg["input_layers"]  # a functional model's config has both
    except (NotImplementedError, KeyError, TypeError):
        raise ConvertError(f"model {model.name}: a subclassed model cannot be given a preprocessing layer; "
                           "save it as a tf_keras functional or Sequential model") from None
    ((input_name, _, _),) = cfg["input_layers"]

    def rewire(node):  # every reference to the input layer now points at the preprocessing layer
        if isinstance(node, str):
            return PREPROCESS_LAYER if node == input_name else node
        if isinstance(node, list | tuple):
            return [rewire(n) for n in node]
        if isinstance(node, dict):
            return {k: rewire(v) for k, v in node.items()}
        return node

    layers = []
    for layer in cfg["layers"]:
        if layer["name"] == input_name:
            layer["config"]["batch_input_shape"] = (None, h, w, 3)
            pre = tf_keras.layers.Conv2D(3, 1, trainable=False, name=PREPROCESS_LAYER)
            layers += [layer, {"class_name": "Conv2D", "name": PREPROCESS_LAYER, "config": pre.get_config(),
                               "inbound_nodes": [[[input_name, 0, 0, {}]]]}]
        else:
            layers.append({**layer, "inbound_nodes": rewire(layer["inbound_nodes"])})
    cfg["layers"] = layers
    wrapped = tf_keras.Model.from_config(cfg)
    for layer in wrapped.layers:
        if layer.name == PREPROCESS_LAYER:
            layer.set_weights(preprocess_weights(card))
        elif layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return wrapped


def load_source(path: Path, opts: CardOptions):
    """(the model convert works on, its card without `space`, the alignment template) for the Keras model
    at `path`."""
    from convert.dlib_port import load_keras_model

    source = load_keras_model(path)
    card, template = make_card(source, path, opts)
    return pixel_model(source, card), card, template

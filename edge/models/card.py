"""The embedder's model card: what chips a face CNN takes and what it gives back, written by `convert` into
the bundle manifest (`embedder.card`) and read by the board, so that no chip size, channel order or
normalisation is assumed in code.

    card {schema "facelock.card/1",
          input_size [h, w]       chip pixels the source model takes (the aligner cuts chips of this size),
          channels "RGB" | "BGR"  the channel order the source model expects,
          normalization {mean [3], std [3]}  what the source model expects done to 0..255 pixels:
                                  x' = (x - mean) / std per channel; mean 0, std 1 = raw pixels,
          preprocessing "none" | "layer"  where channel order and normalisation happen in the bundled model:
                                  "layer" = a fixed 1x1 convolution `convert` put in front of the source
                                  model, so the bundled TFLite always takes RGB pixels 0..255 (int8 with
                                  scale 1, zero point -128: exact),
          embedding_dim D,
          template "dlib150" | "arcface112" | "facenet160" | "custom"  the alignment preset the chips are
                                  cut with (its points, scaled to input_size, are the manifest's
                                  `alignment.template`),
          space "space:<model>@<hash>",
          mirror_average true | false  the embedding is the mean of the chip's and its mirror image's (absent:
                                  false, as every bundle before it); the threshold was chosen that way}

Mirror averaging is part of the embedding, not a runtime setting: the bundle's threshold was chosen on
embeddings made one way, so the board makes them the same way. Why it is on for dlib's port: on 826 LFW `train`
people (photo 2 against photo 1) it lifts TAR at FAR 1e-2 from 98.1% to 98.8% and at 1e-3 from 91.7% to 94.7%,
for a second run of the embedder per frame (docs/benchmarks.md).

A bundle without a card (made before cards existed) is dlib's ResNet port: `DEFAULT_CARD`. The optional
anti-spoofing CNN has a card of its own, `AntiSpoofCard` (the manifest's `antispoof.card`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from edge.errors import BundleError, ModelError
from edge.types import CHIP_SIZE, EMBEDDING_DIM

CARD_SCHEMA = "facelock.card/1"
CHANNEL_ORDERS = ("RGB", "BGR")
PREPROCESSING = ("none", "layer")
MIN_CHIP, MAX_CHIP = 32, 512  # what the aligner and the int8 conversion are sensible for


@dataclass(frozen=True)
class Normalization:
    """x' = (x - mean) / std per channel (in the model's channel order) on pixels 0..255."""

    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def identity(self) -> bool:
        return all(m == 0.0 for m in self.mean) and all(s == 1.0 for s in self.std)

    def describe(self) -> str:
        if self.identity:
            return "none (pixels 0..255)"
        same = len(set(self.mean)) == 1 and len(set(self.std)) == 1
        mean = f"{self.mean[0]:g}" if same else "/".join(f"{m:g}" for m in self.mean)
        std = f"{self.std[0]:g}" if same else "/".join(f"{s:g}" for s in self.std)
        return f"(x - {mean}) / {std}"

    def to_dict(self) -> dict[str, Any]:
        return {"mean": [float(m) for m in self.mean], "std": [float(s) for s in self.std]}


def card_problem(card: EmbedderCard) -> str | None:
    """What is wrong with a card, or None."""
    import math

    h, w = card.input_size
    if h != w:
        return f"input_size {h}x{w}: only square chips are supported"
    if not MIN_CHIP <= h <= MAX_CHIP:
        return f"input_size {h}x{w} is outside {MIN_CHIP}..{MAX_CHIP} pixels"
    if card.channels not in CHANNEL_ORDERS:
        return f"channels {card.channels!r}, expected one of {CHANNEL_ORDERS}"
    if card.preprocessing not in PREPROCESSING:
        return f"preprocessing {card.preprocessing!r}, expected one of {PREPROCESSING}"
    if card.needs_preprocessing and card.preprocessing != "layer":
        return (f"channels {card.channels} with normalization {card.normalization.describe()} need "
                "preprocessing 'layer' (the bundled model takes RGB pixels 0..255)")
    if card.embedding_dim < 1:
        return f"embedding_dim must be >= 1, got {card.embedding_dim}"
    norm = card.normalization
    if len(norm.mean) != 3 or len(norm.std) != 3:
        return "normalization mean and std take 3 values (one per channel)"
    if not all(math.isfinite(v) for v in (*norm.mean, *norm.std)) or any(s <= 0 for s in norm.std):
        return f"normalization mean must be finite and std > 0, got {norm.to_dict()}"
    return None


class TakesPixels:
    """A card of a model whose source wants `channels` and `normalization` (convert.model_card.pixel_model)."""

    channels: str
    normalization: Normalization

    @property
    def needs_preprocessing(self) -> bool:
        """True when the source model wants more than RGB pixels 0..255: `convert` then puts a layer in front."""
        return self.channels != "RGB" or not self.normalization.identity


@dataclass(frozen=True)
class EmbedderCard(TakesPixels):
    """What chips an embedder takes and what it gives (see the module docstring for each field). A card
    that `card_problem` finds fault with cannot be made."""

    input_size: tuple[int, int] = (CHIP_SIZE, CHIP_SIZE)  # (h, w)
    channels: str = "RGB"
    normalization: Normalization = field(default_factory=Normalization)
    preprocessing: str = "none"
    embedding_dim: int = EMBEDDING_DIM
    template: str = "dlib150"
    space: str = ""
    mirror_average: bool = False

    def __post_init__(self) -> None:
        problem = card_problem(self)
        if problem:
            raise ModelError(f"model card: {problem}")

    @property
    def chip_size(self) -> int:
        """The side of the square chip the aligner cuts."""
        return self.input_size[0]

    def bundled_input(self) -> str:
        """What the bundled model's input tensor means (the manifest's `embedder.input.normalization`)."""
        if self.preprocessing == "layer":
            return (f"RGB pixel values 0..255; a fixed layer in front gives the source model {self.channels} "
                    f"{self.normalization.describe()}")
        return "RGB pixel values 0..255, as the source model takes them (its normalisation, if any, is inside it)"

    def with_space(self, space: str) -> EmbedderCard:
        return replace(self, space=space)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": CARD_SCHEMA, "input_size": list(self.input_size), "channels": self.channels,
                "normalization": self.normalization.to_dict(), "preprocessing": self.preprocessing,
                "embedding_dim": self.embedding_dim, "template": self.template, "space": self.space,
                "mirror_average": self.mirror_average}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "model card") -> EmbedderCard:
        if not isinstance(data, Mapping) or data.get("schema") != CARD_SCHEMA:
            got = data.get("schema") if isinstance(data, Mapping) else type(data).__name__
            raise BundleError(f"{source}: card schema {got!r} is not supported (this facelock reads {CARD_SCHEMA!r})")
        try:
            h, w = (int(v) for v in data["input_size"])
            norm = data.get("normalization") or {}
            return cls(input_size=(h, w), channels=str(data.get("channels", "RGB")).upper(),
                       normalization=Normalization(_three(norm.get("mean", (0.0,) * 3)),
                                                   _three(norm.get("std", (1.0,) * 3))),
                       preprocessing=str(data.get("preprocessing", "none")),
                       embedding_dim=int(data["embedding_dim"]), template=str(data.get("template", "custom")),
                       space=str(data.get("space", "")), mirror_average=_flag(data, "mirror_average"))
        except ModelError as exc:
            raise BundleError(f"{source}: {str(exc).removeprefix('model card: ')}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{source}: malformed model card ({type(exc).__name__}: {exc})") from exc


def _flag(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise TypeError(f"{key} must be true or false, got {value!r}")
    return value


def _three(values: Any) -> tuple[float, float, float]:
    out = tuple(float(v) for v in values)
    if len(out) != 3:
        raise ValueError(f"expected 3 values (one per channel), got {len(out)}")
    return out  # type: ignore[return-value]


DEFAULT_CARD = EmbedderCard()  # dlib's ResNet port: 150x150 RGB pixels 0..255, 128-d, template dlib150


def card_of_manifest(manifest: Mapping[str, Any], source: str) -> EmbedderCard:
    """The card in a manifest's `embedder.card`; a bundle written before cards is dlib's port (DEFAULT_CARD,
    with the manifest's embedding space)."""
    embedder = manifest.get("embedder") or {}
    data = embedder.get("card")
    if data is None:
        return DEFAULT_CARD.with_space(str(embedder.get("space", "")))
    return EmbedderCard.from_dict(data, f"{source} embedder.card")


# --- the anti-spoofing CNN's card ------------------------------------------------------------------------------

ANTISPOOF_SCHEMA = "facelock.antispoof/1"
ANTISPOOF_OUTPUTS = ("probabilities", "logits")


@dataclass(frozen=True)
class AntiSpoofCard(TakesPixels):
    """What a passive anti-spoofing CNN (bring your own Keras model; `facelock convert --antispoof`) takes and
    gives, written into the bundle manifest (`antispoof.card`) and read by the board:

        antispoof.card {schema "facelock.antispoof/1",
            name          the source model (file stem), source_sha256 its file's sha256, licence as given,
            input_size [h, w]   the square crop the model takes; the bundled int8 model takes RGB pixels
                                0..255 of it (channel order and normalisation: a fixed layer in front),
            channels, normalization   what the source model expects (as the embedder's card),
            crop_scale    the crop's side over the detector box's longer side, centred on the box (most
                          anti-spoofing models want context around the face: a screen's bezel, a print's
                          edge; e.g. 2.7 for MiniFASNet-style models),
            classes K, live_class i   the output is (1, K); the live (bona fide) score is class i
                          (K = 1: the one unit is the live score),
            output "probabilities" | "logits"   logits: the board applies softmax (K > 1) or the sigmoid,
            threshold     a frame is live when its live score is at least this}"""

    name: str
    input_size: tuple[int, int]
    crop_scale: float
    classes: int
    live_class: int
    threshold: float
    output: str = "probabilities"
    channels: str = "RGB"
    normalization: Normalization = field(default_factory=Normalization)
    licence: str = "unknown"
    source_sha256: str = ""

    def __post_init__(self) -> None:
        problem = antispoof_problem(self)
        if problem:
            raise ModelError(f"anti-spoofing card: {problem}")

    @property
    def crop_size(self) -> int:
        return self.input_size[0]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": ANTISPOOF_SCHEMA, "name": self.name, "input_size": list(self.input_size),
                "crop_scale": self.crop_scale, "classes": self.classes, "live_class": self.live_class,
                "output": self.output, "threshold": self.threshold, "channels": self.channels,
                "normalization": self.normalization.to_dict(), "licence": self.licence,
                "source_sha256": self.source_sha256}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "anti-spoofing card") -> AntiSpoofCard:
        if not isinstance(data, Mapping) or data.get("schema") != ANTISPOOF_SCHEMA:
            got = data.get("schema") if isinstance(data, Mapping) else type(data).__name__
            raise BundleError(f"{source}: schema {got!r} is not supported (this facelock reads {ANTISPOOF_SCHEMA!r})")
        try:
            h, w = (int(v) for v in data["input_size"])
            norm = data.get("normalization") or {}
            return cls(name=str(data["name"]), input_size=(h, w), crop_scale=float(data["crop_scale"]),
                       classes=int(data["classes"]), live_class=int(data["live_class"]),
                       threshold=float(data["threshold"]), output=str(data.get("output", "probabilities")),
                       channels=str(data.get("channels", "RGB")).upper(),
                       normalization=Normalization(_three(norm.get("mean", (0.0,) * 3)),
                                                   _three(norm.get("std", (1.0,) * 3))),
                       licence=str(data.get("licence", "unknown")), source_sha256=str(data.get("source_sha256", "")))
        except ModelError as exc:
            raise BundleError(f"{source}: {str(exc).removeprefix('anti-spoofing card: ')}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{source}: malformed anti-spoofing card ({type(exc).__name__}: {exc})") from exc


def antispoof_problem(card: AntiSpoofCard) -> str | None:
    """What is wrong with an anti-spoofing card, or None."""
    import math

    h, w = card.input_size
    if h != w or not MIN_CHIP <= h <= MAX_CHIP:
        return f"input_size {h}x{w}: expected a square of {MIN_CHIP}..{MAX_CHIP} pixels"
    if not (math.isfinite(card.crop_scale) and 0.5 <= card.crop_scale <= 5.0):
        return f"crop_scale {card.crop_scale}: expected 0.5-5 (the crop's side over the face box's)"
    if not 1 <= card.classes <= 16:
        return f"classes {card.classes}: expected 1-16 outputs"
    if not 0 <= card.live_class < card.classes:
        return f"live_class {card.live_class}: expected 0..{card.classes - 1} (the model has {card.classes} outputs)"
    if card.output not in ANTISPOOF_OUTPUTS:
        return f"output {card.output!r}, expected one of {ANTISPOOF_OUTPUTS}"
    if not (math.isfinite(card.threshold) and 0.0 < card.threshold < 1.0):
        return f"threshold {card.threshold}: expected a live score in (0, 1)"
    if card.channels not in CHANNEL_ORDERS:
        return f"channels {card.channels!r}, expected one of {CHANNEL_ORDERS}"
    norm = card.normalization
    if not all(math.isfinite(v) for v in (*norm.mean, *norm.std)) or any(s <= 0 for s in norm.std):
        return f"normalization mean must be finite and std > 0, got {norm.to_dict()}"
    return None

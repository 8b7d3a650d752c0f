"""`facelock convert --antispoof model.keras`: the user's passive anti-spoofing CNN into the bundle, int8 like
the embedder, with its card (edge.models.card.AntiSpoofCard) and what int8 cost it.

The model takes a square crop around the face (`--antispoof-crop`: the crop's side over the detector box's
longer side) and gives (batch, K): K = 1, the live score; K > 1, class scores of which `--antispoof-live-class`
is the live (bona fide) one; `--antispoof-output logits` when they are not probabilities yet. Its channel
order and normalisation go into a fixed layer in front (as for the embedder, convert.model_card), so the
int8 model takes camera pixels. Calibration crops are cut by the board's own code (edge.vision.antispoof
.face_crop) around the lock's own subject of each training photo.

What is measured: the float and int8 models' live scores on held-out training photos (all of them bona fide:
real people photographed), their agreement, and the share of those frames each would call an attack at
the threshold. Attack rejection is not measured here: that needs attack data of the kind the model was
trained against (the attack benchmark's rendered prints and screens do not run it yet). The licence and
the source's sha256 are recorded as given, so the bundle says which model it carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convert.errors import ConvertError, DataError
from convert.model_card import parse_normalization, pixel_model

MIN_CALIBRATION = 300  # convert.compress.quantize.MIN_REPRESENTATIVE
HELD_OUT = 200


@dataclass(frozen=True)
class AntiSpoofSource:
    """What the user says about their anti-spoofing model (the `--antispoof*` options)."""

    model: Path
    crop_scale: float = 1.5
    live_class: int | None = None  # None: the only output (K = 1); required when K > 1
    output: str = "probabilities"
    channels: str = "RGB"
    normalize: str = "none"
    threshold: float = 0.5
    licence: str = "unknown"


def load_antispoof(src: AntiSpoofSource):
    """(the model on RGB pixels 0..255, its card) for the source model; ConvertError naming the model and
    the option at fault when it does not take square crops or the options do not fit its output."""
    from convert.dlib_port import load_keras_model
    from edge.errors import ModelError
    from edge.files import sha256_file
    from edge.models.card import AntiSpoofCard

    path = Path(src.model)
    if not path.is_file():
        raise DataError(f"--antispoof {path}: no such Keras model")
    model = load_keras_model(path)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConvertError(f"--antispoof {path}: expected one input and one output, got {len(model.inputs)} and "
                           f"{len(model.outputs)}")
    shape, out = tuple(model.input_shape[1:]), tuple(model.output_shape)
    if len(shape) != 3 or shape[2] != 3 or shape[0] is None or shape[0] != shape[1]:
        raise ConvertError(f"--antispoof {path}: input {(None, *shape)}, expected square crops (batch, S, S, 3)")
    if len(out) != 2 or not out[1]:
        raise ConvertError(f"--antispoof {path}: output {out}, expected class scores (batch, K)")
    classes = int(out[1])
    if classes > 1 and src.live_class is None:
        raise ConvertError(f"--antispoof {path}: the model gives {classes} scores; say which is the live (bona "
                           f"fide) class with --antispoof-live-class 0..{classes - 1}")
    try:
        card = AntiSpoofCard(name=path.stem, input_size=(int(shape[0]), int(shape[1])), crop_scale=src.crop_scale,
                             classes=classes, live_class=src.live_class or 0, threshold=src.threshold,
                             output=src.output, channels=src.channels.upper(),
                             normalization=parse_normalization(src.normalize, "--antispoof-normalize"),
                             licence=src.licence, source_sha256=sha256_file(path))
    except ModelError as exc:
        raise ConvertError(f"--antispoof {path}: {str(exc).removeprefix('anti-spoofing card: ')}") from exc
    return pixel_model(model, card), card


def face_crops(root: Path, files: list[Path], faces, card, want: int) -> np.ndarray:
    """Up to `want` crops of the subject of each photo (the lock's subject rule, the board's crop)."""
    from edge.errors import ImageError
    from edge.images import read_image_rgb
    from edge.vision.antispoof import face_crop

    crops = []
    for f in files:
        if len(crops) >= want:
            break
        try:
            image = read_image_rgb(f)
        except ImageError:
            continue
        face = faces.subject(image).face
        if face is not None:
            crops.append(face_crop(image, face, card.crop_scale, card.crop_size))
    if not crops:
        raise DataError(f"{root}: no face found for anti-spoofing crops")
    return np.stack(crops)


def convert_antispoof(src: AntiSpoofSource, loaded, files: list[Path], root: Path, faces, workdir: Path,
                      threads: int = 2) -> tuple[Path, dict, dict]:
    """(int8 file, the manifest's `antispoof` entry without `file`, its report) for `src`, whose model and
    card `load_antispoof` gave (`loaded`)."""
    from convert.compress import quantize
    from edge.vision.antispoof import AntiSpoofModel, live_probability

    model, card = loaded
    rng = np.random.default_rng(1)
    order = [files[i] for i in rng.permutation(len(files))]
    crops = face_crops(root, order, faces, card, MIN_CALIBRATION + HELD_OUT)
    if len(crops) < MIN_CALIBRATION + 20:
        raise DataError(f"{root}: {len(crops)} faces for the anti-spoofing CNN; need {MIN_CALIBRATION + 20} "
                        f"({MIN_CALIBRATION} to calibrate int8, the rest to measure what it cost)")
    calib, held = crops[:MIN_CALIBRATION], crops[MIN_CALIBRATION:]
    int8_path = workdir / "antispoof.tflite"
    int8_path.write_bytes(quantize.to_tflite_int8(model, calib))
    int8 = AntiSpoofModel(int8_path, card, num_threads=threads)
    float_raw = np.asarray(model.predict(held.astype(np.float32), batch_size=32, verbose=0))
    float_live = np.array([live_probability(r, card) for r in float_raw])
    int8_live = np.array([live_probability(int8.raw(c), card) for c in held])
    entry = {"kind": "keras_cnn", "card": card.to_dict(),
             "input": quantize.tensor_io(int8.model.input_details[0]),
             "output": quantize.tensor_io(int8.model.output_details[0])}
    report = {
        "model": str(src.model), "name": card.name, "licence": card.licence, "threshold": card.threshold,
        "calibration_crops": len(calib), "bona_fide_frames": len(held),
        "bona_fide_as_attack_float": float(np.mean(float_live < card.threshold)),
        "bona_fide_as_attack_int8": float(np.mean(int8_live < card.threshold)),
        "decision_agreement": float(np.mean((float_live >= card.threshold) == (int8_live >= card.threshold))),
        "live_score_abs_diff": {"mean": float(np.mean(np.abs(float_live - int8_live))),
                                "max": float(np.max(np.abs(float_live - int8_live)))},
        "live_score_median": {"float": float(np.median(float_live)), "int8": float(np.median(int8_live))},
        "attacks": "not measured here (needs attack data)",
    }
    return int8_path, entry, report


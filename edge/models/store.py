"""Where the pretrained models fetched from the package registries live, and what they must be.

The board and the workstation both look models up here by name. Every file is pinned by sha256 and size,
because a half-downloaded or swapped model gives silently wrong detections or embeddings rather than an
error. `facelock models fetch` (convert.fetch) fills the folder; this module only reads and verifies it,
so it stays importable on the board (standard library and nothing else).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ModelError
from edge.files import sha256_file

ENV_VAR = "FACELOCK_MODELS"


@dataclass(frozen=True)
class ModelSpec:
    """One pretrained file and the registry package it is taken from."""

    filename: str
    sha256: str
    size: int
    package: str  # distribution name on PyPI
    version: str
    module: str  # import name of the package, to find an installed copy
    member: str  # path inside the package (relative to the module's folder)
    license: str
    # Wheels are preferred; face_recognition_models 0.3.0 exists on PyPI only as an sdist.
    sdist_only: bool = False
    # Extra `pip download` arguments: mediapipe's wheels are platform-specific but the .tflite inside is
    # not, so pinning one platform lets any host (an ARM board, macOS) fetch it.
    pip_args: tuple[str, ...] = ()
    description: str = ""


CATALOGUE: dict[str, ModelSpec] = {
    spec.filename: spec
    for spec in (
        ModelSpec(
            filename="face_detection_short_range.tflite",
            sha256="bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
            size=229_714,
            package="mediapipe",
            version="0.10.14",
            module="mediapipe",
            member="modules/face_detection/face_detection_short_range.tflite",
            license="Apache-2.0",
            pip_args=("--python-version", "3.11", "--platform", "manylinux_2_17_x86_64"),
            description="BlazeFace short-range face detector (128x128, 6 keypoints)",
        ),
        ModelSpec(
            filename="face_detection_full_range_sparse.tflite",
            sha256="2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
            size=676_746,
            package="mediapipe",
            version="0.10.14",
            module="mediapipe",
            member="modules/face_detection/face_detection_full_range_sparse.tflite",
            license="Apache-2.0",
            pip_args=("--python-version", "3.11", "--platform", "manylinux_2_17_x86_64"),
            description="BlazeFace full-range face detector (192x192, 6 keypoints; faces at door distance)",
        ),
        ModelSpec(
            filename="face_landmark.tflite",
            sha256="1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
            size=1_242_398,
            package="mediapipe",
            version="0.10.14",
            module="mediapipe",
            member="modules/face_landmark/face_landmark.tflite",
            license="Apache-2.0",
            pip_args=("--python-version", "3.11", "--platform", "manylinux_2_17_x86_64"),
            description="MediaPipe face mesh (468 points and a face-presence score on a 192x192 crop)",
        ),
        ModelSpec(
            filename="dlib_face_recognition_resnet_model_v1.dat",
            sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            size=22_466_066,
            package="face_recognition_models",
            version="0.3.0",
            module="face_recognition_models",
            member="models/dlib_face_recognition_resnet_model_v1.dat",
            license="CC0-1.0",
            sdist_only=True,
            description="dlib's ResNet face embedder (150x150 chips, 128-D)",
        ),
        ModelSpec(
            filename="shape_predictor_5_face_landmarks.dat",
            sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
            size=9_150_489,
            package="face_recognition_models",
            version="0.3.0",
            module="face_recognition_models",
            member="models/shape_predictor_5_face_landmarks.dat",
            license="CC0-1.0",
            sdist_only=True,
            description="dlib's 5-point landmark model (reference alignment for benchmarks)",
        ),
    )
}

DETECTOR = "face_detection_short_range.tflite"
DETECTOR_FULL_RANGE = "face_detection_full_range_sparse.tflite"
LANDMARKS = "face_landmark.tflite"
DLIB_RESNET = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_SHAPE5 = "shape_predictor_5_face_landmarks.dat"


def models_dir() -> Path:
    """`$FACELOCK_MODELS`, else `~/.cache/facelock/models`. Not created here: readers must not litter."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "facelock" / "models"


def spec(name: str) -> ModelSpec:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise ModelError(f"{name}: not a known model (known: {', '.join(sorted(CATALOGUE))})") from None



# Hashing the 22 MB ResNet on a Pi takes a noticeable fraction of a second; a file whose size and mtime
# have not changed since it last verified is taken as still good.
_verified: dict[tuple[str, int, int], str] = {}
_verified_lock = threading.Lock()


def check_file(path: str | os.PathLike, model: ModelSpec) -> None:
    """Raise ModelError unless `path` is exactly the catalogued file (size first: it is free)."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ModelError(f"{path}: model file missing; run `facelock models fetch`") from None
    if st.st_size != model.size:
        raise ModelError(
            f"{path}: truncated or corrupt model ({st.st_size} bytes, expected {model.size}); "
            f"run `facelock models fetch --force`"
        )
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _verified_lock:
        if _verified.get(key) == model.sha256:
            return
    digest = sha256_file(path)
    if digest != model.sha256:
        raise ModelError(
            f"{path}: corrupt model (sha256 {digest[:12]}..., expected {model.sha256[:12]}...); "
            f"run `facelock models fetch --force`"
        )
    with _verified_lock:
        _verified[key] = model.sha256


def forget_verified() -> None:
    """Drop the verification cache (tests; or after rewriting files in place)."""
    with _verified_lock:
        _verified.clear()


def model_path(name: str, verify: bool = True, directory: str | os.PathLike | None = None) -> Path:
    """The path of a fetched model, checked against the catalogue. Raises ModelError naming the file and
    saying what to do when it is missing, truncated or corrupt."""
    model = spec(name)
    path = Path(directory) if directory is not None else models_dir()
    path = path / model.filename
    if not path.is_file():
        raise ModelError(f"{path}: model file missing; run `facelock models fetch`")
    if verify:
        check_file(path, model)
    return path


def status(directory: str | os.PathLike | None = None) -> list[dict]:
    """One row per catalogued model: where it is and whether it verifies (for `facelock models list`)."""
    folder = Path(directory) if directory is not None else models_dir()
    rows = []
    for model in CATALOGUE.values():
        path = folder / model.filename
        try:
            check_file(path, model)
            state = "ok"
        except ModelError as exc:
            state = "missing" if not path.exists() else f"bad: {exc}"
        rows.append(
            {
                "name": model.filename,
                "path": str(path),
                "state": state,
                "bytes": model.size,
                "sha256": model.sha256,
                "source": f"{model.package}=={model.version}",
                "license": model.license,
                "description": model.description,
            }
        )
    return rows


def default_model() -> Path:
    """The embedder used when none is given: the Keras port of dlib's ResNet that `facelock models build`
    writes into the models folder."""
    return models_dir() / "dlib_resnet_v1.keras"

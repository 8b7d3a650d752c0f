"""Shared fixtures: the fetched models, the public-domain portraits, and LFW when it is there."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from mqtt_broker import broker  # noqa: F401  (the real Mosquitto fixture, for every test module)
from secure_broker import pki, secure_broker  # noqa: F401  (the same with TLS and accounts)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parents[1] / "convert" / "portraits"  # shipped in the wheel for the demo
LFW = Path(os.environ.get("FACELOCK_LFW", REPO.parent / "shared" / "data" / "lfw"))
PORTRAITS = ("astronaut.png", "grace_hopper.jpg")


@pytest.fixture(autouse=True)
def _own_state_home(tmp_path_factory, monkeypatch):
    """$XDG_STATE_HOME per test (the service's processes inherit it): the lockout file a config does not
    place (decide.state_path) lands there, so one test's failed attempts never lock out the next test, nor
    touch the developer's ~/.local/state."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The models folder ($FACELOCK_MODELS or the default), fetched and verified once per session. A fetch
    that fails is a test failure, not a skip: `make test` fetches first, so failing here means the fetch
    itself is broken."""
    from convert.errors import FetchError
    from convert.fetch import fetch_models
    from edge.models.store import models_dir as default_dir

    folder = default_dir()
    try:
        fetch_models(folder, log=lambda _msg: None)
    except FetchError as exc:
        pytest.fail(f"could not fetch the models into {folder}: {exc}")
    return folder


@pytest.fixture(scope="session")
def detector_path(models_dir) -> Path:
    from edge.models.store import DETECTOR, model_path

    return model_path(DETECTOR, directory=models_dir)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def portraits() -> list[np.ndarray]:
    """Eileen Collins (NASA) and Grace Hopper (US Navy), uint8 RGB, in that order."""
    import cv2

    out = []
    for name in PORTRAITS:
        bgr = cv2.imread(str(FIXTURES / name), cv2.IMREAD_COLOR)
        assert bgr is not None, f"{FIXTURES / name}: fixture portrait missing or unreadable"
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return out


@pytest.fixture(scope="session")
def stages(models_dir):
    """(the full-range BlazeFace detector, the face-landmark model), one thread each: the real models the
    liveness and challenge tests read meshes with."""
    from edge.models.store import DETECTOR_FULL_RANGE, LANDMARKS, model_path
    from edge.vision.detect import BlazeFaceDetector, DetectorOptions
    from edge.vision.landmarks import FaceLandmarker

    return (BlazeFaceDetector(model_path(DETECTOR_FULL_RANGE, directory=models_dir), DetectorOptions(num_threads=1)),
            FaceLandmarker(model_path(LANDMARKS, directory=models_dir), num_threads=1))


@pytest.fixture(scope="session")
def mesh(stages, portraits):
    """The astronaut's (468, 3) mesh from the real landmark model, as the pipeline carries it on Face."""
    detector, landmarker = stages
    faces = landmarker.confirm(portraits[0], detector.detect(portraits[0]))
    assert len(faces) == 1 and faces[0].mesh is not None and faces[0].mesh.shape == (468, 3)
    return faces[0].mesh.astype(np.float64)


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    if not (LFW / "split.csv").is_file():
        pytest.skip(f"LFW not found at {LFW} (shared data; see ../shared/data/INDEX.md)")
    return LFW


@pytest.fixture(scope="session")
def keras_model_path(models_dir) -> Path:
    """The Keras port of dlib's ResNet (`facelock models build`), built once if the folder lacks it."""
    pytest.importorskip("tf_keras", reason="building the Keras embedder needs the [convert] extra")
    from facelock.commands.models import KERAS_EMBEDDER

    path = models_dir / KERAS_EMBEDDER
    if not path.is_file():
        from convert.dlib_port import build_keras_embedder
        from edge.models.store import DLIB_RESNET, model_path

        build_keras_embedder(model_path(DLIB_RESNET, directory=models_dir), path)
    return path


@pytest.fixture(scope="session")
def quick_bundle(tmp_path_factory, portraits, keras_model_path):
    """A real int8 bundle from `facelock convert --quick` on the embedded demo faces (50% sparsity):
    (ConvertOptions, report). Built once per session; about a minute."""
    pytest.importorskip("tensorflow_model_optimization", reason="convert needs the [convert] extra")
    from convert.compress.run import ConvertOptions, run_convert
    from convert.demo_faces import PEOPLE, write_demo_faces

    root = tmp_path_factory.mktemp("convert")
    data = root / "faces"
    # The pair images live beside the training ones here: a plumbing check, not an accuracy claim.
    write_demo_faces(data, portraits=dict(zip(PEOPLE, portraits)))
    opts = ConvertOptions(model=keras_model_path, data=data, pairs=data / "pairs.csv",
                          out=root / "bundle", workdir=root / "work", sparsity=0.5).quickened()
    return opts, run_convert(opts)

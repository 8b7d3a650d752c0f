"""Every config file the project ships or renders is read by the runtime's own loader (what `facelock run
--check` does), so a board never starts with a config it refuses: the documented example, the board config
that `deploy bundle` packs and install.sh installs, and what `deploy sdcard` renders."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import ConfigError
from edge.service.config import EXAMPLE_PATH, load_config

REPO = Path(__file__).resolve().parents[1]


def _shipped_toml_files() -> list[Path]:
    skip = {".venv", ".git", "build", "dist", "out", "models"}
    return sorted(p for p in REPO.rglob("*.toml") if not skip & set(p.relative_to(REPO).parts)
                  and p.name != "pyproject.toml")


def test_every_toml_file_in_the_checkout_is_a_valid_runtime_config():
    files = _shipped_toml_files()
    assert EXAMPLE_PATH in files
    for f in files:
        load_config(f)  # raises ConfigError naming the file, section and key


def test_board_config_passes_the_runtime_loader(tmp_path):
    from deploy.board_config import BOARD_VALUES, board_config

    path = tmp_path / "config.toml"
    path.write_text(board_config())
    config = load_config(path)
    for section, table in BOARD_VALUES.items():
        for key, value in table.items():
            assert getattr(getattr(config, section), key) == value


def test_sdcard_render_passes_the_runtime_loader(tmp_path):
    from deploy.sdcard import render_config

    path = tmp_path / "config.toml"
    path.write_text(render_config(None, "front_door", {"host": "broker.lan", "port": 8883, "username": "lock",
                                                      "password": None, "tls": True}))
    config = load_config(path)
    assert (config.mqtt.device_id, config.mqtt.host, config.mqtt.port) == ("front_door", "broker.lan", 8883)


def test_a_bad_value_is_refused_before_it_reaches_a_board():
    from deploy.board_config import board_config
    from deploy.errors import DeployError

    with pytest.raises(DeployError, match=r"mqtt\.port = 0"):
        board_config({"mqtt": {"port": 0}})
    with pytest.raises(DeployError, match="unknown key 'id'"):
        board_config({"mqtt": {"id": "x"}})


def test_the_packed_artifact_config_is_the_runtime_schema(tmp_path):
    """The config inside a real artifact (what install.sh installs as /etc/facelock/config.toml)."""
    import tarfile

    from deploy.artifact import build_artifact

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    pytest.importorskip("cv2")
    from edge.models.bundle import write_manifest

    (bundle / "embedder.tflite").write_bytes(b"x")
    (bundle / "detector.tflite").write_bytes(b"y")
    write_manifest(bundle, {"embedder": {"file": "embedder.tflite"}, "detector": {"file": "detector.tflite"},
                            "alignment": {"template": {}}})
    wheel = tmp_path / "facelock-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    info = build_artifact(bundle, tmp_path / "out.tar.gz", wheel=wheel, log=lambda _m: None)
    with tarfile.open(info.path) as tar:
        text = tar.extractfile(f"{info.top}/config.toml.example").read().decode()
    (tmp_path / "config.toml").write_text(text)
    assert load_config(tmp_path / "config.toml").model.path == "/opt/facelock/current/bundle"
    with pytest.raises(ConfigError):
        (tmp_path / "bad.toml").write_text("[device]\nid = 'x'\n")
        load_config(tmp_path / "bad.toml")

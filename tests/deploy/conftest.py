"""Fixtures for the deployment tests: a facelock wheel built once per session, a small model bundle, two
deploy artifacts (different releases of the same version), and throwaway root file systems."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from deploy_testlib import SSHD, SYSTEM_PYTHON, free_port, make_root

from deploy.paths import REPO_DIR


def system_python_problem() -> str | None:
    try:
        proc = subprocess.run(
            [SYSTEM_PYTHON, "-c", "import sys, venv, ensurepip, numpy; sys.exit(sys.version_info < (3, 11))"],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{SYSTEM_PYTHON}: {exc}"
    if proc.returncode != 0:
        return (
            f"{SYSTEM_PYTHON} needs Python >= 3.11 with venv/ensurepip and numpy "
            "(Debian: apt-get install python3-venv python3-numpy), like the board's apt Python"
        )
    return None


@pytest.fixture(scope="session")
def system_python() -> str:
    problem = system_python_problem()
    if problem:
        pytest.skip(problem)
    return SYSTEM_PYTHON


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """facelock's wheel, built once (pip wheel --no-deps) from this checkout."""
    from deploy.artifact import build_wheel

    return build_wheel(tmp_path_factory.mktemp("wheel"), repo=REPO_DIR, log=lambda _m: None)


@pytest.fixture(scope="session")
def wheel2(wheel, tmp_path_factory) -> Path:
    """The same wheel with another byte layout (a ZIP comment): a second release of the same version."""
    out = tmp_path_factory.mktemp("wheel2") / wheel.name
    with zipfile.ZipFile(wheel) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            zout.writestr(item, zin.read(item.filename))
        zout.comment = b"facelock test: second build"
    return out


@pytest.fixture(scope="session")
def model_bundle(tmp_path_factory) -> Path:
    """A schema-valid model bundle with stand-in model files (the installer never runs them)."""
    from edge.models.bundle import write_manifest

    folder = tmp_path_factory.mktemp("bundle")
    (folder / "detector.tflite").write_bytes(b"TFL3 stand-in detector")
    (folder / "embedder.tflite").write_bytes(b"TFL3 stand-in embedder")
    write_manifest(
        folder,
        {
            "created": "2026-01-01T00:00:00Z",
            "embedder": {"file": "embedder.tflite", "edgetpu_file": None},
            "detector": {"file": "detector.tflite", "kind": "blazeface", "input_size": 128},
            "alignment": {"chip_size": 150, "template": [[0.3, 0.3], [0.7, 0.3], [0.5, 0.7]]},
            "threshold": {"cosine": 0.5, "target_far": 1e-4, "chosen_on": "test"},
        },
    )
    return folder


@pytest.fixture(scope="session")
def artifact(wheel, model_bundle, tmp_path_factory):
    from deploy.artifact import build_artifact

    return build_artifact(model_bundle, tmp_path_factory.mktemp("art1"), wheel=wheel, log=lambda _m: None)


@pytest.fixture(scope="session")
def artifact2(wheel2, model_bundle, tmp_path_factory):
    from deploy.artifact import build_artifact

    return build_artifact(model_bundle, tmp_path_factory.mktemp("art2"), wheel=wheel2, log=lambda _m: None)


@pytest.fixture
def fake_root(tmp_path) -> Path:
    return make_root(tmp_path / "root")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    if not SSHD:
        pytest.skip("sshd not installed (Debian: apt-get install openssh-server)")
    if shutil.which("ssh") is None:
        pytest.skip("ssh client not installed (Debian: apt-get install openssh-client)")
    if os.geteuid() != 0:
        pytest.skip("the loopback sshd test logs in as the current user and installs as root: run as root")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nAcceptEnv FACELOCK_*\n"
        "Subsystem sftp internal-sftp\nLogLevel VERBOSE\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    log = open(d / "sshd.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not start: {(d / 'sshd.log').read_text()}")
            time.sleep(0.1)
    host_pub = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    yield {"dir": d, "port": port}
    proc.terminate()
    proc.wait(timeout=10)
    log.close()

"""The offline artifact: `facelock deploy bundle --board ... --python ...` carries a wheelhouse from which
facelock[edge] resolves for that board with no index, and install.sh installs from it with no network.

These download wheels from the package index the first time (cached in ~/.cache/facelock/wheelhouse, so
later runs are offline) and skip, saying so, when neither the index nor a complete cache is there."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from deploy_testlib import SYSTEM_PYTHON, make_root, result_fields, unpack
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from deploy.paths import REPO_DIR

pytestmark = pytest.mark.slow

# Raspberry Pi OS Bookworm's apt python3-numpy, seen by the venv through --system-site-packages.
BOOKWORM_NUMPY = Version("1.24.2")


def _edge_requirements() -> list[Requirement]:
    pyproject = tomllib.loads((REPO_DIR / "pyproject.toml").read_text())
    return [Requirement(r) for r in pyproject["project"]["optional-dependencies"]["edge"]]


def _build(model_bundle, wheel, out: Path, board: str, python: str):
    from deploy.artifact import build_artifact
    from deploy.wheelhouse import WheelhouseDownloadError

    try:
        return build_artifact(model_bundle, out, wheel=wheel, board=board, python=python, log=lambda _m: None)
    except WheelhouseDownloadError as exc:
        pytest.skip(f"no package index reachable and no complete wheel cache for {board} py{python}: {exc}")


def _wheelhouse(artifact, tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    folder = unpack(artifact, tmp_path / "unpacked")
    wheels = {canonicalize_name(parse_wheel_filename(f.name)[0]): f for f in (folder / "wheelhouse").glob("*.whl")}
    return folder, wheels


def _requires(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = Parser().parsestr(z.read(meta).decode("utf-8"))
    return [Requirement(r) for r in msg.get_all("Requires-Dist") or []]


def _dry_run(folder: Path, platforms: tuple[str, ...], python: str, tmp_path: Path) -> str:
    wheel = next(folder.glob("facelock-*.whl"))
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--find-links",
           str(folder / "wheelhouse"), "--only-binary=:all:", "--implementation", "cp", "--python-version", python,
           "--target", str(tmp_path / "x"), "-c", str(folder / "wheelhouse" / "constraints.txt")]
    for p in platforms:
        cmd += ["--platform", p]
    proc = subprocess.run([*cmd, f"{wheel}[edge]"], capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_bookworm_aarch64_artifact_installs_offline(model_bundle, wheel, tmp_path):
    """--board linux-aarch64 --python 3.11: Raspberry Pi OS Bookworm (apt numpy 1.24)."""
    from deploy.wheelhouse import BOARDS

    artifact = _build(model_bundle, wheel, tmp_path / "dist", "linux-aarch64", "3.11")
    folder, wheels = _wheelhouse(artifact, tmp_path)
    print("wheelhouse:", " ".join(sorted(f.name for f in wheels.values())))
    assert (folder / "wheelhouse" / "TARGET").read_text().startswith("board=linux-aarch64\n")
    # aarch64 (or pure Python) wheels for CPython 3.11, one for every edge requirement
    for f in wheels.values():
        tags = parse_wheel_filename(f.name)[3]
        assert all(t.platform == "any" or t.platform.endswith("_aarch64") for t in tags), f.name
        assert all(t.interpreter in ("py3", "py2", "cp311") or t.abi == "abi3" for t in tags), f.name
    for req in _edge_requirements():
        assert canonicalize_name(req.name) in wheels, f"wheelhouse lacks {req.name}"
    # the fallback interpreter for 3.11, and nothing that needs numpy 2 over apt's numpy 1.24
    assert "tflite-runtime" in wheels and "ai-edge-litert" in wheels
    env = {**default_environment(), "python_version": "3.11", "python_full_version": "3.11.2",
           "platform_machine": "aarch64", "sys_platform": "linux", "extra": ""}
    for f in wheels.values():
        for req in _requires(f):
            if canonicalize_name(req.name) == "numpy" and (req.marker is None or req.marker.evaluate(env)):
                assert req.specifier.contains(BOOKWORM_NUMPY), f"{f.name} needs {req}: not apt's numpy 1.24"
    assert parse_wheel_filename(wheels["numpy"].name)[1] < Version("2")
    # the board's own resolution, with no index
    out = _dry_run(folder, BOARDS["linux-aarch64"], "3.11", tmp_path)
    for req in _edge_requirements():
        assert req.name.lower().replace("-", "_") in out.lower().replace("-", "_"), out


def test_trixie_aarch64_artifact_uses_ai_edge_litert(model_bundle, wheel, tmp_path):
    """--python 3.13: the Trixie-based release (apt numpy 2); no tflite-runtime (it has no cp313 wheel)."""
    from deploy.wheelhouse import BOARDS

    artifact = _build(model_bundle, wheel, tmp_path / "dist", "linux-aarch64", "3.13")
    folder, wheels = _wheelhouse(artifact, tmp_path)
    print("wheelhouse:", " ".join(sorted(f.name for f in wheels.values())))
    assert "tflite-runtime" not in wheels
    assert any(t.interpreter == "cp313" for t in parse_wheel_filename(wheels["ai-edge-litert"].name)[3])
    for req in _edge_requirements():
        assert canonicalize_name(req.name) in wheels, f"wheelhouse lacks {req.name}"
    _dry_run(folder, BOARDS["linux-aarch64"], "3.13", tmp_path)


def _install(artifact, tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    root = make_root(tmp_path / name / "root")
    folder = unpack(artifact, tmp_path / name / "unpacked")
    return subprocess.run(["bash", str(folder / "install.sh"), "--root", str(root), "--no-systemd",
                           "--python", SYSTEM_PYTHON], capture_output=True, text=True, timeout=120, check=False,
                          env={k: v for k, v in os.environ.items() if not k.startswith("FACELOCK_")})


def test_a_wheelhouse_for_another_python_or_machine_is_refused_by_the_installer(model_bundle, wheel, tmp_path):
    import platform

    if platform.machine() != "x86_64":
        pytest.skip("needs a machine that is neither the wheelhouse's Python nor its aarch64")
    proc = _install(_build(model_bundle, wheel, tmp_path / "d13", "linux-aarch64", "3.13"), tmp_path, "py")
    assert proc.returncode == 1
    assert "built for Python 3.13" in proc.stdout and "--python 3.11" in proc.stdout, proc.stdout
    proc = _install(_build(model_bundle, wheel, tmp_path / "d11", "linux-aarch64", "3.11"), tmp_path, "arch")
    assert proc.returncode == 1
    assert "built for aarch64" in proc.stdout and "--board linux-x86_64" in proc.stdout, proc.stdout
    assert "status=failed" in proc.stdout and "pip install" not in proc.stdout


def test_offline_install_keeps_apts_numpy_and_runs_a_model(system_python, model_bundle, wheel, models_dir,
                                                           tmp_path):
    """The x86_64 twin of the Bookworm board, on this machine: Debian's python3 3.11 with apt's numpy 1.24,
    install.sh with the artifact's wheelhouse only (no pip config, no index), then the TFLite interpreter
    and OpenCV work in the venv on apt's numpy."""
    import platform

    if platform.machine() != "x86_64":
        pytest.skip("the twin of the board needs an x86_64 machine")
    probe = subprocess.run([system_python, "-c", "import numpy, sys; print(numpy.__version__, sys.version_info[:2])"],
                           capture_output=True, text=True, check=True).stdout
    if not probe.startswith("1.") or "(3, 11)" not in probe:
        pytest.skip(f"{system_python} is not Python 3.11 with numpy 1.x (Bookworm's pair): {probe}")
    artifact = _build(model_bundle, wheel, tmp_path / "dist", "linux-x86_64", "3.11")
    root = make_root(tmp_path / "root")
    folder = unpack(artifact, tmp_path / "unpacked")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACELOCK_", "PIP_"))}
    env["PIP_CONFIG_FILE"] = os.devnull  # no index, no find-links but the wheelhouse
    proc = subprocess.run(["bash", str(folder / "install.sh"), "--root", str(root), "--no-systemd",
                           "--python", system_python], capture_output=True, text=True, timeout=900, check=False,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert result_fields(proc.stdout)["status"] == "ok"
    assert "installing offline from" in proc.stdout
    venv_py = root / "opt" / "facelock" / "current" / "venv" / "bin" / "python"
    detector = models_dir / "face_detection_short_range.tflite"
    code = (
        "import sys, numpy, cv2\n"
        "from edge.vision.interpreter import load_interpreter\n"
        "it = load_interpreter(sys.argv[1], num_threads=1)\n"
        "print(numpy.__version__, numpy.__file__, cv2.__version__, it.backend)\n"
    )
    run = subprocess.run([str(venv_py), "-c", code, str(detector)], capture_output=True, text=True, timeout=120,
                         check=False, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    version, where, cv_version, backend = run.stdout.split()[-4:]
    assert Version(version) == Version(probe.split()[0]) and "/usr/lib/python3/dist-packages" in where
    assert Version(cv_version) < Version("5") and backend == "ai_edge_litert"
    with tarfile.open(artifact.path) as tar:
        assert f"{artifact.top}/wheelhouse/constraints.txt" in tar.getnames()

"""The board's Python stack under user-mode emulation (qemu-aarch64-static), no VM, no root disk image:

    python tests/board/board_user.py [--work DIR]

  1. a sysroot of Debian Bookworm arm64's own python3 (3.11) and python3-numpy (1.24), unpacked from the
     archive with a private apt (board_image.PrivateApt), cached beside the board image
  2. from the offline artifact's wheelhouse (`facelock deploy bundle --board linux-aarch64 --python 3.11`):
     tflite-runtime 2.14 (install.sh's fallback interpreter, built for numpy 1.x), opencv-python-headless,
     paho-mqtt, gpiozero, unpacked into a folder on PYTHONPATH next to this checkout's source
  3. `qemu-aarch64-static -L SYSROOT SYSROOT/usr/bin/python3.11` runs (a) a subset of the edge tests that
     need no subprocess (qemu-user cannot start arm64 children without binfmt_misc) and (b) `facelock embed
     --json` on the two portraits with the real bundle, compared with the same command on the host.

This is the part CI can afford: minutes, where the full emulated board takes far longer.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

from board_image import PrivateApt, cache_root, debian_mirror, run

SYSROOT_PACKAGES = ["python3", "python3-numpy", "libpython3.11-stdlib", "libstdc++6", "ca-certificates"]
WHEELS = ["tflite_runtime", "opencv_python_headless", "paho_mqtt", "gpiozero", "colorzero"]
# Edge tests that run in one process (no broker, no subprocess, no TensorFlow); timing tests are left out
# (an emulated CPU's speed says nothing about a Pi's).
TESTS = ["tests/test_decide.py", "tests/test_match.py", "tests/test_outbox.py", "tests/test_quality.py",
         "tests/test_gallery.py", "tests/test_sources.py", "tests/test_detect.py", "tests/test_align.py"]
# Timing tests the "not fast" filter misses: they measure the host's scheduler and decoder jitter (frame
# gaps within 5 ms of the pacing period), which user-mode emulation on a shared CPU does not keep.
TIMING = ["tests/test_sources.py::test_folder_loop_and_pacing"]
# Tests that could kill the interpreter under tflite-runtime 2.14, which hands a .tflite to FlatBufferModel
# unverified (a truncated file with a valid header was SIGSEGV there until edge.vision.tflite_bounds): run
# first on their own by truncated_model_probe(), so a crash cannot take the rest of the subset with it.
CRASHES = ["tests/test_detect.py::test_truncated_or_foreign_model_is_a_model_error",
           "tests/test_tflite_bounds.py"]
# Pure-Python test tools copied from this venv (pytest and what it imports).
PURE = ["pytest", "_pytest", "pluggy", "iniconfig", "packaging", "pygments", "py.py"]
PORTRAITS = ["convert/portraits/astronaut.png", "convert/portraits/grace_hopper.jpg"]
QEMU = shutil.which("qemu-aarch64-static") or "qemu-aarch64-static"


def sysroot(log) -> Path:
    root = cache_root() / "sysroot-bookworm-arm64"
    if (root / "COMPLETE").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    apt = PrivateApt(cache_root() / "apt", debian_mirror(), log)
    apt.update()
    debs = cache_root() / "sysroot-debs"
    debs.mkdir(parents=True, exist_ok=True)
    run(["apt-get", *apt.opts, "-o", f"Dir::Cache::archives={debs}", "-q", "-y", "--no-install-recommends",
         "install", "--download-only", *SYSROOT_PACKAGES], log)
    for deb in sorted(debs.glob("*.deb")):
        run(["dpkg-deb", "-x", deb, root], log)
    # What the maintainer scripts would do (they cannot run here): the update-alternatives links through
    # which numpy finds libblas.so.3 and liblapack.so.3.
    libdir = root / "usr/lib/aarch64-linux-gnu"
    for lib in [*libdir.glob("blas/lib*.so.3"), *libdir.glob("lapack/lib*.so.3")]:
        link = libdir / lib.name
        if not link.exists():
            link.symlink_to(lib.relative_to(libdir))
    (root / "COMPLETE").write_text("\n".join(sorted(d.name for d in debs.glob("*.deb"))) + "\n")
    return root


def wheelhouse_from(artifact: Path, dest: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["tar", "-xzf", str(artifact), "-C", tmp, "--wildcards", "*/wheelhouse/*"], check=True)
        found = next(Path(tmp).glob("*/wheelhouse"))
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(found, dest)
    return dest


def site(wheelhouse: Path, dest: Path) -> Path:
    """WHEELS unpacked from the wheelhouse, and the pure test tools, into one folder for PYTHONPATH."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in WHEELS:
        wheel = next((w for w in sorted(wheelhouse.glob("*.whl"))
                      if re.sub(r"[-_.]+", "_", w.name.split("-")[0]).lower() == name), None)
        if wheel is None:
            if name == "colorzero":
                continue
            raise RuntimeError(f"{wheelhouse}: no {name} wheel")
        with zipfile.ZipFile(wheel) as z:
            z.extractall(dest)
    import pytest

    venv_site = Path(pytest.__file__).resolve().parents[1]
    for name in PURE:
        src = venv_site / name
        if src.is_dir():
            shutil.copytree(src, dest / name)
        elif src.is_file():
            shutil.copy2(src, dest / name)
    return dest


def arm64(root: Path, site_dir: Path, args: list[str], timeout: float = 3600) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
           "PYTHONPATH": f"{REPO}:{site_dir}", "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1",
           "FACELOCK_MODELS": os.environ.get("FACELOCK_MODELS", "")}
    env = {k: v for k, v in env.items() if v}
    return subprocess.run([QEMU, "-L", str(root), str(root / "usr/bin/python3.11"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def embeddings(text: str) -> list[list[float]]:
    """The first face's embedding of each image from `facelock embed --json` (one JSON object a line)."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            faces = item.get("faces") or ([item] if "embedding" in item else [])
            if faces and faces[0].get("embedding"):
                out.append(faces[0]["embedding"])
    return out


def cosine(a: list[float], b: list[float]) -> float:
    import numpy as np

    va, vb = np.asarray(a, float), np.asarray(b, float)
    return float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))


def truncated_model_probe(root: Path, site_dir: Path, work: Path) -> dict[str, str]:
    """What CRASHES checks, arm64 (tflite-runtime 2.14) beside the host (ai-edge-litert): a detector file cut
    in half, loaded as a model (a ModelError on both, or the report is not ok), then the CRASHES tests."""
    from edge.models.store import DETECTOR, model_path

    half = work / "half.tflite"
    half.write_bytes(model_path(DETECTOR).read_bytes()[:100_000])
    code = ("import sys; from edge.vision.detect import BlazeFaceDetector\n"
            "try:\n    BlazeFaceDetector(sys.argv[1])\nexcept Exception as exc:\n"
            "    print(type(exc).__name__, str(exc)[-120:])")
    out = {}
    for where, proc in (("arm64", arm64(root, site_dir, ["-c", code, str(half)], timeout=600)),
                        ("host", subprocess.run([sys.executable, "-c", code, str(half)], cwd=REPO,
                                                capture_output=True, text=True, check=False))):
        last = (proc.stdout.strip().splitlines() or ["(nothing)"])[-1]
        out[where] = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else last
    tests = arm64(root, site_dir, ["-m", "pytest", "-q", "-p", "no:cacheprovider", *CRASHES])
    out["tests"] = (f"killed by signal {-tests.returncode}" if tests.returncode < 0 else
                    (tests.stdout.strip().splitlines() or ["(no output)"])[-1])
    out["ok"] = tests.returncode == 0 and all(out[w].startswith("ModelError") for w in ("arm64", "host"))
    return out


def user_mode(work: Path, artifact: Path, bundle: Path | None, log=print) -> dict:
    """Runs the checks; a dict of what ran and how it went (`ok` overall)."""
    root = sysroot(log)
    site_dir = site(wheelhouse_from(artifact, work / "wheelhouse"), work / "site")
    report: dict = {"ok": True}
    probe = arm64(root, site_dir, ["-c", ("import platform, sys, numpy, tflite_runtime, cv2; "
                                          "print(platform.machine(), sys.version.split()[0], numpy.__version__, "
                                          "tflite_runtime.__version__, cv2.__version__)")])
    report["stack"] = probe.stdout.strip() or probe.stderr.strip()[-500:]
    if probe.returncode != 0:
        report["ok"] = False
        return report
    pytest_args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not fast",
                   *(f"--deselect={t}" for t in CRASHES + TIMING), *TESTS]
    tests = arm64(root, site_dir, pytest_args)
    report["tests"] = (tests.stdout.strip().splitlines() or ["(no output)"])[-1]
    # The same selection on the host: a failure in both is the checkout's, not the board's.
    host = subprocess.run([sys.executable, *pytest_args], cwd=REPO, capture_output=True, text=True, check=False)
    report["tests_on_host"] = (host.stdout.strip().splitlines() or ["(no output)"])[-1]
    report["ok"] &= tests.returncode == 0
    if tests.returncode != 0:
        report["tests_output"] = (tests.stdout + tests.stderr)[-3000:]
    report["truncated_model"] = truncated_model_probe(root, site_dir, work)
    report["ok"] &= report["truncated_model"]["ok"]
    if bundle is not None:
        args = ["-m", "facelock", "embed", *PORTRAITS, "--model", str(bundle), "--json"]
        there = arm64(root, site_dir, args)
        here = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, check=False)
        try:
            cos = [cosine(a, b) for a, b in zip(embeddings(there.stdout), embeddings(here.stdout), strict=True)]
        except (ValueError, KeyError, TypeError) as exc:
            cos = []
            report["embed_error"] = f"{exc}: {(there.stdout + there.stderr)[-800:]} | {here.stderr[-300:]}"
        report["embed_cosine_arm64_vs_host"] = [round(c, 4) for c in cos]
        report["ok"] &= len(cos) == len(PORTRAITS) and min(cos) > 0.98
    return report


def main(argv: list[str] | None = None) -> int:
    from board_release import BOARD, facelock, model_bundle

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path)
    ap.add_argument("--artifact", type=Path, help="an artifact built with --board linux-aarch64 --python 3.11")
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="facelock-board-user-"))
    work.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(m, file=sys.stderr, flush=True)
    bundle = model_bundle(cache_root(), log)
    artifact = args.artifact
    if artifact is None:
        proc = facelock("deploy", "bundle", "--model", str(bundle), "--board", BOARD[0], "--python", BOARD[1],
                        "-o", str(work) + "/")
        if proc.returncode != 0:
            print(f"facelock deploy bundle --board failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
            return 1
        artifact = Path(proc.stdout.strip().splitlines()[-1])
    report = user_mode(work, artifact, bundle, log)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

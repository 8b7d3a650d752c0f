"""The offline wheelhouse of a deploy artifact: facelock's `edge` extra as binary wheels for one board.

`facelock deploy bundle --board linux-aarch64 --python 3.11` downloads, at build time, every wheel that
`pip install facelock[edge]` needs on that board (numpy, opencv-python-headless, ai-edge-litert, paho-mqtt,
gpiozero and what they need), so `install.sh` installs with `--no-index --find-links wheelhouse` and the
board needs no network. pip matches manylinux tags exactly, so a target lists every tag its glibc accepts.

The two Raspberry Pi OS releases differ in what the venv sees through --system-site-packages:

- **Bookworm, Python 3.11**: apt's python3-numpy 1.24, which apt's picamera2 stack (simplejpeg) is built
  against. The wheelhouse is held to numpy < 2 (`constraints.txt`), so pip keeps apt's numpy instead of
  shadowing it with numpy 2: that means opencv-python-headless 4.11 (5.0 needs numpy 2) and ml_dtypes 0.5
  (0.6 needs numpy 2) under ai-edge-litert 2.3, which runs on numpy 1.24 (checked: tests/deploy). It also
  carries tflite-runtime 2.14 (cp311 only, built for numpy 1.x), which install.sh installs when
  ai_edge_litert does not import on the board.
- **Trixie, Python 3.13**: apt's numpy is 2.x; the newest wheels, ai-edge-litert, no tflite-runtime.

Downloads are cached in `$FACELOCK_WHEEL_CACHE` (default ~/.cache/facelock/wheelhouse/<board>-py<version>):
a build first resolves from the cache alone (`--no-index`), and only goes to the package index when that
fails, so a second build is offline. Every build then checks that the wheelhouse resolves on its own for
the target (`pip install --dry-run --no-index --target ...`), so an artifact never ships a wheelhouse the
board cannot install from.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deploy.errors import DeployError

TARGET_FILE = "TARGET"
CONSTRAINTS_FILE = "constraints.txt"

_GLIBC_TAGS = ("manylinux_2_17", "manylinux2014", "manylinux_2_27", "manylinux_2_28", "manylinux_2_31",
               "manylinux_2_34", "manylinux_2_35")
# board -> the wheel platform tags its Debian's glibc (2.36 on Bookworm) runs, newest last.
BOARDS: dict[str, tuple[str, ...]] = {
    f"linux-{machine}": tuple(f"{tag}_{machine}" for tag in _GLIBC_TAGS) + (f"linux_{machine}",)
    for machine in ("aarch64", "x86_64")
}
PYTHONS = ("3.11", "3.13")
# Per Python: constraints (held for the apt packages the venv sees) and wheels beyond the `edge` extra.
_CONSTRAINTS = {"3.11": ("numpy<2",), "3.13": ()}
_FALLBACKS = {"3.11": ("tflite-runtime==2.14.0",), "3.13": ()}
WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-"
                        r"(?P<plat>[^-]+)\.whl$")


class WheelhouseDownloadError(DeployError):
    """pip could not download the wheels (no package index reachable and no complete cache)."""


@dataclass(frozen=True)
class Target:
    board: str  # linux-aarch64
    python: str  # 3.11

    def __post_init__(self) -> None:
        if self.board not in BOARDS:
            raise DeployError(f"--board {self.board!r}: expected one of {', '.join(sorted(BOARDS))}")
        if self.python not in PYTHONS:
            raise DeployError(f"--python {self.python!r}: expected one of {', '.join(PYTHONS)} "
                              "(3.11: Raspberry Pi OS Bookworm, 3.13: Trixie)")

    @property
    def platforms(self) -> tuple[str, ...]:
        return BOARDS[self.board]

    @property
    def machine(self) -> str:
        return self.board.split("-", 1)[1]

    @property
    def constraints(self) -> tuple[str, ...]:
        return _CONSTRAINTS[self.python]

    @property
    def fallbacks(self) -> tuple[str, ...]:
        return _FALLBACKS[self.python]

    def pip_target_args(self) -> list[str]:
        """What makes pip resolve for the board instead of this machine."""
        args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", self.python]
        for tag in self.platforms:
            args += ["--platform", tag]
        return args


def default_cache(target: Target) -> Path:
    base = os.environ.get("FACELOCK_WHEEL_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "facelock" / "wheelhouse"
    return root / f"{target.board}-py{target.python}"


def _pip(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(cmd, 124, "", f"timed out after {timeout:.0f}s ({exc})")


def _tail(proc: subprocess.CompletedProcess, n: int = 15) -> str:
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip() and "is ignored" not in ln]
    return "\n".join(lines[-n:])


def build_wheelhouse(target: Target, wheel: Path, dest: Path, cache: Path | None = None,
                     log: Callable[[str], None] = print, timeout: float = 1800) -> list[str]:
    """Fill `dest` with the wheels facelock[edge] (from `wheel`) needs on `target`, plus its fallbacks,
    `constraints.txt` and `TARGET`; returns the wheel file names. WheelhouseDownloadError when the wheels
    are neither cached nor downloadable; DeployError when they do not resolve for the target."""
    cache = cache or default_cache(target)
    cache.mkdir(parents=True, exist_ok=True)
    dest.mkdir(parents=True, exist_ok=True)
    constraints = dest / CONSTRAINTS_FILE
    constraints.write_text("".join(f"{c}\n" for c in target.constraints), encoding="utf-8")
    reqs = [f"{wheel.resolve()}[edge]", *target.fallbacks]
    with tempfile.TemporaryDirectory(prefix="facelock-wheels-") as tmp:
        got = Path(tmp)
        base = ["download", *target.pip_target_args(), "-c", str(constraints), "--find-links", str(cache),
                "-d", str(got), *reqs]
        proc = _pip([*base[:1], "--no-index", *base[1:]], timeout)
        if proc.returncode == 0:
            log(f"wheelhouse: {target.board} py{target.python} from the cache {cache} (offline)")
        else:
            log(f"wheelhouse: downloading {target.board} py{target.python} wheels (cache: {cache})")
            proc = _pip(base, timeout)
            if proc.returncode != 0:
                raise WheelhouseDownloadError(
                    f"pip download for {target.board} py{target.python} failed, and the cache {cache} does "
                    f"not hold every wheel (is the package index reachable?):\n{_tail(proc)}")
        names = []
        for f in sorted(got.glob("*.whl")):
            if f.name.startswith("facelock-"):
                continue  # the artifact carries facelock's own wheel beside the wheelhouse
            if not (cache / f.name).exists():
                shutil.copy2(f, cache / f.name)
            shutil.copy2(f, dest / f.name)
            names.append(f.name)
    if not names:
        raise DeployError(f"{dest}: pip download saved no wheels for {target.board} py{target.python}")
    _check_tags(target, names)
    (dest / TARGET_FILE).write_text(
        f"board={target.board}\nmachine={target.machine}\npython={target.python}\n"
        f"platforms={' '.join(target.platforms)}\nfallbacks={' '.join(target.fallbacks)}\n", encoding="utf-8")
    check_resolves(target, wheel, dest)
    return names


def _check_tags(target: Target, names: list[str]) -> None:
    """Every wheel is pure Python or built for the target's machine and Python."""
    cp = "cp" + target.python.replace(".", "")
    for name in names:
        m = WHEEL_NAME.match(name)
        if not m:
            raise DeployError(f"wheelhouse: {name}: not a wheel file name")
        plats = m["plat"].split(".")
        if plats != ["any"] and not any(p in target.platforms for p in plats):
            raise DeployError(f"wheelhouse: {name} is for {m['plat']}, not {target.board}")
        pys = m["py"].split(".")
        if plats != ["any"] and m["abi"] != "abi3" and cp not in pys:
            raise DeployError(f"wheelhouse: {name} is for {m['py']}, not Python {target.python}")


def check_resolves(target: Target, wheel: Path, wheelhouse: Path, timeout: float = 600) -> None:
    """`pip install --dry-run --no-index --find-links wheelhouse facelock[edge]` for the target: the
    board's own install, minus the writing. DeployError with pip's reason when it does not resolve."""
    with tempfile.TemporaryDirectory(prefix="facelock-resolve-") as tmp:
        constraints = wheelhouse / CONSTRAINTS_FILE
        args = ["install", "--dry-run", "--ignore-installed", "--no-index", "--find-links", str(wheelhouse),
                *target.pip_target_args(), "--target", str(Path(tmp) / "t"),
                *(["-c", str(constraints)] if constraints.is_file() else []),
                f"{wheel.resolve()}[edge]", *target.fallbacks]
        proc = _pip(args, timeout)
    if proc.returncode != 0:
        raise DeployError(f"{wheelhouse}: facelock[edge] does not resolve from the wheelhouse alone for "
                          f"{target.board} py{target.python}:\n{_tail(proc)}")

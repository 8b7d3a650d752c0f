"""`facelock deploy bundle`: one .tar.gz that holds everything a board needs.

    facelock-deploy-<version>/
        VERSION                 version=, release=, wheel=, created=, commit=
        facelock-<version>-py3-none-any.whl
        bundle/                 the model bundle (manifest.json + .tflite), checked before packing
        config.toml.example     the board's config, generated from the runtime's Options (installed only where no config exists)
        wheelhouse/             with --board: the `edge` extra's wheels for that board and Python, TARGET
                                and constraints.txt (deploy/wheelhouse.py); install.sh then needs no network
        facelock.service        the systemd unit; coral-usb.conf its USB Coral drop-in
        install.sh              the installer (see deploy/install.sh)
        SHA256SUMS              sha256sum format, every file above; install.sh checks it first

The release id is `<version>-<8 hex digits of the content hash>`, so two builds of the same version with
different code or models are different releases (and one can be rolled back to the other), while pushing
the same artifact twice is a no-op.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deploy.board_config import board_config, check_config_file
from deploy.errors import DeployError
from deploy.paths import CORAL_USB_DROPIN, INSTALLER, REPO_DIR, UNIT_FILE
from edge.files import sha256_file

WHEEL_RE = re.compile(r"^facelock-(?P<version>[0-9][^-]*)-[^-]+-[^-]+-[^-]+\.whl$")
ARTIFACT_RE = re.compile(r"^facelock-deploy-(?P<version>[^/]+)\.tar\.gz$")


@dataclass(frozen=True)
class ArtifactInfo:
    path: Path
    version: str
    release: str
    top: str  # the folder inside the tarball

    @property
    def installer(self) -> str:
        return f"{self.top}/install.sh"



def build_wheel(out_dir: Path, repo: Path = REPO_DIR, log: Callable[[str], None] = print) -> Path:
    """facelock's wheel from the source checkout (pip wheel --no-deps)."""
    if not (repo / "pyproject.toml").is_file():
        raise DeployError(
            f"{repo}: no pyproject.toml; `facelock deploy bundle` builds the wheel from a source checkout "
            "(or pass --wheel FILE)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--disable-pip-version-check",
        "-q",
        "-w",
        str(out_dir),
    ]
    try:  # offline-friendly: use this environment's setuptools when it has one
        import setuptools  # noqa: F401

        cmd.append("--no-build-isolation")
    except ImportError:
        pass
    log(f"building the facelock wheel from {repo}")
    proc = subprocess.run([*cmd, str(repo)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DeployError(f"{repo}: pip wheel failed:\n{proc.stderr.strip()[-2000:]}")
    wheels = sorted(out_dir.glob("facelock-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise DeployError(f"{out_dir}: pip wheel reported success but wrote no facelock-*.whl")
    return wheels[-1]


def _copy_bundle(model_dir: Path, dest: Path) -> None:
    """Verify the model bundle (a folder or a .tar.gz) whole and copy its folder to `dest`."""
    from edge.models.bundle import load_bundle

    if not model_dir.exists():
        raise DeployError(f"{model_dir}: no such model bundle (a folder with manifest.json, or its .tar.gz)")
    with load_bundle(model_dir, verify=True) as bundle:  # BundleError names the file at fault
        shutil.copytree(bundle.path, dest)


def _tarinfo_filter(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = 0o755 if info.isdir() or info.name.endswith(".sh") else 0o644
    return info


def build_artifact(
    model_dir: str | os.PathLike,
    output: str | os.PathLike | None = None,
    config: str | os.PathLike | None = None,
    wheel: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
    board: str | None = None,
    python: str | None = None,
    wheel_cache: str | os.PathLike | None = None,
) -> ArtifactInfo:
    """Build facelock-deploy-<version>.tar.gz. `output` may be a file name or an existing folder. With
    `board` (linux-aarch64) the artifact carries the wheelhouse for that board and `python` (default 3.11);
    `wheel_cache` overrides where downloaded wheels are kept (deploy/wheelhouse.py)."""
    from deploy.wheelhouse import Target, build_wheelhouse

    target = Target(board, python or "3.11") if board else None
    if python and not board:
        raise DeployError("--python chooses the wheelhouse's Python: it needs --board (e.g. linux-aarch64)")
    # The board's config: generated from the runtime's Options, or the user's own file, checked by the
    # runtime's loader either way.
    config_text = check_config_file(config) if config else board_config()
    for needed in (INSTALLER, UNIT_FILE):
        if not needed.is_file():
            raise DeployError(f"{needed}: missing from the source checkout")

    with tempfile.TemporaryDirectory(prefix="facelock-deploy-") as tmp:
        tmp = Path(tmp)
        _copy_bundle(Path(model_dir), tmp / "bundle")  # first: a broken model fails before any build
        if wheel:
            wheel_path = Path(wheel)
            if not wheel_path.is_file():
                raise DeployError(f"{wheel_path}: no such wheel")
        else:
            wheel_path = build_wheel(tmp / "wheel", log=log)
        m = WHEEL_RE.match(wheel_path.name)
        if not m:
            raise DeployError(f"{wheel_path}: not a facelock wheel (expected facelock-<version>-*.whl)")
        version = m["version"]
        top = f"facelock-deploy-{version}"
        stage = tmp / top
        stage.mkdir()
        shutil.copy2(wheel_path, stage / wheel_path.name)
        (tmp / "bundle").rename(stage / "bundle")
        if target is not None:
            names = build_wheelhouse(target, wheel_path, stage / "wheelhouse",
                                     Path(wheel_cache) if wheel_cache else None, log=log)
            log(f"wheelhouse: {len(names)} wheels for {target.board} py{target.python}")
        (stage / "config.toml.example").write_text(config_text, encoding="utf-8")
        shutil.copy2(UNIT_FILE, stage / "facelock.service")
        if CORAL_USB_DROPIN.is_file():
            shutil.copy2(CORAL_USB_DROPIN, stage / "coral-usb.conf")
        shutil.copy2(INSTALLER, stage / "install.sh")

        files = sorted(p for p in stage.rglob("*") if p.is_file())
        sums = [f"{sha256_file(p)}  {p.relative_to(stage).as_posix()}" for p in files]
        release = f"{version}-{hashlib.sha256(chr(10).join(sums).encode()).hexdigest()[:8]}"
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        commit = _git_commit()
        (stage / "VERSION").write_text(
            f"version={version}\nrelease={release}\nwheel={wheel_path.name}\ncreated={created}\ncommit={commit}\n"
            + (f"board={target.board}\npython={target.python}\n" if target else ""),
            encoding="utf-8",
        )
        sums.append(f"{sha256_file(stage / 'VERSION')}  VERSION")
        (stage / "SHA256SUMS").write_text(
            "\n".join(sorted(sums, key=lambda s: s[66:])) + "\n", encoding="utf-8"
        )

        out = Path(output) if output else Path(f"{top}.tar.gz")
        if out.is_dir() or str(output).endswith(("/", os.sep)):  # a folder, existing or to be made
            out = out / f"{top}.tar.gz"
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(stage, arcname=top, filter=_tarinfo_filter)
        partial.replace(out)
    log(f"wrote {out} (facelock {version}, release {release}, {out.stat().st_size / 1e6:.1f} MB)")
    return ArtifactInfo(path=out, version=version, release=release, top=top)


def _git_commit() -> str:
    try:
        proc = subprocess.run(
            ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def read_artifact(path: str | os.PathLike) -> ArtifactInfo:
    """Open an artifact just enough to learn its version and release (VERSION inside)."""
    path = Path(path)
    if not path.is_file():
        raise DeployError(f"{path}: no such deploy artifact (build one with `facelock deploy bundle`)")
    try:
        with tarfile.open(path, "r:gz") as tar:
            names = tar.getnames()
            tops = {n.split("/", 1)[0] for n in names}
            if len(tops) != 1:
                raise DeployError(f"{path}: expected one top folder inside, found {sorted(tops)[:5]}")
            top = tops.pop()
            member = tar.extractfile(f"{top}/VERSION") if f"{top}/VERSION" in names else None
            if member is None:
                raise DeployError(f"{path}: no {top}/VERSION inside; not a facelock deploy artifact")
            fields = dict(
                line.split("=", 1)
                for line in io.TextIOWrapper(member, encoding="utf-8").read().splitlines()
                if "=" in line
            )
            if f"{top}/install.sh" not in names:
                raise DeployError(f"{path}: no {top}/install.sh inside")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DeployError(f"{path}: not a readable .tar.gz ({exc})") from exc
    if "version" not in fields or "release" not in fields:
        raise DeployError(f"{path}: {top}/VERSION lacks version= or release=")
    return ArtifactInfo(path=path, version=fields["version"], release=fields["release"], top=top)


# Run by the host's Python with the release's own (pure-Python) facelock wheel first on sys.path: does the
# code that will run on the board load this config?
_CHECK_WITH_RELEASE = """
import sys
sys.path.insert(0, sys.argv[1])
import edge
from edge.errors import ConfigError
from edge.service.config import load_config
if not edge.__file__.startswith(sys.argv[1]):
    sys.exit("the release's code was not the one imported: " + edge.__file__)
try:
    load_config(sys.argv[2])
except ConfigError as exc:
    print(exc)
    sys.exit(3)
"""


def check_config_with_release(artifact: str | os.PathLike, config_text: str, what: str = "the card's config") -> None:
    """Refuse a config that the artifact's own release would refuse on the board (a config rendered by newer
    code than the release it goes with: a section or key the release does not know). Loads it with the
    release's facelock wheel, not this checkout's."""
    import zipfile

    info = read_artifact(artifact)
    with tarfile.open(info.path, "r:gz") as tar:
        member = tar.extractfile(f"{info.top}/VERSION")
        fields = dict(line.split("=", 1) for line in member.read().decode().splitlines() if "=" in line)
        wheel = tar.extractfile(f"{info.top}/{fields.get('wheel', '')}") if fields.get("wheel") else None
        if wheel is None:
            raise DeployError(f"{info.path}: {info.top}/VERSION names no wheel inside the artifact")
        with tempfile.TemporaryDirectory(prefix="facelock-release-") as tmp:
            lib, config = Path(tmp) / "lib", Path(tmp) / "config.toml"
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(lib)
            config.write_text(config_text, encoding="utf-8")
            proc = subprocess.run([sys.executable, "-c", _CHECK_WITH_RELEASE, str(lib), str(config)],
                                  capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode == 3:
        raise DeployError(f"{what}: release {info.release} in {info.path.name} refuses it (its code is older or "
                          f"newer than this checkout's): {proc.stdout.strip().replace(str(config), 'config.toml')}; "
                          f"build the artifact and the card from the same checkout")
    if proc.returncode != 0:
        raise DeployError(f"{info.path}: could not check {what} with the release's code: "
                          f"{(proc.stderr or proc.stdout).strip()[-500:]}")


def find_latest_artifact(folder: Path = Path("dist")) -> Path:
    candidates = sorted(folder.glob("facelock-deploy-*.tar.gz"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        candidates = sorted(Path(".").glob("facelock-deploy-*.tar.gz"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise DeployError(
            f"no facelock-deploy-*.tar.gz in {folder}/ or ./; pass --artifact FILE or run `facelock deploy bundle`"
        )
    return candidates[-1]

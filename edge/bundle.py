"""Model bundles: the contract between `convert` (workstation) and `edge` (board).

A bundle is a folder (or a .tar.gz of one) holding `manifest.json` and the model files it lists with their
sha256. `edge` runs bundles only, and refuses one whose schema it does not know or whose files do not match,
naming the file, because a half-copied model would otherwise give silently wrong matches.

manifest.json (schema "facelock.bundle/1"):
    schema, created (UTC), files {name: {sha256, bytes}},
    embedder {file, edgetpu_file, input {size, layout, channels, dtype, scale, zero_point, normalization},
              output {dim, dtype, scale, zero_point, l2_normalize}},
    detector {file, kind, input_size},
    alignment {chip_size, template},           # the template the chips were calibrated with
    threshold {cosine, target_far, chosen_on},  # operating point and the data that justified it
    metrics {...}, provenance {...}
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import BundleError, ModelError

log = logging.getLogger(__name__)

SCHEMA = "facelock.bundle/1"
MANIFEST = "manifest.json"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Threshold:
    cosine: float  # accept when cosine similarity >= this
    target_far: float | None
    chosen_on: str


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def threshold(self) -> Threshold:
        t = self.manifest.get("threshold") or {}
        if "cosine" not in t:
            raise BundleError(f"{self.path / MANIFEST}: no threshold.cosine; rebuild the bundle with facelock convert")
        return Threshold(float(t["cosine"]), t.get("target_far"), str(t.get("chosen_on", "unknown")))

    @property
    def space(self) -> str:
        """The embedding space of the embedder (the source model's, which compression keeps); '' if unknown."""
        return str(self.manifest["embedder"].get("space", ""))

    @property
    def edgetpu_file(self) -> Path | None:
        name = self.manifest["embedder"].get("edgetpu_file")
        return self.file(name) if name else None

    def embedder(self, num_threads: int = 2, use_edgetpu: bool = True):
        """The embedder. With an Edge TPU model in the bundle and libedgetpu loadable, that one runs;
        otherwise the CPU model (the interpreter logs which)."""
        from edge.embed import TFLiteEmbedder

        tpu = self.edgetpu_file
        if use_edgetpu and tpu is not None:
            try:
                return TFLiteEmbedder(tpu, num_threads=num_threads, edgetpu=True, require_delegate=True,
                                      space=self.space)
            except ModelError as exc:  # no TPU attached or no libedgetpu: the CPU model does the same job
                log.warning("%s; using the CPU embedder", exc)
        return TFLiteEmbedder(self.file(self.manifest["embedder"]["file"]), num_threads=num_threads, space=self.space)

    def detector(self, num_threads: int = 2):
        from edge.detect import BlazeFaceDetector, DetectorOptions

        return BlazeFaceDetector(self.file(self.manifest["detector"]["file"]), DetectorOptions(num_threads=num_threads))

    def aligner(self):
        from edge.align import FaceAligner

        return FaceAligner.from_template(self.manifest["alignment"]["template"])


def load_bundle(path: str | os.PathLike, verify: bool = True) -> Bundle:
    """Open a bundle folder (or .tar.gz), check its schema and every file's sha256."""
    path = Path(path)
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        path = _extract(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path}: not a model bundle (no {MANIFEST}); build one with `facelock convert`")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from exc
    schema = manifest.get("schema") if isinstance(manifest, dict) else None
    if schema != SCHEMA:
        raise BundleError(f"{manifest_path}: schema {schema!r} is not supported (this facelock reads {SCHEMA!r})")
    for key in ("files", "embedder", "detector", "alignment"):
        if key not in manifest:
            raise BundleError(f"{manifest_path}: missing key {key!r}")
    if verify:
        for name, meta in manifest["files"].items():
            f = path / name
            if not f.is_file():
                raise BundleError(f"{f}: listed in {MANIFEST} but missing")
            size = f.stat().st_size
            digest = sha256_file(f) if size == meta["bytes"] else None
            if size != meta["bytes"] or digest != meta["sha256"]:
                found = f"{size} bytes" if digest is None else f"sha256 {digest[:16]}…"
                wanted = f"{meta['bytes']} bytes" if digest is None else f"sha256 {meta['sha256'][:16]}…"
                raise BundleError(f"{f}: checksum does not match {MANIFEST} ({found}, expected {wanted}): a "
                                  "corrupt, truncated or replaced copy; copy the bundle again")
    return Bundle(path=path, manifest=manifest)


def _extract(archive: Path) -> Path:
    target = Path(tempfile.mkdtemp(prefix="facelock-bundle-"))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(target, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{archive}: not a readable bundle archive ({exc})") from exc
    found = [p.parent for p in target.rglob(MANIFEST)]
    if len(found) != 1:
        raise BundleError(f"{archive}: expected one {MANIFEST} inside, found {len(found)}")
    return found[0]


def write_manifest(folder: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Fill in `files` (sha256 and size of every model file in the folder) and write manifest.json."""
    folder = Path(folder)
    files = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.name != MANIFEST:
            files[f.name] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
    manifest = {"schema": SCHEMA, **manifest, "files": files}
    out = folder / MANIFEST
    out.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return out

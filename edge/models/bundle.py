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

`build_manifest` assembles that structure, `write_manifest` writes it, `load_bundle` reads it: the schema
lives in this module only.
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.errors import BundleError
from edge.files import sha256_file

log = logging.getLogger(__name__)

SCHEMA = "facelock.bundle/1"
MANIFEST = "manifest.json"



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

    @property
    def embedder_file(self) -> Path:
        return self.file(self.manifest["embedder"]["file"])

    @property
    def detector_file(self) -> Path:
        return self.file(self.manifest["detector"]["file"])

    @property
    def alignment_template(self) -> dict[str, Any]:
        return self.manifest["alignment"]["template"]


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


def build_manifest(*, embedder_file: str, embedder_input: Mapping[str, Any], embedder_output: Mapping[str, Any],
                   space: str, normalization: str, detector_file: str, template: Mapping[str, Any],
                   threshold: Mapping[str, Any], metrics: Mapping[str, Any], provenance: Mapping[str, Any],
                   edgetpu_file: str | None = None, detector_kind: str = "blazeface_short_range",
                   detector_input_size: tuple[int, int] = (128, 128), chip_size: int = 150,
                   created: datetime | None = None) -> dict[str, Any]:
    """The manifest of a bundle, as `write_manifest` writes it (which adds `schema` and `files`).

    embedder_input / embedder_output: the int8 tensors, {size (without the batch), dtype, scale, zero_point};
    the input is NHWC RGB, described by `normalization`; the output is L2-normalized by the board. `space`
    is the embedding space (the source model's). `template`: the alignment template (AlignTemplate.to_dict)
    the chips of `chip_size` were calibrated with. `threshold`: the operating point, {cosine, target_far,
    chosen_on} and, when known, train_far / train_frr. `metrics` and `provenance` are kept as given.
    """
    created = created or datetime.now(UTC)
    return {
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "embedder": {
            "file": embedder_file,
            "edgetpu_file": edgetpu_file,
            "input": {**embedder_input, "layout": "NHWC", "channels": "RGB", "normalization": normalization},
            "output": {**embedder_output, "l2_normalize": True},
            "space": space,
        },
        "detector": {"file": detector_file, "kind": detector_kind, "input_size": list(detector_input_size)},
        "alignment": {"chip_size": chip_size, "template": dict(template)},
        "threshold": {k: threshold[k] for k in ("cosine", "target_far", "chosen_on", "train_far", "train_frr")
                      if k in threshold or k in ("cosine", "target_far", "chosen_on")},
        "metrics": dict(metrics),
        "provenance": dict(provenance),
    }


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

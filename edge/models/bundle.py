"""Model bundles: the contract between `convert` (workstation) and `edge` (board).

A bundle is a folder (or a .tar.gz of one) holding `manifest.json` and the model files it lists with their
sha256. `edge` runs bundles only, and refuses one whose schema it does not know or whose files do not match,
naming the file, because a half-copied model would otherwise give silently wrong matches.

manifest.json (schema "facelock.bundle/1"):
    schema, created (UTC), files {name: {sha256, bytes}},
    embedder {file, edgetpu_file, input {size, layout, channels, dtype, scale, zero_point, normalization},
              output {dim, dtype, scale, zero_point, l2_normalize},
              card {...}},                  # the model card (edge.models.card); none = dlib's port, 150x150
    detector {file, kind, input_size},
    landmarks {file, kind, input_size},         # optional: the face-landmark model (bundles since it came)
    near_detector {file, kind, input_size},     # optional: short-range BlazeFace, tried before `detector`
    antispoof {file, card {...}, input {...}, output {...}},  # optional: a passive anti-spoofing CNN (int8),
                                                # its card edge.models.card.AntiSpoofCard
    alignment {chip_size, template},           # the template the chips were calibrated with
    threshold {cosine, target_far, chosen_on,   # operating point and the data that justified it
               dim {cosine, min_contrast, chosen_on},   # optional: the same for dim faces (edge.vision.quality)
               soft {cosine, min_sharpness, chosen_on}},  # optional: and for soft faces
    metrics {...}, provenance {...}

`build_manifest` assembles that structure, `write_manifest` writes it, `load_bundle` reads it (a .tar.gz is
extracted by edge.models.archive): the schema lives in this module only.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Self

from edge.errors import BundleError
from edge.files import sha256_file
from edge.models.archive import MANIFEST, extract, remove_owned
from edge.models.card import AntiSpoofCard, EmbedderCard, card_of_manifest
from edge.types import FaceCondition

log = logging.getLogger(__name__)

SCHEMA = "facelock.bundle/1"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
# Top-level manifest keys that describe the bundle rather than name files the board loads.
_NOT_LOADED = frozenset({"files", "metrics", "provenance"})
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def is_archive(path: str | os.PathLike) -> bool:
    return Path(path).name.endswith(ARCHIVE_SUFFIXES)


# threshold.<condition>'s key for the quality gate's floor the condition's threshold was chosen at.
CONDITION_FLOOR = {FaceCondition.DIM: "min_contrast", FaceCondition.SOFT: "min_sharpness"}


@dataclass(frozen=True)
class ConditionThreshold:
    """A face condition's operating point (edge.types.FaceCondition): the same FAR, chosen on its faces from
    the gate's `floor` up (dim: the contrast `min_contrast`; soft: the sharpness `min_sharpness`)."""
    cosine: float
    floor: float
    chosen_on: str


@dataclass(frozen=True)
class Threshold:
    cosine: float  # accept when cosine similarity >= this
    target_far: float | None
    chosen_on: str
    dim: ConditionThreshold | None = None  # bundles made before it: None
    soft: ConditionThreshold | None = None  # the same


@dataclass(frozen=True)
class Bundle:
    """An opened bundle. `owned`: the temporary folder a .tar.gz was extracted into, removed by `close()`
    (or at interpreter exit); None for a bundle folder, which is never touched."""

    path: Path
    manifest: dict[str, Any]
    owned: Path | None = field(default=None, repr=False, compare=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.owned is not None:
            remove_owned(self.owned)

    def file(self, name: str) -> Path:
        """The path of a file the manifest names; BundleError when the name leaves the bundle."""
        return _inside(self.path, name, f"{self.path / MANIFEST}: file {name!r}")

    @property
    def threshold(self) -> Threshold:
        t = self.manifest.get("threshold") or {}
        if "cosine" not in t:
            raise BundleError(f"{self.path / MANIFEST}: no threshold.cosine; rebuild the bundle with facelock convert")
        conditions = {}
        for condition, floor in CONDITION_FLOOR.items():
            key = condition.value
            c = t.get(key)
            try:
                conditions[key] = None if c is None else ConditionThreshold(
                    float(c["cosine"]), float(c[floor]), str(c.get("chosen_on", "")))
            except (TypeError, KeyError, ValueError) as exc:
                raise BundleError(f"{self.path / MANIFEST}: threshold.{key}: expected {{cosine, {floor}}} "
                                  f"numbers, got {c!r} ({exc})") from None
        return Threshold(float(t["cosine"]), t.get("target_far"), str(t.get("chosen_on", "unknown")), **conditions)

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
    def near_detector_file(self) -> Path | None:
        """The short-range detector tried before `detector_file` (None for bundles without one)."""
        entry = self.manifest.get("near_detector") or {}
        return self.file(entry["file"]) if entry.get("file") else None

    @property
    def landmarks_file(self) -> Path | None:
        """The face-landmark model, or None for a bundle made before it (keypoint alignment)."""
        entry = self.manifest.get("landmarks") or {}
        return self.file(entry["file"]) if entry.get("file") else None

    @property
    def antispoof(self) -> tuple[Path, AntiSpoofCard] | None:
        """The anti-spoofing CNN's file and card, or None when the bundle carries none."""
        entry = self.manifest.get("antispoof")
        if not entry:
            return None
        where = f"{self.path / MANIFEST} antispoof"
        if not isinstance(entry, Mapping) or not entry.get("file"):
            raise BundleError(f"{where}: expected {{file, card, ...}}, got {entry!r}")
        return self.file(entry["file"]), AntiSpoofCard.from_dict(entry.get("card"), f"{where}.card")

    @property
    def card(self) -> EmbedderCard:
        """The embedder's model card: chip size, channels, normalisation, dim, template (DEFAULT_CARD, dlib's
        port, for a bundle made before cards)."""
        return card_of_manifest(self.manifest, str(self.path / MANIFEST))

    @property
    def alignment_template(self) -> dict[str, Any]:
        return self.manifest["alignment"]["template"]


def load_bundle(path: str | os.PathLike, verify: bool = True) -> Bundle:
    """Open a bundle folder (or .tar.gz) and check it whole: its schema; every file the board loads
    (embedder, Edge TPU embedder, detector, any other `file`/`*_file` key) listed in `files` with sha256
    and bytes; every name inside the bundle; with `verify`, every listed file's size and sha256.

    An archive is extracted into a temporary folder that the returned Bundle owns (`close()` or `with`
    removes it; so does interpreter exit); when the bundle is refused the folder is removed at once."""
    path = Path(path)
    owned = None
    if path.is_file() and is_archive(path):
        owned, path = extract(path)
    try:
        manifest = _read_manifest(path)
        _check_files(path, manifest, verify)
        _ = Bundle(path=path, manifest=manifest).antispoof  # a bad anti-spoofing card: refused here, named
    except BaseException:
        if owned is not None:
            remove_owned(owned)
        raise
    return Bundle(path=path, manifest=manifest, owned=owned)


def _read_manifest(path: Path) -> dict[str, Any]:
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
    for key in ("embedder", "detector"):
        if not isinstance(manifest[key], dict) or not manifest[key].get("file"):
            raise BundleError(f"{manifest_path}: {key}.file is missing (the {key} model the board loads)")
    card = card_of_manifest(manifest, str(manifest_path))  # a malformed model card is refused here
    chip = manifest["alignment"].get("chip_size") if isinstance(manifest["alignment"], dict) else None
    if chip is not None and chip != card.chip_size:
        raise BundleError(f"{manifest_path}: alignment.chip_size {chip} differs from the model card's input_size "
                          f"{list(card.input_size)}; rebuild the bundle with `facelock convert`")
    return manifest


def _check_files(path: Path, manifest: dict[str, Any], verify: bool) -> None:
    manifest_path = path / MANIFEST
    files = manifest["files"]
    if not isinstance(files, dict):
        raise BundleError(f"{manifest_path}: 'files' must map each file name to {{sha256, bytes}}")
    for key, name in referenced_files(manifest):
        if not isinstance(name, str) or name not in files:
            raise BundleError(f"{manifest_path}: {key} {name!r} is not listed in 'files' with its sha256 and "
                              "bytes, so it cannot be verified; rebuild the bundle with `facelock convert`")
    for name, meta in files.items():
        where = f"{manifest_path}: files[{name!r}]"
        f = _inside(path, name, where)
        if not isinstance(meta, dict):
            raise BundleError(f"{where}: expected {{sha256, bytes}}, got {type(meta).__name__}")
        size, digest = meta.get("bytes"), meta.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BundleError(f"{where}: 'bytes' missing or not a size in bytes (got {size!r})")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise BundleError(f"{where}: 'sha256' missing or not 64 lowercase hex digits")
        if not verify:
            continue
        if not f.is_file():
            raise BundleError(f"{f}: listed in {MANIFEST} but missing")
        found_size = f.stat().st_size
        found = sha256_file(f) if found_size == size else None
        if found != digest:
            got = f"{found_size} bytes" if found is None else f"sha256 {found[:16]}…"
            wanted = f"{size} bytes" if found is None else f"sha256 {digest[:16]}…"
            raise BundleError(f"{f}: checksum does not match {MANIFEST} ({got}, expected {wanted}): a "
                              "corrupt, truncated or replaced copy; copy the bundle again")


def referenced_files(manifest: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(key, name) of every file the board loads: each `file` or `*_file` key with a value, at any depth,
    outside `files`, `metrics` and `provenance`."""
    found: list[tuple[str, Any]] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                key = f"{where}.{k}" if where else str(k)
                if not where and k in _NOT_LOADED:
                    continue
                if (k == "file" or str(k).endswith("_file")) and v is not None:
                    found.append((key, v))
                else:
                    walk(v, key)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")

    walk(manifest, "")
    return found


def _inside(root: Path, name: Any, where: str) -> Path:
    """root/name, refusing names that are not plain relative paths or that resolve (symlinks followed)
    outside root."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        raise BundleError(f"{where}: not a file name inside the bundle")
    parts = PurePosixPath(name).parts
    if PurePosixPath(name).is_absolute() or ".." in parts or not parts:
        raise BundleError(f"{where}: must be a relative path inside the bundle (no absolute path, no '..')")
    target = root / name
    real_root = root.resolve()
    if not target.resolve().is_relative_to(real_root):
        raise BundleError(f"{where}: resolves to {target.resolve()}, outside the bundle {real_root} (a symlink?)")
    return target


def build_manifest(*, embedder_file: str, embedder_input: Mapping[str, Any], embedder_output: Mapping[str, Any],
                   space: str, normalization: str, detector_file: str, template: Mapping[str, Any],
                   threshold: Mapping[str, Any], metrics: Mapping[str, Any], provenance: Mapping[str, Any],
                   edgetpu_file: str | None = None, detector_kind: str = "blazeface_short_range",
                   detector_input_size: tuple[int, int] = (128, 128), chip_size: int = 150,
                   landmarks_file: str | None = None, card: EmbedderCard | None = None,
                   near_detector_file: str | None = None, antispoof: Mapping[str, Any] | None = None,
                   created: datetime | None = None) -> dict[str, Any]:
    """The manifest of a bundle, as `write_manifest` writes it (which adds `schema` and `files`).

    embedder_input / embedder_output: the int8 tensors, {size (without the batch), dtype, scale, zero_point};
    the input is NHWC RGB, described by `normalization`; the output is L2-normalized by the board. `space`
    is the embedding space (the source model's). `template`: the alignment template (AlignTemplate.to_dict)
    the chips of `chip_size` were calibrated with. `threshold`: the operating point, {cosine, target_far,
    chosen_on} and, when known, train_far / train_frr / dim / soft. `metrics` and `provenance` are kept as given.
    `landmarks_file`: MediaPipe's face-landmark model, when the template is a landmark one. `card`: the
    embedder's model card (its input size is then the chip size). `near_detector_file`: the short-range
    BlazeFace the board tries before `detector_file`. `antispoof`: the anti-spoofing CNN's entry,
    {file, card (AntiSpoofCard.to_dict), input, output} (the int8 tensors, as for the embedder).
    """
    chip_size = card.chip_size if card is not None else chip_size
    created = created or datetime.now(UTC)
    landmarks = ({"landmarks": {"file": landmarks_file, "kind": "mediapipe_face_landmark", "input_size": [192, 192]}}
                 if landmarks_file else {})
    if near_detector_file:
        landmarks["near_detector"] = {"file": near_detector_file, "kind": "blazeface_short_range",
                                      "input_size": [128, 128]}
    return {
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "embedder": {
            "file": embedder_file,
            "edgetpu_file": edgetpu_file,
            "input": {**embedder_input, "layout": "NHWC", "channels": "RGB", "normalization": normalization},
            "output": {**embedder_output, "l2_normalize": True},
            "space": space,
            **({"card": card.to_dict()} if card is not None else {}),
        },
        "detector": {"file": detector_file, "kind": detector_kind, "input_size": list(detector_input_size)},
        **landmarks,
        **({"antispoof": dict(antispoof)} if antispoof else {}),
        "alignment": {"chip_size": chip_size, "template": dict(template)},
        "threshold": {k: threshold[k] for k in ("cosine", "target_far", "chosen_on", "train_far", "train_frr", "dim",
                                                "soft") if k in threshold or k in ("cosine", "target_far", "chosen_on")},
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

"""The conversions `facelock bench` measures: one `facelock convert` per sparsity, cached in the work folder
(a rerun with the same options reuses the bundle and its report), or reused from an earlier convert run."""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path

from convert.bench.data import BenchOptions, DataSet
from convert.bench.util import say


@dataclass
class Conversion:
    sparsity: float
    bundle: Path
    workdir: Path
    report: dict
    cached: bool

    def source_model(self) -> Path:
        """The Keras model this conversion started from (its manifest's provenance)."""
        manifest = json.loads((self.bundle / "manifest.json").read_text())
        return Path(manifest["provenance"]["options"]["model"])


def _norm_option(key: str, value):
    if value is None:
        return None
    if key in ("model", "data", "pairs"):
        return str(Path(value).resolve())
    if key == "card" and isinstance(value, dict):  # conversions made before CardOptions said "RGB" always
        return {**value, "channels": str(value.get("channels", "RGB")).upper()}
    if isinstance(value, (list, tuple)):
        return [_norm_option(key, v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return value
    return value


def _comparable(options: dict) -> dict:
    from convert.compress.run import ConvertOptions

    defaults = {f.name: f.default for f in fields(ConvertOptions) if f.default is not MISSING}
    merged = {**defaults, **options}
    return {k: _norm_option(k, v) for k, v in merged.items() if k not in ("out", "workdir")}


def cached_report(copts) -> dict | None:
    """The report of an earlier conversion with the same options in `copts`' folders, else None."""
    report, manifest = copts.workdir / "report.json", copts.out / "manifest.json"
    needed = [copts.out / "embedder.tflite", copts.workdir / "embedder_float.tflite"]
    if copts.sparsity > 0:
        needed.append(copts.workdir / "pruned.keras")
    if not (report.is_file() and manifest.is_file() and all(p.is_file() for p in needed)):
        return None
    try:
        old = json.loads(manifest.read_text())["provenance"]["options"]
    except (OSError, ValueError, KeyError):
        return None
    if _comparable(old) != _comparable(json.loads(json.dumps(asdict(copts), default=str))):
        return None
    return json.loads(report.read_text())


def convert_options(opts: BenchOptions, ds: DataSet, sparsity: float, folder: Path):
    from convert.compress.run import ConvertOptions
    from edge.models.store import default_model

    copts = ConvertOptions(model=Path(opts.model) if opts.model else default_model(), data=ds.root,
                           pairs=ds.pairs, folds=ds.folds or (6, 7, 8, 9, 10), out=folder / "bundle",
                           workdir=folder / "work", sparsity=sparsity)
    return copts.quickened() if opts.quick else copts


def conversions(opts: BenchOptions, ds: DataSet) -> dict[float, Conversion]:
    from convert.compress.run import run_convert

    out: dict[float, Conversion] = {}
    for s in opts.sparsities:
        own = convert_options(opts, ds, s, opts.work / opts.mode / f"sparsity-{round(100 * s)}")
        candidates = [own] + [replace(own, out=Path(r) / "bundle", workdir=Path(r) / "work") for r in opts.reuse]
        hit = next(((c, r) for c in candidates if (r := cached_report(c)) is not None), None)
        if hit:
            copts, report = hit
            say(f"sparsity {s:.0%}: reusing the conversion in {copts.workdir}")
            out[s] = Conversion(s, copts.out, copts.workdir, report, True)
            continue
        say(f"sparsity {s:.0%}: running facelock convert into {own.workdir.parent}")
        report = run_convert(own)
        out[s] = Conversion(s, own.out, own.workdir, report, False)
    return out

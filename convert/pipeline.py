"""`facelock convert`: Keras embedder + face photos -> pruned, int8, validated model bundle.

Steps (each printed as it runs; the fine-tune resumes from its checkpoint in the work folder):
 1. align training faces with edge's own detector and aligner (train people only when the folder has an
    LFW-style split.csv);
 2. prune to the target sparsity, fine-tuned by distillation from the float model;
 3. full-integer int8 conversion calibrated on >= 300 aligned chips;
 4. validate float / pruned / int8 on a labelled pair list, choose the operating threshold on training
    people, plot ROC curves;
 5. check Edge TPU readiness (and compile when edgetpu_compiler exists);
 6. write the bundle folder and its .tar.gz.
"""

from __future__ import annotations

import gzip
import json
import platform
import shutil
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from convert.errors import DataError


@dataclass(frozen=True)
class ConvertOptions:
    model: Path
    data: Path
    pairs: Path | None
    folds: tuple[int, ...] = (6, 7, 8, 9, 10)
    out: Path = Path("out/bundle")
    workdir: Path = Path("out/work")
    sparsity: float = 0.5
    epochs: int = 4
    train_faces: int = 3000
    calibration: int = 400
    target_far: float = 1e-3
    max_pairs: int | None = None
    threads: int = 2
    qat: bool = False  # quantization-aware fine-tune (sparsity kept) before int8 conversion
    qat_epochs: int = 1
    quick: bool = False

    def quickened(self) -> ConvertOptions:
        """Small everything: for the demo and the tests (minutes, not an hour)."""
        return replace(self, epochs=1, train_faces=min(self.train_faces, 960),
                       calibration=300, max_pairs=min(self.max_pairs or 600, 600), quick=True)


def _say(msg: str) -> None:
    print(f"[convert] {msg}", file=sys.stderr, flush=True)


def _embed(embedder, chips: np.ndarray, desc: str) -> np.ndarray:
    from tqdm import tqdm

    out = []
    step = 64
    for i in tqdm(range(0, len(chips), step), desc=desc, unit="batch", file=sys.stderr, leave=False):
        out.append(embedder.embed(chips[i:i + step]))
    return np.concatenate(out)


def run_convert(opts: ConvertOptions) -> dict:
    from convert import dlib_import, prune, quantize, validate
    from convert.data import build_chipset, list_images, spread_by_person
    from convert.edgetpu import check_edgetpu, compile_edgetpu
    from convert.embedders import KerasEmbedder, embedding_space
    from edge import bundle as bundle_mod
    from edge.align import FaceAligner
    from edge.detect import BlazeFaceDetector, DetectorOptions
    from edge.embed import TFLiteEmbedder
    from edge.modelstore import model_path

    started = time.time()
    opts.workdir.mkdir(parents=True, exist_ok=True)
    detector_file = model_path("face_detection_short_range.tflite")
    detector = BlazeFaceDetector(detector_file, DetectorOptions(num_threads=opts.threads))
    aligner = FaceAligner()

    # 1. training chips
    files = spread_by_person(list_images(opts.data, split="train"), opts.train_faces)
    _say(f"aligning up to {len(files)} training photos from {opts.data}")
    train = build_chipset(opts.data, files, detector, aligner, min_faces=quantize.MIN_REPRESENTATIVE,
                          cache_dir=opts.workdir / "cache")
    _say(f"{len(train)} training faces of {len(train.people)} people")

    # pair chips (held out: never used for fine-tuning, calibration or the threshold)
    pairs = None
    if opts.pairs:
        pairs = validate.read_pair_list(opts.pairs, set(opts.folds))
        if opts.max_pairs:
            pairs = _first_pairs(pairs, opts.max_pairs)
        pair_root = opts.pairs.parent
        test = build_chipset(pair_root, [pair_root / f for f in pairs.files], detector, aligner,
                             cache_dir=opts.workdir / "cache")
        found = np.array([f in set(test.files) for f in pairs.files])
        chip_of = {f: i for i, f in enumerate(test.files)}
        test_chips = np.zeros((len(pairs.files), *train.chips.shape[1:]), dtype=np.uint8)
        for i, f in enumerate(pairs.files):
            if f in chip_of:
                test_chips[i] = test.chips[chip_of[f]]
        _say(f"{len(pairs.same)} pairs, {found.sum()}/{len(found)} faces found")

    # 2. float model, float TFLite, pruning
    teacher = dlib_import.load_keras_model(opts.model)
    float_tflite = opts.workdir / "embedder_float.tflite"
    float_tflite.write_bytes(quantize.to_tflite_float(teacher))
    student = teacher
    sparsity_rows: list = []
    if opts.sparsity > 0:
        _say(f"pruning to {opts.sparsity:.0%} sparsity by distillation ({opts.epochs} epochs)")
        popts = prune.PruneOptions(target_sparsity=opts.sparsity, epochs=opts.epochs)
        if opts.quick:
            # 60 steps instead of ~400: prune in small increments and take small steps. Measured on LFW train
            # chips: median cosine to the float model 0.985 (0.962 with the full run's schedule squeezed
            # into 20 steps, which left a collapsed embedding space that could not tell two people apart).
            popts = replace(popts, batch_size=16, frequency=3, ramp_fraction=0.5, learning_rate=2e-5)
        student, sparsity_rows = prune.prune_by_distillation(teacher, train.chips, popts, opts.workdir / "prune")
        student.save(opts.workdir / "pruned.keras")
    int8_source = student
    if opts.qat:
        _say(f"quantization-aware fine-tune, sparsity kept ({opts.qat_epochs} epochs)")
        qopts = prune.PruneOptions(target_sparsity=opts.sparsity, epochs=opts.qat_epochs, learning_rate=1e-5,
                                   batch_size=16 if opts.quick else 32)
        int8_source = prune.quantization_aware_finetune(student, teacher, train.chips, qopts, opts.workdir / "qat")

    # 3. int8
    rng = np.random.default_rng(0)
    calib = train.chips[rng.permutation(len(train))[: max(opts.calibration, quantize.MIN_REPRESENTATIVE)]]
    _say(f"int8 conversion calibrated on {len(calib)} chips")
    int8_path = opts.workdir / "embedder.tflite"
    int8_path.write_bytes(quantize.to_tflite_int8(int8_source, calib))
    int8 = TFLiteEmbedder(int8_path, num_threads=opts.threads)

    # 4. validation
    report: dict = {"sizes": _sizes(float_tflite, int8_path)}
    if sparsity_rows:
        report["sparsity"] = {"overall": prune.overall_sparsity(sparsity_rows),
                              "layers": {r.layer: round(r.sparsity, 4) for r in sparsity_rows}}
    train_int8 = _embed(int8, train.chips, "int8 on training faces")
    threshold = validate.choose_threshold(train_int8, train.labels, opts.target_far)
    threshold["chosen_on"] = f"{opts.data} (train people, {len(train)} faces)"
    report["threshold"] = threshold
    if pairs is not None:
        models = {"float": KerasEmbedder(opts.model)}
        if student is not teacher:
            models["pruned float"] = KerasEmbedder(opts.workdir / "pruned.keras")
        models["int8"] = int8
        emb = {name: _embed(m, test_chips, name) for name, m in models.items()}
        curves, metrics = {}, {}
        for name, e in emb.items():
            scores = validate.pair_scores(e, found, pairs)
            metrics[name], curves[name] = validate.verification(scores, pairs.same)
            if name == "int8":
                metrics[name]["at_threshold"] = validate.at_threshold(scores, pairs.same, threshold["cosine"])
        report["pairs"] = {"file": str(opts.pairs), "folds": list(opts.folds), "count": len(pairs.same),
                           "faces_not_found": int((~found).sum())}
        report["verification"] = metrics
        report["agreement_vs_float"] = {
            name: validate.agreement(emb["float"][found], e[found]) for name, e in emb.items() if name != "float"
        }
        if "pruned float" in emb:  # the cost of int8 alone
            report["agreement_int8_vs_pruned_float"] = validate.agreement(emb["pruned float"][found],
                                                                          emb["int8"][found])
        validate.plot_rocs(curves, opts.workdir / "roc.png", f"ROC on {opts.pairs.name} folds "
                           f"{opts.folds[0]}-{opts.folds[-1]}")

    # 5. Edge TPU
    tpu = check_edgetpu(int8_path)
    compiled, tpu_log = compile_edgetpu(int8_path, opts.workdir) if tpu.ready else (None, "not compiled: " + "; ".join(tpu.problems))
    report["edgetpu"] = {**tpu.as_dict(), "compiled": compiled is not None, "log": tpu_log.strip()[-2000:]}

    # 6. bundle
    out = opts.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy2(detector_file, out / "detector.tflite")
    shutil.copy2(int8_path, out / "embedder.tflite")
    if compiled:
        shutil.copy2(compiled, out / "embedder_edgetpu.tflite")
    if (opts.workdir / "roc.png").exists():
        shutil.copy2(opts.workdir / "roc.png", out / "roc.png")
    manifest = {
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "embedder": {
            "file": "embedder.tflite",
            "edgetpu_file": "embedder_edgetpu.tflite" if compiled else None,
            "input": {**_io(int8.interpreter.input_details[0]), "layout": "NHWC", "channels": "RGB",
                      "normalization": "RGB pixel values 0..255; (x - dlib means)/256 is inside the model"},
            "output": {**_io(int8.interpreter.output_details[0]), "l2_normalize": True},
            "space": embedding_space(teacher),
        },
        "detector": {"file": "detector.tflite", "kind": "blazeface_short_range", "input_size": [128, 128]},
        "alignment": {"chip_size": 150, "template": aligner.template.to_dict()},
        "threshold": {k: threshold[k] for k in ("cosine", "target_far", "chosen_on", "train_far", "train_frr")},
        "metrics": report,
        "provenance": {
            "source_model": str(opts.model), "data": str(opts.data), "pairs": str(opts.pairs) if opts.pairs else None,
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
            "versions": _versions(), "host": platform.platform(), "seconds": round(time.time() - started, 1),
        },
    }
    bundle_mod.write_manifest(out, manifest)
    archive = out.with_name(out.name + ".tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(out, arcname=out.name)
    bundle_mod.load_bundle(out)  # what we wrote must load
    (opts.workdir / "report.json").write_text(json.dumps(report, indent=2))
    _say(f"bundle written to {out} and {archive} in {time.time() - started:.0f} s")
    return report


def _first_pairs(pairs, n: int):
    from convert.validate import PairList

    # Keep the balance of genuine and impostor pairs.
    idx = np.r_[np.flatnonzero(pairs.same)[: n // 2], np.flatnonzero(~pairs.same)[: n - n // 2]]
    used = sorted(set(pairs.a[idx]) | set(pairs.b[idx]))
    remap = {old: new for new, old in enumerate(used)}
    return PairList(np.array([remap[i] for i in pairs.a[idx]]), np.array([remap[i] for i in pairs.b[idx]]),
                    pairs.same[idx], tuple(pairs.files[i] for i in used))


def _io(detail: dict) -> dict:
    scale, zero = detail["quantization"]
    return {"size": [int(d) for d in detail["shape"][1:]], "dtype": np.dtype(detail["dtype"]).name,
            "scale": float(scale), "zero_point": int(zero)}


def _sizes(float_path: Path, int8_path: Path) -> dict:
    f, q = float_path.stat().st_size, int8_path.stat().st_size
    gz = len(gzip.compress(int8_path.read_bytes(), compresslevel=9))
    return {"float_tflite_bytes": f, "int8_tflite_bytes": q, "int8_gzip_bytes": gz,
            "int8_vs_float": q / f, "int8_gzip_vs_float": gz / f}


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("facelock", "tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def check_inputs(opts: ConvertOptions) -> None:
    if not opts.model.is_file():
        raise DataError(f"--model {opts.model}: no such Keras model (build the default with `facelock models build`)")
    if not opts.data.is_dir():
        raise DataError(f"--data {opts.data}: no such folder of face photos")
    if opts.pairs is not None and not opts.pairs.is_file():
        raise DataError(f"--pairs {opts.pairs}: no such pair list (CSV with file_a,file_b,same)")

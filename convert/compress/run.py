"""`facelock convert`: Keras embedder + face photos -> pruned, int8, validated model bundle.

Steps (each printed as it runs; the fine-tune resumes from its checkpoint in the work folder):
 0. load the model and check that it takes the chips its card says (--input-size, --channels,
    --normalize, --template; the card goes into the bundle, see convert.model_card);
 1. align training faces with the lock's own detection, subject rule and aligner (train people only when
    the folder has an LFW-style split.csv);
 2. prune to the target sparsity, fine-tuned by distillation from the float model;
 3. full-integer int8 conversion calibrated on >= 300 aligned chips;
 4. validate float / pruned / int8 on a labelled pair list, choose the operating thresholds on training
    people (clear faces, and dim and soft ones: convert.compress.face_conditions), plot ROC curves;
    (with --antispoof: the user's anti-spoofing CNN, int8 too, its cost measured: convert.antispoof);
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from convert.antispoof import AntiSpoofSource
from convert.errors import DataError
from convert.model_card import CardOptions


@dataclass(frozen=True)
class ConvertOptions:
    model: Path
    data: Path
    pairs: Path | None
    folds: tuple[int, ...] = (6, 7, 8, 9, 10)
    out: Path = Path("out/bundle")
    workdir: Path = Path("out/work")
    sparsity: float = 0.5
    # 12, not 4: at 50% sparsity the 4-epoch student lost 0.7-1.2 points of TAR at FAR 1e-2 on train people's
    # door frames against the unpruned model; 12 win back half to three quarters (benchmarks/prune_cost.py)
    epochs: int = 12
    seed: int = 0  # the fine-tune's data order and augmentation (bundles from two seeds: docs/conversion.md)
    train_faces: int = 3000
    calibration: int = 400
    target_far: float = 1e-3
    max_pairs: int | None = None
    threads: int = 2
    qat: bool = False  # quantization-aware fine-tune (sparsity kept) before int8 conversion
    qat_epochs: int = 1
    quick: bool = False
    card: CardOptions = field(default_factory=CardOptions)  # the model's input size, channels, normalisation, template
    antispoof: AntiSpoofSource | None = None  # the user's anti-spoofing CNN, into the bundle beside the embedder

    def quickened(self) -> ConvertOptions:
        """Small everything: for the demo and the tests (minutes, not an hour)."""
        return replace(self, epochs=1, train_faces=min(self.train_faces, 960),
                       calibration=300, max_pairs=min(self.max_pairs or 600, 600), quick=True)


def _say(msg: str) -> None:
    print(f"[convert] {msg}", file=sys.stderr, flush=True)


def _embed(embedder, chips: np.ndarray, desc: str) -> np.ndarray:
    from convert.progress import bar

    out, step = [], 64
    for i in bar(range(0, len(chips), step), desc=desc, unit="batch", leave=False):
        out.append(embedder.embed(chips[i:i + step]))
    return np.concatenate(out)


@dataclass(frozen=True)
class HeldOut:
    """The labelled pairs and one aligned chip per pair image (zeros where no face was found)."""

    pairs: object  # convert.compress.validate.PairList
    found: np.ndarray
    chips: np.ndarray


@dataclass(frozen=True)
class Compressed:
    """Step 2's models: the float teacher, the pruned student (the teacher when not pruning), what int8 is
    converted from (the student, or its quantization-aware fine-tune), and the float TFLite file."""

    teacher: object
    student: object
    int8_source: object
    sparsity_rows: list
    float_tflite: Path
    card: object  # edge.models.card.EmbedderCard, with the teacher's embedding space


def run_convert(opts: ConvertOptions) -> dict:
    from convert.antispoof import load_antispoof
    from convert.model_card import load_source
    from edge.models.store import DETECTOR_FULL_RANGE, model_path
    from edge.vision.align import FaceAligner
    from edge.vision.build import detector, landmarker
    from edge.vision.pipeline import FacePipeline

    started = time.time()
    # First, so that a model that does not take the chips the card says is refused before any work.
    source, card, template = load_source(opts.model, opts.card)
    # the same: an anti-spoofing model its options do not fit is refused now (and loaded once)
    spoof_model = load_antispoof(opts.antispoof) if opts.antispoof is not None else None
    _say(f"model card: {card.chip_size}x{card.chip_size} {card.channels}, normalisation "
         f"{card.normalization.describe()}, template {card.template}, {card.embedding_dim}-d")
    opts.workdir.mkdir(parents=True, exist_ok=True)
    detector_file = model_path(DETECTOR_FULL_RANGE)
    # The lock's detection, subject rule and alignment (landmark points from the face-landmark model),
    # with the same model files the bundle carries; no embedder yet (that is what is being made).
    marks = landmarker(num_threads=opts.threads)
    aligner = FaceAligner(template=template, landmarker=marks)
    faces = FacePipeline(detector(detector_file, num_threads=opts.threads), aligner, None, landmarker=marks,
                         near_detector=detector(near_detector_file(), num_threads=opts.threads))

    train = training_chips(opts, faces)  # 1.
    held_out = pair_chips(opts, faces, train.chips.shape[1:]) if opts.pairs else None
    models = compress(opts, train, source, card)  # 2.
    int8_path = quantize_int8(opts, models.int8_source, train)  # 3.
    int8, report, threshold = validate_models(opts, models, int8_path, train, held_out, faces)  # 4.
    spoof = antispoof_step(opts, faces, report, spoof_model)
    compiled = edgetpu_step(int8_path, opts.workdir, report)  # 5.
    copy_bundle_files(opts, detector_file, int8_path, compiled)  # 6.
    manifest = bundle_manifest(opts, models, int8, aligner, threshold, report, compiled is not None, started, spoof)
    archive = seal_bundle(opts.out, manifest)
    (opts.workdir / "report.json").write_text(json.dumps(report, indent=2))
    _say(f"bundle written to {opts.out} and {archive} in {time.time() - started:.0f} s")
    return report


def training_chips(opts: ConvertOptions, faces):
    """1. Aligned chips of the training photos (train people only with an LFW-style split.csv)."""
    from convert.compress import quantize
    from convert.datasets import build_chipset, list_images, spread_by_person

    files = spread_by_person(list_images(opts.data, split="train"), opts.train_faces)
    _say(f"aligning up to {len(files)} training photos from {opts.data}")
    train = build_chipset(opts.data, files, faces, min_faces=quantize.MIN_REPRESENTATIVE,
                          cache_dir=opts.workdir / "cache")
    _say(f"{len(train)} training faces of {len(train.people)} people")
    return train


def pair_chips(opts: ConvertOptions, faces, chip_shape: tuple[int, ...]) -> HeldOut:
    """The pair list's chips (held out: never used for fine-tuning, calibration or the threshold)."""
    from convert.compress import validate
    from convert.datasets import build_chipset

    pairs = validate.read_pair_list(opts.pairs, set(opts.folds))
    if opts.max_pairs:
        pairs = _first_pairs(pairs, opts.max_pairs)
    pair_root = opts.pairs.parent
    test = build_chipset(pair_root, [pair_root / f for f in pairs.files], faces, cache_dir=opts.workdir / "cache")
    found = np.array([f in set(test.files) for f in pairs.files])
    chip_of = {f: i for i, f in enumerate(test.files)}
    test_chips = np.zeros((len(pairs.files), *chip_shape), dtype=np.uint8)
    for i, f in enumerate(pairs.files):
        if f in chip_of:
            test_chips[i] = test.chips[chip_of[f]]
    _say(f"{len(pairs.same)} pairs, {found.sum()}/{len(found)} faces found")
    return HeldOut(pairs, found, test_chips)


def compress(opts: ConvertOptions, train, teacher, card) -> Compressed:
    """2. The float model (on RGB pixels: convert.model_card) and its float TFLite file; pruning by
    distillation; the optional QAT fine-tune."""
    from convert.compress import prune, quantize
    from convert.keras_embedder import embedding_space

    float_tflite = opts.workdir / "embedder_float.tflite"
    float_tflite.write_bytes(quantize.to_tflite_float(teacher))
    student = teacher
    sparsity_rows: list = []
    if opts.sparsity > 0:
        _say(f"pruning to {opts.sparsity:.0%} sparsity by distillation ({opts.epochs} epochs)")
        popts = prune.PruneOptions(target_sparsity=opts.sparsity, epochs=opts.epochs, seed=opts.seed)
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
                                   batch_size=16 if opts.quick else 32, seed=opts.seed)
        int8_source = prune.quantization_aware_finetune(student, teacher, train.chips, qopts, opts.workdir / "qat")
    return Compressed(teacher, student, int8_source, sparsity_rows, float_tflite,
                      card.with_space(embedding_space(teacher)))


def quantize_int8(opts: ConvertOptions, model, train) -> Path:
    """3. Full-integer int8 conversion, calibrated on `opts.calibration` (>= 300) training chips."""
    from convert.compress import quantize

    rng = np.random.default_rng(0)
    calib = train.chips[rng.permutation(len(train))[: max(opts.calibration, quantize.MIN_REPRESENTATIVE)]]
    _say(f"int8 conversion calibrated on {len(calib)} chips")
    int8_path = opts.workdir / "embedder.tflite"
    int8_path.write_bytes(quantize.to_tflite_int8(model, calib))
    return int8_path


def validate_models(opts: ConvertOptions, models: Compressed, int8_path: Path, train, held_out: HeldOut | None,
                    faces):
    """4. (int8 embedder, report, threshold): sizes, sparsity, the thresholds chosen on training people (dim and
    soft faces: convert.compress.face_conditions, with the lock's `faces`), and verification on a pair list."""
    from convert.compress import face_conditions, prune, validate
    from edge.vision.embed import TFLiteEmbedder

    int8 = TFLiteEmbedder(int8_path, num_threads=opts.threads, card=models.card)
    report: dict = {"sizes": _sizes(models.float_tflite, int8_path)}
    if models.sparsity_rows:
        report["sparsity"] = {"overall": prune.overall_sparsity(models.sparsity_rows),
                              "layers": {r.layer: round(r.sparsity, 4) for r in models.sparsity_rows}}
    train_int8 = _embed(int8, train.chips, "int8 on training faces")
    threshold = validate.choose_threshold(train_int8, train.labels, opts.target_far)
    threshold["chosen_on"] = f"{opts.data} (train people, {len(train)} faces)"
    threshold.update(face_conditions.condition_thresholds(opts.data, train, faces, lambda name, chips: _embed(
        int8, chips, f"int8 on {name} faces"), threshold, train_int8, 400 if opts.quick else None, _say))
    report["threshold"] = threshold
    if held_out is not None:
        report.update(verify_pairs(opts, models, int8, held_out, threshold))
    return int8, report, threshold


def verify_pairs(opts: ConvertOptions, models: Compressed, int8, held_out: HeldOut, threshold: dict) -> dict:
    """Verification of each model on the held-out pairs, agreement with the float model, ROC curves."""
    from convert.compress import validate
    from convert.keras_embedder import KerasEmbedder

    pairs, found = held_out.pairs, held_out.found
    embedders = {"float": KerasEmbedder(opts.model, card=models.card)}
    if models.student is not models.teacher:
        embedders["pruned float"] = KerasEmbedder(opts.workdir / "pruned.keras", mirror=models.card.mirror_average)
    embedders["int8"] = int8
    emb = {name: _embed(m, held_out.chips, name) for name, m in embedders.items()}
    curves, metrics = {}, {}
    for name, e in emb.items():
        scores = validate.pair_scores(e, found, pairs)
        metrics[name], curves[name] = validate.verification(scores, pairs.same)
        if name == "int8":
            metrics[name]["at_threshold"] = validate.at_threshold(scores, pairs.same, threshold["cosine"])
    out = {"pairs": {"file": str(opts.pairs), "folds": list(opts.folds), "count": len(pairs.same),
                     "faces_not_found": int((~found).sum())},
           "verification": metrics,
           "agreement_vs_float": {name: validate.agreement(emb["float"][found], e[found])
                                  for name, e in emb.items() if name != "float"}}
    if "pruned float" in emb:  # the cost of int8 alone
        out["agreement_int8_vs_pruned_float"] = validate.agreement(emb["pruned float"][found], emb["int8"][found])
    validate.plot_rocs(curves, opts.workdir / "roc.png", f"ROC on {opts.pairs.name} folds "
                       f"{opts.folds[0]}-{opts.folds[-1]}")
    return out


def antispoof_step(opts: ConvertOptions, faces, report: dict, loaded) -> dict | None:
    """4b. The anti-spoofing CNN (`loaded`: load_antispoof's), int8, calibrated and measured on training
    photos (convert.antispoof): its manifest entry; the model is the work folder's antispoof.tflite."""
    if opts.antispoof is None:
        return None
    from convert.antispoof import convert_antispoof
    from convert.datasets import list_images

    _say(f"anti-spoofing CNN {opts.antispoof.model}: int8, calibrated on training faces")
    path, entry, report["antispoof"] = convert_antispoof(opts.antispoof, loaded, list_images(opts.data, split="train"),
                                                         opts.data, faces, opts.workdir, opts.threads)
    return {"file": path.name, **entry}


def edgetpu_step(int8_path: Path, workdir: Path, report: dict) -> Path | None:
    """5. Edge TPU readiness into `report["edgetpu"]`; the compiled model when edgetpu_compiler exists."""
    from convert.compress.edgetpu import check_edgetpu, compile_edgetpu

    tpu = check_edgetpu(int8_path)
    compiled, tpu_log = (compile_edgetpu(int8_path, workdir) if tpu.ready
                         else (None, "not compiled: " + "; ".join(tpu.problems)))
    report["edgetpu"] = {**tpu.as_dict(), "compiled": compiled is not None, "log": tpu_log.strip()[-2000:]}
    return compiled


def copy_bundle_files(opts: ConvertOptions, detector_file: Path, int8_path: Path, compiled: Path | None) -> None:
    """6. A fresh bundle folder with the models and the ROC plot."""
    out = opts.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for source, name in ((detector_file, "detector"), (landmark_file(), "landmarks"),
                         (near_detector_file(), "near_detector"), (int8_path, "embedder")):
        shutil.copy2(source, out / f"{name}.tflite")
    if opts.antispoof is not None:  # 4b's int8 model
        shutil.copy2(opts.workdir / "antispoof.tflite", out / "antispoof.tflite")
    if compiled:
        shutil.copy2(compiled, out / "embedder_edgetpu.tflite")
    if (opts.workdir / "roc.png").exists():
        shutil.copy2(opts.workdir / "roc.png", out / "roc.png")


def bundle_manifest(opts: ConvertOptions, models: Compressed, int8, aligner, threshold: dict, report: dict,
                    has_edgetpu: bool, started: float, antispoof: dict | None = None) -> dict:
    """The bundle's manifest (its structure: edge.models.bundle.build_manifest)."""
    from convert.compress import quantize
    from edge.models.bundle import build_manifest
    from edge.vision.detect import FULL_RANGE

    return build_manifest(
        embedder_file="embedder.tflite",
        edgetpu_file="embedder_edgetpu.tflite" if has_edgetpu else None,
        embedder_input=quantize.tensor_io(int8.interpreter.input_details[0]),
        embedder_output=quantize.tensor_io(int8.interpreter.output_details[0]),
        space=models.card.space, normalization=models.card.bundled_input(), card=models.card,
        detector_file="detector.tflite", template=aligner.template.to_dict(),
        threshold=threshold, metrics=report, provenance=_provenance(opts, started),
        detector_kind=FULL_RANGE.kind, detector_input_size=(FULL_RANGE.input_size, FULL_RANGE.input_size),
        landmarks_file="landmarks.tflite", near_detector_file="near_detector.tflite", antispoof=antispoof,
    )


def landmark_file() -> Path:
    """The fetched face-landmark model the bundle carries (the board has no models folder of its own)."""
    from edge.models.store import LANDMARKS, model_path

    return model_path(LANDMARKS)


def near_detector_file() -> Path:
    """The fetched short-range BlazeFace the bundle carries: the board tries it before the full-range one."""
    from edge.models.store import DETECTOR, model_path

    return model_path(DETECTOR)


def _provenance(opts: ConvertOptions, started: float) -> dict:
    return {
        "source_model": str(opts.model), "data": str(opts.data), "pairs": str(opts.pairs) if opts.pairs else None,
        "options": json.loads(json.dumps(asdict(opts), default=str)),  # paths, nested ones too, as text
        "versions": _versions(), "host": platform.platform(), "seconds": round(time.time() - started, 1),
    }


def seal_bundle(out: Path, manifest: dict) -> Path:
    """Write manifest.json (with every file's sha256) and the .tar.gz beside the folder; check it loads."""
    from edge.models import bundle as bundle_mod

    bundle_mod.write_manifest(out, manifest)
    archive = out.with_name(out.name + ".tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(out, arcname=out.name)
    bundle_mod.load_bundle(out)  # what we wrote must load
    return archive


def _first_pairs(pairs, n: int):
    from convert.compress.validate import PairList

    # Keep the balance of genuine and impostor pairs.
    idx = np.r_[np.flatnonzero(pairs.same)[: n // 2], np.flatnonzero(~pairs.same)[: n - n // 2]]
    used = sorted(set(pairs.a[idx]) | set(pairs.b[idx]))
    remap = {old: new for new, old in enumerate(used)}
    return PairList(np.array([remap[i] for i in pairs.a[idx]]), np.array([remap[i] for i in pairs.b[idx]]),
                    pairs.same[idx], tuple(pairs.files[i] for i in used))


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

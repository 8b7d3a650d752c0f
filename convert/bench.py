"""`facelock bench`: measure facelock on this machine against face_recognition's pipeline, and write
`docs/benchmarks.md` with PNG plots.

Sections (each measured in this one run, on this machine, unless it says "cached"):
 1. accuracy: ROC curves on LFW View 2 folds 6-10 (quick mode: the embedded demo faces) for the peer
    (face_recognition's pipeline: dlib HOG detector, 5 landmarks, dlib ResNet), our float Keras port, the
    pruned float model, int8 (and the Edge TPU model when a bundle has one);
 2. speed: per-stage latency (detect, align, embed, match) for float TFLite, int8 and the peer, on the same
    frames, at each thread count; model file sizes; peak resident memory of a child process per pipeline;
 3. the cost curve: accuracy and int8 embed latency against sparsity, one `facelock convert` per sparsity
    (cached in the work folder: a rerun with the same options reuses the bundle and its report);
 4. scaling: one match against 10 ... 100,000 templates;
 5. figure of merit: the embedder's MACs per face (from the TFLite graph), the int8 MAC/s it achieves, and
    the int8 MAC/s the same runtime reaches on a large int8 convolution built here (the machine's peak).

The LFW rule (../shared/data/INDEX.md): everything tuned (fine-tune, calibration, threshold) uses `train`
people only; the numbers reported are on the pairs of folds 6-10, whose people are all `test` people.

Reuses convert.pipeline (the conversions), convert.validate/metrics (ROC, AUC, TAR@FAR), convert.data
(aligned chips, cached), edge (detector, aligner, embedders, matcher) and benchmarks/ (the peer pipeline,
latency loop, synthetic galleries).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import MISSING, asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from convert.errors import DataError

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
FULL_SPARSITIES = (0.0, 0.3, 0.5, 0.7)
QUICK_SPARSITIES = (0.0, 0.5)
MAIN_SPARSITY = 0.5  # the product default: the accuracy and speed sections use this run's models
GALLERY_SIZES = (10, 100, 1_000, 10_000, 100_000)
SPEED_GALLERY = 50  # templates in the gallery matched against in the speed section (10 people x 5)
PEER = "face_recognition (dlib)"
LFW_RULE = ("calibration, fine-tuning and thresholds use LFW `train` people only; every figure below is on "
            "the pairs of View 2 folds 6-10 (all `test` people, disjoint from `train`)")


@dataclass(frozen=True)
class BenchOptions:
    out: Path = Path("docs")
    work: Path = Path("out/bench")
    lfw: Path | None = None
    model: Path | None = None  # Keras embedder (default: the dlib ResNet port)
    quick: bool = False
    threads: tuple[int, ...] = (1, 2)
    sparsities: tuple[float, ...] | None = None  # default: 0/30/50/70% (quick: 0/50%)
    frames: int | None = None  # frames for the speed section (default 100; quick 12)
    repeat: int | None = None  # passes over those frames (default 3; quick 2)
    match_repeat: int | None = None  # matches per gallery size (default 300; quick 40)
    peer: bool = True
    reuse: tuple[Path, ...] = (Path("out/full"),)  # earlier convert runs (<dir>/bundle, <dir>/work)
    progress: bool = True

    def resolved(self) -> BenchOptions:
        q = self.quick
        return replace(
            self,
            sparsities=tuple(sorted(set(self.sparsities or (QUICK_SPARSITIES if q else FULL_SPARSITIES)))),
            frames=self.frames or (12 if q else 100),
            repeat=self.repeat or (2 if q else 3),
            match_repeat=self.match_repeat or (40 if q else 300),
        )


@dataclass
class DataSet:
    name: str
    root: Path  # face photos (one folder per person)
    pairs: Path  # labelled pair list
    folds: tuple[int, ...]
    note: str


def _say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _bar(items, desc: str, enabled: bool = True, total: int | None = None):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, file=sys.stderr, leave=False, dynamic_ncols=True)


def _benchmarks_module(name: str):
    """A script from benchmarks/ (they import each other as top-level modules)."""
    if not (BENCHMARKS / f"{name}.py").is_file():
        raise DataError(f"{BENCHMARKS / (name + '.py')}: missing; `facelock bench` runs from a source checkout")
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


# ----------------------------------------------------------------------------------------------- data


def default_lfw() -> Path:
    from convert.cli import DEFAULT_LFW

    return DEFAULT_LFW


def dataset(opts: BenchOptions) -> DataSet:
    if opts.quick:
        from convert.demo import write_demo_faces

        root = opts.work / "quick" / "demo_faces"
        if not (root / "pairs.csv").is_file():
            write_demo_faces(root)
        return DataSet("demo faces", root, root / "pairs.csv", (),
                       "quick mode: the embedded demo faces (two public-domain portraits, varied); "
                       "NOT comparable with LFW figures")
    lfw = Path(opts.lfw) if opts.lfw else default_lfw()
    missing = [n for n in ("pairs_view2.csv", "split.csv") if not (lfw / n).is_file()]
    if missing:
        raise DataError(
            f"full mode needs LFW at {lfw} (expected {', '.join(missing)} there and one folder of photos per "
            "person, see ../shared/data/INDEX.md); pass --lfw DIR, set FACELOCK_LFW, or use --quick for the "
            "embedded demo faces")
    return DataSet("LFW View 2, folds 6-10", lfw, lfw / "pairs_view2.csv", (6, 7, 8, 9, 10), LFW_RULE)


# ----------------------------------------------------------------------------------- conversions (3.)


def _norm_option(key: str, value):
    if value is None:
        return None
    if key in ("model", "data", "pairs"):
        return str(Path(value).resolve())
    if isinstance(value, (list, tuple)):
        return [_norm_option(key, v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return value
    return value


def _comparable(options: dict) -> dict:
    from convert.pipeline import ConvertOptions

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
    from convert.pipeline import ConvertOptions
    from edge.embed import default_model

    copts = ConvertOptions(model=Path(opts.model) if opts.model else default_model(), data=ds.root,
                           pairs=ds.pairs, folds=ds.folds or (6, 7, 8, 9, 10), out=folder / "bundle",
                           workdir=folder / "work", sparsity=sparsity)
    return copts.quickened() if opts.quick else copts


@dataclass
class Conversion:
    sparsity: float
    bundle: Path
    workdir: Path
    report: dict
    cached: bool


def conversions(opts: BenchOptions, ds: DataSet) -> dict[float, Conversion]:
    from convert.pipeline import run_convert

    mode = "quick" if opts.quick else "full"
    out: dict[float, Conversion] = {}
    for s in opts.sparsities:
        own = convert_options(opts, ds, s, opts.work / mode / f"sparsity-{round(100 * s)}")
        candidates = [own] + [replace(own, out=Path(r) / "bundle", workdir=Path(r) / "work") for r in opts.reuse]
        hit = next(((c, r) for c in candidates if (r := cached_report(c)) is not None), None)
        if hit:
            copts, report = hit
            _say(f"sparsity {s:.0%}: reusing the conversion in {copts.workdir}")
            out[s] = Conversion(s, copts.out, copts.workdir, report, True)
            continue
        _say(f"sparsity {s:.0%}: running facelock convert into {own.workdir.parent}")
        report = run_convert(own)
        out[s] = Conversion(s, own.out, own.workdir, report, False)
    return out


# -------------------------------------------------------------------------------------- accuracy (1.)


def _file_key(*paths: Path, extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _cached_embeddings(cache: Path, compute) -> np.ndarray:
    if cache.is_file():
        with np.load(cache) as z:
            return z["e"]
    e = compute()
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache.with_suffix(".tmp.npz"), e=e)
    os.replace(cache.with_suffix(".tmp.npz"), cache)
    return e


def _embed_all(embedder, chips: np.ndarray, desc: str, progress: bool) -> np.ndarray:
    step = 32
    parts = [embedder.embed(chips[i:i + step]) for i in _bar(range(0, len(chips), step), desc, progress)]
    return np.concatenate(parts).astype(np.float32)


def run_peer_embeddings(root: Path, files: tuple[str, ...], cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """face_recognition's pipeline on every pair image (benchmarks/lfw_pairs.run_peer), cached."""
    if cache.is_file():
        with np.load(cache) as z:
            return z["e"], z["found"]
    lfw_pairs = _benchmarks_module("lfw_pairs")
    emb, _ = lfw_pairs.run_peer(root, list(files))
    found = np.array([f in emb for f in files])
    e = np.stack([emb.get(f, np.zeros(128, np.float32)) for f in files]).astype(np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, e=e, found=found)
    return e, found


def accuracy(opts: BenchOptions, ds: DataSet, conv: Conversion, img: Path) -> dict:
    from convert import validate
    from convert.data import build_chipset
    from convert.embedders import KerasEmbedder
    from edge.align import FaceAligner
    from edge.detect import BlazeFaceDetector, DetectorOptions
    from edge.embed import TFLiteEmbedder
    from edge.errors import ModelError
    from edge.modelstore import DETECTOR, model_path

    pairs = validate.read_pair_list(ds.pairs, set(ds.folds) if ds.folds else None)
    root = ds.pairs.parent
    detector = BlazeFaceDetector(model_path(DETECTOR), DetectorOptions(num_threads=max(opts.threads)))
    # The same chip cache as `facelock convert` (same files, same aligner): no re-detection.
    test = build_chipset(root, [root / f for f in pairs.files], detector, FaceAligner(),
                         cache_dir=conv.workdir / "cache", progress=opts.progress)
    chip_of = {f: i for i, f in enumerate(test.files)}
    found = np.array([f in chip_of for f in pairs.files])
    chips = np.zeros((len(pairs.files), 150, 150, 3), np.uint8)
    for i, f in enumerate(pairs.files):
        if f in chip_of:
            chips[i] = test.chips[chip_of[f]]
    cache = opts.work / ("quick" if opts.quick else "full") / "embeddings"
    files_key = hashlib.sha256("\n".join(pairs.files).encode()).hexdigest()[:8]

    copts = json.loads((conv.bundle / "manifest.json").read_text())["provenance"]["options"]
    keras_model = Path(copts["model"])
    models: dict[str, tuple[Path, callable]] = {
        "float (Keras)": (keras_model, lambda: KerasEmbedder(keras_model)),
    }
    pct = f"{conv.sparsity:.0%}"
    if (conv.workdir / "pruned.keras").is_file() and conv.sparsity > 0:
        models[f"pruned float ({pct})"] = (conv.workdir / "pruned.keras",
                                           lambda: KerasEmbedder(conv.workdir / "pruned.keras"))
    int8_path = conv.bundle / "embedder.tflite"
    models[f"int8 ({pct})"] = (int8_path, lambda: TFLiteEmbedder(int8_path, num_threads=max(opts.threads)))
    notes = []
    tpu_path = conv.bundle / "embedder_edgetpu.tflite"
    if tpu_path.is_file():
        try:
            TFLiteEmbedder(tpu_path, num_threads=1, edgetpu=True, require_delegate=True)
            models[f"Edge TPU ({pct})"] = (tpu_path, lambda: TFLiteEmbedder(tpu_path, edgetpu=True,
                                                                             require_delegate=True))
        except ModelError as exc:  # no Coral attached: the compiled model cannot run on a CPU
            notes.append(f"the bundle has an Edge TPU model, but no Edge TPU is attached here ({exc})")
    else:
        notes.append("no Edge TPU model: the bundle has none (edgetpu_compiler is not installed on this "
                     "machine); the Edge TPU runs the same int8 arithmetic as the int8 row")

    rows: dict[str, dict] = {}
    curves = {}
    if opts.peer:
        try:
            import dlib  # noqa: F401
        except ImportError:
            notes.append("peer skipped: `dlib` is not importable (install the `dev` extra: dlib-bin, "
                         "face_recognition_models)")
        else:
            _say(f"peer: face_recognition's pipeline on {len(pairs.files)} images")
            e, pfound = run_peer_embeddings(root, pairs.files, cache / f"peer-{files_key}.npz")
            lfw_pairs = _benchmarks_module("lfw_pairs")
            common = _benchmarks_module("common")
            plist = [common.Pair(0, pairs.files[a], pairs.files[b], bool(s))
                     for a, b, s in zip(pairs.a, pairs.b, pairs.same)]
            emb = {f: e[i] for i, f in enumerate(pairs.files) if pfound[i]}
            scores = lfw_pairs.score_pairs(plist, emb, "euclidean")  # its own score: -distance
            rows[PEER], curves[PEER] = validate.verification(scores, pairs.same)
            rows[PEER]["faces_not_found"] = int((~pfound).sum())
    else:
        notes.append("peer skipped (--no-peer)")

    for name, (path, make) in models.items():
        key = _file_key(path, extra=files_key)
        e = _cached_embeddings(cache / f"{name.split()[0]}-{key}.npz",
                               lambda make=make, name=name: _embed_all(make(), chips, name, opts.progress))
        scores = validate.pair_scores(e, found, pairs)
        rows[name], curves[name] = validate.verification(scores, pairs.same)
        rows[name]["faces_not_found"] = int((~found).sum())
    title = f"ROC, {ds.name}" if ds.folds else "ROC, demo faces (quick mode)"
    plot = validate.plot_rocs(curves, img / "roc.png", title)
    return {"rows": rows, "pairs": len(pairs.same), "impostors": int((~pairs.same).sum()),
            "images": len(pairs.files), "notes": notes, "plot": plot.name}


# ----------------------------------------------------------------------------------------- speed (2.)


def speed_frames(ds: DataSet, n: int) -> list[Path]:
    """`n` pair images spread over the pair list (held-out people in full mode)."""
    from convert.validate import read_pair_list

    files = read_pair_list(ds.pairs, set(ds.folds) if ds.folds else None).files
    idx = np.linspace(0, len(files) - 1, min(n, len(files))).round().astype(int)
    return [ds.pairs.parent / files[i] for i in idx]


def _stats(ms: list[float]) -> dict:
    a = np.asarray(ms, dtype=np.float64)
    if not len(a):
        return {"median": None, "p95": None, "n": 0}
    return {"median": float(np.median(a)), "p95": float(np.percentile(a, 95)), "n": len(a)}


def _gallery_matcher(size: int, seed: int = 0):
    match_bench = _benchmarks_module("match_bench")
    from edge.match import Matcher

    rng = np.random.default_rng(seed)
    return Matcher(match_bench.snapshot(size, rng)), match_bench


def time_ours(frames: list[np.ndarray], embedder_path: Path, threads: int, repeat: int, progress: bool,
              desc: str) -> dict:
    from edge.align import FaceAligner
    from edge.detect import BlazeFaceDetector, DetectorOptions
    from edge.embed import TFLiteEmbedder
    from edge.modelstore import DETECTOR, model_path

    detector = BlazeFaceDetector(model_path(DETECTOR), DetectorOptions(num_threads=threads))
    aligner = FaceAligner()
    embedder = TFLiteEmbedder(embedder_path, num_threads=threads)
    matcher, _ = _gallery_matcher(SPEED_GALLERY)
    times = {k: [] for k in ("detect", "align", "embed", "match", "total")}
    faces_found = 0
    # warm-up: the first invoke allocates and packs weights
    embedder.embed(np.zeros((1, 150, 150, 3), np.uint8))
    detector.detect(frames[0])
    for r in _bar(range(repeat * len(frames)), desc, progress):
        frame = frames[r % len(frames)]
        t0 = time.perf_counter()
        faces = detector.detect(frame)
        t1 = time.perf_counter()
        times["detect"].append((t1 - t0) * 1e3)
        if not faces:
            times["total"].append((t1 - t0) * 1e3)
            continue
        faces_found += r < len(frames)
        aligned = aligner.align(frame, max(faces, key=lambda f: f.area))
        t2 = time.perf_counter()
        e = embedder.embed(aligned.chip[None])[0]
        t3 = time.perf_counter()
        matcher.match(e)
        t4 = time.perf_counter()
        for k, (a, b) in {"align": (t1, t2), "embed": (t2, t3), "match": (t3, t4), "total": (t0, t4)}.items():
            times[k].append((b - a) * 1e3)
    return {**{k: _stats(v) for k, v in times.items()}, "faces_found": faces_found, "frames": len(frames)}


def time_peer(frames: list[np.ndarray], repeat: int, progress: bool) -> dict:
    """face_recognition's per-frame path, stage by stage: HOG detector (1 upsample), 5-point landmarks +
    150x150 chip (dlib.get_face_chip, padding 0.25, what compute_face_descriptor does inside), ResNet on the
    chip, then the same matcher. dlib has no thread setting: it runs on one thread."""
    import dlib

    from edge.embed import l2_normalize
    from edge.modelstore import DLIB_RESNET, DLIB_SHAPE5, model_path

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(model_path(DLIB_SHAPE5)))
    resnet = dlib.face_recognition_model_v1(str(model_path(DLIB_RESNET)))
    matcher, _ = _gallery_matcher(SPEED_GALLERY)
    times = {k: [] for k in ("detect", "align", "embed", "match", "total")}
    faces_found = 0
    resnet.compute_face_descriptor(np.zeros((150, 150, 3), np.uint8))
    for r in _bar(range(repeat * len(frames)), "peer stages", progress):
        frame = frames[r % len(frames)]
        t0 = time.perf_counter()
        boxes = detector(frame, 1)
        t1 = time.perf_counter()
        times["detect"].append((t1 - t0) * 1e3)
        if not len(boxes):
            times["total"].append((t1 - t0) * 1e3)
            continue
        faces_found += r < len(frames)
        shape = predictor(frame, max(boxes, key=lambda b: b.area()))
        chip = np.asarray(dlib.get_face_chip(frame, shape, 150, 0.25))
        t2 = time.perf_counter()
        d = np.asarray(resnet.compute_face_descriptor(chip), dtype=np.float32)
        t3 = time.perf_counter()
        matcher.match(l2_normalize(d))
        t4 = time.perf_counter()
        for k, (a, b) in {"align": (t1, t2), "embed": (t2, t3), "match": (t3, t4), "total": (t0, t4)}.items():
            times[k].append((b - a) * 1e3)
    return {**{k: _stats(v) for k, v in times.items()}, "faces_found": faces_found, "frames": len(frames)}


# A child process per pipeline, so that its peak resident set is that pipeline's alone. The facelock ones
# import `edge` only (what the board runs: no TensorFlow).
_MEMORY_CHILD = r"""
import json, resource, sys
import numpy as np
kind, model, threads, files = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
from edge.embed_cli import read_image_rgb
frames = [read_image_rgb(f) for f in files]
if kind == "peer":
    import dlib
    from edge.modelstore import model_path
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(model_path("shape_predictor_5_face_landmarks.dat")))
    net = dlib.face_recognition_model_v1(str(model_path("dlib_face_recognition_resnet_model_v1.dat")))
    for f in frames:
        b = det(f, 1)
        if len(b):
            net.compute_face_descriptor(f, sp(f, b[0]))
else:
    from edge.align import FaceAligner
    from edge.detect import BlazeFaceDetector, DetectorOptions
    from edge.embed import TFLiteEmbedder
    from edge.modelstore import model_path
    det = BlazeFaceDetector(model_path("face_detection_short_range.tflite"), DetectorOptions(num_threads=threads))
    al, emb = FaceAligner(), TFLiteEmbedder(model, num_threads=threads)
    for f in frames:
        faces = det.detect(f)
        if faces:
            emb.embed(al.align(f, faces[0]).chip[None])
hwm = None
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        hwm = int(line.split()[1])
print(json.dumps({"ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "vmhwm_kib": hwm,
                  "modules_tensorflow": "tensorflow" in sys.modules}))
"""


def peak_memory(kind: str, model: Path | None, threads: int, files: list[Path]) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, kind, str(model or ""), str(threads),
                           *map(str, files)], capture_output=True, text=True, cwd=REPO, env=env, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def speed(opts: BenchOptions, ds: DataSet, conv: Conversion, peer_ok: bool) -> dict:
    from convert.demo import door_frame
    from edge.embed_cli import read_image_rgb
    from edge.modelstore import DETECTOR, DLIB_RESNET, DLIB_SHAPE5, model_path

    files = speed_frames(ds, opts.frames)
    # What a door camera sees: each photo on a 640x480 doorway (as in `make demo` and edge_targets.py).
    rng = np.random.default_rng(0)
    frames = [door_frame(read_image_rgb(f), rng) for f in files]
    float_path, int8_path = conv.workdir / "embedder_float.tflite", conv.bundle / "embedder.tflite"
    rows = []
    for threads in opts.threads:
        for label, path in (("float TFLite", float_path), (f"int8 ({conv.sparsity:.0%} sparse)", int8_path)):
            rows.append({"pipeline": f"facelock, {label}", "threads": threads,
                         **time_ours(frames, path, threads, opts.repeat, opts.progress, f"{label} {threads}t")})
    if peer_ok:
        rows.append({"pipeline": PEER, "threads": 1, **time_peer(frames, opts.repeat, opts.progress)})

    sizes = {
        "BlazeFace detector (float TFLite)": model_path(DETECTOR),
        "embedder, float TFLite": float_path,
        f"embedder, int8 TFLite ({conv.sparsity:.0%} sparse)": int8_path,
        "embedder, Keras (float, workstation only)": Path(json.loads((conv.bundle / "manifest.json").read_text())
                                                         ["provenance"]["options"]["model"]),
        "peer: dlib ResNet .dat": model_path(DLIB_RESNET),
        "peer: dlib 5-point shape predictor .dat": model_path(DLIB_SHAPE5),
    }
    size_rows = [{"file": name, "path": str(p), "bytes": p.stat().st_size,
                  "gzip_bytes": len(gzip.compress(p.read_bytes(), 6)) if p.suffix == ".tflite" else None}
                 for name, p in sizes.items() if p.is_file()]

    _say("peak memory: one child process per pipeline")
    mem_files = files[: min(len(files), 20)]
    memory = []
    t = max(opts.threads)
    for label, kind, model in (("facelock, int8", "ours", int8_path), ("facelock, float TFLite", "ours", float_path),
                               (PEER, "peer", None)):
        if kind == "peer" and not peer_ok:
            continue
        memory.append({"pipeline": label, "threads": 1 if kind == "peer" else t,
                       **peak_memory(kind, model, t, mem_files)})
    return {"rows": rows, "frames": len(files), "repeat": opts.repeat, "gallery": SPEED_GALLERY,
            "sizes": size_rows, "memory": memory, "memory_frames": len(mem_files)}


# ------------------------------------------------------------------------------------ cost curve (3.)


def cost_curve(opts: BenchOptions, convs: dict[float, Conversion], chips: np.ndarray, img: Path) -> dict:
    lat = _benchmarks_module("embedder_latency")
    rows = []
    for s, c in _bar(sorted(convs.items()), "cost curve latency", opts.progress):
        v = c.report.get("verification", {})
        q = v.get("int8", {})
        p = v.get("pruned float", v.get("float", {}))
        row = {"sparsity_target": s, "sparsity": c.report.get("sparsity", {}).get("overall", 0.0),
               "int8_bytes": c.report["sizes"]["int8_tflite_bytes"],
               "int8_gzip_bytes": c.report["sizes"]["int8_gzip_bytes"],
               "auc": q.get("auc"), "tar_at_far_1e3": q.get("tar_at_far_1e3"),
               "tar_at_far_1e2": q.get("tar_at_far_1e2"), "best_accuracy": q.get("best_accuracy"),
               "float_auc": p.get("auc"), "float_best_accuracy": p.get("best_accuracy"),
               "workdir": str(c.workdir), "cached": c.cached}
        for t in opts.threads:
            ms = lat.time_per_chip(lat.tflite_fn(str(c.bundle / "embedder.tflite"), t), chips, opts.repeat)
            row[f"embed_ms_{t}t"] = float(np.median(ms))
        rows.append(row)
    plot = plot_cost(rows, opts.threads, img / "cost_curve.png")
    return {"rows": rows, "plot": plot.name}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cost(rows: list[dict], threads: tuple[int, ...], path: Path) -> Path:
    plt = _plt()
    x = [100 * r["sparsity_target"] for r in rows]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9.6, 4.0), dpi=110)
    for key, label in (("auc", "AUC"), ("best_accuracy", "best accuracy"), ("tar_at_far_1e3", "TAR@FAR 1e-3")):
        ax.plot(x, [r[key] if r[key] is not None else np.nan for r in rows], "o-", label=label)
    ax.set_xlabel("weight sparsity (%)")
    ax.set_ylabel("int8 model, verification")
    ax.set_title("accuracy vs sparsity")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")
    for t in threads:
        bx.plot(x, [r[f"embed_ms_{t}t"] for r in rows], "s-", label=f"int8 embed, {t} thread(s)")
    bx.set_xlabel("weight sparsity (%)")
    bx.set_ylabel("median ms per face")
    bx.set_title("int8 embed latency vs sparsity")
    bx.set_ylim(bottom=0)
    bx.grid(True, alpha=0.3)
    bx.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------- scaling (4.)


def scaling(opts: BenchOptions, img: Path) -> dict:
    match_bench = _benchmarks_module("match_bench")
    from edge.match import Matcher, MatchOptions

    rng = np.random.default_rng(0)
    rows = []
    for n in _bar(GALLERY_SIZES, "gallery scaling", opts.progress):
        snap = match_bench.snapshot(n, rng)
        probes = match_bench.unit(rng, opts.match_repeat)
        for blas in (False, True):
            ms = match_bench.time_matches(Matcher(snap, MatchOptions(use_blas=blas)), probes, warmup=5)
            rows.append({"templates": n, "people": len(snap.names), "scoring": "blas" if blas else "einsum",
                         **_stats(ms)})
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    for scoring, colour in (("einsum", "tab:blue"), ("blas", "tab:green")):
        r = [x for x in rows if x["scoring"] == scoring]
        ax.plot([x["templates"] for x in r], [x["median"] for x in r], "o-", color=colour, label=f"{scoring}, median")
        ax.plot([x["templates"] for x in r], [x["p95"] for x in r], ":", color=colour, label=f"{scoring}, p95")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--", label="1 ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("templates in the gallery")
    ax.set_ylabel("ms per match")
    ax.set_title("match time vs gallery size (128-d, one probe)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = img / "match_scaling.png"
    fig.savefig(path)
    plt.close(fig)
    return {"rows": rows, "plot": path.name, "repeat": opts.match_repeat}


# ------------------------------------------------------------------------------- figure of merit (5.)


def count_macs(model_path: Path) -> dict:
    """Multiply-accumulates of one inference, from the TFLite graph: CONV_2D (out H*W*Cout * kh*kw*Cin),
    DEPTHWISE_CONV_2D (out H*W*C * kh*kw), FULLY_CONNECTED (out units * in features), TRANSPOSE_CONV (in
    H*W*Cin * kh*kw*Cout). Dense count: XNNPACK's int8 kernels do not skip zero weights, so pruned weights
    cost the same MACs (the `nonzero` figure counts only non-zero weights, for reference)."""
    from convert.edgetpu import _plain_interpreter

    interp = _plain_interpreter(Path(model_path))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    total = nonzero = 0
    by_op: dict[str, int] = {}
    for op in interp._get_ops_details():
        name = op["op_name"]
        ins = [i for i in op["inputs"] if i >= 0]
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV") or len(ins) < 2:
            continue
        out_shape = tensors[op["outputs"][0]]["shape"]
        w_index = ins[1]  # the weights, for all four (TRANSPOSE_CONV: output_shape, weights, input)
        w = tensors[w_index]["shape"]
        if name == "CONV_2D":
            macs = int(np.prod(out_shape[:-1])) * int(np.prod(w))  # w: (Cout, kh, kw, Cin); batch 1
        elif name == "DEPTHWISE_CONV_2D":
            macs = int(np.prod(out_shape)) * int(w[1] * w[2])
        elif name == "FULLY_CONNECTED":
            macs = int(np.prod(out_shape[:-1])) * int(np.prod(w))  # w: (units, in)
        else:
            in_shape = tensors[ins[2]]["shape"]
            macs = int(np.prod(in_shape)) * int(np.prod(w[:-1]))
        total += macs
        by_op[name] = by_op.get(name, 0) + macs
        try:
            weights = interp.get_tensor(w_index)
            nonzero += round(macs * np.count_nonzero(weights) / weights.size)
        except ValueError:
            nonzero += macs
    return {"macs": total, "nonzero_macs": nonzero, "by_op": by_op}


PEAK_SHAPE = (56, 56, 256, 256, 3)  # H, W, Cin, Cout, k: 1.85 GMAC, compute-bound


def peak_model(work: Path) -> Path:
    """An int8 TFLite model with one large 3x3 convolution (56x56x256 -> 256), quantized exactly as the
    embedder is (full-integer, int8 in/out), built once with TensorFlow and cached."""
    path = work / "peak_conv3x3_int8.tflite"
    if path.is_file():
        return path
    import tensorflow as tf
    import tf_keras

    h, w, cin, cout, k = PEAK_SHAPE
    inp = tf_keras.Input(batch_shape=(1, h, w, cin))
    model = tf_keras.Model(inp, tf_keras.layers.Conv2D(cout, k, padding="same", activation="relu")(inp))
    rng = np.random.default_rng(0)

    def rep():
        for _ in range(8):
            yield [rng.uniform(0, 1, (1, h, w, cin)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    work.mkdir(parents=True, exist_ok=True)
    path.write_bytes(conv.convert())
    return path


def time_invoke(model_path: Path, threads: int, runs: int) -> np.ndarray:
    from edge.interpreter import load_interpreter

    m = load_interpreter(model_path, num_threads=threads)
    d = m.input_details[0]
    x = np.random.default_rng(0).integers(-128, 127, d["shape"], dtype=np.int8)
    m.run([x])
    ms = []
    for _ in range(runs):
        t = time.perf_counter()
        m.run([x])
        ms.append((time.perf_counter() - t) * 1e3)
    return np.array(ms)


def figure_of_merit(opts: BenchOptions, conv: Conversion, chips: np.ndarray) -> dict:
    lat = _benchmarks_module("embedder_latency")
    int8_path = conv.bundle / "embedder.tflite"
    macs = count_macs(int8_path)
    peak_path = peak_model(opts.work)
    peak_macs = count_macs(peak_path)["macs"]
    rows = []
    for t in opts.threads:
        embed_ms = float(np.median(lat.time_per_chip(lat.tflite_fn(str(int8_path), t), chips, opts.repeat)))
        peak_ms = float(np.median(time_invoke(peak_path, t, 5 if opts.quick else 15)))
        achieved, peak = macs["macs"] / (embed_ms / 1e3), peak_macs / (peak_ms / 1e3)
        rows.append({"threads": t, "embed_ms": embed_ms, "achieved_gmacs": achieved / 1e9,
                     "peak_ms": peak_ms, "peak_gmacs": peak / 1e9, "ratio": achieved / peak})
    return {"macs": macs, "peak_model": {"shape": PEAK_SHAPE, "macs": peak_macs, "file": str(peak_path)},
            "rows": rows}


# ----------------------------------------------------------------------------------------- the report


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        f = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
        flags = ", ".join(x for x in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "asimddp") if x in f)
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "simd": flags,
            "os": platform.platform(), "python": platform.python_version(), "load_1min": load}


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("facelock", "numpy", "tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert",
                "opencv-python-headless", "dlib-bin", "dlib"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


def _f(x, fmt="{:.4f}", none="–"):
    return none if x is None else fmt.format(x)


def _pct(x):
    return _f(x, "{:.2%}")


def _table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _tar_noise(impostors: int) -> str:
    top = max(1, round(impostors * 1e-3))
    return (f"With {impostors:,} impostor pairs, TAR@FAR 1e-3 is set by the top {top} impostor score(s) alone: "
            "differences of several points between similar models are noise; AUC, EER and TAR@FAR 1e-2 are "
            "the stable figures.")


def render(res: dict) -> str:
    m, ds = res["machine"], res["dataset"]
    L = [
        "# facelock benchmarks",
        "",
        (f"Written by `facelock bench{' --quick' if res['quick'] else ''}` on {res['date']}. Every figure was "
        "measured on this machine in this run, except conversions marked *cached* in the cost curve "
        "(reused from an earlier `facelock convert` run with identical options)."),
        "",
        f"- **Machine:** {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable by this process; "
        f"SIMD: {m['simd'] or 'n/a'}), {m['os']}, Python {m['python']}"
        + (f", 1-minute load {m['load_1min']:.2f} at the start (the cores are shared)" if m["load_1min"] is not None
           else ""),
        "- **Versions:** " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()),
        f"- **Mode:** {'quick (CI: demo faces, fewer repeats, fewer sparsities)' if res['quick'] else 'full'}",
        f"- **Data:** {ds['name']} ({ds['pairs']}); {ds['note']}",
        f"- **LFW rule{' (full mode; not used in quick mode)' if res['quick'] else ''}:** {LFW_RULE}.",
        f"- **Took:** {res['seconds']:.0f} s",
        "",
    ]
    a = res["accuracy"]
    L += ["## 1. Accuracy", "",
          (f"{a['pairs']} pairs ({a['images']} images). A pair with a face its pipeline did not find is scored as "
          "a rejection (it still counts), so misses cost accuracy. Peer score: −Euclidean distance (its own); "
          "ours: cosine. *Best accuracy* uses the best threshold on these pairs (an optimistic, oracle "
          "figure); TAR@FAR is a step function, no interpolation. "
          + _tar_noise(a.get("impostors", a["pairs"] // 2))), ""]
    L.append(_table(["pipeline", "AUC", "TAR@FAR 1e-2", "TAR@FAR 1e-3", "best accuracy", "EER",
                     "faces not found"],
                    [[n, _f(r["auc"]), _pct(r["tar_at_far_1e2"]), _pct(r["tar_at_far_1e3"]),
                      _pct(r["best_accuracy"]), _pct(r["eer"]), r["faces_not_found"]]
                     for n, r in a["rows"].items()]))
    L += [""] + [f"- {n}" for n in a["notes"]] + ["", f"![ROC curves](img/{a['plot']})", ""]

    s = res["speed"]
    L += ["## 2. Speed", "",
          (f"Per-stage wall time in ms per 640×480 frame with one face (each test photo placed on a doorway the "
          f"way `make demo` does), {s['frames']} frames × {s['repeat']} passes, the same frames "
          f"for every pipeline, in one run. *detect* on the whole frame; *align* = keypoints → 150×150 chip "
          f"(peer: 5 landmarks + chip); *embed* = one chip; *match* = against a {s['gallery']}-template gallery "
          "(facelock's matcher, for all). *total* is per frame with a face. The peer (dlib) has no thread "
          "setting and runs on one thread."), ""]
    rows = []
    for r in s["rows"]:
        rows.append([r["pipeline"], r["threads"], f"{r['faces_found']}/{r['frames']}"]
                    + [f"{_f(r[k]['median'], '{:.2f}')} / {_f(r[k]['p95'], '{:.2f}')}"
                       for k in ("detect", "align", "embed", "match", "total")])
    L.append(_table(["pipeline", "threads", "faces", "detect", "align", "embed", "match", "total"], rows))
    L += ["", "(median / p95, ms)", ""]
    if not any(flag in m["simd"] for flag in ("vnni", "asimddp")):
        L += [(f"This CPU has no int8 dot-product instructions (SIMD: {m['simd'] or 'n/a'}): XNNPACK's int8 kernels "
               "then do about as many multiply-accumulates per cycle as its float ones, so int8 is no faster than "
               "float here. The int8 advantage is on ARM (the Raspberry Pi's NEON, dot-product instructions on "
               "Pi 5) and on the Edge TPU, which runs int8 only; int8 still makes the model 4x smaller."), ""]
    L += ["**Model files**", ""]
    L.append(_table(["file", "MB", "gzip MB"],
                    [[r["file"], f"{r['bytes'] / 1e6:.2f}", _f(r["gzip_bytes"] and r["gzip_bytes"] / 1e6, "{:.2f}")]
                     for r in s["sizes"]]))
    L += ["", (f"**Peak memory** (peak resident set, VmHWM, of a child process that loads the pipeline and runs "
          f"it on {s['memory_frames']} frames; the facelock children import `edge` only, as the board does: "
          "no TensorFlow)"), ""]
    L.append(_table(["pipeline", "threads", "peak RSS MB"],
                    [[r["pipeline"], r["threads"],
                      f"{r['vmhwm_kib'] / 1024:.0f}" if r.get("vmhwm_kib") else r.get("error", "–")]
                     for r in s["memory"]]))
    L.append("")

    c = res["cost"]
    L += ["## 3. Cost curve: sparsity", "",
          "One `facelock convert` per sparsity (prune by distillation, int8, validate"
          + (" on LFW folds 6-10, trained and calibrated on LFW train people" if not res["quick"]
             else " on the demo faces") + "). Accuracy of the int8 model; latency of the int8 embedder per "
          "chip (median). XNNPACK does not skip zero weights, so sparsity buys size (gzip) and not speed. "
          + _tar_noise(a.get("impostors", a["pairs"] // 2)), ""]
    th = res["options"]["threads"]
    L.append(_table(["sparsity", "AUC", "TAR@FAR 1e-3", "best accuracy", "int8 MB", "int8 gzip MB"]
                    + [f"embed ms, {t} thr" for t in th] + ["conversion"],
                    [[f"{100 * r['sparsity_target']:.0f}% ({100 * r['sparsity']:.1f}%)", _f(r["auc"]),
                      _pct(r["tar_at_far_1e3"]), _pct(r["best_accuracy"]), f"{r['int8_bytes'] / 1e6:.2f}",
                      f"{r['int8_gzip_bytes'] / 1e6:.2f}"] + [f"{r[f'embed_ms_{t}t']:.2f}" for t in th]
                     + ["cached" if r["cached"] else "this run"] for r in c["rows"]]))
    L += ["", f"![accuracy and latency vs sparsity](img/{c['plot']})", ""]

    g = res["scaling"]
    L += ["## 4. Scaling: match time vs gallery size", "",
          (f"One probe against N random unit 128-d templates (5 per person, one person in ten with 2 negative "
          f"examples), {g['repeat']} probes per size; einsum is the default scoring (numpy's own loops), blas "
          "is `MatchOptions.use_blas`."), ""]
    L.append(_table(["templates", "people", "scoring", "median ms", "p95 ms"],
                    [[f"{r['templates']:,}", f"{r['people']:,}", r["scoring"], f"{r['median']:.4f}",
                      f"{r['p95']:.4f}"] for r in g["rows"]]))
    L += ["", f"![match time vs gallery size](img/{g['plot']})", ""]

    f = res["merit"]
    mac = f["macs"]
    h, w, cin, cout, k = f["peak_model"]["shape"]
    L += ["## 5. Figure of merit", "",
          f"- Embedder: **{mac['macs'] / 1e9:.3f} GMAC per face** (dense, counted from the int8 TFLite graph: "
          + ", ".join(f"{op} {v / 1e9:.3f} G" for op, v in mac["by_op"].items())
          + f"); {mac['nonzero_macs'] / 1e9:.3f} GMAC on non-zero weights, which the CPU kernels do not exploit.",
          (f"- Peak: an int8 TFLite model built here with one {k}×{k} convolution, {h}×{w}×{cin} → {cout} "
          f"({f['peak_model']['macs'] / 1e9:.2f} GMAC), quantized the same way and run by the same runtime "
          "(LiteRT + XNNPACK, the same int8 GEMM micro-kernels). Large enough to be compute-bound, so it is the "
          "int8 MAC rate this machine reaches with this software: a fair, measured peak, not a datasheet "
          "figure. (numpy's int8 matmul is not a fair peak: numpy does not use BLAS or VNNI for integers.)"),
          ""]
    L.append(_table(["threads", "int8 embed ms", "achieved GMAC/s", "peak conv ms", "peak GMAC/s",
                     "achieved / peak"],
                    [[r["threads"], f"{r['embed_ms']:.2f}", f"{r['achieved_gmacs']:.1f}", f"{r['peak_ms']:.1f}",
                      f"{r['peak_gmacs']:.1f}", f"{r['ratio']:.0%}"] for r in f["rows"]]))
    L.append("")
    return "\n".join(L)


def summary(res: dict) -> str:
    """The section tables only (what the command prints)."""
    text = render(res)
    keep, out = False, []
    for line in text.splitlines():
        if line.startswith("## "):
            keep = True
        if keep and (line.startswith(("|", "## ", "- Embedder", "**"))):
            out.append(line)
        elif keep and not line and out and out[-1]:
            out.append("")
    return "\n".join(out).strip() + "\n"


def run_bench(opts: BenchOptions) -> dict:
    opts = opts.resolved()
    started = time.time()
    ds = dataset(opts)
    img = Path(opts.out) / "img"
    img.mkdir(parents=True, exist_ok=True)
    opts.work.mkdir(parents=True, exist_ok=True)
    res: dict = {"quick": opts.quick, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                 "machine": machine(), "versions": versions(),
                 "dataset": {"name": ds.name, "pairs": str(ds.pairs), "note": ds.note},
                 "options": {"threads": list(opts.threads), "sparsities": list(opts.sparsities),
                             "frames": opts.frames, "repeat": opts.repeat}}
    sparsities = opts.sparsities if MAIN_SPARSITY in opts.sparsities else (*opts.sparsities, MAIN_SPARSITY)
    convs = conversions(replace(opts, sparsities=tuple(sorted(sparsities))), ds)
    main = convs[MAIN_SPARSITY]
    peer_ok = False
    if opts.peer:
        try:
            import dlib  # noqa: F401

            peer_ok = True
        except ImportError:
            pass

    _say("1/5 accuracy")
    res["accuracy"] = accuracy(opts, ds, main, img)
    _say("2/5 speed")
    res["speed"] = speed(opts, ds, main, peer_ok)
    lat = _benchmarks_module("embedder_latency")  # noqa: F841 (fails early with a clear message)
    chips = latency_chips(opts, ds, main)
    _say("3/5 cost curve")
    res["cost"] = cost_curve(opts, {s: c for s, c in convs.items() if s in opts.sparsities}, chips, img)
    _say("4/5 gallery scaling")
    res["scaling"] = scaling(opts, img)
    _say("5/5 figure of merit")
    res["merit"] = figure_of_merit(opts, main, chips)
    res["seconds"] = time.time() - started
    out = Path(opts.out)
    (out / "benchmarks.md").write_text(render(res))
    (opts.work / ("quick" if opts.quick else "full") / "results.json").write_text(
        json.dumps(res, indent=2, default=str))
    _say(f"wrote {out / 'benchmarks.md'} and {', '.join(sorted(p.name for p in img.glob('*.png')))} in {img}")
    return res


def latency_chips(opts: BenchOptions, ds: DataSet, conv: Conversion) -> np.ndarray:
    """Aligned chips of the speed frames (edge's detector + aligner), for the embedder-only timings."""
    from edge.align import FaceAligner
    from edge.detect import BlazeFaceDetector, DetectorOptions
    from edge.embed_cli import read_image_rgb
    from edge.modelstore import DETECTOR, model_path

    det, al = BlazeFaceDetector(model_path(DETECTOR), DetectorOptions()), FaceAligner()
    chips = []
    for f in speed_frames(ds, min(opts.frames, 16 if opts.quick else 48)):
        image = read_image_rgb(f)
        faces = det.detect(image)
        if faces:
            chips.append(al.align(image, max(faces, key=lambda x: x.area)).chip)
    if not chips:
        raise DataError(f"{ds.root}: no face found in the speed frames")
    return np.stack(chips)


__all__ = ["BenchOptions", "count_macs", "render", "run_bench", "summary"]

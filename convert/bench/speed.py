"""Section 2, speed: per-stage latency (detect, align, embed, match) of facelock (float TFLite, int8) and of
the peer on the same 640x480 door frames, at each thread count; the model files' sizes; peak memory
(convert.bench.memory). Also the embedder-only latency loop the cost curve and the figure of merit use."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np

from convert.bench.conversions import Conversion
from convert.bench.data import PEER, BenchOptions, DataSet, pair_list
from convert.bench.memory import memory_rows
from convert.bench.scaling import snapshot
from convert.bench.util import bar, say, stats
from convert.errors import DataError

SPEED_GALLERY = 50  # templates in the gallery matched against in the speed section (10 people x 5)
STAGES = ("detect", "landmarks", "align", "embed", "match", "total")

SMALL_FACE_PX = 40  # the door-distance rows: faces this wide (convert.bench.door.door_frame)


def speed_frames(ds: DataSet, n: int) -> list[Path]:
    """`n` pair images spread over the pair list (held-out people in full mode)."""
    files = pair_list(ds).files
    idx = np.linspace(0, len(files) - 1, min(n, len(files))).round().astype(int)
    return [ds.pairs.parent / files[i] for i in idx]


def _gallery_matcher(size: int, seed: int = 0):
    from edge.identity.match import Matcher

    return Matcher(snapshot(size, np.random.default_rng(seed)))


def _record(times: dict, t0: float, t1: float, t2: float, t3: float, t4: float) -> None:
    for k, (a, b) in {"align": (t1, t2), "embed": (t2, t3), "match": (t3, t4), "total": (t0, t4)}.items():
        times[k].append((b - a) * 1e3)


def ours_stages(embedder_path: Path, threads: int, before: bool = False, mirror: bool = False):
    """facelock's stages around an embedder: today's (short-range BlazeFace tried first, full range for the
    faces it misses, the landmark model, the landmark template) or, with `before`, those before the
    landmark model (short-range BlazeFace, its keypoint template), to time the two on the same frames.
    `mirror`: embeddings mirror-averaged (two runs of the embedder), as a bundle's card may ask."""
    from edge.models.store import DETECTOR, model_path
    from edge.vision.align import KEYPOINT_TEMPLATE_FILE, FaceAligner, load_template
    from edge.vision.build import Stages, detector, landmarker
    from edge.vision.embed import TFLiteEmbedder

    embedder = TFLiteEmbedder(embedder_path, num_threads=threads, mirror=mirror)
    near = detector(model_path(DETECTOR), num_threads=threads)
    if before:
        return Stages(near, FaceAligner(template=load_template(KEYPOINT_TEMPLATE_FILE)), embedder)
    marks = landmarker(num_threads=threads)
    return Stages(detector(num_threads=threads), FaceAligner(landmarker=marks), embedder, marks, near)


class OursTimer:
    """facelock's per-frame path, stage by stage (`FacePipeline.subject`: the detectors, the landmark model on
    their detections, none `before` it came, the subject; then FaceAligner, the TFLite embedder, the
    matcher), timed a pass over the frames at a time (`run`), so that pipelines can take turns
    (`interleaved`). Frames come back to back, or with `fps` at a camera's pace: a frame starts every 1/fps
    s, and the interpreters' threads go idle in between, as they do at the door."""

    def __init__(self, embedder_path: Path, threads: int, before: bool = False, mirror: bool = False,
                 matcher=None, settled=None):
        """`matcher`: what each face is matched against (default: a synthetic gallery of SPEED_GALLERY
        templates); `settled` (a mirror-averaging embedder): the decider's rule, so that the mirror run is
        spent only on faces whose vote it could change, as the lock does (FacePipeline.process)."""
        self.pipeline = ours_stages(embedder_path, threads, before, mirror).pipeline()
        self.matcher = matcher if matcher is not None else _gallery_matcher(SPEED_GALLERY)
        self.settled = settled if mirror else None
        self.mirror_runs = 0  # faces embedded (first pass over the frames) that got the mirror run
        self.times: dict[str, list[float]] = {k: [] for k in STAGES}
        self.faces_found = self.frames = 0
        self.passes = 0
        # warm-up: the first invoke allocates and packs weights
        self.pipeline.embedder.embed(np.zeros((1, 150, 150, 3), np.uint8))

    def run(self, frames: list[np.ndarray], passes: int = 1, fps: float = 0.0, progress: bool = False,
            desc: str = "") -> None:
        pipeline, times = self.pipeline, self.times
        if not self.passes:
            pipeline.subject(frames[0])  # warm-up of the detectors and the landmark model
            self.frames = len(frames)
        due = time.perf_counter()
        for r in bar(range(passes * len(frames)), desc, progress):
            frame = frames[r % len(frames)]
            if fps:
                due += 1.0 / fps
                time.sleep(max(0.0, due - time.perf_counter()))
            t0 = time.perf_counter()
            found = pipeline.subject(frame)
            t1 = time.perf_counter()
            times["detect"].append(found.detect_ms)
            if pipeline.landmarker is not None:
                times["landmarks"].append(found.landmarks_ms)
            if found.face is None:
                times["total"].append((t1 - t0) * 1e3)
                continue
            self.faces_found += self.passes == 0 and r < len(frames)
            aligned = pipeline.aligner.align(frame, found.face)
            t2 = time.perf_counter()
            if self.settled is None:
                e = pipeline.embedder.embed(aligned.chip[None])[0]
                t3 = time.perf_counter()
                self.matcher.match(e)
                _record(times, t0, t1, t2, t3, time.perf_counter())
            else:  # FacePipeline.process with `settled`: embed once, match, the mirror run only if unsettled
                chips = aligned.chip[None]
                once = pipeline.embedder.embed_once(chips)
                t3 = time.perf_counter()
                match = self.matcher.match(once[0])
                t4 = time.perf_counter()
                matched = t4 - t3
                if not self.settled(match):
                    self.mirror_runs += self.passes == 0 and r < len(frames)
                    e = pipeline.embedder.complete(chips, once)[0]
                    t3 += time.perf_counter() - t4
                    t4 = time.perf_counter()
                    self.matcher.match(e)
                    matched += time.perf_counter() - t4
                _record(times, t0, t1, t2, t3, t3 + matched)
            times["align"][-1] += found.select_ms  # choosing the subject counts with the alignment, as before
        self.passes += passes

    def result(self) -> dict:
        return {**{k: stats(v) for k, v in self.times.items()}, "faces_found": self.faces_found,
                "frames": self.frames, "mirror_runs": self.mirror_runs if self.settled else None}


def time_ours(frames: list[np.ndarray], embedder_path: Path, threads: int, repeat: int, progress: bool,
              desc: str, before: bool = False, mirror: bool = False, fps: float = 0.0) -> dict:
    """`repeat` passes of one pipeline (`OursTimer`) over the frames: its per-stage figures."""
    timer = OursTimer(embedder_path, threads, before, mirror)
    timer.run(frames, repeat, fps, progress, desc)
    return timer.result()


def interleaved(timers: list[OursTimer], frames: list[np.ndarray], repeat: int, fps: float = 0.0) -> list[dict]:
    """`repeat` passes of each pipeline, taking turns a pass at a time: a machine whose speed drifts during
    the run (a shared VM's neighbours) then slows them alike, and their ratio stays what the code makes it."""
    for _ in range(repeat):
        for timer in timers:
            timer.run(frames, 1, fps)
    return [timer.result() for timer in timers]


def time_peer(frames: list[np.ndarray], repeat: int, progress: bool) -> dict:
    """face_recognition's per-frame path, stage by stage: HOG detector (1 upsample), 5-point landmarks +
    150x150 chip (dlib.get_face_chip, padding 0.25, what compute_face_descriptor does inside), ResNet on the
    chip, then the same matcher. dlib has no thread setting: it runs on one thread."""
    import dlib

    from edge.models.store import DLIB_RESNET, DLIB_SHAPE5, model_path
    from edge.vision.embed import l2_normalize

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(model_path(DLIB_SHAPE5)))
    resnet = dlib.face_recognition_model_v1(str(model_path(DLIB_RESNET)))
    matcher = _gallery_matcher(SPEED_GALLERY)
    times = {k: [] for k in STAGES}
    faces_found = 0
    resnet.compute_face_descriptor(np.zeros((150, 150, 3), np.uint8))
    for r in bar(range(repeat * len(frames)), "peer stages", progress):
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
        _record(times, t0, t1, t2, t3, time.perf_counter())
    return {**{k: stats(v) for k, v in times.items()}, "faces_found": faces_found, "frames": len(frames)}


def time_per_chip(fn, chips: np.ndarray, repeat: int) -> np.ndarray:
    """Milliseconds of each `fn(chip)`, `repeat` passes over `chips`, after one warm-up call."""
    fn(chips[0])  # warm-up: first invoke allocates and packs weights
    times = []
    for _ in range(repeat):
        for chip in chips:
            start = time.perf_counter()
            fn(chip)
            times.append((time.perf_counter() - start) * 1e3)
    return np.array(times)


def tflite_fn(path: str, threads: int):
    """One chip -> the TFLite embedder's embedding (for `time_per_chip`)."""
    from edge.vision.embed import TFLiteEmbedder

    embedder = TFLiteEmbedder(path, num_threads=threads)
    return lambda chip: embedder.embed(chip[None])


def latency_chips(opts: BenchOptions, ds: DataSet) -> np.ndarray:
    """Aligned chips of the speed frames (edge's detector + aligner), for the embedder-only timings."""
    from edge.images import read_image_rgb
    from edge.vision.align import FaceAligner
    from edge.vision.build import detector

    det, al = detector(), FaceAligner()
    chips = []
    for f in speed_frames(ds, min(opts.frames, 16 if opts.quick else 48)):
        image = read_image_rgb(f)
        faces = det.detect(image)
        if faces:
            chips.append(al.align(image, max(faces, key=lambda x: x.area)).chip)
    if not chips:
        raise DataError(f"{ds.root}: no face found in the speed frames")
    return np.stack(chips)


def model_sizes(conv: Conversion) -> list[dict]:
    """Size (and gzip size, for .tflite) of every model file the speed rows run."""
    from edge.models.store import DETECTOR, DLIB_RESNET, DLIB_SHAPE5, model_path

    sizes = {
        "BlazeFace detector (float TFLite)": model_path(DETECTOR),
        "embedder, float TFLite": conv.workdir / "embedder_float.tflite",
        f"embedder, int8 TFLite ({conv.sparsity:.0%} sparse)": conv.bundle / "embedder.tflite",
        "embedder, Keras (float, workstation only)": conv.source_model(),
        "peer: dlib ResNet .dat": model_path(DLIB_RESNET),
        "peer: dlib 5-point shape predictor .dat": model_path(DLIB_SHAPE5),
    }
    return [{"file": name, "path": str(p), "bytes": p.stat().st_size,
             "gzip_bytes": len(gzip.compress(p.read_bytes(), 6)) if p.suffix == ".tflite" else None}
            for name, p in sizes.items() if p.is_file()]


def speed(opts: BenchOptions, ds: DataSet, conv: Conversion, peer_ok: bool) -> dict:
    from convert.bench import door
    from convert.demo_faces import door_frame
    from edge.images import read_image_rgb
    from edge.models.bundle import load_bundle

    files = speed_frames(ds, opts.frames)
    # What a door camera sees: each photo on a 640x480 doorway (as in `make demo` and edge_targets.py).
    rng = np.random.default_rng(0)
    frames = [door_frame(read_image_rgb(f), rng) for f in files]
    small = [door.door_frame(read_image_rgb(f), SMALL_FACE_PX, rng)[0] for f in files]
    float_path, int8_path = conv.workdir / "embedder_float.tflite", conv.bundle / "embedder.tflite"
    # The bundle's pipeline embeds as its model card says (chip and mirror image: two runs); before, once.
    mirror = load_bundle(conv.bundle).card.mirror_average
    tag = ", mirror-averaged" if mirror else ""
    rows = []
    for threads in opts.threads:
        for label, path in (("float TFLite", float_path), (f"int8 ({conv.sparsity:.0%} sparse)", int8_path)):
            rows.append({"pipeline": f"facelock, {label}{tag}", "threads": threads,
                         **time_ours(frames, path, threads, opts.repeat, opts.progress, f"{label} {threads}t",
                                     mirror=mirror)})
        rows.append({"pipeline": f"facelock before landmarks, int8 ({conv.sparsity:.0%} sparse)", "threads": threads,
                     **time_ours(frames, int8_path, threads, opts.repeat, opts.progress, f"before {threads}t",
                                 before=True)})
        # At door distance (faces 40 px wide): what a small face costs (the landmark model's extra crops).
        rows.append({"pipeline": f"facelock, int8{tag}, {SMALL_FACE_PX}-px faces", "threads": threads,
                     **time_ours(small, int8_path, threads, opts.repeat, opts.progress, f"40 px {threads}t",
                                 mirror=mirror)})
    if peer_ok:
        rows.append({"pipeline": PEER, "threads": 1, **time_peer(frames, opts.repeat, opts.progress)})
    size_rows = model_sizes(conv)

    say("peak memory: one child process per pipeline")
    mem_files = files[: min(len(files), 20)]
    memory = memory_rows(int8_path, float_path, max(opts.threads), mem_files, peer_ok)
    return {"rows": rows, "frames": len(files), "repeat": opts.repeat, "gallery": SPEED_GALLERY,
            "sizes": size_rows, "memory": memory, "memory_frames": len(mem_files)}

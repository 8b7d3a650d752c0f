"""`facelock run --config PATH`: the service on the lock (see edge.service.loop). Logs go to stdout, one line
per event, for the journal."""

from __future__ import annotations

import argparse
import logging
import sys

EPILOG = """\
The config is TOML; every key is documented in edge/config.example.toml (`facelock run --print-example`
prints it). Under systemd (Type=notify) the service reports READY/WATCHDOG/STOPPING; SIGTERM finishes the
frame, flushes waiting events to the broker, publishes `offline` and exits 0.
"""


def run(args: argparse.Namespace) -> int:
    from edge.service.config import load_config, render_example

    if args.print_example:
        sys.stdout.write(render_example())
        return 0
    if not args.config:
        raise SystemExit("facelock run: --config PATH is required")
    config = load_config(args.config)
    logging.basicConfig(level=config.service.log_level.upper(), stream=sys.stdout, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.check:
        print(f"{args.config}: OK")
        return 0
    from edge.service.loop import Service

    return Service(config).run()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the lock service (camera -> recognition -> relay -> MQTT)",
                       description="Run the face-unlock service.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", metavar="PATH", help="TOML config file")
    p.add_argument("--check", action="store_true", help="validate the config and exit")
    p.add_argument("--print-example", action="store_true", help="print the documented example config")
    p.set_defaults(handler=run)

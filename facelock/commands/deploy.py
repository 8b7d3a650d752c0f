"""`facelock deploy bundle | push | sdcard`: get facelock onto boards. See docs/deploy.md."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from deploy.wheelhouse import BOARDS, PYTHONS  # stdlib only: cheap enough for every CLI start

HELP = """\
  facelock deploy bundle --model BUNDLE [-o FILE]       wheel + model + generated config + unit + installer
      [--board linux-aarch64 [--python 3.11|3.13]]      + the offline wheelhouse for that board
  facelock deploy push HOST... [--artifact FILE]        install on boards over SSH, summary per host
  facelock deploy sdcard IMAGE --hostname H ...         first-boot settings into a Raspberry Pi OS image
"""


def register(sub: argparse._SubParsersAction) -> None:
    deploy = sub.add_parser(
        "deploy",
        help="build a board artifact, push it over SSH, provision SD-card images",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dsub = deploy.add_subparsers(dest="deploy_command", metavar="ACTION")
    deploy.set_defaults(handler=lambda args: (deploy.print_help(), 2)[1])

    b = dsub.add_parser("bundle", help="build facelock-deploy-<version>.tar.gz")
    b.add_argument("--model", required=True, type=Path,
                   help="model bundle folder (manifest.json + .tflite) or its .tar.gz")
    b.add_argument("--config", type=Path, help="your config file, checked with the runtime's loader (default: generated from the runtime's Options)")
    b.add_argument("--wheel", type=Path, help="use this facelock wheel instead of building one")
    b.add_argument(
        "-o", "--output", help="output file, or folder (existing, or ending in /) "
                               "(default ./facelock-deploy-<version>.tar.gz)"
    )
    b.add_argument("--board", choices=sorted(BOARDS),
                   help="add a wheelhouse of the `edge` extra for this board, so install.sh needs no network")
    b.add_argument("--python", choices=PYTHONS,
                   help="the board's Python, with --board (default 3.11: Raspberry Pi OS Bookworm; 3.13: Trixie)")
    b.add_argument("--wheel-cache", type=Path, metavar="DIR",
                   help="where downloaded wheels are kept (default $FACELOCK_WHEEL_CACHE or "
                        "~/.cache/facelock/wheelhouse/BOARD-pyVERSION)")
    b.set_defaults(handler=_bundle)

    p = dsub.add_parser("push", help="install an artifact on boards over SSH")
    p.add_argument("hosts", nargs="+", metavar="HOST", help="[user@]host[:port] or an ~/.ssh/config alias")
    p.add_argument(
        "--artifact", type=Path, help="deploy artifact (default: newest dist/facelock-deploy-*.tar.gz)"
    )
    p.add_argument("--parallel", type=int, default=4, metavar="N", help="hosts at once (default 4)")
    p.add_argument("--identity", "-i", help="SSH private key")
    p.add_argument("--port", "-p", type=int, help="SSH port")
    p.add_argument("--user", "-l", help="SSH user (not root: needs passwordless sudo)")
    p.add_argument("--ssh-config", "-F", help="ssh_config file")
    p.add_argument(
        "--ssh-option", "-o", action="append", default=[], metavar="OPT", help="ssh -o OPT (repeatable)"
    )
    p.add_argument("--timeout", type=float, default=1800, help="seconds per host (default 1800)")
    p.add_argument("--remote-dir", default="/tmp", help="where to unpack on the board (default /tmp)")
    p.add_argument(
        "--install-args",
        default="",
        metavar="ARGS",
        help='arguments for install.sh, e.g. "--healthcheck CMD"',
    )
    p.add_argument("--log-dir", type=Path, help="write each host's full log here")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=_push)

    s = dsub.add_parser("sdcard", help="write first-boot configuration into a Raspberry Pi OS image file")
    s.add_argument("image", type=Path, help="the decompressed .img file (not the card itself)")
    s.add_argument("--hostname", required=True)
    s.add_argument("--ssh-key", required=True, type=Path, help="public key file (e.g. ~/.ssh/id_ed25519.pub)")
    s.add_argument("--user", default="admin", help="login user to create (default admin)")
    s.add_argument("--password", help="console password for that user (default: locked, SSH key only)")
    s.add_argument("--wifi-ssid")
    s.add_argument("--wifi-password")
    s.add_argument("--wifi-country", help="two-letter regulatory country, needed with --wifi-ssid")
    s.add_argument("--timezone", help="e.g. Europe/London")
    s.add_argument("--mqtt-host")
    s.add_argument("--mqtt-port", type=int)
    s.add_argument("--mqtt-user")
    s.add_argument("--mqtt-password")
    s.add_argument("--mqtt-tls", action=argparse.BooleanOptionalAction, default=None)
    s.add_argument("--device-id", help="MQTT device id (default: the hostname)")
    s.add_argument("--config", type=Path, help="your config file (default: the artifact's, else generated from the runtime's Options)")
    s.add_argument(
        "--bundle", type=Path, metavar="ARTIFACT", help="facelock-deploy-*.tar.gz to install on first boot"
    )
    s.add_argument("--format", default="auto", choices=("auto", "cloud-init", "firstrun"))
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=_sdcard)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def _bundle(args) -> int:
    from deploy.artifact import build_artifact

    info = build_artifact(args.model, output=args.output, config=args.config, wheel=args.wheel, log=_log,
                          board=args.board, python=args.python, wheel_cache=args.wheel_cache)
    print(info.path)
    return 0


def _push(args) -> int:
    import shlex

    from deploy.artifact import find_latest_artifact, read_artifact
    from deploy.push import SshOptions, format_table, print_failure_logs, push, results_json

    artifact = read_artifact(args.artifact or find_latest_artifact())
    opts = SshOptions(
        identity=args.identity,
        port=args.port,
        user=args.user,
        config=args.ssh_config,
        options=tuple(args.ssh_option),
        timeout=args.timeout,
        remote_dir=args.remote_dir,
    )
    _log(f"pushing {artifact.path.name} (release {artifact.release}) to {len(args.hosts)} host(s)")

    def progress(r):
        _log(f"  {r.host}: {r.status} in {r.seconds:.1f}s{(' - ' + r.detail) if r.detail else ''}")

    results = push(
        args.hosts,
        artifact,
        opts,
        install_args=shlex.split(args.install_args),
        parallel=args.parallel,
        log_dir=args.log_dir,
        progress=progress,
    )
    if args.json:
        print(results_json(results, artifact))
    else:
        print_failure_logs(results)
        print(format_table(results))
    return 0 if all(r.status == "ok" for r in results) else 1


def _sdcard(args) -> int:
    import tarfile

    from deploy.errors import DeployError
    from deploy.sdcard import Provision, hash_password, provision_image, render_config

    try:
        key = args.ssh_key.read_text(encoding="utf-8").strip().splitlines()[0]
    except (OSError, IndexError) as exc:
        raise DeployError(f"{args.ssh_key}: cannot read the SSH public key ({exc})") from exc
    template_text = None
    if args.config is not None:
        from deploy.board_config import check_config_file

        template_text = check_config_file(args.config)
    elif args.bundle:
        from deploy.artifact import read_artifact

        info = read_artifact(args.bundle)
        with tarfile.open(info.path, "r:gz") as tar:
            member = tar.extractfile(f"{info.top}/config.toml.example")
            if member is not None:
                template_text = member.read().decode("utf-8")
    device_id = args.device_id or re.sub(r"[^A-Za-z0-9_-]", "_", args.hostname)
    config = render_config(
        template_text,
        device_id,
        {
            "host": args.mqtt_host,
            "port": args.mqtt_port,
            "username": args.mqtt_user,
            "password": args.mqtt_password,
            "tls": args.mqtt_tls,
        },
    )
    if args.bundle:  # the release on the card must load the config rendered here
        from deploy.artifact import check_config_with_release

        check_config_with_release(args.bundle, config)
    prov = Provision(
        hostname=args.hostname,
        ssh_key=key,
        user=args.user,
        password_hash=hash_password(args.password) if args.password else "!",
        wifi_ssid=args.wifi_ssid,
        wifi_password=args.wifi_password,
        wifi_country=args.wifi_country.upper() if args.wifi_country else None,
        config_toml=config,
        timezone=args.timezone,
    )
    report = provision_image(args.image, prov, fmt=args.format, artifact=args.bundle, log=_log)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0

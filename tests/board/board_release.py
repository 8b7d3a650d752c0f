"""What the board test pushes to the emulated board, all made with facelock's own tools on the host:

* a real model bundle (`facelock convert --quick`, cached beside the image; $FACELOCK_BOARD_BUNDLE: yours)
* the board's config (deploy.board_config from the runtime's Options): frames from an image folder, the
  broker at the guestfwd address, decide windows stretched for an emulated CPU (see EMULATION_DECIDE)
* three offline artifacts (`facelock deploy bundle --board linux-aarch64 --python 3.11`):
  release 1; release 2, the same code as a different build (another wheel byte layout, so another release
  id: an upgrade); release 3, whose model bundle is broken (the embedder is not a TFLite model, the manifest
  lists it with its true sha256, so everything verifies and the service still cannot start): the health
  check fails and install.sh rolls back
* the replayed door frames (convert.demo_faces: Eileen Collins enrolled, Grace Hopper a stranger)
* an SD card: an MBR image with a FAT partition labelled CIDATA, provisioned by `facelock deploy sdcard`
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BOARD = ("linux-aarch64", "3.11")  # Raspberry Pi OS Bookworm: aarch64, Python 3.11
FRAMES_DIR = "/srv/facelock/door-frames"
ENROL_PHOTO = "/srv/facelock/eileen_collins.jpg"
# Who walks past the door in one pass over the folder (the source loops), as in `make demo`: an empty
# doorway, a stranger, an empty doorway, then (facelock.demo.write_attack_and_owner) a print of the enrolled
# person's portrait held up (refused by the passive liveness checks, on by default), an empty doorway, the
# enrolled person as a head turning a little (admitted), an empty doorway. Each attempt ends when no face is
# seen for `attempt_gap_s`.
# The decide settings must not depend on how fast the emulated CPU is (it varies with the host's load):
# - an attempt ends in the empty doorway: its EMPTY_FRAMES take at least EMPTY_FRAMES / FPS seconds however
#   fast the CPU (the source's pacer), which is longer than `attempt_gap_s`;
# - an attempt does not end between two frames of one person: `attempt_gap_s` is far above the time one
#   face frame takes on the emulated CPU (seconds; with attempt_gap_s = 1 a loaded host gave no events at all);
# - `cooldown_s` covers most of the enrolled person's frames left after the accept (a second attempt on
#   them gives one more event, which the checks allow) and is shorter than one pass at the source's fastest
#   pace, so every pass opens the door again;
# - the lockout never triggers on the stranger's repeated rejects and the print's attacks (`lockout_failures`).
FPS = 2.0
EMPTY_FRAMES = 30
FACE_FRAMES = 6
SEQUENCE = [(None, EMPTY_FRAMES), ("grace_hopper", FACE_FRAMES), (None, EMPTY_FRAMES)]
PASS_FRAMES = 2 * EMPTY_FRAMES + FACE_FRAMES + 85  # + write_attack_and_owner's 20 + 30 + 25 + 10 (asserted)
EMULATION_DECIDE = {"window_s": 600.0, "attempt_gap_s": 12.0, "attempt_max_s": 900.0, "cooldown_s": 60.0,
                    "lockout_failures": 1000}
assert EMPTY_FRAMES / FPS > EMULATION_DECIDE["attempt_gap_s"]
assert EMULATION_DECIDE["cooldown_s"] < PASS_FRAMES / FPS


def facelock(*args: str, **kw) -> subprocess.CompletedProcess:
    """The facelock CLI of this checkout (its venv)."""
    return subprocess.run([sys.executable, "-m", "facelock", *args], cwd=REPO, capture_output=True, text=True,
                          check=False, **kw)


def model_bundle(cache: Path, log) -> Path:
    """$FACELOCK_BOARD_BUNDLE, else a quick conversion made once into the cache."""
    if os.environ.get("FACELOCK_BOARD_BUNDLE"):
        return Path(os.environ["FACELOCK_BOARD_BUNDLE"])
    bundle = cache / "bundle-quick"
    if (bundle / "manifest.json").is_file():
        return bundle
    log(f"model bundle: `facelock convert --quick --out {bundle}` (once; cached)")
    proc = facelock("convert", "--quick", "--out", str(bundle), "--workdir", str(cache / "bundle-work"))
    if proc.returncode != 0 or not (bundle / "manifest.json").is_file():
        raise RuntimeError(f"facelock convert --quick failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return bundle


def broken_bundle(good: Path, dest: Path) -> Path:
    """`good` with its embedder replaced by bytes that are no TFLite model; the manifest lists the new file
    with its true sha256 and size, so the bundle verifies and only loading the model fails."""
    from edge.files import sha256_file

    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(good, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    name = manifest["embedder"]["file"]
    (dest / name).write_bytes(b"facelock board test: this is not a TFLite model\n" * 64)
    manifest["files"][name] = {"sha256": sha256_file(dest / name), "bytes": (dest / name).stat().st_size}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return dest


def board_config(path: Path, device_id: str, mqtt_host: str) -> Path:
    from deploy.board_config import board_config as render

    text = render({
        "source": {"kind": "folder", "uri": FRAMES_DIR, "fps": FPS, "loop": True},
        "mqtt": {"host": mqtt_host, "port": 1883, "device_id": device_id, "stats_interval_s": 0.0,
                 "reconnect_max_s": 5.0},
        "decide": EMULATION_DECIDE,
        "match": {"reload_check_s": 2.0},
    })
    path.write_text(text)
    return path


def second_build(wheel: Path, dest: Path) -> Path:
    """The same wheel with another byte layout (a ZIP comment): another release id of the same version."""
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / wheel.name
    with zipfile.ZipFile(wheel) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            zout.writestr(item, zin.read(item.filename))
        zout.comment = b"facelock board test: second build"
    return out


def deploy_bundle(model: Path, config: Path, wheel: Path, out: Path, log) -> Path:
    help_text = facelock("deploy", "bundle", "--help").stdout
    if "--board" not in help_text:
        raise RuntimeError("`facelock deploy bundle` has no --board option: no offline wheelhouse to push")
    out.mkdir(parents=True, exist_ok=True)
    proc = facelock("deploy", "bundle", "--model", str(model), "--config", str(config), "--wheel", str(wheel),
                    "--board", BOARD[0], "--python", BOARD[1], "-o", str(out) + "/")
    if proc.returncode != 0:
        raise RuntimeError(f"facelock deploy bundle failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    path = Path(proc.stdout.strip().splitlines()[-1])
    log(f"artifact: {path.name} in {out.name}/ ({path.stat().st_size / 1e6:.0f} MB)")
    return path


def releases(work: Path, model: Path, config: Path, log) -> tuple[Path, Path, Path]:
    """(release 1, release 2, release 3 with the broken model), each an offline artifact for the board."""
    from deploy.artifact import build_wheel

    wheel = build_wheel(work / "wheel", log=lambda _m: None)
    wheel2 = second_build(wheel, work / "wheel2")
    broken = broken_bundle(model, work / "bundle-broken")
    return (deploy_bundle(model, config, wheel, work / "release1", log),
            deploy_bundle(model, config, wheel2, work / "release2", log),
            deploy_bundle(broken, config, wheel, work / "release3-broken", log))


def door_frames(folder: Path, bundle: Path) -> tuple[Path, int]:
    """The replay folder as a .tar (and how many frames), plus Eileen Collins's portrait for `enroll`.
    `bundle`'s landmark model makes the live-like head from her portrait."""
    from convert.demo_faces import FIXTURES, PEOPLE, load_portraits, write_door_frames
    from facelock.demo import write_attack_and_owner

    shutil.rmtree(folder, ignore_errors=True)
    portraits = load_portraits()
    n = write_door_frames(folder / "door-frames", portraits, SEQUENCE)
    n += write_attack_and_owner(folder / "door-frames", n, portraits, bundle)
    assert n == PASS_FRAMES, f"{n} frames in a pass, PASS_FRAMES says {PASS_FRAMES}"
    shutil.copy2(FIXTURES / PEOPLE["eileen_collins"], folder / "eileen_collins.jpg")
    tar = folder.with_suffix(".tar")
    subprocess.run(["tar", "-cf", str(tar), "-C", str(folder), "."], check=True)
    return tar, n


# ---- the SD card --------------------------------------------------------------------------------------

CARD_START, CARD_SECTORS = 2048, 512 * 2048  # a 512 MiB FAT32 boot partition at 1 MiB


def blank_card(path: Path) -> Path:
    """An MBR disk image with one FAT32 partition labelled CIDATA: what stock cloud-init (NoCloud) looks for."""
    mkfs = shutil.which("mkfs.vfat", path="/usr/sbin:/sbin:/usr/bin") or "mkfs.vfat"
    with open(path, "wb") as fh:
        fh.truncate((CARD_START + CARD_SECTORS + 2048) * 512)
    subprocess.run([mkfs, "-F", "32", "-n", "CIDATA", "--offset", str(CARD_START), str(path),
                    str(CARD_SECTORS // 2)], check=True, capture_output=True)
    mbr = bytearray(512)
    mbr[440:444] = b"\xfa\xce\x10\xcc"
    mbr[446:462] = bytes([0, 0, 0, 0, 0x0C, 0, 0, 0]) + struct.pack("<II", CARD_START, CARD_SECTORS)
    mbr[510:512] = b"\x55\xaa"
    with open(path, "r+b") as fh:
        fh.write(mbr)
    return path


def provision_card(card: Path, artifact: Path, config: Path, pubkey: Path, device_id: str, mqtt_host: str,
                   log) -> dict:
    proc = facelock("deploy", "sdcard", str(card), "--hostname", "doorpi", "--ssh-key", str(pubkey),
                    "--user", "admin", "--mqtt-host", mqtt_host, "--mqtt-port", "1883", "--device-id", device_id,
                    "--config", str(config), "--bundle", str(artifact), "--format", "cloud-init", "--json")
    if proc.returncode != 0:
        raise RuntimeError(f"facelock deploy sdcard failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    report = json.loads(proc.stdout)
    log(f"sdcard: {card.name}: wrote {', '.join(report['files'])}")
    return report

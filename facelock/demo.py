"""`make demo`: the whole chain on embedded data: convert -> bundle -> enrol -> the lock service on replayed
door-camera frames -> MQTT events from a real Mosquitto broker.

    python -m facelock.demo --out out/demo [--bundle DIR]

The faces are the two public-domain portraits shipped with `convert` (convert/demo_faces.py): Eileen Collins
is enrolled, Grace Hopper stays a stranger; then a print of Eileen's portrait is held up to the camera
(refused by the passive liveness checks as an attack), and Eileen herself steps up, her head turning a
little (her portrait turned as a head with the landmark model's 3D mesh): the door opens. The relay is
simulated (gpiozero's mock pins).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import threading
import time
from pathlib import Path

from convert.broker import start_broker
from convert.demo_faces import FIXTURES, PEOPLE, load_portraits, write_door_frames
from facelock.cli import main as facelock

# Who walks past the door, in order: (person or None for an empty doorway, frames). A stranger's photo
# first (rejected), then an empty doorway; then what convert/bench/attacks.py makes of Eileen Collins's
# portrait: a print of it held up in front of the camera (refused as an attack by the liveness checks),
# and her face as a head turning a little as she steps up (admitted).
SEQUENCE = [(None, 5), ("grace_hopper", 25), (None, 30)]
HELD_UP_PRINT = ("eileen_collins", 20)
LIVE_OWNER = ("eileen_collins", 25)
GAP = 30  # empty frames between the attempts (3 s: more than decide.attempt_gap_s)


def say(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


def convert_bundle(bundle: Path, out: Path) -> bool:
    """A quick bundle in `bundle` unless one is there already."""
    if (bundle / "manifest.json").is_file():
        return True
    say("convert: prune + int8-quantize the dlib ResNet port, quick settings")
    return facelock(["convert", "--quick", "--out", str(bundle), "--workdir", str(out / "work")]) == 0


def enroll(gallery: Path, bundle: Path) -> bool:
    if gallery.exists():
        gallery.unlink()
    say("enrol eileen_collins from her portrait (grace_hopper stays a stranger)")
    return facelock(["enroll", "eileen_collins", str(FIXTURES / PEOPLE["eileen_collins"]),
                     "--gallery", str(gallery), "--model", str(bundle)]) == 0


def subscribe(port: int, received: list[tuple[str, str]]):
    """An MQTT client on the broker that appends (topic, payload) of everything under facelock/#."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    ready = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="facelock-demo-subscriber")
    client.on_connect = lambda c, *a: c.subscribe("facelock/#", qos=1)
    client.on_subscribe = lambda *a: ready.set()
    client.on_message = lambda c, u, m: received.append((m.topic, m.payload.decode(errors="replace")))
    client.connect("127.0.0.1", port)
    client.loop_start()
    ready.wait(10)
    return client


def write_attack_and_owner(frames: Path, start: int, portraits, bundle: Path, seed: int = 7) -> int:
    """Append to `frames` (numbered from `start`): the owner's portrait as a print held still in front of
    the camera, an empty doorway, then the owner as a live-like turning head (the landmark model's 3D mesh
    of the portrait, turned 10 degrees), an empty doorway. Returns the number of frames written."""
    import cv2
    import numpy as np

    from convert.bench.attacks import PRINT_STILL, live_sequence, plane_sequence
    from convert.demo_faces import door_frame
    from edge.models.bundle import load_bundle
    from edge.vision.build import bundle_stages

    person, n_print = HELD_UP_PRINT
    photo = portraits[person]
    face = bundle_stages(load_bundle(bundle), num_threads=2).pipeline().subject(photo).face
    if face is None or face.mesh is None:
        raise SystemExit(f"{person}: no face mesh in the portrait (a bundle without the landmark model?)")
    rng = np.random.default_rng(seed)
    mesh = face.mesh.astype(np.float64)
    empty = [door_frame(None, rng) for _ in range(GAP)]
    held_up = plane_sequence(photo, mesh, PRINT_STILL, rng, width_px=120, frames=n_print).frames
    live = live_sequence(photo, mesh, rng, width_px=120, frames=LIVE_OWNER[1], yaw_amp=10).frames
    index = start
    for image in held_up + empty + live + empty[:10]:
        cv2.imwrite(str(frames / f"{index:04d}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        index += 1
    return index - start


def run_service(out: Path, bundle: Path, gallery: Path, frames: Path, port: int) -> None:
    """The lock service on the replayed frames (10 fps) until they run out, with a simulated relay."""
    from edge.service.config import default_config
    from edge.service.loop import Service

    (out / "lockout.json").unlink(missing_ok=True)  # each demo starts with no failed attempts behind it
    config = (default_config()
              .replace("model", path=str(bundle))
              .replace("source", kind="folder", uri=str(frames), fps=10.0)
              .replace("gallery", path=str(gallery))
              .replace("outbox", path=str(out / "outbox.db"))
              .replace("decide", state_path=str(out / "lockout.json"))  # the demo's failures stay its own
              .replace("mqtt", host="127.0.0.1", port=port, device_id="demo_door")
              # a simulated relay (gpiozero's mock pins): the state shows UNLOCKED after the accept
              .replace("relay", enabled=True, pin_factory="mock", unlock_s=2.0))
    # the passive liveness checks are on by default: the photo held up does not open the door (docs/liveness.md)
    Service(config).run()


def report(received: list[tuple[str, str]]) -> int:
    """Print what the broker received; 0 when the held-up print was refused as an attack and the door then
    opened for eileen_collins (and for nobody else)."""
    say("what the broker received")
    events = [json.loads(p) for t, p in received if t.endswith("/event")]
    for topic, payload in received:
        if not topic.endswith(("/stats", "/config")):
            print(f"{topic}  {payload[:240]}")
    opened = [e for e in events if e.get("decision") == "accept"]
    attacks = [e for e in events if e.get("event_type") == "attack_suspected"]
    print(f"\n{len(events)} events; opened for: {sorted({e['person'] for e in opened}) or 'nobody'}; "
          f"attacks suspected: {len(attacks)} ({', '.join(e['reason'] for e in attacks) or 'none'})")
    first_open = next((i for i, e in enumerate(events) if e.get("decision") == "accept"), len(events))
    refused_first = any(e.get("event_type") == "attack_suspected" for e in events[:first_open])
    ok = refused_first and [e["person"] for e in opened] == ["eileen_collins"]
    if not ok:
        print("expected: the held-up print refused as an attack, then the door opened for eileen_collins alone")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """The whole chain on embedded data: convert -> bundle -> enrol -> the lock service on replayed frames ->
    MQTT events from a real Mosquitto broker."""
    ap = argparse.ArgumentParser(prog="python -m facelock.demo", description=main.__doc__)
    ap.add_argument("--out", default="out/demo", help="work folder (default out/demo)")
    ap.add_argument("--bundle", help="use this bundle instead of converting one")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    bundle = Path(args.bundle) if args.bundle else out / "bundle"
    if not convert_bundle(bundle, out):
        return 1
    portraits = load_portraits()
    gallery = out / "gallery.db"
    if not enroll(gallery, bundle):
        return 1

    frames = out / "frames"
    shutil.rmtree(frames, ignore_errors=True)
    n = write_door_frames(frames, portraits, SEQUENCE)
    n += write_attack_and_owner(frames, n, portraits, bundle)

    started = start_broker(out)
    if started is None:
        print("mosquitto is not installed (apt install mosquitto): cannot show the MQTT side", flush=True)
        return 1
    broker, port = started
    received: list[tuple[str, str]] = []
    try:
        client = subscribe(port, received)
        say(f"the lock service on {n} replayed 640x480 frames (10 fps), broker on 127.0.0.1:{port}")
        run_service(out, bundle, gallery, frames, port)
        time.sleep(1.0)
        client.loop_stop()
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(10)
    return report(received)


if __name__ == "__main__":
    raise SystemExit(main())

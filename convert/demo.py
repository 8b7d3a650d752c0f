"""An embedded default data set for the demo and the tests: the two public-domain fixture portraits (Eileen
Collins, NASA; Grace Hopper, US Navy) varied the way a door camera varies a face — crops, scale, small
rotations, brightness, mirror images — written as a face folder with a pair list. Real faces, shipped
with the code, so `make demo` and the tests need no downloaded data set."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
PEOPLE = {"eileen_collins": "astronaut.png", "grace_hopper": "grace_hopper.jpg"}


def load_portraits(folder: Path = FIXTURES) -> dict[str, np.ndarray]:
    from edge.embed_cli import read_image_rgb

    return {person: read_image_rgb(folder / name) for person, name in PEOPLE.items()}


def write_demo_faces(root: str | Path, per_person: int = 170, pairs: int = 60, seed: int = 0,
                     portraits: dict[str, np.ndarray] | None = None) -> Path:
    """Write `root/<person>/<i>.jpg` and `root/pairs.csv` (half genuine, half impostor pairs; no folds).
    Returns the pair list's path."""
    import cv2

    root = Path(root)
    portraits = portraits or load_portraits()
    rng = np.random.default_rng(seed)
    for person, image in portraits.items():
        folder = root / person
        folder.mkdir(parents=True, exist_ok=True)
        h, w = image.shape[:2]
        for i in range(per_person):
            centre = (w / 2 + rng.uniform(-10, 10), h / 2 + rng.uniform(-10, 10))
            m = cv2.getRotationMatrix2D(centre, rng.uniform(-8, 8), rng.uniform(0.75, 1.1))
            out = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT)
            out = np.clip(out.astype(np.float32) * rng.uniform(0.75, 1.25), 0, 255).astype(np.uint8)
            if rng.random() < 0.5:
                out = out[:, ::-1]
            cv2.imwrite(str(folder / f"{i}.jpg"), cv2.cvtColor(out, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 90])
    names = list(portraits)
    pair_list = root / "pairs.csv"
    with open(pair_list, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_a", "file_b", "same"])
        for k in range(pairs):
            i, j = rng.choice(per_person, 2, replace=False)
            person = names[k % len(names)]
            writer.writerow([f"{person}/{i}.jpg", f"{person}/{j}.jpg", 1])
            writer.writerow([f"{names[0]}/{i}.jpg", f"{names[1]}/{j}.jpg", 0])
    return pair_list


def door_frame(image: np.ndarray | None, rng: np.random.Generator, size: tuple[int, int] = (640, 480),
               background: int = 90) -> np.ndarray:
    """One RGB 'door camera' frame of `size` (w, h): the face photo `image` scaled to 80% of the frame
    height, slightly rotated and shifted (a person moving in front of the lock), or an empty doorway."""
    import cv2

    w, h = size
    if image is None:
        return np.full((h, w, 3), background, dtype=np.uint8)
    scale = 0.8 * h / image.shape[0]
    m = cv2.getRotationMatrix2D((image.shape[1] / 2, image.shape[0] / 2), rng.uniform(-3, 3), scale)
    m[:, 2] += [w / 2 - image.shape[1] / 2 + rng.uniform(-15, 15), h / 2 - image.shape[0] / 2]
    return cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(background, background, background))


def write_door_frames(folder: str | Path, portraits: dict[str, np.ndarray], sequence: list[tuple[str | None, int]],
                      size: tuple[int, int] = (640, 480), seed: int = 1) -> int:
    """A replay folder of door-camera frames (`door_frame`): for each (person or None, count), that many
    frames of the person's portrait or of an empty doorway. Returns the number of frames."""
    import cv2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    index = 0
    for person, count in sequence:
        for _ in range(count):
            canvas = door_frame(portraits[person] if person is not None else None, rng, size)
            cv2.imwrite(str(folder / f"{index:04d}.jpg"), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
            index += 1
    return index


def start_broker(folder: str | Path):
    """A private Mosquitto on a free port of 127.0.0.1 (demo and benchmarks): (process, port), or None
    when mosquitto is not installed (apt install mosquitto)."""
    import os
    import shutil
    import socket
    import subprocess
    import time

    mosquitto = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None)
    if mosquitto is None:
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (folder / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    proc = subprocess.Popen([mosquitto, "-c", str(folder / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(250):  # listening within a few seconds
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.02)
    return proc, port


def main(argv: list[str] | None = None) -> int:
    """The whole chain on embedded data: convert -> bundle -> enrol -> the lock service on replayed frames ->
    MQTT events from a real Mosquitto broker."""
    import argparse
    import json
    import shutil
    import signal
    import threading
    import time

    ap = argparse.ArgumentParser(prog="python -m convert.demo", description=main.__doc__)
    ap.add_argument("--out", default="out/demo", help="work folder (default out/demo)")
    ap.add_argument("--bundle", help="use this bundle instead of converting one")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def say(msg: str) -> None:
        print(f"\n== {msg}", flush=True)

    from edge.cli import main as facelock

    bundle = Path(args.bundle) if args.bundle else out / "bundle"
    if not (bundle / "manifest.json").is_file():
        say("convert: prune + int8-quantize the dlib ResNet port, quick settings")
        if facelock(["convert", "--quick", "--out", str(bundle), "--workdir", str(out / "work")]) != 0:
            return 1

    portraits = load_portraits()
    gallery = out / "gallery.db"
    if gallery.exists():
        gallery.unlink()
    say("enrol eileen_collins from her portrait (grace_hopper stays a stranger)")
    if facelock(["enroll", "eileen_collins", str(FIXTURES / PEOPLE["eileen_collins"]),
                 "--gallery", str(gallery), "--model", str(bundle)]) != 0:
        return 1

    frames = out / "frames"
    shutil.rmtree(frames, ignore_errors=True)
    n = write_door_frames(frames, portraits, [(None, 5), ("grace_hopper", 25), (None, 30), ("eileen_collins", 12)])

    started = start_broker(out)
    if started is None:
        print("mosquitto is not installed (apt install mosquitto): cannot show the MQTT side", flush=True)
        return 1
    broker, port = started
    received: list[tuple[str, str]] = []
    try:
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

        from edge.config import default_config
        from edge.service import Service

        config = (default_config()
                  .replace("model", path=str(bundle))
                  .replace("source", kind="folder", uri=str(frames), fps=10.0)
                  .replace("gallery", path=str(gallery))
                  .replace("outbox", path=str(out / "outbox.db"))
                  .replace("mqtt", host="127.0.0.1", port=port, device_id="demo_door")
                  # a simulated relay (gpiozero's mock pins): the state shows UNLOCKED after the accept
                  .replace("relay", enabled=True, pin_factory="mock", unlock_s=2.0))
        say(f"the lock service on {n} replayed 640x480 frames (10 fps), broker on 127.0.0.1:{port}")
        Service(config).run()
        time.sleep(1.0)
        client.loop_stop()
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(10)

    say("what the broker received")
    events = [json.loads(p) for t, p in received if t.endswith("/event")]
    for topic, payload in received:
        if not topic.endswith(("/stats", "/config")):
            print(f"{topic}  {payload[:240]}")
    opened = [e for e in events if e.get("decision") == "accept"]
    print(f"\n{len(events)} events; opened for: {sorted({e['person'] for e in opened}) or 'nobody'}")
    return 0 if any(e["person"] == "eileen_collins" for e in opened) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""The lock end to end with real parts: a real int8 bundle, replayed frames of real faces, the real
`facelock run` process with TensorFlow made unimportable, and a real Mosquitto broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from mqtt_broker import Subscriber

from convert.demo_faces import FIXTURES, PEOPLE, load_portraits, write_door_frames

# Runs a facelock command with TensorFlow, tf_keras and keras unimportable, then proves none was loaded.
NO_TENSORFLOW = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization")
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: the edge path must not need it")
    sys.meta_path.insert(0, Block())
    from facelock.cli import main
    rc = main(sys.argv[1:])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print("TENSORFLOW_MODULES", loaded, file=sys.stderr)
    sys.exit(rc if not loaded else 99)
""")


def facelock_without_tensorflow(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-c", NO_TENSORFLOW, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def test_embed_runs_the_bundle_without_tensorflow(quick_bundle):
    opts, _ = quick_bundle
    proc = facelock_without_tensorflow("embed", "--json", "--model", str(opts.out),
                                       str(FIXTURES / "astronaut.png"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "TENSORFLOW_MODULES []" in proc.stderr
    row = json.loads(proc.stdout)
    assert row["error"] is None and len(row["embedding"]) == 128


def test_lock_opens_for_the_live_owner_only(quick_bundle, broker, tmp_path):
    """Default settings (the passive liveness checks on): a stranger is rejected, a print of the owner's
    portrait held up to the camera is refused as an attack, the owner as a turning head (her portrait made
    a head with the landmark model's mesh) opens the door: what `make demo` shows."""
    from facelock.demo import write_attack_and_owner

    opts, _ = quick_bundle
    gallery = tmp_path / "gallery.db"
    enrolled = facelock_without_tensorflow("enroll", "eileen_collins", str(FIXTURES / PEOPLE["eileen_collins"]),
                                           "--gallery", str(gallery), "--model", str(opts.out))
    assert enrolled.returncode == 0, enrolled.stderr[-3000:]

    frames = tmp_path / "frames"
    portraits = load_portraits()
    n = write_door_frames(frames, portraits, [("grace_hopper", 25), (None, 30)])
    write_attack_and_owner(frames, n, portraits, opts.out)
    config = tmp_path / "config.toml"
    config.write_text(textwrap.dedent(f"""
        [model]
        path = "{opts.out}"
        [source]
        kind = "folder"
        uri = "{frames}"
        fps = 10.0
        [gallery]
        path = "{gallery}"
        [outbox]
        path = "{tmp_path / 'outbox.db'}"
        [mqtt]
        host = "127.0.0.1"
        port = {broker.port}
        device_id = "front_door"
        stats_interval_s = 0.5
    """))
    subscriber = Subscriber(broker.port, ["facelock/front_door/#"])
    run = facelock_without_tensorflow("run", "--config", str(config))
    assert run.returncode == 0, run.stderr[-3000:] + run.stdout[-3000:]
    assert "TENSORFLOW_MODULES []" in run.stderr

    assert subscriber.wait_for(
        lambda msgs: any(t.endswith("/availability") and p == b"offline" for t, p, _ in msgs), 10)
    with subscriber.lock:
        events = [json.loads(p) for t, p, _ in subscriber.messages if t.endswith("/event")]
        stats = [json.loads(p) for t, p, _ in subscriber.messages if t.endswith("/stats")]
    subscriber.close()
    # the quick bundle mirror-averages; faces far from its threshold were decided on the first run alone
    assert stats and max(s["embedded_once"] for s in stats) > 0, stats[-1:]
    accepted = [e for e in events if e["decision"] == "accept"]
    assert [e["person"] for e in accepted] == ["eileen_collins"], [e["reason"] for e in events]
    assert "live" in accepted[0]["reason"], accepted[0]
    first_accept = events.index(accepted[0])
    attacks = [e for e in events[:first_accept] if e["event_type"] == "attack_suspected"]
    assert attacks and attacks[0]["reason"].startswith("attack suspected: "), [e["reason"] for e in events]
    assert any(e["event_type"] in ("unknown", "rejected") for e in events[:first_accept]), [e["reason"] for e in events]
    assert all(e["schema"] == "facelock.event/1" and e["time"].endswith("Z") for e in events)
    assert len({e["id"] for e in events}) == len(events)


@pytest.mark.parametrize("damage", ["truncated", "altered"])
def test_run_refuses_a_damaged_bundle_naming_the_file(quick_bundle, tmp_path, damage):
    """A truncated embedder, or one with bytes changed (same size): `facelock run` stops before touching
    the camera, with an error that names the file and says what is wrong."""
    import shutil

    opts, _ = quick_bundle
    bundle = tmp_path / "bundle"
    shutil.copytree(opts.out, bundle)
    embedder = bundle / "embedder.tflite"
    if damage == "truncated":
        embedder.write_bytes(embedder.read_bytes()[:100_000])
    else:
        data = bytearray(embedder.read_bytes())
        data[len(data) // 2: len(data) // 2 + 16] = bytes(16)
        embedder.write_bytes(bytes(data))
    config = tmp_path / "config.toml"
    config.write_text(f'[model]\npath = "{bundle}"\n[gallery]\npath = "{tmp_path / "g.db"}"\n'
                      f'[outbox]\npath = "{tmp_path / "o.db"}"\n')
    run = facelock_without_tensorflow("run", "--config", str(config))
    assert run.returncode == 1, run.stderr[-2000:]
    assert "embedder.tflite: checksum does not match manifest.json" in run.stderr, run.stderr[-2000:]
    assert ("bytes, expected" if damage == "truncated" else "sha256") in run.stderr

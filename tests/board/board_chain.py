"""The emulated board, end to end: `python tests/board/board_chain.py [--work DIR] [--no-sdcard]`.

Boots the cached Debian Bookworm arm64 image (board_image.py) in qemu-system-aarch64 with systemd as PID 1
and drives the real deployment through it, checking each step:

  push release 1 over SSH (`facelock deploy push`, offline artifact) -> install.sh -> the unit active after
  READY=1 -> enrol on the board (`facelock enroll`) -> replayed door frames -> events at a Mosquitto
  subscriber on the host -> broker stopped, events wait in the outbox, `systemctl kill -s KILL facelock`
  -> systemd restarts it, the broker returns, every event id logged on the board reaches the subscriber ->
  upgrade to release 2 -> release 3 (broken model) fails its health check and rolls back ->
  `systemd-analyze security facelock` -> then the SD-card path on a fresh boot (board_sdcard.py).

Prints the transcript (pass/fail and counts; no emulated timings) and writes it to WORK/transcript.txt.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from board_guest import Guest, Transcript
from board_image import build, image_for
from board_mqtt import Broker, Subscriber
from board_release import (
    ENROL_PHOTO,
    FRAMES_DIR,
    board_config,
    door_frames,
    facelock,
    model_bundle,
    releases,
)
from board_vm import MQTT_ADDR, BoardVM

DEVICE = "board"
# install.sh --health-timeout: the unit becomes active well within a minute on the emulated CPU; a broken
# release is rolled back only once this has passed (install.sh waits it out even when the unit has failed).
HEALTH_TIMEOUT_S = 300
WAIT_S = 1800  # the longest any one step may take on the emulated board


def push(vm: BoardVM, artifact: Path, work: Path) -> dict:
    """`facelock deploy push` to the board, as a user would run it; the host's JSON summary."""
    proc = facelock("deploy", "push", vm.name, "-F", str(vm.ssh_config), "--artifact", str(artifact),
                    "--install-args", f"--health-timeout {HEALTH_TIMEOUT_S}", "--timeout", "7200",
                    "--log-dir", str(work / "push-logs"), "--json")
    try:
        summary = json.loads(proc.stdout)["hosts"][0]
    except (ValueError, KeyError, IndexError):
        summary = {"status": "failed", "detail": (proc.stdout + proc.stderr)[-1500:]}
    summary["log"] = (work / "push-logs" / f"{vm.name}.log").read_text() if (work / "push-logs").is_dir() else ""
    return summary


def install_tail(summary: dict, marker: str = "facelock-install:") -> str:
    lines = [ln for ln in summary.get("log", "").splitlines() if ln.startswith(marker)]
    return "\n".join(lines[-30:])


def chain(work: Path, transcript: Transcript, sdcard: bool = True, log=print) -> Transcript:
    t = transcript
    image = build(image_for(), log=log)
    t.time("image ready")
    t.check("board image", image.complete, f"Debian bookworm arm64, {image.folder.name}")
    cache = image.folder.parent
    bundle = model_bundle(cache, log)
    config = board_config(work / "board.toml", DEVICE, MQTT_ADDR)
    rel1, rel2, rel3 = releases(work, bundle, config, log)
    frames_tar, n_frames = door_frames(work / "frames", bundle)
    t.time("artifacts built")

    broker = Broker(work / "mosquitto")
    broker.start()
    sub = Subscriber(broker.port)
    vm = BoardVM(image, work, mqtt_port=broker.port, name="board", log=log)
    try:
        vm.start(wait_s=WAIT_S)
        t.time("board booted")
        g = Guest(vm)
        stack = g.sh("python3 -c 'import sys, numpy; print(sys.version.split()[0], numpy.__version__)'")
        t.check("boot: systemd is PID 1", g.sh("ps -o comm= -p 1") == "systemd",
                f"{g.sh('uname -m')}, {g.sh('. /etc/os-release; echo $PRETTY_NAME')}, python3 and apt numpy {stack}")
        state = g.sh("systemctl is-system-running --wait", timeout=WAIT_S)
        t.check("boot: system running", state in ("running", "degraded"), state)
        offline = g.sh("python3 -c \"import socket; socket.create_connection(('151.101.0.223', 443), 10)\" "
                       "2>&1 | tail -n 1")
        t.check("board is offline (no route beyond the emulator)", "Error" in offline or "error" in offline,
                offline[-80:])

        # ---- 1. first install --------------------------------------------------------------------------
        r = push(vm, rel1, work)
        t.time("release 1 installed")
        t.check("deploy push release 1", r["status"] == "ok", f"{r['status']} {r.get('release', '')} "
                f"{r.get('detail', '')}".strip())
        if r["status"] != "ok":
            t.note(install_tail(r) or r.get("detail", ""))
            t.note(g.journal_tail())
            return t
        wheelhouse = [ln for ln in r["log"].splitlines() if "wheelhouse:" in ln or "interpreter:" in ln]
        t.check("installed offline from the artifact's wheelhouse", bool(wheelhouse), "; ".join(
            ln.split(": ", 1)[-1] for ln in wheelhouse))
        rel1_id = r["release"]
        show = g.show()
        t.check("unit active after READY=1", show.get("ActiveState") == "active" and show.get("StatusText") == "running",
                f"{show.get('ActiveState')}/{show.get('SubState')}, StatusText={show.get('StatusText')!r}")

        # ---- 2. enrol, frames, events -------------------------------------------------------------------
        g.put_frames(frames_tar, FRAMES_DIR)
        enrol = g.sh(f"cd / && sudo -u facelock /opt/facelock/current/venv/bin/facelock enroll eileen_collins "
                     f"{ENROL_PHOTO} --gallery /var/lib/facelock/gallery.db --model /opt/facelock/current/bundle "
                     f"2>&1 | tail -n 3", timeout=WAIT_S)
        t.check("enrol on the board (facelock enroll, as the service user)",
                "eileen_collins" in g.sh("cd / && sudo -u facelock /opt/facelock/current/venv/bin/facelock "
                                         "people list --gallery /var/lib/facelock/gallery.db 2>&1", timeout=WAIT_S),
                enrol.splitlines()[-1] if enrol else "")
        t.note(f"{n_frames} door frames replayed in a loop from {FRAMES_DIR} (image-folder source)")
        got = sub.wait_for(lambda: {"recognized:eileen_collins"} <= set(sub.decisions(DEVICE)), WAIT_S)
        t.time("first accept")
        t.check("the held-up print is refused as an attack on the board (liveness on by default)",
                "attack_suspected:unknown" in sub.decisions(DEVICE), f"{sub.decisions(DEVICE)}")
        t.check("events at the host's Mosquitto subscriber", bool(sub.event_ids(DEVICE)),
                f"{len(sub.event_ids(DEVICE))} events: {sub.decisions(DEVICE)}")
        t.check("the door opens for the enrolled person on the board", got,
                f"state: {sub.states.get(DEVICE, {}).get('last_person')}, backend "
                f"{sub.states.get(DEVICE, {}).get('backend')}")

        # ---- 3. crash with undelivered events ------------------------------------------------------------
        before = g.show()
        broker.stop()
        received = sub.event_ids(DEVICE)
        waiting = g.wait(lambda: len(set(g.event_ids()) - received) >= 2, WAIT_S)
        pending = g.outbox_pending()
        t.check("broker down: new events wait in the outbox", waiting and pending >= 2,
                f"{len(set(g.event_ids()) - received)} logged since, {pending} in the outbox")
        g.sh("sudo systemctl kill -s KILL facelock")

        def came_back() -> bool:
            now = g.show()
            return now.get("ActiveState") == "active" and now.get("MainPID") not in ("0", before.get("MainPID"))

        restarted = g.wait(came_back, WAIT_S)
        after = g.show()
        t.check("systemctl kill -s KILL: systemd restarts it", restarted and int(after.get("NRestarts", 0)) >= 1,
                f"MainPID {before.get('MainPID')} -> {after.get('MainPID')}, NRestarts={after.get('NRestarts')}")
        t.counts["restarts seen (NRestarts after the kill)"] = after.get("NRestarts")
        broker.start()
        ids = set(g.event_ids())
        delivered = sub.wait_for(lambda: ids <= sub.event_ids(DEVICE), WAIT_S)
        t.check("nothing lost: every event id logged on the board reached the subscriber", delivered,
                f"{len(ids)} logged, {len(ids & sub.event_ids(DEVICE))} received, {sub.duplicates} duplicates")
        t.time("kill test")

        # ---- 4. upgrade ---------------------------------------------------------------------------------
        r = push(vm, rel2, work)
        rel2_id = r.get("release", "")
        t.check("upgrade: deploy push release 2", r["status"] == "ok" and g.current_release() == rel2_id,
                f"{r['status']}, current -> {g.current_release()} (was {rel1_id})")
        mark = set(sub.event_ids(DEVICE))
        t.check("release 2 runs and reports", sub.wait_for(lambda: len(sub.event_ids(DEVICE) - mark) >= 1, WAIT_S),
                f"{len(sub.event_ids(DEVICE) - mark)} new events")
        t.time("upgrade")

        # ---- 5. a release that fails its health check ---------------------------------------------------
        r = push(vm, rel3, work)
        rel3_id = r.get("detail", "").split(" ", 1)[0]
        t.check("broken release 3 rolls back", r["status"] == "rolled-back" and g.current_release() == rel2_id,
                f"{r['status']}: {r.get('detail', '')}; current -> {g.current_release()}")
        t.note(next((ln for ln in install_tail(r).splitlines() if "health:" in ln and "active" in ln), ""))
        t.check("after the rollback the unit is active", g.wait(g.active, WAIT_S), str(g.show().get("SubState")))
        mark = set(sub.event_ids(DEVICE))
        t.check("the rolled-back release reports", sub.wait_for(lambda: len(sub.event_ids(DEVICE) - mark) >= 1,
                                                                 WAIT_S), f"{len(sub.event_ids(DEVICE) - mark)} new")
        t.time("rollback")

        # ---- 6. the sandbox, measured on the running system -------------------------------------------------
        score, verdict, out = g.exposure()
        t.check("systemd-analyze security facelock", score != "?", f"exposure {score} {verdict}")
        (work / "systemd-analyze-security.txt").write_text(out + "\n")
        t.counts["exposure score"] = f"{score} {verdict}"
        t.note(g.modes("/etc/facelock/config.toml", "/var/lib/facelock", "/var/lib/facelock/*.db",
                       "/var/lib/facelock/*.json").replace("\n", "; "))

        ids = g.event_ids()
        got_ids = sub.event_ids(DEVICE)
        t.counts["events sent (ids logged on the board)"] = len(ids)
        t.counts["events received (unique ids at the subscriber)"] = len(got_ids)
        t.counts["events missing"] = len(set(ids) - got_ids)
        t.counts["duplicates received"] = sub.duplicates
        t.counts["decisions received"] = sub.decisions(DEVICE)
        t.counts["rollback"] = f"release 3 ({rel3_id}, broken model) -> rolled back to {rel2_id}"
        t.check("final: every event logged on the board was received", not set(ids) - got_ids,
                f"{len(set(ids) - got_ids)} missing")
    finally:
        vm.stop()
        vm.discard()
        sub.close()
        broker.stop()
    t.time("chain done")
    if sdcard:
        from board_sdcard import sdcard_chain

        sdcard_chain(image, work, t, rel1, config, log)
        t.time("sdcard done")
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, help="work folder (default: a new temporary one)")
    ap.add_argument("--no-sdcard", action="store_true", help="skip the SD-card boot")
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="facelock-board-"))
    work.mkdir(parents=True, exist_ok=True)
    t = Transcript(work / "transcript.txt")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: VM, broker down
    started = time.monotonic()
    try:
        chain(work, t, sdcard=not args.no_sdcard, log=lambda m: print(m, file=sys.stderr, flush=True))
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        t.check("harness", False, f"{type(exc).__name__}: {exc}"[:2000])
    t.timings["total"] = round(time.monotonic() - started, 1)
    t.check("transcript", True, str(t.path))
    print(t.text())
    print(f"(wall times for CI budgeting, not part of the transcript: {t.path.with_name('timings.json')} "
          f"{json.dumps(t.timings)})", file=sys.stderr)
    return 0 if t.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())


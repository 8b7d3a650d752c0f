"""The SD-card path on the emulated board: a fresh boot of the same base image with a second disk, the card
that `facelock deploy sdcard` provisioned (cloud-init format, release 1 on it, the board's config with the
broker at the guestfwd address). Stock cloud-init finds it (NoCloud, label CIDATA), creates the card's user
with the card's SSH key, runs firstboot.sh stage; facelock-firstboot.service installs the artifact offline.
Done when the lock is running: the unit active, its state at the host's subscriber, and events once frames
are given."""

from __future__ import annotations

import subprocess
from pathlib import Path

from board_guest import Guest, Transcript
from board_mqtt import Broker, Subscriber
from board_release import (
    ENROL_PHOTO,
    FRAMES_DIR,
    blank_card,
    board_config,
    door_frames,
    model_bundle,
    provision_card,
)
from board_vm import MQTT_ADDR, BoardVM

DEVICE = "sdboard"
WAIT_S = 3600


def sdcard_chain(image, work: Path, t: Transcript, artifact: Path, _config: Path, log) -> Transcript:
    card_dir = work / "sdcard"
    card_dir.mkdir(parents=True, exist_ok=True)
    key = card_dir / "admin_key"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "admin@workstation", "-f", str(key)],
                       check=True)
    config = board_config(card_dir / "board.toml", DEVICE, MQTT_ADDR)
    card = blank_card(card_dir / "card.img")
    report = provision_card(card, artifact, config, key.with_suffix(".pub"), DEVICE, MQTT_ADDR, log)
    t.check("deploy sdcard: card provisioned (cloud-init format)", report.get("format") == "cloud-init",
            f"{len(report.get('files', []))} files on the FAT partition")
    frames_tar, _ = door_frames(card_dir / "frames", model_bundle(image.folder.parent, log))

    broker = Broker(card_dir / "mosquitto")
    broker.start()
    sub = Subscriber(broker.port, client_id="facelock-board-test-sdcard")
    # SSH as the user the card creates, with the card's key: it works only if cloud-init read the card.
    vm = BoardVM(image, card_dir, mqtt_port=broker.port, extra_disks=[card], name="sdboard", user="admin",
                 identity=key, log=log)
    try:
        vm.start(wait_s=WAIT_S)
        g = Guest(vm)
        t.check("sdcard boot: SSH as the card's user with the card's key", True, g.sh("id -un"))
        g.wait(lambda: g.sh("cloud-init status 2>&1").split()[-1:] in (["done"], ["error"], ["disabled"]), WAIT_S)
        status = g.sh("cloud-init status --long 2>&1")
        ds = next((ln.strip() for ln in status.splitlines() if "DataSource" in ln), status.splitlines()[-1:])
        t.check("cloud-init: NoCloud datasource from the card", "NoCloud" in status and "status: done" in status,
                str(ds))
        t.check("cloud-init: hostname from the card", g.sh("hostname") == "doorpi", g.sh("hostname"))
        running = g.wait(lambda: g.active() and g.sh("systemctl is-enabled facelock-firstboot.service 2>&1") !=
                         "enabled", WAIT_S, poll=15)
        first = g.journal_tail(40, unit="facelock-firstboot")
        result = next((ln for ln in reversed(first.splitlines()) if "RESULT" in ln), "")
        t.check("first boot installed facelock from the card", running and "status=ok" in result,
                result.split("RESULT", 1)[-1].strip() or first[-400:])
        if not running:
            t.note(first[-1500:])
            t.note(g.journal_tail())
            return t
        t.check("the card's payload (config, secrets) is gone from the boot partition",
                g.sh("ls /boot/firmware/facelock 2>&1 | head -n 3").endswith("No such file or directory") or
                not g.sh("ls /boot/firmware/facelock 2>/dev/null"),
                "left on it: " + ", ".join(g.sh("ls /boot/firmware").split()))
        t.note(g.modes("/etc/facelock/config.toml", "/var/lib/facelock"))
        state = sub.states.get(DEVICE, {}) if sub.wait_for(lambda: DEVICE in sub.states, WAIT_S) else {}
        t.check("the lock's state reaches the host", bool(state),
                f"lock {state.get('lock')}, backend {state.get('backend')}")
        g.put_frames(frames_tar, FRAMES_DIR)
        g.sh(f"cd / && sudo -u facelock /opt/facelock/current/venv/bin/facelock enroll eileen_collins {ENROL_PHOTO} "
             f"--gallery /var/lib/facelock/gallery.db --model /opt/facelock/current/bundle", timeout=WAIT_S)
        opened = sub.wait_for(lambda: "recognized:eileen_collins" in sub.decisions(DEVICE), WAIT_S)
        t.check("sdcard board: events at the subscriber, the door opens", opened,
                f"{len(sub.event_ids(DEVICE))} events: {sub.decisions(DEVICE)}")
        sent = set(g.event_ids())
        all_in = sub.wait_for(lambda: sent <= sub.event_ids(DEVICE), 600)
        # The counts before the check: the transcript file is written on each check.
        t.counts["sdcard: events sent (ids logged on the board)"] = len(sent)
        t.counts["sdcard: events received"] = len(sub.event_ids(DEVICE))
        t.check("sdcard board: every event logged on it was received", all_in,
                f"{len(sent - sub.event_ids(DEVICE))} missing")
    finally:
        vm.stop()
        vm.discard()
        sub.close()
        broker.stop()
    return t



"""Boot the emulated board: qemu-system-aarch64 -M virt -cpu cortex-a72 (TCG, no KVM), systemd as PID 1.

    vm = BoardVM(image, workdir, mqtt_port=1883).start()
    vm.ssh("systemctl is-system-running --wait"); vm.stop(); vm.discard()

Each boot runs on a copy-on-write qcow2 overlay of the cached base image (deleted afterwards), so every run
starts from the same fresh board. Network: QEMU user networking with `restrict=on`: the guest reaches
nothing outside the VM (no internet, no host) except two forwards: the host's 127.0.0.1:<ssh_port> to the
guest's sshd, and the guest's MQTT_ADDR:1883 to the host broker's 127.0.0.1:<mqtt_port> (a guestfwd, one
socat per connection). So whatever installs on the board installs offline.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

MQTT_ADDR = "10.0.2.100"  # the broker, as the guest sees it (guestfwd to the host's Mosquitto)
MEMORY = "2048"  # a 2 GB Raspberry Pi 4
CPUS = os.environ.get("FACELOCK_BOARD_CPUS", "2")
PDEATHSIG = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []
CMDLINE = "console=ttyAMA0 net.ifnames=0 panic=-1 systemd.show_status=auto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def qemu_command(kernel: Path, initrd: Path, drives: list[tuple[Path, str]], serial: Path, append: str,
                 netdev: str | None = None) -> list[str]:
    # setpriv --pdeathsig: the emulator is killed with the harness, never left running behind a killed test.
    cmd = [*PDEATHSIG, "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-accel", "tcg,thread=multi",
           "-smp", CPUS, "-m", MEMORY, "-nographic", "-monitor", "none", "-serial", f"file:{serial}",
           "-kernel", str(kernel), "-initrd", str(initrd), "-append", append, "-no-reboot",
           "-device", "virtio-rng-pci"]
    for i, (path, fmt) in enumerate(drives):
        cmd += ["-drive", f"if=none,id=d{i},file={path},format={fmt},cache=unsafe",
                "-device", f"virtio-blk-pci,drive=d{i}"]
    if netdev:
        cmd += ["-netdev", netdev, "-device", "virtio-net-pci,netdev=n0"]
    else:
        cmd += ["-nic", "none"]
    return cmd


def build_boot(kernel: Path, initrd: Path, raw: Path, serial: Path, timeout: float) -> None:
    """The image build's one boot (initramfs_init.sh with facelock.build=1); returns when QEMU exits."""
    cmd = qemu_command(kernel, initrd, [(raw, "raw")], serial, f"{CMDLINE} facelock.build=1")
    subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                   timeout=timeout, check=False)


class BoardVM:
    """One boot of the board. `ssh`/`put` talk to it as user pi (passwordless sudo) over the forward."""

    def __init__(self, image, workdir: Path, mqtt_port: int | None = None, extra_disks: list[Path] = (),
                 name: str = "board", user: str = "pi", identity: Path | None = None, log=print):
        self.image = image
        self.workdir = workdir
        self.mqtt_port = mqtt_port
        self.extra_disks = list(extra_disks)
        self.name = name
        self.log = log
        self.user = user
        self.identity = identity or image.key
        self.ssh_port = free_port()
        self.overlay = workdir / f"{name}.qcow2"
        self.serial = workdir / f"{name}-serial.log"
        self.ssh_config = workdir / f"{name}-ssh_config"
        self.proc: subprocess.Popen | None = None
        self.boots = 0

    # -- lifecycle --------------------------------------------------------------------------------------------

    def netdev(self) -> str:
        net = f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22"
        if self.mqtt_port:
            relay = shutil.which("socat") or "socat"
            net += f",guestfwd=tcp:{MQTT_ADDR}:1883-cmd:{relay} - TCP:127.0.0.1:{self.mqtt_port}"
        return net

    def start(self, wait_s: float = 1800) -> BoardVM:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.overlay.exists():
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(self.image.disk), "-F", "raw",
                            str(self.overlay)], check=True)
        self.ssh_config.write_text(
            f"Host {self.name}\n  HostName 127.0.0.1\n  Port {self.ssh_port}\n  User {self.user}\n"
            f"  IdentityFile {self.identity}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n"
            f"  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  ConnectTimeout 20\n  ServerAliveInterval 15\n"
            f"  ServerAliveCountMax 8\n")
        drives = [(self.overlay, "qcow2"), *((d, "raw") for d in self.extra_disks)]
        cmd = qemu_command(self.image.kernel, self.image.initrd, drives, self.serial, CMDLINE, self.netdev())
        with open(self.workdir / f"{self.name}-qemu.log", "ab") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self.boots += 1
        self.wait_ssh(wait_s)
        return self

    def wait_ssh(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"qemu exited ({self.proc.returncode}); serial log: {self.tail()}")
            if self.ssh("true", check=False, timeout=60).returncode == 0:
                return
            time.sleep(5)
        raise RuntimeError(f"no SSH on 127.0.0.1:{self.ssh_port} after {wait_s:.0f} s; serial log: {self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.serial.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(none)"

    def stop(self, timeout: float = 300) -> None:
        """A clean shutdown (poweroff), so the journal on the overlay is complete; kill if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.ssh("sudo systemctl poweroff", check=False, timeout=30)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def discard(self) -> None:
        self.overlay.unlink(missing_ok=True)

    # -- talking to it ----------------------------------------------------------------------------------------

    def ssh_argv(self, remote: str) -> list[str]:
        return ["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes", self.name, remote]

    def ssh(self, remote: str, check: bool = True, timeout: float = 900, stdin=None) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(self.ssh_argv(remote), stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            if check:
                raise RuntimeError(f"board: `{remote}` did not finish within {timeout:.0f} s") from exc
            return subprocess.CompletedProcess(exc.cmd, 124, "", "timeout")
        if check and proc.returncode != 0:
            raise RuntimeError(f"board: `{remote}` failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
        return proc

    def put(self, local: Path, remote: str, mode: str = "0644") -> None:
        """Copy a file onto the board as root (through `sudo install`), creating its folder."""
        with open(local, "rb") as fh:
            subprocess.run(self.ssh_argv(f"sudo install -D -m {mode} /dev/stdin {remote}"), stdin=fh, check=True,
                           capture_output=True, timeout=600)

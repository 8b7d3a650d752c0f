"""The emulated board's disk image: Debian Bookworm arm64 from Debian's archive, built once and cached.

    python tests/board/board_image.py [--cache DIR]     build (or find) it; prints the folder

No binfmt_misc is needed (none is mounted here, so nothing arm64 can run in a chroot on this host):

  1. a private apt root (arm64 only, the host's own Debian mirror) downloads the kernel and busybox-static
  2. `debootstrap --foreign --variant=minbase --include=...` unpacks the system without running anything
  3. the kernel's modules go into the tree (depmod on the host makes the index the initramfs needs)
  4. `mkfs.ext4 -d` turns the tree into a raw disk image, without a mount
  5. one boot in qemu-system-aarch64 with `facelock.build=1`: the initramfs runs the second stage and
     guest_setup.sh in a chroot, then powers off

The result lives in $FACELOCK_BOARD_CACHE or ~/.cache/facelock/board/bookworm-arm64-<hash>/, where the hash
covers this file and the two guest scripts: change any of them and the next run builds a new image. Runs
boot a copy-on-write overlay of it (board_vm.py), so the cached image is never written after the build.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITE = "bookworm"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# What Raspberry Pi OS Lite has that facelock relies on (python3 3.11, apt's numpy 1.24, sshd, sudo,
# systemd as PID 1, cloud-init for the SD-card path), on top of debootstrap's minbase.
PACKAGES = [
    "systemd", "systemd-sysv", "udev", "dbus", "kmod", "openssh-server", "sudo", "ca-certificates",
    "python3", "python3-venv", "python3-numpy", "cloud-init", "iproute2", "procps", "netbase",
    # debootstrap's resolver does not follow virtual packages: python3-cryptography (cloud-init) needs
    # python3-cffi-backend-api-min/max, which only this provides.
    "python3-cffi-backend",
]
# Loaded by the initramfs (with what they depend on): the root disk, its file system, and the RNG (key
# generation in the build boot would otherwise wait for entropy).
INITRAMFS_MODULES = ["virtio_pci", "virtio_blk", "crc32c_generic", "ext4", "virtio_rng"]
DISK_SIZE = "6G"  # sparse; the installed system takes about a quarter
BUILD_TIMEOUT_S = 4 * 3600
GUEST_SCRIPTS = ("initramfs_init.sh", "guest_setup.sh")


@dataclass(frozen=True)
class BoardImage:
    """A built image: the raw root disk, the kernel and initramfs to boot it, and the SSH key of user pi."""

    folder: Path

    @property
    def disk(self) -> Path:
        return self.folder / "base.img"

    @property
    def kernel(self) -> Path:
        return self.folder / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.folder / "initrd.img"

    @property
    def key(self) -> Path:
        return self.folder / "id_ed25519"

    @property
    def complete(self) -> bool:
        return (self.folder / "COMPLETE").is_file()


def cache_root() -> Path:
    return Path(os.environ.get("FACELOCK_BOARD_CACHE") or Path.home() / ".cache" / "facelock" / "board")


def recipe_hash() -> str:
    h = hashlib.sha256()
    for name in (Path(__file__).name, *GUEST_SCRIPTS):
        h.update(name.encode() + b"\0" + (HERE / name).read_bytes())
    return h.hexdigest()[:12]


def image_for(root: Path | None = None) -> BoardImage:
    return BoardImage((root or cache_root()) / f"{SUITE}-arm64-{recipe_hash()}")


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses for `bookworm main` ($FACELOCK_BOARD_MIRROR overrides)."""
    if os.environ.get("FACELOCK_BOARD_MIRROR"):
        return os.environ["FACELOCK_BOARD_MIRROR"].rstrip("/")
    sources = Path("/etc/apt")
    for f in sorted(sources.glob("sources.list.d/*.sources")):  # deb822
        for stanza in f.read_text(errors="replace").split("\n\n"):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.MULTILINE))
            if SUITE in fields.get("Suites", "").split() and "main" in fields.get("Components", "").split():
                uri = fields.get("URIs", "").split()
                if uri and uri[0].startswith("http"):
                    return uri[0].rstrip("/")
    for f in [sources / "sources.list", *sorted(sources.glob("sources.list.d/*.list"))]:
        if f.is_file():
            for line in f.read_text(errors="replace").splitlines():
                m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(http\S+)\s+(\S+)\s+(.*)$", line.strip())
                if m and m[2] == SUITE and "main" in m[3].split():
                    return m[1].rstrip("/")
    raise SystemExit(f"no Debian '{SUITE} main' source in /etc/apt; set FACELOCK_BOARD_MIRROR=http://.../debian")


def run(cmd: list[str], log, **kw) -> subprocess.CompletedProcess:
    log(f"$ {' '.join(str(c) for c in cmd)}")
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False, **kw)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc


class PrivateApt:
    """apt-get for arm64 in a folder of its own: the host's apt configuration and state stay untouched."""

    def __init__(self, folder: Path, mirror: str, log):
        self.folder = folder
        self.log = log
        for d in ("lists/partial", "cache/archives/partial", "etc"):
            (folder / d).mkdir(parents=True, exist_ok=True)
        (folder / "status").touch()
        (folder / "etc" / "sources.list").write_text(f"deb [arch=arm64 signed-by={KEYRING}] {mirror} {SUITE} main\n")
        self.opts = []
        for k, v in {"Dir::Etc::SourceList": folder / "etc" / "sources.list", "Dir::Etc::SourceParts": folder / "etc",
                     "Dir::State::Lists": folder / "lists", "Dir::State::status": folder / "status",
                     "Dir::Cache": folder / "cache", "APT::Architecture": "arm64", "APT::Architectures::": "arm64",
                     "Debug::NoLocking": "1", "APT::Sandbox::User": "root"}.items():
            self.opts += ["-o", f"{k}={v}"]

    def update(self) -> None:
        run(["apt-get", *self.opts, "-q", "update"], self.log)

    def depends(self, package: str, prefix: str) -> str:
        out = run(["apt-cache", *self.opts, "depends", package], self.log).stdout
        names = re.findall(r"Depends:\s*(\S+)", out)
        return next(n for n in names if n.startswith(prefix))

    def download(self, packages: list[str], dest: Path) -> list[Path]:
        dest.mkdir(parents=True, exist_ok=True)
        run(["apt-get", *self.opts, "-q", "download", *packages], self.log, cwd=dest)
        return sorted(dest.glob("*.deb"))


def build_initramfs(work: Path, kernel_tree: Path, version: str, busybox_deb: Path, out: Path, log) -> None:
    """busybox-static, /init and the modules INITRAMFS_MODULES need, in the order `modprobe` would load them."""
    ram = work / "initramfs"
    shutil.rmtree(ram, ignore_errors=True)
    for d in ("bin", "modules", "proc", "sys", "dev", "newroot"):
        (ram / d).mkdir(parents=True)
    bb = work / "busybox"
    run(["dpkg-deb", "-x", busybox_deb, bb], log)
    shutil.copy2(bb / "bin" / "busybox", ram / "bin" / "busybox")
    shutil.copy2(HERE / "initramfs_init.sh", ram / "init")
    os.chmod(ram / "init", 0o755)
    order: list[str] = []
    for module in INITRAMFS_MODULES:
        deps = run(["modprobe", "-d", kernel_tree, "-S", version, "--show-depends", module], log).stdout
        for line in deps.splitlines():
            if line.startswith("insmod "):
                ko = Path(line.split()[1])
                if ko.name not in order:
                    order.append(ko.name)
                    shutil.copy2(ko, ram / "modules" / ko.name)
    (ram / "modules.order").write_text("\n".join(order) + "\n")
    files = subprocess.run(["find", ".", "-print0"], cwd=ram, capture_output=True, check=True).stdout
    cpio = subprocess.run(["cpio", "--null", "-o", "-H", "newc", "--quiet"], input=files, cwd=ram,
                          capture_output=True, check=True).stdout
    subprocess.run(["gzip", "-9"], input=cpio, stdout=out.open("wb"), check=True)
    log(f"initramfs: {len(order)} modules ({', '.join(order)})")


def build(image: BoardImage, log=print) -> BoardImage:
    """Build `image` unless it is complete already. Prints what it runs; SystemExit names a failed step."""
    if image.complete:
        return image
    from board_vm import build_boot  # the same qemu command line the runs use

    for tool in ("debootstrap", "qemu-system-aarch64", "qemu-img", "mkfs.ext4", "cpio", "modprobe", "apt-get",
                 "ssh-keygen"):
        if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
            raise SystemExit(f"{tool} not found: `make board-packages` installs what the board test needs")
    started = time.monotonic()
    shutil.rmtree(image.folder, ignore_errors=True)
    work = image.folder / "work"
    work.mkdir(parents=True)
    mirror = debian_mirror()
    log(f"board image {image.folder.name}: Debian {SUITE} arm64 from {mirror}")

    apt = PrivateApt(image.folder.parent / "apt", mirror, log)
    apt.update()
    kernel_pkg = apt.depends("linux-image-arm64", "linux-image-")
    debs = apt.download([kernel_pkg, "busybox-static"], work / "debs")
    kernel_deb = next(d for d in debs if d.name.startswith("linux-image-"))
    busybox_deb = next(d for d in debs if d.name.startswith("busybox-static"))

    root = work / "root"
    debs_cache = image.folder.parent / "debootstrap-debs"
    debs_cache.mkdir(parents=True, exist_ok=True)
    run(["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase", f"--cache-dir={debs_cache}",
         f"--include={','.join(PACKAGES)}", SUITE, root, mirror], log)

    kernel_tree = work / "kernel"
    run(["dpkg-deb", "-x", kernel_deb, kernel_tree], log)
    version = next((kernel_tree / "lib" / "modules").iterdir()).name
    run(["depmod", "-b", kernel_tree, version], log)
    modules = root / "usr" / "lib" / "modules"
    modules.mkdir(parents=True, exist_ok=True)
    shutil.copytree(kernel_tree / "lib" / "modules" / version, modules / version, symlinks=True)
    shutil.copy2(kernel_tree / "boot" / f"vmlinuz-{version}", image.kernel)
    build_initramfs(work, kernel_tree, version, busybox_deb, image.initrd, log)

    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "facelock-board-test", "-f", image.key], log)
    board = root / "root" / "board"
    board.mkdir(parents=True)
    shutil.copy2(HERE / "guest_setup.sh", board / "guest_setup.sh")
    shutil.copy2(image.key.with_suffix(".pub"), board / "authorized_keys")

    raw = image.folder / "base.img.partial"
    run(["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", root, raw, DISK_SIZE], log)
    shutil.rmtree(work)  # the tree now lives on the disk; the boot below finishes it there
    log("build boot: debootstrap --second-stage and guest_setup.sh inside the emulated board")
    serial = image.folder / "build-serial.log"
    build_boot(image.kernel, image.initrd, raw, serial, timeout=BUILD_TIMEOUT_S)
    text = serial.read_text(errors="replace")
    if "FACELOCK-BUILD-OK" not in text:
        tail = "\n".join(text.splitlines()[-60:])
        raise SystemExit(f"the build boot did not finish (see {serial}):\n{tail}")
    raw.replace(image.disk)
    minutes = (time.monotonic() - started) / 60
    (image.folder / "COMPLETE").write_text(f"kernel={version}\nmirror={mirror}\nbuild_minutes={minutes:.1f}\n")
    log(f"board image ready in {image.folder} ({minutes:.1f} min)")
    return image


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, help="cache folder (default $FACELOCK_BOARD_CACHE or ~/.cache/facelock/board)")
    args = ap.parse_args(argv)
    image = build(image_for(args.cache), log=lambda m: print(m, flush=True))
    print(image.folder)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())

"""Disk images without root or loop mounts: the MBR partition table read here, the FAT boot partition
written with mtools at its byte offset (`mcopy -i IMAGE@@OFFSET`)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from deploy.errors import DeployError

SECTOR = 512
FAT_TYPES = {0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E}


@dataclass(frozen=True)
class Partition:
    index: int  # 1-based
    type: int
    start: int  # LBA
    sectors: int

    @property
    def offset(self) -> int:
        return self.start * SECTOR


def read_mbr(image: Path) -> list[Partition]:
    """The four primary MBR entries that are in use."""
    try:
        with open(image, "rb") as fh:
            mbr = fh.read(SECTOR)
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise DeployError(f"{image}: cannot read ({exc.strerror})") from exc
    if len(mbr) < SECTOR or mbr[510:512] != b"\x55\xaa":
        raise DeployError(
            f"{image}: no MBR partition table (expected 0x55AA at byte 510); is it a disk image?"
        )
    parts = []
    for i in range(4):
        entry = mbr[446 + 16 * i : 446 + 16 * (i + 1)]
        ptype = entry[4]
        start, sectors = struct.unpack("<II", entry[8:16])
        if ptype == 0 or sectors == 0:
            continue
        if ptype == 0xEE:
            raise DeployError(f"{image}: GPT disk (protective MBR); Raspberry Pi OS images use an MBR table")
        if (start + sectors) * SECTOR > size:
            raise DeployError(
                f"{image}: partition {i + 1} ends at byte {(start + sectors) * SECTOR}, past the end of the file "
                f"({size} bytes); truncated image?"
            )
        parts.append(Partition(i + 1, ptype, start, sectors))
    return parts


def boot_partition(image: Path) -> Partition:
    for part in read_mbr(image):
        if part.type in FAT_TYPES:
            return part
    raise DeployError(f"{image}: no FAT partition in the MBR table (types {sorted(FAT_TYPES)})")


class FatImage:
    """A FAT file system at a byte offset in an image file, through mtools."""

    def __init__(self, image: Path, offset: int):
        if shutil.which("mcopy") is None:
            raise DeployError("mcopy not found: install mtools (apt-get install mtools)")
        self.image = image
        self.target = f"{image}@@{offset}"
        self.env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "MTOOLS_LOWER_CASE": "0"}

    def _run(self, *args: str, what: str) -> str:
        proc = subprocess.run(list(args), capture_output=True, text=True, env=self.env, check=False)
        if proc.returncode != 0:
            raise DeployError(f"{self.image}: {what} failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def names(self, folder: str = "") -> set[str]:
        out = self._run("mdir", "-b", "-i", self.target, f"::/{folder}", what=f"listing /{folder}")
        return {line.rstrip("/").rsplit("/", 1)[-1] for line in out.splitlines() if line.strip()}

    def read(self, name: str) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            dst = Path(tmp) / "f"
            self._run("mcopy", "-n", "-i", self.target, f"::/{name}", str(dst), what=f"reading /{name}")
            return dst.read_bytes()

    def mkdir(self, name: str) -> None:
        if name not in self.names():
            self._run("mmd", "-i", self.target, f"::/{name}", what=f"creating /{name}")

    def put_file(self, src: Path, name: str) -> None:
        self._run(
            "mcopy", "-o", "-D", "o", "-i", self.target, str(src), f"::/{name}", what=f"writing /{name}"
        )

    def write(self, name: str, data: bytes | str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "f"
            src.write_bytes(data.encode() if isinstance(data, str) else data)
            self.put_file(src, name)

"""The emulated board (docs/board-test.md). Skipped unless asked for, so `make test` stays fast:

    FACELOCK_BOARD_TEST=1 pytest -m board tests/board     (`make board-test`: the full chain + SD card)
    FACELOCK_BOARD_USER=1 pytest -m board tests/board     (`make board-test-user`: qemu-aarch64 user mode)

The transcript is printed (pytest -s) and kept in the work folder ($FACELOCK_BOARD_WORK, default a tmp).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

FULL = os.environ.get("FACELOCK_BOARD_TEST") == "1"
USER = FULL or os.environ.get("FACELOCK_BOARD_USER") == "1"
pytestmark = pytest.mark.board


def work_dir(tmp_path: Path, name: str) -> Path:
    base = os.environ.get("FACELOCK_BOARD_WORK")
    work = Path(base) / name if base else tmp_path / name
    work.mkdir(parents=True, exist_ok=True)
    return work


def need(*tools: str) -> None:
    missing = [t for t in tools if not shutil.which(t, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: `make board-packages` installs what the board test needs")


@pytest.mark.skipif(not FULL, reason="the emulated board boots Debian arm64 in qemu-system-aarch64 (slow): "
                    "set FACELOCK_BOARD_TEST=1, or run `make board-test`")
def test_emulated_board_end_to_end(tmp_path):
    """push -> install.sh -> READY=1 -> frames -> events -> SIGKILL, nothing lost -> upgrade -> rollback ->
    systemd-analyze security -> the SD-card first boot; every step must pass."""
    need("qemu-system-aarch64", "qemu-img", "debootstrap", "mkfs.ext4", "cpio", "modprobe", "socat", "mosquitto",
         "mkfs.vfat", "mcopy", "ssh")
    from board_chain import chain
    from board_guest import Transcript

    work = work_dir(tmp_path, "chain")
    t = Transcript(work / "transcript.txt")
    chain(work, t, sdcard=os.environ.get("FACELOCK_BOARD_SDCARD", "1") == "1",
          log=lambda m: print(m, file=sys.stderr, flush=True))
    print("\n" + t.text())
    assert t.ok, f"failed steps: {t.failures} (transcript: {t.path})"


@pytest.mark.skipif(not USER, reason="qemu-aarch64-static runs the board's Python stack (a few minutes): set "
                    "FACELOCK_BOARD_USER=1, or run `make board-test-user`")
def test_user_mode_arm64_stack(tmp_path):
    """Bookworm arm64's python3 3.11 + numpy 1.24 + tflite-runtime 2.14 from the wheelhouse: edge tests pass
    and the bundle's embeddings match the host's."""
    need("qemu-aarch64-static", "apt-get", "dpkg-deb")
    import board_user

    assert board_user.main(["--work", str(work_dir(tmp_path, "user"))]) == 0

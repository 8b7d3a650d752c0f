"""The systemd unit: `systemd-analyze verify` on an installed throwaway root, and its security exposure."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from deploy_testlib import make_root, run_installer

from deploy.paths import CORAL_USB_DROPIN, UNIT_FILE

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (Debian: systemd)")
MAX_EXPOSURE = 2.5


def _security(unit: Path) -> tuple[float, str]:
    proc = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        cwd=unit.parent,
        check=False,
    )
    if "--offline" in proc.stderr and "unrecognized" in proc.stderr:
        pytest.skip(f"this systemd-analyze has no --offline: {proc.stderr.strip()}")
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", proc.stdout)
    assert m, f"no exposure line in systemd-analyze security output:\n{proc.stdout}\n{proc.stderr}"
    return float(m.group(1)), m.group(0)


@needs_analyze
def test_unit_verifies_on_an_installed_root(system_python, artifact, tmp_path):
    root = make_root(tmp_path / "root")
    proc = run_installer(artifact, root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # verify resolves the unit's dependencies (sysinit.target, ...) inside --root: give it the host's ones
    units = root / "usr" / "lib" / "systemd" / "system"
    units.mkdir(parents=True)
    for folder in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        for pattern in ("*.target", "*.slice", "*.socket", "*.mount"):
            for f in folder.glob(pattern):
                if not (units / f.name).exists():
                    shutil.copy(f, units / f.name, follow_symlinks=False)
    proc = subprocess.run(
        [ANALYZE, "verify", f"--root={root}", "facelock.service"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


@needs_analyze
def test_unit_file_alone_has_no_syntax_errors(tmp_path):
    """Without an installed venv verify can only complain about the missing ExecStart binary."""
    proc = subprocess.run([ANALYZE, "verify", str(UNIT_FILE)], capture_output=True, text=True, check=False)
    problems = [ln for ln in proc.stderr.splitlines() if ln.strip() and "is not executable" not in ln]
    assert not problems, proc.stderr


@needs_analyze
def test_security_exposure(tmp_path):
    exposure, line = _security(UNIT_FILE)
    print(line)
    assert exposure <= MAX_EXPOSURE, line


@needs_analyze
def test_security_exposure_with_usb_coral_dropin(tmp_path):
    unit = tmp_path / "facelock.service"
    unit.write_text(UNIT_FILE.read_text() + "\n" + CORAL_USB_DROPIN.read_text())
    exposure, line = _security(unit)
    print(line)
    assert exposure <= MAX_EXPOSURE, line


def test_unit_promises():
    """What the runtime and the docs rely on."""
    text = UNIT_FILE.read_text()
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    assert settings["Type"] == ["notify"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["User"] == ["facelock"]
    assert settings["SupplementaryGroups"] == ["video gpio"]
    assert settings["ExecStart"] == [
        "/opt/facelock/current/venv/bin/facelock run --config /etc/facelock/config.toml"
    ]
    assert settings["CapabilityBoundingSet"] == [""]
    assert settings["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert settings["DevicePolicy"] == ["closed"]
    allowed = " ".join(settings["DeviceAllow"])
    for dev in (
        "char-video4linux",
        "char-media",
        "char-dma_heap",
        "char-gpiochip",
        "/dev/gpiomem",
        "char-apex",
    ):
        assert dev in allowed
    assert int(settings["WatchdogSec"][0]) > 0


@needs_analyze
def test_firstboot_unit_verifies():
    from deploy.paths import FIRSTBOOT_DIR

    proc = subprocess.run(
        [ANALYZE, "verify", str(FIRSTBOOT_DIR / "facelock-firstboot.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    problems = [ln for ln in proc.stderr.splitlines() if ln.strip() and "is not executable" not in ln]
    assert not problems, proc.stderr

"""install.sh into throwaway roots: files, user, unit, upgrade keeping data, rollback, refusals."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from deploy_testlib import make_root, result_fields, run_installer, unpack


def _group_members(root: Path, group: str) -> list[str]:
    for line in (root / "etc" / "group").read_text().splitlines():
        name, _, _, members = line.split(":")
        if name == group:
            return [m for m in members.split(",") if m]
    raise AssertionError(f"no group {group} in {root}/etc/group")


def test_artifact_contents_and_checksums(artifact, wheel, tmp_path):
    assert artifact.path.name == f"facelock-deploy-{artifact.version}.tar.gz"
    assert artifact.release.startswith(artifact.version + "-")
    with tarfile.open(artifact.path) as tar:
        names = set(tar.getnames())
        mode = tar.getmember(f"{artifact.top}/install.sh").mode
    for name in (
        "VERSION",
        "SHA256SUMS",
        "install.sh",
        "facelock.service",
        "config.toml.example",
        "coral-usb.conf",
        "bundle/manifest.json",
        wheel.name,
    ):
        assert f"{artifact.top}/{name}" in names
    assert mode & 0o111
    folder = unpack(artifact, tmp_path)
    subprocess.run(["sha256sum", "--quiet", "--strict", "-c", "SHA256SUMS"], cwd=folder, check=True)


def test_bundle_cli_refuses_a_broken_model(model_bundle, wheel, tmp_path, capsys):
    from facelock.cli import main

    broken = tmp_path / "model"
    shutil.copytree(model_bundle, broken)
    (broken / "embedder.tflite").write_bytes(b"truncated")
    rc = main(["deploy", "bundle", "--model", str(broken), "--wheel", str(wheel), "-o", str(tmp_path)])
    assert rc == 1
    assert "embedder.tflite" in capsys.readouterr().err
    assert not list(tmp_path.glob("facelock-deploy-*.tar.gz"))


def test_install_upgrade_rollback(system_python, artifact, artifact2, tmp_path):
    root = make_root(tmp_path / "root")
    opt = root / "opt" / "facelock"

    # -- fresh install
    t = time.monotonic()
    proc = run_installer(artifact, root)
    fresh_s = time.monotonic() - t
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = result_fields(proc.stdout)
    assert res["status"] == "ok" and res["release"] == artifact.release
    assert os.readlink(opt / "current") == f"releases/{artifact.release}"
    venv = opt / "current" / "venv"
    assert (venv / "bin" / "facelock").is_file()
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    assert (opt / "current" / "bundle" / "manifest.json").is_file()
    passwd = (root / "etc" / "passwd").read_text()
    entry = next(line for line in passwd.splitlines() if line.startswith("facelock:"))
    assert entry.split(":")[5:] == ["/var/lib/facelock", "/usr/sbin/nologin"]
    assert int(entry.split(":")[2]) < 1000  # a system user
    assert "facelock" in _group_members(root, "video") and "facelock" in _group_members(root, "gpio")
    unit = root / "etc" / "systemd" / "system" / "facelock.service"
    assert "Type=notify" in unit.read_text()
    wants = root / "etc" / "systemd" / "system" / "multi-user.target.wants" / "facelock.service"
    assert os.readlink(wants) == "/etc/systemd/system/facelock.service"
    config = root / "etc" / "facelock" / "config.toml"
    assert config.is_file() and (config.stat().st_mode & 0o777) == 0o640
    assert (root / "var" / "lib" / "facelock").is_dir()

    # -- the same artifact again: nothing to do
    t = time.monotonic()
    proc = run_installer(artifact, root)
    again_s = time.monotonic() - t
    assert proc.returncode == 0, proc.stdout
    assert "already installed" in proc.stdout and "current ->" not in proc.stdout

    # -- upgrade: gallery and config survive
    gallery = root / "var" / "lib" / "facelock" / "gallery.sqlite"
    gallery.write_bytes(b"SQLite format 3\x00 enrolled people")
    config.write_text(config.read_text() + "\n# edited on the board\n")
    before = config.read_bytes()
    t = time.monotonic()
    proc = run_installer(artifact2, root)
    upgrade_s = time.monotonic() - t
    assert proc.returncode == 0, proc.stdout
    assert result_fields(proc.stdout)["previous"] == artifact.release
    assert os.readlink(opt / "current") == f"releases/{artifact2.release}"
    assert os.readlink(opt / "previous") == f"releases/{artifact.release}"
    assert gallery.read_bytes() == b"SQLite format 3\x00 enrolled people"
    assert config.read_bytes() == before
    assert "keeping" in proc.stdout

    # -- explicit rollback (install.sh --rollback)
    folder = unpack(artifact2, tmp_path / "rb")
    proc = subprocess.run(
        ["bash", str(folder / "install.sh"), "--root", str(root), "--no-systemd", "--rollback"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("FACELOCK_")},
        check=False,
    )
    assert proc.returncode == 0, proc.stdout
    assert os.readlink(opt / "current") == f"releases/{artifact.release}"
    assert os.readlink(opt / "previous") == f"releases/{artifact2.release}"

    # -- automatic rollback: release 2 fails its health check, release 1 comes back
    # (release 1's unit file differs from the installed one: the rollback must bring it back too)
    old_unit = opt / "releases" / artifact.release / "facelock.service"
    old_unit.write_text(old_unit.read_text() + "# unit of release 1\n")
    check = f'[ "$FACELOCK_RELEASE" != "{artifact2.release}" ]'
    proc = run_installer(artifact2, root, env={"FACELOCK_HEALTHCHECK": check})
    print(proc.stdout)  # the rollback transcript, for the report (pytest -s)
    assert proc.returncode == 3, proc.stdout
    res = result_fields(proc.stdout)
    assert res["status"] == "rolled-back" and res["release"] == artifact.release
    assert res["failed"] == artifact2.release
    assert os.readlink(opt / "current") == f"releases/{artifact.release}"
    assert (opt / "releases" / artifact2.release / ".failed").is_file()
    assert unit.read_text().endswith("# unit of release 1\n")
    assert gallery.read_bytes() == b"SQLite format 3\x00 enrolled people"
    assert config.read_bytes() == before
    print(f"timings: fresh install {fresh_s:.1f}s, same again {again_s:.1f}s, upgrade {upgrade_s:.1f}s")


def test_failed_first_install_has_nothing_to_roll_back(system_python, artifact, tmp_path):
    root = make_root(tmp_path / "root")
    proc = run_installer(artifact, root, "--healthcheck", "echo broken camera >&2; exit 1")
    assert proc.returncode == 1, proc.stdout
    assert result_fields(proc.stdout)["status"] == "failed"
    assert "no previous release" in proc.stdout


def test_tampered_artifact_is_refused(artifact, tmp_path):
    root = make_root(tmp_path / "root")
    folder = unpack(artifact, tmp_path / "unpacked")
    (folder / "bundle" / "embedder.tflite").write_bytes(b"tampered")
    proc = subprocess.run(
        ["bash", str(folder / "install.sh"), "--root", str(root), "--no-systemd"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "SHA256SUMS" in proc.stdout and "bundle/embedder.tflite" in proc.stdout
    assert not (root / "opt" / "facelock" / "current").exists()


def test_installer_refuses_a_root_without_etc(artifact, tmp_path):
    folder = unpack(artifact, tmp_path / "unpacked")
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(
        ["bash", str(folder / "install.sh"), "--root", str(tmp_path / "empty"), "--no-systemd"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1 and "etc/passwd" in proc.stdout


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shell_scripts_pass_shellcheck():
    from deploy.paths import FIRSTBOOT_DIR, INSTALLER

    subprocess.run(
        ["shellcheck", "-S", "warning", str(INSTALLER), str(FIRSTBOOT_DIR / "firstboot.sh")], check=True
    )


def test_shell_scripts_parse():
    from deploy.paths import FIRSTBOOT_DIR, INSTALLER

    for script in (INSTALLER, FIRSTBOOT_DIR / "firstboot.sh"):
        subprocess.run(["bash", "-n", str(script)], check=True)

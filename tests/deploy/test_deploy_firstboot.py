"""The SD-card first boot: firstboot.sh writes the config before the facelock group exists; install.sh must
still leave it readable by the service (root:facelock 0640, content untouched). And the artifact takes a
model bundle as a .tar.gz as well as a folder."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

from deploy_testlib import SYSTEM_PYTHON, make_root, result_fields, run_installer

from deploy.paths import FIRSTBOOT_DIR


def _gid(root: Path, group: str) -> int:
    for line in (root / "etc" / "group").read_text().splitlines():
        name, _, gid, _ = line.split(":")
        if name == group:
            return int(gid)
    raise AssertionError(f"no group {group} in {root}/etc/group")


def _owner_and_mode(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def _can_read_as(path: Path, uid: int, gid: int) -> bool:
    """Open `path` as uid:gid. The folder is opened first as root, so only the file's own mode is tested
    (the throwaway root lies in a 0700 pytest folder)."""
    code = ("import os, sys\n"
            "d = os.open(sys.argv[1], os.O_RDONLY)\n"
            "os.setgroups([]); os.setgid(int(sys.argv[3])); os.setuid(int(sys.argv[2]))\n"
            "try:\n    os.close(os.open(sys.argv[4], os.O_RDONLY, dir_fd=d))\nexcept PermissionError:\n"
            "    sys.exit(13)\n")
    proc = subprocess.run([SYSTEM_PYTHON, "-c", code, str(path.parent), str(uid), str(gid), path.name],
                          capture_output=True, text=True, check=False)
    assert proc.returncode in (0, 13), proc.stderr
    return proc.returncode == 0


def test_install_makes_a_root_only_config_readable_by_the_service(system_python, artifact, tmp_path):
    """What firstboot.sh leaves: /etc/facelock/config.toml root:root, written before the group existed."""
    root = make_root(tmp_path / "root")
    etc = root / "etc" / "facelock"
    etc.mkdir(parents=True)
    config = etc / "config.toml"
    text = b"# the card's config, with secrets\n[mqtt]\nhost = \"broker.lan\"\n"
    config.write_bytes(text)
    os.chmod(config, 0o600)  # even tighter than firstboot's 0640: the service could not read it
    proc = run_installer(artifact, root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "keeping" in proc.stdout
    assert config.read_bytes() == text  # the content as it was
    uid, gid, mode = _owner_and_mode(config)
    assert mode == 0o640
    if os.geteuid() == 0:  # unprivileged runs cannot chown (install.sh skips it there)
        assert (uid, gid) == (0, _gid(root, "facelock"))
    # an upgrade after an admin's `chmod 644`: tightened again, content kept
    os.chmod(config, 0o644)
    proc = run_installer(artifact, root)
    assert proc.returncode == 0, proc.stdout
    assert _owner_and_mode(config)[2] == 0o640 and config.read_bytes() == text


def _card_config(artifact) -> bytes:
    with tarfile.open(artifact.path) as tar:
        member = tar.extractfile(f"{artifact.top}/config.toml.example")
        assert member is not None
        return member.read()


def _first_boot(artifact, root: Path, card_config: bytes, pip_args: str = "--no-deps --no-index",
                healthcheck: str = "", extras: str = ""):
    """Stage the card's payload as `firstboot.sh stage` leaves it, then run `firstboot.sh run`."""
    stage = root / "var" / "lib" / "facelock-firstboot"
    stage.mkdir(parents=True)
    shutil.copy(FIRSTBOOT_DIR / "firstboot.sh", stage / "firstboot.sh")
    shutil.copy(artifact.path, stage / artifact.path.name)
    (stage / "config.toml").write_bytes(card_config)
    wants = root / "etc" / "systemd" / "system" / "multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "facelock-firstboot.service").symlink_to("/etc/systemd/system/facelock-firstboot.service")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACELOCK_")}
    env.update(FACELOCK_INSTALL_ROOT=str(root), FACELOCK_PIP_ARGS=pip_args,
               FACELOCK_INSTALL_ARGS=f"--no-systemd --extras={extras} --python {SYSTEM_PYTHON}",
               FACELOCK_HEALTHCHECK=healthcheck)
    proc = subprocess.run(["bash", str(stage / "firstboot.sh"), "run"], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    return proc, stage, wants / "facelock-firstboot.service"


def test_firstboot_run_installs_and_the_service_can_read_the_config(system_python, artifact, tmp_path):
    """firstboot.sh run, end to end in a throwaway root: config staged on the card, artifact installed."""
    root = make_root(tmp_path / "root")
    card_config = _card_config(artifact)
    proc, stage, wanted = _first_boot(artifact, root, card_config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert result_fields(proc.stdout)["status"] == "ok"
    config = root / "etc" / "facelock" / "config.toml"
    assert config.read_bytes() == card_config
    uid, gid, mode = _owner_and_mode(config)
    assert mode == 0o640
    if os.geteuid() == 0:
        assert (uid, gid) == (0, _gid(root, "facelock"))
        # the service user (in the facelock group, not root) can open it; any other user cannot
        facelock = next(ln for ln in (root / "etc" / "passwd").read_text().splitlines() if ln.startswith("facelock:"))
        assert _can_read_as(config, int(facelock.split(":")[2]), gid)
        assert not _can_read_as(config, 65534, 65534)
    assert not stage.exists() and not wanted.is_symlink()
    assert os.readlink(root / "opt" / "facelock" / "current") == f"releases/{artifact.release}"


def test_firstboot_does_not_retry_what_a_retry_cannot_mend(system_python, artifact, tmp_path):
    """A card config the release refuses fails the health check on every try: exit 4, which the unit's
    RestartPreventExitStatus keeps from being retried, with the stage kept for a fix and a manual start."""
    root = make_root(tmp_path / "root")
    # In a throwaway root no unit starts, so the health check that reads the config is given explicitly (on
    # a board the unit's own start is that check).
    check = "$FACELOCK_RELEASE_DIR/venv/bin/facelock run --check --config $FACELOCK_ROOT/etc/facelock/config.toml"
    proc, stage, wanted = _first_boot(artifact, root, _card_config(artifact) + b"\n[doorbell]\nchime = 1\n",
                                      healthcheck=check)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "retrying cannot help" in proc.stdout and "failed its health check" in proc.stdout
    assert "doorbell" in proc.stdout  # the health check's own reason is in the journal
    assert (stage / "firstboot.sh").exists() and wanted.is_symlink()
    unit = (FIRSTBOOT_DIR / "facelock-firstboot.service").read_text()
    assert "RestartPreventExitStatus=4" in unit and "StartLimitIntervalSec=0" not in unit


def test_firstboot_retries_what_may_mend(system_python, artifact, tmp_path):
    """pip unable to fetch the `edge` extra (no network yet, no wheelhouse): exit 1, retried by the unit."""
    root = make_root(tmp_path / "root")
    proc, stage, wanted = _first_boot(artifact, root, _card_config(artifact), pip_args="--no-index", extras="edge")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "retrying later" in proc.stdout
    assert stage.exists() and wanted.is_symlink()


def test_bundle_cli_takes_a_model_archive(model_bundle, wheel, tmp_path, capsys):
    from facelock.cli import main

    archive = tmp_path / "bundle.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(model_bundle, arcname="bundle")
    out = tmp_path / "dist"
    rc = main(["deploy", "bundle", "--model", str(archive), "--wheel", str(wheel), "-o", f"{out}/"])
    assert rc == 0, capsys.readouterr().err
    (artifact,) = out.glob("facelock-deploy-*.tar.gz")
    with tarfile.open(artifact) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"bundle/manifest.json", "bundle/embedder.tflite", "bundle/detector.tflite"} <= names

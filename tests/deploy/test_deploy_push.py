"""`facelock deploy push` against a real OpenSSH server on loopback, started here with its own host key.

Two "boards" are two ssh_config aliases of that server; each alias sends (SetEnv) its own install root,
so the installer runs into a throwaway root per board and never touches this machine's /."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from deploy_testlib import INSTALL_ARGS, free_port, make_root, ssh_config


def _push(cfg: Path, artifact, hosts: list[str], *extra: str) -> tuple[int, dict]:
    import shlex

    from facelock.cli import main

    install_args = " ".join(shlex.quote(a) for a in INSTALL_ARGS)
    argv = ["deploy", "push", *hosts, "--ssh-config", str(cfg), "--artifact", str(artifact.path)]
    argv += ["--install-args", install_args, "--parallel", "2", "--timeout", "300", "--json", *extra]
    out_file = cfg.parent / "push.json"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    out_file.write_text(buf.getvalue())
    return rc, json.loads(buf.getvalue())


def test_push_to_two_boards_then_upgrade_with_one_rollback(
    system_python, sshd, artifact, artifact2, tmp_path
):
    roots = {"board-a": make_root(tmp_path / "a"), "board-b": make_root(tmp_path / "b")}
    cfg = ssh_config(sshd, roots)

    t = time.monotonic()
    rc, report = _push(cfg, artifact, ["board-a", "board-b"], "--log-dir", str(tmp_path / "logs"))
    first_s = time.monotonic() - t
    assert rc == 0, report
    assert [h["host"] for h in report["hosts"]] == ["board-a", "board-b"]
    for host in report["hosts"]:
        assert (
            host["status"] == "ok"
            and host["release"] == artifact.release
            and host["version"] == artifact.version
        )
        root = roots[host["host"]]
        assert os.readlink(root / "opt/facelock/current") == f"releases/{artifact.release}"
        assert (root / "etc/systemd/system/facelock.service").is_file()
    assert "RESULT status=ok" in (tmp_path / "logs" / "board-a.log").read_text()
    assert not list(Path("/tmp").glob("facelock-deploy.*/artifact.tar.gz"))  # cleaned up remotely

    # board-b's new release fails its health check: it rolls back, board-a upgrades
    (roots["board-a"] / "var/lib/facelock/gallery.sqlite").write_bytes(b"enrolled")
    cfg = ssh_config(sshd, roots, healthchecks={"board-b": "false"})
    t = time.monotonic()
    rc, report = _push(cfg, artifact2, ["board-a", "board-b"])
    second_s = time.monotonic() - t
    assert rc == 1
    by_host = {h["host"]: h for h in report["hosts"]}
    assert by_host["board-a"]["status"] == "ok" and by_host["board-a"]["release"] == artifact2.release
    assert by_host["board-b"]["status"] == "rolled-back" and by_host["board-b"]["release"] == artifact.release
    assert artifact2.release in by_host["board-b"]["detail"]
    assert os.readlink(roots["board-b"] / "opt/facelock/current") == f"releases/{artifact.release}"
    assert (roots["board-a"] / "var/lib/facelock/gallery.sqlite").read_bytes() == b"enrolled"
    print(f"push timings: first (2 boards, fresh) {first_s:.1f}s, upgrade (2 boards) {second_s:.1f}s")


def test_push_table_and_unreachable_host(sshd, artifact, tmp_path, capsys):
    from facelock.cli import main

    cfg = ssh_config(sshd, {"board-a": make_root(tmp_path / "a")})
    dead = f"127.0.0.1:{free_port()}"
    rc = main(["deploy", "push", dead, "--ssh-config", str(cfg), "--artifact", str(artifact.path)])
    out = capsys.readouterr().out
    assert rc == 1
    assert out.splitlines()[0].split() == ["HOST", "STATUS", "VERSION", "RELEASE", "SECONDS", "DETAIL"]
    assert dead in out and "failed" in out and "ssh failed during upload" in out
    assert "0/1 hosts ok" in out


def test_ssh_command_options():
    from deploy.push import SshOptions, split_host, ssh_command

    assert split_host("admin@lock1:2222") == ("admin@lock1", 2222)
    assert split_host("[fe80::1]:22") == ("fe80::1", 22)
    assert split_host("fe80::1") == ("fe80::1", None)
    cmd = ssh_command("lock1", SshOptions(identity="k", port=2200, user="pi", options=("Foo=bar",)), "true")
    assert cmd[-3:] == ["--", "lock1", "true"]
    for flag in (["-i", "k"], ["-p", "2200"], ["-l", "pi"], ["-o", "Foo=bar"], ["-o", "BatchMode=yes"]):
        assert any(cmd[i : i + 2] == flag for i in range(len(cmd) - 1)), flag


def test_push_is_safe_with_a_hostile_artifact_name(sshd, artifact, tmp_path):
    """The artifact's file name never reaches the remote shell: `$(...)` in it runs nothing on the board."""
    import shutil

    from deploy.artifact import read_artifact
    from deploy.push import SshOptions, push

    marker = f"facelock-pwned-{os.getpid()}"
    canaries = [Path.home() / marker, Path("/") / marker, Path("/tmp") / marker]
    hostile = tmp_path / f'facelock-deploy-0.1.0$(touch {marker})"`touch {marker}`.tar.gz'
    shutil.copy(artifact.path, hostile)
    root = make_root(tmp_path / "a")
    cfg = ssh_config(sshd, {"board-a": root})
    (result,) = push(["board-a"], read_artifact(hostile), SshOptions(config=str(cfg), timeout=300),
                     install_args=list(INSTALL_ARGS))
    assert result.status == "ok", result.detail + result.log[-2000:]
    assert not [c for c in canaries if c.exists()]


def test_a_failed_unpack_never_runs_the_installer(sshd, artifact, tmp_path):
    from deploy.artifact import ArtifactInfo
    from deploy.push import SshOptions, push

    broken = tmp_path / "facelock-deploy-0.1.0.tar.gz"
    broken.write_bytes(b"not a tarball")
    info = ArtifactInfo(path=broken, version=artifact.version, release=artifact.release, top=artifact.top)
    root = make_root(tmp_path / "a")
    cfg = ssh_config(sshd, {"board-a": root})
    (result,) = push(["board-a"], info, SshOptions(config=str(cfg), timeout=300), install_args=list(INSTALL_ARGS))
    assert result.status == "failed" and "unpacking the artifact" in result.detail
    assert "install.sh was not run" in result.detail
    assert not (root / "opt/facelock/current").exists()

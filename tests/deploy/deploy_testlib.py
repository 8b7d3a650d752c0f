"""Helpers shared by the deployment tests (throwaway roots, running install.sh, reading its RESULT line)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tarfile
from pathlib import Path

# `facelock --version` (the installer's built-in health check) imports numpy; the installer uses the system
# python3 with --system-site-packages, as on Raspberry Pi OS where numpy comes from apt.
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"
INSTALL_ARGS = [
    "--no-systemd",
    "--extras",
    "",
    "--pip-args",
    "--no-deps --no-index",
    "--python",
    SYSTEM_PYTHON,
]


def make_root(path: Path) -> Path:
    """A throwaway root: just enough of /etc for useradd --prefix (a `video` group, like Raspberry Pi OS)."""
    (path / "etc").mkdir(parents=True)
    (path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (path / "etc" / "group").write_text("root:x:0:\nvideo:x:44:\n")
    return path


def unpack(artifact, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(artifact.path) as tar:
        tar.extractall(dest, filter="data")
    return dest / artifact.top


def run_installer(artifact, root: Path, *extra: str, env: dict | None = None, unpack_to: Path | None = None):
    folder = unpack(artifact, unpack_to or root.parent / f"unpacked-{artifact.release}")
    cmd = ["bash", str(folder / "install.sh"), "--root", str(root), *INSTALL_ARGS, *extra]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FACELOCK_")}
    full_env.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=300, check=False)


def result_fields(stdout: str) -> dict[str, str]:
    lines = [ln for ln in stdout.splitlines() if "RESULT" in ln]
    assert lines, f"no RESULT line in:\n{stdout}"
    return dict(kv.split("=", 1) for kv in lines[-1].split("RESULT", 1)[1].split() if "=" in kv)


SSHD = shutil.which("sshd", path="/usr/sbin:/usr/bin:/sbin") or ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ssh_config(sshd, roots: dict[str, Path], healthchecks: dict[str, str] | None = None) -> Path:
    d = sshd["dir"]
    blocks = []
    for alias, root in roots.items():
        env = f"FACELOCK_INSTALL_ROOT={root}"
        if healthchecks and alias in healthchecks:
            env += f' "FACELOCK_HEALTHCHECK={healthchecks[alias]}"'
        blocks.append(
            f"Host {alias}\n  HostName 127.0.0.1\n  Port {sshd['port']}\n  User root\n"
            f"  IdentityFile {d / 'client_key'}\n  IdentitiesOnly yes\n  UserKnownHostsFile {d / 'known_hosts'}\n"
            f"  StrictHostKeyChecking yes\n  SetEnv {env}\n"
        )
    cfg = d / "ssh_config"
    cfg.write_text("\n".join(blocks))
    return cfg

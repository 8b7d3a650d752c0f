"""The fleet playbook: syntax check, then a real ansible-playbook run against the loopback sshd."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from deploy_testlib import INSTALL_ARGS, make_root, ssh_config

from deploy.paths import ANSIBLE_DIR

REPO_VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"
PLAYBOOK = shutil.which("ansible-playbook", path=f"{REPO_VENV_BIN}:{os.environ.get('PATH', '')}")
pytestmark = pytest.mark.skipif(
    PLAYBOOK is None,
    reason="ansible-playbook not installed (Debian: ansible-core, or pip install ansible-core)",
)


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(tmp_path / "ansible-remote"),  # the "board" is this machine
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        # no lingering ControlMaster: ansible keys its control socket by inventory name, so a master left
        # from an earlier run would carry that run's SetEnv (and install root)
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=no",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / "ansible-cp"),
    }


def test_playbook_syntax(tmp_path):
    proc = subprocess.run(
        [
            PLAYBOOK,
            "--syntax-check",
            "-i",
            str(ANSIBLE_DIR / "inventory.example.ini"),
            str(ANSIBLE_DIR / "facelock.yml"),
        ],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_playbook_deploys_to_the_loopback_board(system_python, sshd, artifact, tmp_path):
    root = make_root(tmp_path / "root")
    cfg = ssh_config(sshd, {"board-c": root})
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        "[facelock]\nboard-c\n\n[facelock:vars]\nansible_python_interpreter=/usr/bin/python3\n"
        f"ansible_ssh_common_args=-F {cfg}\n"
    )
    proc = subprocess.run(
        [
            PLAYBOOK, "-i", str(inventory), str(ANSIBLE_DIR / "facelock.yml"),
            "-e", f"facelock_artifact={artifact.path}",
            "-e", "ansible_become=false",  # we log in as root; the test machine may have no sudo
            "-e", f"facelock_remote_dir={tmp_path / 'remote'}",
            "-e", "facelock_install_args=" + " ".join(shlex.quote(a) for a in INSTALL_ARGS),
        ],
        capture_output=True, text=True, env=_env(tmp_path), timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert (
        f"RESULT status=ok version={artifact.version} release={artifact.release} previous=none" in proc.stdout
    )
    assert os.readlink(root / "opt/facelock/current") == f"releases/{artifact.release}"
    assert not (tmp_path / "remote").exists()

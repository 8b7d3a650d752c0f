"""`facelock deploy push HOST...`: copy an artifact to boards over SSH and run its installer there.

Uses the system OpenSSH client (so ~/.ssh/config, agents, jump hosts and known_hosts work as usual), in
BatchMode: a host that would prompt for a password fails instead of hanging. Per host:

  1. stream the artifact into a fresh `mktemp -d` folder (ssh ... 'cat > file'), compare its sha256
  2. unpack it and run install.sh as root (`sudo -n` when the SSH user is not root), remove the folder
  3. read the installer's RESULT line: ok, rolled-back (new release failed its health check) or failed

For dozens of boards and repeatable runs use the Ansible playbook in deploy/ansible/ instead.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deploy.artifact import ArtifactInfo
from deploy.errors import DeployError
from edge.files import sha256_file

RESULT_RE = re.compile(r"facelock-install: RESULT (.*)$", re.MULTILINE)
REMOTE_NAME = "artifact.tar.gz"  # the upload's name on the board
EXIT_CD, EXIT_UNPACK = 90, 91  # the remote script's own failures, told apart from install.sh's


@dataclass(frozen=True)
class SshOptions:
    identity: str | None = None
    port: int | None = None
    user: str | None = None
    config: str | None = None
    options: tuple[str, ...] = ()
    connect_timeout: int = 15
    timeout: float = 1800.0
    remote_dir: str = "/tmp"


@dataclass
class HostResult:
    host: str
    status: str  # ok | rolled-back | failed
    version: str = ""
    release: str = ""
    seconds: float = 0.0
    detail: str = ""
    log: str = field(default="", repr=False)


def split_host(spec: str) -> tuple[str, int | None]:
    """`[user@]host[:port]` -> (`[user@]host`, port). IPv6 literals go in brackets: [fe80::1]:22."""
    if spec.startswith("[") and "]" in spec:
        host, _, rest = spec[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if spec.count(":") == 1:
        host, port = spec.split(":")
        if port.isdigit():
            return host, int(port)
    return spec, None


def ssh_command(spec: str, opts: SshOptions, remote: str) -> list[str]:
    host, port = split_host(spec)
    cmd = [
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={opts.connect_timeout}",
        "-o",
        "ServerAliveInterval=15",
    ]
    if opts.config:
        cmd += ["-F", opts.config]
    if opts.identity:
        cmd += ["-i", opts.identity, "-o", "IdentitiesOnly=yes"]
    if port or opts.port:
        cmd += ["-p", str(port or opts.port)]
    if opts.user:
        cmd += ["-l", opts.user]
    for option in opts.options:
        cmd += ["-o", option]
    return [*cmd, "--", host, remote]


def _ssh_error(host: str, proc: subprocess.CompletedProcess, step: str) -> str:
    err = (proc.stderr or "").strip().splitlines()
    last = err[-1] if err else f"exit status {proc.returncode}"
    if proc.returncode == 255:
        return f"{host}: ssh failed during {step}: {last}"
    return f"{host}: {step} failed: {last}"


def push_one(spec: str, artifact: ArtifactInfo, opts: SshOptions, install_args: list[str]) -> HostResult:
    start = time.monotonic()
    result = HostResult(host=spec, status="failed")
    logs: list[str] = []

    def run(remote: str, step: str, stdin=None) -> subprocess.CompletedProcess:
        remaining = max(1.0, opts.timeout - (time.monotonic() - start))
        try:
            proc = subprocess.run(
                ssh_command(spec, opts, remote),
                stdin=stdin,
                capture_output=True,
                timeout=remaining,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DeployError(f"{spec}: {step} did not finish within {opts.timeout:.0f}s") from None
        except FileNotFoundError:
            raise DeployError(
                "ssh: the OpenSSH client is not installed (apt-get install openssh-client)"
            ) from None
        text = subprocess.CompletedProcess(
            proc.args,
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )
        logs.append(f"$ {step}\n{text.stdout}{text.stderr}")
        return text

    try:
        # Every value that reaches the remote shell is either fixed text or shlex-quoted: the artifact is
        # stored under a fixed name (its own file name, whatever it holds, never reaches the shell).
        upload = (
            f"umask 077 && d=$(mktemp -d {shlex.quote(opts.remote_dir)}/facelock-deploy.XXXXXX) && "
            f'cat > "$d/{REMOTE_NAME}" && echo "$d" && sha256sum "$d/{REMOTE_NAME}"'
        )
        with open(artifact.path, "rb") as fh:
            proc = run(upload, "upload", stdin=fh)
        if proc.returncode != 0:
            raise DeployError(_ssh_error(spec, proc, "upload"))
        lines = proc.stdout.strip().splitlines()
        if len(lines) < 2:
            raise DeployError(f"{spec}: upload gave no folder/checksum back (is sha256sum installed there?)")
        remote_dir, remote_sum = lines[-2].strip(), lines[-1].split()[0]
        if remote_sum != sha256_file(artifact.path):
            raise DeployError(f"{spec}: {remote_dir}/{REMOTE_NAME} arrived with a different sha256 (copy corrupted)")

        args = " ".join(shlex.quote(a) for a in install_args)
        d = shlex.quote(remote_dir)
        # A failed step stops here with its own exit status: install.sh never runs from a half-unpacked
        # or wrong folder.
        install = (
            f"cd {d} || exit {EXIT_CD}; "
            f"tar -xzf {REMOTE_NAME} || {{ cd / && rm -rf {d}; exit {EXIT_UNPACK}; }}; "
            'if [ "$(id -u)" = 0 ]; then s=; else s="sudo -n"; fi; '
            f"$s bash {shlex.quote(artifact.installer)} {args}; rc=$?; "
            f"cd / && rm -rf {d}; exit $rc"
        )
        proc = run(install, "install")
        if proc.returncode in (EXIT_CD, EXIT_UNPACK):
            step = "entering the upload folder" if proc.returncode == EXIT_CD else "unpacking the artifact"
            raise DeployError(_ssh_error(spec, proc, step) + "; install.sh was not run")
        found = RESULT_RE.findall(proc.stdout)
        fields = dict(kv.split("=", 1) for kv in found[-1].split() if "=" in kv) if found else {}
        result.version = fields.get("version", "")
        result.release = fields.get("release", "")
        if proc.returncode == 0 and fields.get("status") == "ok":
            result.status = "ok"
        elif proc.returncode == 3 or fields.get("status") == "rolled-back":
            result.status = "rolled-back"
            result.detail = (
                f"{fields.get('failed', 'new release')} failed its health check; running {result.release}"
            )
        else:
            errors = [ln for ln in proc.stdout.splitlines() if "error:" in ln]
            if "sudo" in proc.stderr and "password" in proc.stderr:
                result.detail = (
                    f"{spec}: sudo needs a password; allow NOPASSWD for the deploy user or use root"
                )
            elif errors:
                result.detail = errors[-1].split("error:", 1)[1].strip()
            else:
                result.detail = _ssh_error(spec, proc, "install")
    except DeployError as exc:
        result.detail = str(exc)
    except OSError as exc:
        result.detail = f"{spec}: {exc}"
    result.seconds = round(time.monotonic() - start, 1)
    result.log = "\n".join(logs)
    return result


def push(
    hosts: list[str],
    artifact: ArtifactInfo,
    opts: SshOptions,
    install_args: list[str] | None = None,
    parallel: int = 4,
    log_dir: Path | None = None,
    progress=None,
) -> list[HostResult]:
    """Push to every host (at most `parallel` at once); results in the order the hosts were given."""
    if not hosts:
        raise DeployError("no hosts given")
    install_args = list(install_args or [])
    results: dict[str, HostResult] = {}
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = {pool.submit(push_one, h, artifact, opts, install_args): h for h in dict.fromkeys(hosts)}
        for fut in as_completed(futures):
            res = fut.result()
            results[futures[fut]] = res
            if log_dir:
                log_dir.mkdir(parents=True, exist_ok=True)
                safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", res.host)
                (log_dir / f"{safe}.log").write_text(res.log, encoding="utf-8")
            if progress:
                progress(res)
    return [results[h] for h in dict.fromkeys(hosts)]


def format_table(results: list[HostResult]) -> str:
    rows = [("HOST", "STATUS", "VERSION", "RELEASE", "SECONDS", "DETAIL")]
    rows += [
        (r.host, r.status, r.version or "-", r.release or "-", f"{r.seconds:.1f}", r.detail) for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths)) + "  " + row[5] for row in rows]
    ok = sum(r.status == "ok" for r in results)
    lines.append(f"{ok}/{len(results)} hosts ok")
    return "\n".join(line.rstrip() for line in lines)


def results_json(results: list[HostResult], artifact: ArtifactInfo) -> str:
    return json.dumps(
        {
            "schema": "facelock.deploy.push/1",
            "artifact": str(artifact.path),
            "version": artifact.version,
            "release": artifact.release,
            "hosts": [{k: v for k, v in asdict(r).items() if k != "log"} for r in results],
        },
        indent=2,
    )


def print_failure_logs(results: list[HostResult], lines: int = 20) -> None:
    for r in results:
        if r.status != "ok" and r.log:
            tail = r.log.strip().splitlines()[-lines:]
            print(f"--- {r.host}: last {len(tail)} lines ---", file=sys.stderr)
            print("\n".join(tail), file=sys.stderr)

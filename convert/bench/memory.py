"""Peak resident memory (VmHWM) of each pipeline: a child process per pipeline (convert.bench.memory_child)
loads it and runs it on the speed frames, so the peak is that pipeline's alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from convert.bench.data import PEER

REPO = Path(__file__).resolve().parents[2]
CHILD = "convert.bench.memory_child"


def peak_memory(kind: str, model: Path | None, threads: int, files: list[Path]) -> dict:
    """The child's figures (`vmhwm_kib`, `ru_maxrss_kib`, `modules_tensorflow`), or {"error": ...}."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-m", CHILD, kind, str(model or ""), str(threads), *map(str, files)],
                          capture_output=True, text=True, cwd=REPO, env=env, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory_rows(int8_path: Path, float_path: Path, threads: int, files: list[Path], peer_ok: bool) -> list[dict]:
    """One row per pipeline: facelock int8, facelock float TFLite (at `threads`), the peer (one thread)."""
    rows = []
    for label, kind, model in (("facelock, int8", "ours", int8_path), ("facelock, float TFLite", "ours", float_path),
                               (PEER, "peer", None)):
        if kind == "peer" and not peer_ok:
            continue
        rows.append({"pipeline": label, "threads": 1 if kind == "peer" else threads,
                     **peak_memory(kind, model, threads, files)})
    return rows

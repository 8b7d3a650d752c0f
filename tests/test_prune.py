"""Pruning: the target sparsity is reached, and a killed fine-tune resumes from its checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytest.importorskip("tensorflow_model_optimization", reason="pruning needs the [convert] extra")

SCRIPT = textwrap.dedent("""
    import sys, numpy as np, convert
    from convert.dlib_port import load_keras_model
    from convert.compress.prune import PruneOptions, prune_by_distillation, overall_sparsity
    chips = np.load(sys.argv[2])
    model = load_keras_model(sys.argv[1])
    opts = PruneOptions(target_sparsity=0.5, epochs=3, batch_size=8, checkpoint_every=2)
    pruned, rows = prune_by_distillation(model, chips, opts, sys.argv[3], progress=False)
    print("overall", overall_sparsity(rows))
""")


def test_killed_finetune_resumes_from_checkpoint(tmp_path, keras_model_path, portraits):
    rng = np.random.default_rng(0)
    chips = np.stack([img[y:y + 150, x:x + 150] for img in portraits for y, x in rng.integers(0, 200, (16, 2))])
    np.save(tmp_path / "chips.npy", chips)
    work = tmp_path / "work"
    cmd = [sys.executable, "-c", SCRIPT, str(keras_model_path), str(tmp_path / "chips.npy"), str(work)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 240
    state = work / "checkpoints" / "checkpoint"  # names the latest checkpoint once its files are all written
    while not (state.is_file() and '"ckpt-4"' in state.read_text()) and time.monotonic() < deadline:
        assert first.poll() is None, first.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL

    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert second.returncode == 0, second.stderr[-2000:]
    resumed = [line for line in second.stderr.splitlines() if "resuming at step" in line]
    assert resumed and int(resumed[0].split("resuming at step ")[1].split()[0]) >= 4
    assert float(second.stdout.split("overall")[1]) == pytest.approx(0.5, abs=0.01)

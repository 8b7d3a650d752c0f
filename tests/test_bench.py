"""`facelock bench --quick` end to end (demo faces, no LFW): every section of docs/benchmarks.md has numbers,
every plot is a real PNG; and full mode without LFW says where LFW is expected."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("## 1. Accuracy", "## 2. Speed", "## 3. Cost curve", "## 4. Scaling", "## 5. Figure of merit",
            "## 6. Security", "## 7. Door distance", "## 8. Presentation attacks")
PLOTS = ("roc.png", "cost_curve.png", "match_scaling.png", "door_tar.png")


def _facelock(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "facelock", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=timeout, check=False)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name}: not a PNG"
    assert data[12:16] == b"IHDR", f"{path.name}: no IHDR chunk"
    assert data.rstrip(b"\x00")[-8:-4] == b"IEND", f"{path.name}: truncated (no IEND chunk)"
    return struct.unpack(">II", data[16:24])


def _section(text: str, title: str) -> str:
    start = text.index(title)
    nxt = [text.find(s, start + 1) for s in SECTIONS if text.find(s, start + 1) > start]
    return text[start:min(nxt) if nxt else len(text)]


@pytest.mark.slow
def test_quick_bench_writes_every_section_and_plot(tmp_path, models_dir, keras_model_path):
    out, work = tmp_path / "docs", tmp_path / "work"
    proc = _facelock("bench", "--quick", "--out", str(out), "--work", str(work), "--reuse", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-4000:]
    md = (out / "benchmarks.md").read_text()

    header = md.split("## 1.")[0]
    for key in ("**Machine:**", "cores", "**Versions:**", "**Mode:** quick", "**LFW rule", "train", "folds 6-10"):
        assert key in header, f"header lacks {key!r}"
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", header)

    number = re.compile(r"\|\s*[-+]?\d+(\.\d+)?%?\s*(/\s*\d+(\.\d+)?\s*)?\|")
    for title in SECTIONS:
        assert title in md, f"missing section {title!r}"
        body = _section(md, title)
        rows = [ln for ln in body.splitlines() if ln.startswith("|") and not ln.startswith("|---")]
        assert len(rows) >= 3, f"{title}: no table"
        assert number.search(body), f"{title}: no numbers in its table"

    acc = _section(md, "## 1. Accuracy")
    for name in ("float (Keras)", "pruned float (50%)", "int8 (50%)"):
        assert f"| {name} |" in acc
    speed = _section(md, "## 2. Speed")
    for stage in ("detect", "align", "embed", "match"):
        assert stage in speed
    # The bundle mirror-averages (convert's default): its pipeline is timed so, and says so.
    assert "| facelock, int8 (50% sparse), mirror-averaged | 1 |" in speed
    assert "| facelock, int8 (50% sparse), mirror-averaged | 2 |" in speed
    assert "| facelock, float TFLite, mirror-averaged | 1 |" in speed and "peak RSS MB" in speed
    assert re.search(r"\| facelock, int8 \| 2 \| \d+ \|", speed), "no peak memory for the int8 pipeline"
    cost = _section(md, "## 3. Cost curve")
    assert "| 0% (" in cost and "| 50% (" in cost
    scaling = _section(md, "## 4. Scaling")
    assert "| 100,000 |" in scaling and "| 10 |" in scaling
    merit = _section(md, "## 5. Figure of merit")
    assert re.search(r"\*\*\d+\.\d+ GMAC per face\*\*", merit)
    assert re.search(r"\| 1 \| \d+\.\d+ \| \d+\.\d+ \| \d+\.\d+ \| \d+\.\d+ \| \d+% \|", merit)

    attacks = _section(md, "## 8. Presentation attacks")
    for kind in ("| print, hand-held |", "| live, turning |", "| owner answers |", "| video replay |",
                 "| print attacks: APCER (challenge) |", "BPCER of the challenge"):
        assert kind in attacks, kind
    assert re.search(r"\| owner, no challenge \| 2 \| \d+\.\d%", attacks)

    for name in PLOTS:
        assert f"](img/{name})" in md, f"{name} is not linked from the markdown"
        w, h = _png_size(out / "img" / name)
        assert w >= 300 and h >= 200, f"{name}: {w}x{h}"

    # The MAC counter agrees with the arithmetic on the peak model it built (56x56x256 -> 256, 3x3).
    from convert.bench.merit import count_macs

    assert count_macs(work / "peak_conv3x3_int8.tflite")["macs"] == 56 * 56 * 256 * 256 * 9

    # The printed summary is the markdown's tables.
    assert "## 1. Accuracy" in proc.stdout and "| pipeline |" in proc.stdout


def test_full_mode_without_lfw_says_where_lfw_is_expected(tmp_path):
    missing = tmp_path / "no_lfw_here"
    proc = _facelock("bench", "--lfw", str(missing), "--out", str(tmp_path / "docs"), "--work",
                     str(tmp_path / "work"), timeout=120)
    assert proc.returncode == 1
    assert str(missing) in proc.stderr and "pairs_view2.csv" in proc.stderr and "--quick" in proc.stderr
    assert not (tmp_path / "docs" / "benchmarks.md").exists()


def test_door_frame_conditions_dim_and_blur_as_named():
    """The door frames' picture conditions (convert.bench.door.CONDITIONS): the same draw gives the same
    scene; an eighth of the light is half as bright as a quarter; blur softens; an unknown name says which
    exist."""
    import numpy as np

    from convert.bench.door import door_frame

    photo = np.random.default_rng(0).integers(0, 256, (150, 150, 3), dtype=np.uint8)
    frames = {c: door_frame(photo, 120, np.random.default_rng(5), c)[0].astype(np.float64)
              for c in ("clean", "low_light", "dark", "blur", "blur2")}
    assert frames["low_light"].mean() == pytest.approx(frames["clean"].mean() / 4, rel=0.05)
    assert frames["dark"].mean() == pytest.approx(frames["low_light"].mean() / 2, rel=0.1)
    detail = {c: np.abs(np.diff(f, axis=1)).mean() for c, f in frames.items()}
    assert detail["clean"] > detail["blur"] > detail["blur2"]
    with pytest.raises(ValueError, match="dusk.*clean, low_light, blur, dark, blur2"):
        door_frame(photo, 120, np.random.default_rng(5), "dusk")

"""benchmarks/quality_gates.py's figures from known rows (no LFW, no models): the lock at each face's bar, the
yaw table, and the lock at other limits of the yaw and sharpness gates and of soft faces (`[quality]
max_yaw_deg` and `soft_sharpness` were set by them)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the scripts import its common.py
import quality_gates as qg

from edge.types import FaceCondition
from edge.vision.quality import BLURRY, TOO_SMALL, YAW

THR, DIM_THR, SOFT_THR = 0.93, 0.95, 0.94
BARS = {FaceCondition.DIM: DIM_THR, FaceCondition.SOFT: SOFT_THR}


def row(owner, strangers, yaw, *, failed=(), sharpness=0.4, dim=False, condition="clean", width=60):
    """One probe as quality_gates.measure keeps it."""
    return (condition, width, owner, np.asarray(strangers, np.float64), not failed, sharpness,
            10.0 if dim else 40.0, dim, yaw, frozenset(failed))


def test_the_lock_puts_dim_faces_at_the_dim_bar():
    rows = [row(0.94, [0.94, 0.1], 5.0), row(0.94, [0.94, 0.1], 5.0, dim=True)]
    owner, far, hits = qg.the_lock(rows, THR, BARS)
    # the lit face votes for its owner and lets one stranger through; the dim one does neither at 0.95
    assert owner == pytest.approx(50.0) and hits == 1 and far == pytest.approx(25.0)


def test_the_lock_puts_soft_faces_at_the_soft_bar_and_other_soft_limits(capsys):
    rows = [row(0.935, [0.935, 0.1], 5.0, sharpness=0.18),  # soft at the default limit: neither passes 0.94
            row(0.945, [0.945, 0.1], 5.0, sharpness=0.18),  # soft, over the soft bar: both pass
            row(0.935, [0.0, 0.1], 5.0, sharpness=0.4)]  # sharp: its owner passes at the threshold
    owner, far, hits = qg.the_lock(rows, THR, BARS)
    assert owner == pytest.approx(200 / 3) and hits == 1 and far == pytest.approx(100 / 6)
    owner, far, hits = qg.the_lock(rows, THR, BARS, soft_below=0.0)  # no face soft: as before
    assert owner == pytest.approx(100.0) and hits == 2 and far == pytest.approx(100 / 3)
    out = qg.report({"threshold": THR, "dim_threshold": DIM_THR, "soft_threshold": SOFT_THR, "people": 3,
                     "rows": rows})
    limits = {x["limit"]: x for x in out["limits"] if x["field"] == "soft_sharpness"}
    assert limits[0.0]["lock_strangers_pct"] == pytest.approx(100 / 3)
    assert limits[0.2]["lock_strangers_pct"] == pytest.approx(100 / 6)
    assert limits[0.18]["lock_owner_pct"] == pytest.approx(100.0)  # 0.18 is not under 0.18: not soft
    assert "soft-face threshold 0.9400" in capsys.readouterr().out


def test_yaw_table_and_limits(capsys):
    rows = [row(0.99, [0.0, 0.0], 5.0),  # frontal, passes every gate
            row(0.99, [0.0, 0.0], 32.0, failed=[YAW]),  # turned 32 degrees: refused by the yaw gate alone
            row(0.99, [0.96, 0.0], 42.0, failed=[YAW]),  # turned 42: one stranger over the bar
            row(0.99, [0.96, 0.96], 20.0, failed=[TOO_SMALL])]  # refused by another gate: never counted
    out = qg.report({"threshold": THR, "dim_threshold": DIM_THR, "people": 4, "rows": rows})
    bands = {(b["from"], b["to"]): b for b in out["yaw"]}
    assert set(bands) == {(0, 10), (30, 35), (40, 50)}
    assert bands[(30, 35)]["owner_pct"] == 100.0 and bands[(30, 35)]["strangers_pct"] == 0.0
    assert bands[(40, 50)]["strangers_pct"] == pytest.approx(50.0)
    limits = {x["limit"]: x for x in out["limits"] if x["field"] == "max_yaw_deg"}
    assert limits[30]["lock_owner_pct"] == pytest.approx(25.0)  # 1 of the 4 found faces votes
    assert limits[35]["lock_owner_pct"] == pytest.approx(50.0) and limits[35]["lock_strangers_pct"] == 0.0
    assert limits[45]["lock_owner_pct"] == pytest.approx(75.0)
    assert limits[45]["lock_strangers_pct"] == pytest.approx(100 / 6)
    assert "max_yaw_deg = 35" in capsys.readouterr().out


def test_sharpness_limits():
    rows = [row(0.99, [0.0], 5.0, sharpness=0.3),
            row(0.99, [0.96], 5.0, sharpness=0.15, failed=[BLURRY]),  # soft: a stranger passes
            row(0.99, [0.0], 5.0, sharpness=0.15, failed=[BLURRY, YAW])]  # also turned: never counted
    out = qg.report({"threshold": THR, "dim_threshold": DIM_THR, "people": 3, "rows": rows})
    limits = {x["limit"]: x for x in out["limits"] if x["field"] == "min_sharpness"}
    assert limits[0.16]["lock_owner_pct"] == pytest.approx(100 / 3) and limits[0.16]["lock_strangers_pct"] == 0
    assert limits[0.14]["lock_owner_pct"] == pytest.approx(200 / 3)
    assert limits[0.14]["lock_strangers_pct"] == pytest.approx(50.0)


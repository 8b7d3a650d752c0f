"""`run_bench`: every section of `facelock bench` in one run, then docs/benchmarks.md and results.json."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from convert.bench.accuracy import accuracy
from convert.bench.attack_section import attacks
from convert.bench.conversions import conversions
from convert.bench.cost import cost_curve
from convert.bench.data import MAIN_SPARSITY, BenchOptions, dataset
from convert.bench.door_section import door
from convert.bench.machine import machine, versions
from convert.bench.merit import figure_of_merit
from convert.bench.peer import dlib_available
from convert.bench.report import render
from convert.bench.scaling import scaling
from convert.bench.security import security
from convert.bench.speed import latency_chips, speed
from convert.bench.util import say


def run_bench(opts: BenchOptions) -> dict:
    opts = opts.resolved()
    started = time.time()
    ds = dataset(opts)
    img = Path(opts.out) / "img"
    img.mkdir(parents=True, exist_ok=True)
    opts.work.mkdir(parents=True, exist_ok=True)
    res: dict = {"quick": opts.quick, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                 "machine": machine(), "versions": versions(),
                 "dataset": {"name": ds.name, "pairs": str(ds.pairs), "note": ds.note},
                 "options": {"threads": list(opts.threads), "sparsities": list(opts.sparsities),
                             "frames": opts.frames, "repeat": opts.repeat}}
    sparsities = opts.sparsities if MAIN_SPARSITY in opts.sparsities else (*opts.sparsities, MAIN_SPARSITY)
    convs = conversions(replace(opts, sparsities=tuple(sorted(sparsities))), ds)
    main = convs[MAIN_SPARSITY]
    peer_ok = opts.peer and dlib_available()

    say("1/8 accuracy")
    res["accuracy"] = accuracy(opts, ds, main, img)
    say("2/8 speed")
    res["speed"] = speed(opts, ds, main, peer_ok)
    chips = latency_chips(opts, ds)
    say("3/8 cost curve")
    res["cost"] = cost_curve(opts, {s: c for s, c in convs.items() if s in opts.sparsities}, chips, img)
    say("4/8 gallery scaling")
    res["scaling"] = scaling(opts, img)
    say("5/8 figure of merit")
    res["merit"] = figure_of_merit(opts, main, chips)
    say("6/8 security")
    res["security"] = security(opts, ds, main, peer_ok)
    say("7/8 door distance")
    res["door"] = door(opts, ds, main, peer_ok, img)
    say("8/8 presentation attacks")
    res["attacks"] = attacks(opts, ds, main)
    res["seconds"] = time.time() - started
    out = Path(opts.out)
    (out / "benchmarks.md").write_text(render(res))
    (opts.work / opts.mode / "results.json").write_text(json.dumps(res, indent=2, default=str))
    say(f"wrote {out / 'benchmarks.md'} and {', '.join(sorted(p.name for p in img.glob('*.png')))} in {img}")
    return res

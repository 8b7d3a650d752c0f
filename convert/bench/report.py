"""docs/benchmarks.md from the results of `run_bench`, and the summary the command prints (its tables)."""

from __future__ import annotations

from convert.bench.data import LFW_RULE


def _f(x, fmt="{:.4f}", none="–"):
    return none if x is None else fmt.format(x)


def _pct(x):
    return _f(x, "{:.2%}")


def _table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _tar_noise(impostors: int) -> str:
    top = max(1, round(impostors * 1e-3))
    return (f"With {impostors:,} impostor pairs, TAR@FAR 1e-3 is set by the top {top} impostor score(s) alone: "
            "differences of several points between similar models are noise; AUC, EER and TAR@FAR 1e-2 are "
            "the stable figures.")


def _header(res: dict) -> list[str]:
    m, ds = res["machine"], res["dataset"]
    return [
        "# facelock benchmarks",
        "",
        (f"Written by `facelock bench{' --quick' if res['quick'] else ''}` on {res['date']}. Every figure was "
        "measured on this machine in this run, except conversions marked *cached* in the cost curve "
        "(reused from an earlier `facelock convert` run with identical options)."),
        "",
        f"- **Machine:** {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable by this process; "
        f"SIMD: {m['simd'] or 'n/a'}), {m['os']}, Python {m['python']}"
        + (f", 1-minute load {m['load_1min']:.2f} at the start (the cores are shared)" if m["load_1min"] is not None
           else ""),
        "- **Versions:** " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()),
        f"- **Mode:** {'quick (CI: demo faces, fewer repeats, fewer sparsities)' if res['quick'] else 'full'}",
        f"- **Data:** {ds['name']} ({ds['pairs']}); {ds['note']}",
        f"- **LFW rule{' (full mode; not used in quick mode)' if res['quick'] else ''}:** {LFW_RULE}.",
        f"- **Took:** {res['seconds']:.0f} s",
        "",
    ]


def _accuracy(a: dict) -> list[str]:
    L = ["## 1. Accuracy", "",
         (f"{a['pairs']} pairs ({a['images']} images). A pair with a face its pipeline did not find is scored as "
          "a rejection (it still counts), so misses cost accuracy. Peer score: −Euclidean distance (its own); "
          "ours: cosine. *Best accuracy* uses the best threshold on these pairs (an optimistic, oracle "
          "figure); TAR@FAR is a step function, no interpolation. "
          + _tar_noise(a.get("impostors", a["pairs"] // 2))), ""]
    L.append(_table(["pipeline", "AUC", "TAR@FAR 1e-2", "TAR@FAR 1e-3", "best accuracy", "EER",
                     "faces not found"],
                    [[n, _f(r["auc"]), _pct(r["tar_at_far_1e2"]), _pct(r["tar_at_far_1e3"]),
                      _pct(r["best_accuracy"]), _pct(r["eer"]), r["faces_not_found"]]
                     for n, r in a["rows"].items()]))
    L += [""] + [f"- {n}" for n in a["notes"]] + ["", f"![ROC curves](img/{a['plot']})", ""]
    return L


def _speed(s: dict, m: dict) -> list[str]:
    L = ["## 2. Speed", "",
         (f"Per-stage wall time in ms per 640×480 frame with one face (each test photo placed on a doorway the "
          f"way `make demo` does), {s['frames']} frames × {s['repeat']} passes, the same frames "
          f"for every pipeline, in one run. *detect* on the whole frame; *landmarks* = the face-landmark model "
          f"on the detections (confirms them, gives the alignment points); *align* = subject + points → 150×150 "
          f"chip (peer: 5 landmarks + chip); *embed* = one chip; *match* = against a {s['gallery']}-template gallery "
          "(facelock's matcher, for all). *total* is per frame with a face. The peer (dlib) has no thread "
          "setting and runs on one thread."), ""]
    rows = []
    for r in s["rows"]:
        rows.append([r["pipeline"], r["threads"], f"{r['faces_found']}/{r['frames']}"]
                    + [f"{_f(r.get(k, {}).get('median'), '{:.2f}')} / {_f(r.get(k, {}).get('p95'), '{:.2f}')}"
                       for k in ("detect", "landmarks", "align", "embed", "match", "total")])
    L.append(_table(["pipeline", "threads", "faces", "detect", "landmarks", "align", "embed", "match", "total"],
                    rows))
    L += ["", "(median / p95, ms)", ""]
    if not any(flag in m["simd"] for flag in ("vnni", "asimddp")):
        L += [(f"This CPU has no int8 dot-product instructions (SIMD: {m['simd'] or 'n/a'}): XNNPACK's int8 kernels "
               "then do about as many multiply-accumulates per cycle as its float ones, so int8 is no faster than "
               "float here. On CPUs with AVX-512 VNNI / AMX the 50%-sparse int8 embedder is ~3.6x faster than "
               "float TFLite on 2 threads (docs/conversion.md); the int8 advantage is also on ARM (the Raspberry "
               "Pi's NEON, dot-product instructions on Pi 5) and on the Edge TPU, which runs int8 only; int8 "
               "still makes the model 4x smaller."), ""]
    else:
        L += [(f"This CPU has int8 dot-product instructions (SIMD: {m['simd']}): XNNPACK's int8 kernels use them, "
               "so the int8 embedder is several times faster than float here (the *embed* column; ~3.6x on 2 "
               "threads on an AVX-512 VNNI / AMX Xeon). On an AVX2-only x86 CPU the two are about equal "
               "(docs/conversion.md)."), ""]
    L += ["**Model files**", ""]
    L.append(_table(["file", "MB", "gzip MB"],
                    [[r["file"], f"{r['bytes'] / 1e6:.2f}", _f(r["gzip_bytes"] and r["gzip_bytes"] / 1e6, "{:.2f}")]
                     for r in s["sizes"]]))
    L += ["", (f"**Peak memory** (peak resident set, VmHWM, of a child process that loads the pipeline and runs "
          f"it on {s['memory_frames']} frames; the facelock children import `edge` only, as the board does: "
          "no TensorFlow)"), ""]
    L.append(_table(["pipeline", "threads", "peak RSS MB"],
                    [[r["pipeline"], r["threads"],
                      f"{r['vmhwm_kib'] / 1024:.0f}" if r.get("vmhwm_kib") else r.get("error", "–")]
                     for r in s["memory"]]))
    L.append("")
    return L


def _cost(c: dict, res: dict) -> list[str]:
    a = res["accuracy"]
    L = ["## 3. Cost curve: sparsity", "",
         "One `facelock convert` per sparsity (prune by distillation, int8, validate"
         + (" on LFW folds 6-10, trained and calibrated on LFW train people" if not res["quick"]
            else " on the demo faces") + "). Accuracy of the int8 model; latency of the int8 embedder per "
         "chip (median). XNNPACK does not skip zero weights, so sparsity buys size (gzip) and not speed. "
         + _tar_noise(a.get("impostors", a["pairs"] // 2)), ""]
    th = res["options"]["threads"]
    L.append(_table(["sparsity", "AUC", "TAR@FAR 1e-3", "best accuracy", "int8 MB", "int8 gzip MB"]
                    + [f"embed ms, {t} thr" for t in th] + ["conversion"],
                    [[f"{100 * r['sparsity_target']:.0f}% ({100 * r['sparsity']:.1f}%)", _f(r["auc"]),
                      _pct(r["tar_at_far_1e3"]), _pct(r["best_accuracy"]), f"{r['int8_bytes'] / 1e6:.2f}",
                      f"{r['int8_gzip_bytes'] / 1e6:.2f}"] + [f"{r[f'embed_ms_{t}t']:.2f}" for t in th]
                     + ["cached" if r["cached"] else "this run"] for r in c["rows"]]))
    L += ["", f"![accuracy and latency vs sparsity](img/{c['plot']})", ""]
    return L


def _scaling(g: dict) -> list[str]:
    L = ["## 4. Scaling: match time vs gallery size", "",
         (f"One probe against N random unit 128-d templates (5 per person, one person in ten with 2 negative "
          f"examples), {g['repeat']} probes per size; einsum is the default scoring (numpy's own loops), blas "
          "is `MatchOptions.use_blas`."), ""]
    L.append(_table(["templates", "people", "scoring", "median ms", "p95 ms"],
                    [[f"{r['templates']:,}", f"{r['people']:,}", r["scoring"], f"{r['median']:.4f}",
                      f"{r['p95']:.4f}"] for r in g["rows"]]))
    L += ["", f"![match time vs gallery size](img/{g['plot']})", ""]
    return L


def _merit(f: dict) -> list[str]:
    mac = f["macs"]
    h, w, cin, cout, k = f["peak_model"]["shape"]
    L = ["## 5. Figure of merit", "",
         f"- Embedder: **{mac['macs'] / 1e9:.3f} GMAC per face** (dense, counted from the int8 TFLite graph: "
         + ", ".join(f"{op} {v / 1e9:.3f} G" for op, v in mac["by_op"].items())
         + f"); {mac['nonzero_macs'] / 1e9:.3f} GMAC on non-zero weights, which the CPU kernels do not exploit.",
         (f"- Peak: an int8 TFLite model built here with one {k}×{k} convolution, {h}×{w}×{cin} → {cout} "
          f"({f['peak_model']['macs'] / 1e9:.2f} GMAC), quantized the same way and run by the same runtime "
          "(LiteRT + XNNPACK, the same int8 GEMM micro-kernels). Large enough to be compute-bound, so it is the "
          "int8 MAC rate this machine reaches with this software: a fair, measured peak, not a datasheet "
          "figure. (numpy's int8 matmul is not a fair peak: numpy does not use BLAS or VNNI for integers.)"),
         ""]
    L.append(_table(["threads", "int8 embed ms", "achieved GMAC/s", "peak conv ms", "peak GMAC/s",
                     "achieved / peak"],
                    [[r["threads"], f"{r['embed_ms']:.2f}", f"{r['achieved_gmacs']:.1f}", f"{r['peak_ms']:.1f}",
                      f"{r['peak_gmacs']:.1f}", f"{r['ratio']:.0%}"] for r in f["rows"]]))
    L.append("")
    return L


def render(res: dict) -> str:
    L = _header(res)
    L += _accuracy(res["accuracy"])
    L += _speed(res["speed"], res["machine"])
    L += _cost(res["cost"], res)
    L += _scaling(res["scaling"])
    L += _merit(res["merit"])
    if "security" in res:  # results.json of runs before this section existed has none
        from convert.bench.security import render_security

        L += render_security(res["security"]) + [""]
    if "door" in res:  # nor this one
        from convert.bench.door_section import render_door

        L += render_door(res["door"])
    if "attacks" in res:  # nor this one
        from convert.bench.attack_section import render_attacks

        L += render_attacks(res["attacks"])
    return "\n".join(L)


def summary(res: dict) -> str:
    """The section tables only (what the command prints)."""
    text = render(res)
    keep, out = False, []
    for line in text.splitlines():
        if line.startswith("## "):
            keep = True
        if keep and (line.startswith(("|", "## ", "- Embedder", "**"))):
            out.append(line)
        elif keep and not line and out and out[-1]:
            out.append("")
    return "\n".join(out).strip() + "\n"

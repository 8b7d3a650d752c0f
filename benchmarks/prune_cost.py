"""What pruning costs at the door: model bundles side by side on door frames of LFW `train` people.

    .venv/bin/python benchmarks/prune_cost.py --bundle out/full/bundle --bundle out/s25/bundle [--people N]
        [--widths 40,60,80,120,160] [--variant blur] [--split test]

`facelock convert` validates on LFW View 2 (1,500 genuine pairs), where a pruned model's loss hides in the
noise of a step function. Here each LFW `train` person with two or more photos is enrolled from photo 1 and
probed with photo 2, as it is (*crop*) and placed in door frames with the face 80, 120 and 160 px wide
(convert/bench/door.py, clean variant; --widths and --variant for others); every probe is scored against
every enrolment, a lost face is a rejection. Per bundle: sparsity, gzip size of the embedder, operating
threshold and the train FRR `convert` chose it with; per probe set: TAR at FAR 1e-2 and 1e-3, and at the bundle's own threshold the share of
owner probes that pass and of stranger comparisons that pass. Every bundle embeds the same frames in this
run. Train people, because this is where a default is chosen (../shared/data/INDEX.md); `--split test` reports
on the people nothing was chosen on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import lfw_dir, table

from convert.bench.door import CONDITIONS
from convert.bench.machine import machine

WIDTHS = (80, 120, 160)


def pipeline(bundle: Path, threads: int):
    """(the door benchmark's facelock pipeline on this bundle, its manifest)."""
    from convert.bench.door import OursAtTheDoor
    from edge.models.bundle import load_bundle
    from edge.vision.build import bundle_stages

    loaded = load_bundle(bundle)
    return OursAtTheDoor(bundle_stages(loaded, num_threads=threads, use_edgetpu=False)), loaded.manifest


def embed_all(pipe, images: list, centres: list | None, width: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(unit embeddings, found): a face counts when it is the placed one (within half its width)."""
    from convert.bench.door import placed_face

    embs = []
    for i, image in enumerate(images):
        e, where, _ok = pipe.embed(image)
        lost = e is None or (centres is not None and not placed_face(where, centres[i], width))
        embs.append(None if lost else np.asarray(e, np.float32))
    dim = next((len(e) for e in embs if e is not None), 1)  # the bundle's embedding size, whatever it is
    found = np.array([e is not None for e in embs])
    return np.stack([np.zeros(dim, np.float32) if e is None else e for e in embs]), found


def figures(probes: np.ndarray, found: np.ndarray, gallery: np.ndarray, enrolled: np.ndarray,
            threshold: float) -> dict:
    from convert.bench.door import _scores
    from convert.compress.metrics import roc_curve, tar_at_far

    s, same = _scores(probes, found, gallery, enrolled, euclidean=False)  # door.py's scoring, a lost face -inf
    roc = roc_curve(s, same)
    return {"lost": int((~found).sum()), "tar_1e2": tar_at_far(roc, 1e-2), "tar_1e3": tar_at_far(roc, 1e-3),
            "owner_pass": float((s[same] >= threshold).mean()), "stranger_pass": float((s[~same] >= threshold).mean())}


def measure(bundles: list[Path], root: Path, people_limit: int | None, threads: int, widths=WIDTHS,
            variant: str = "clean", split: str = "train") -> dict:
    from convert.bench.door import door_frame, door_people
    from convert.bench.util import bar
    from edge.images import read_image_rgb

    people = door_people(root, people_limit, split=split)
    enrol = [read_image_rgb(p.enrol) for p in people]
    probe = [read_image_rgb(p.probe) for p in people]
    pipes = {str(b): pipeline(b, threads) for b in bundles}
    out = {"people": len(people), "split": split, "variant": variant, "bundles": {}}
    galleries = {}
    for name, (pipe, manifest) in pipes.items():
        galleries[name] = embed_all(pipe, enrol, None, None)
        m = manifest["metrics"]
        out["bundles"][name] = {"sparsity": m.get("sparsity", {}).get("overall", 0.0),
                                "gzip_mb": m["sizes"]["int8_gzip_bytes"] / 1e6,
                                "threshold": manifest["threshold"]["cosine"],
                                "train_frr": manifest["threshold"].get("train_frr"), "probes": {}}
    for width in bar([None, *widths], "probe sets", True):
        if width is None:
            images, centres, key = probe, None, "crop"
        else:
            rng = np.random.default_rng([11, width])
            images, centres = zip(*(door_frame(photo, width, rng, variant) for photo in probe))
            key = f"{width} px" if variant == "clean" else f"{width} px {variant}"
        for name, (pipe, _m) in pipes.items():
            emb, found = embed_all(pipe, list(images), centres and list(centres), width)
            out["bundles"][name]["probes"][key] = figures(emb, found, *galleries[name], out["bundles"][name]["threshold"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", action="append", type=Path, required=True, help="a model bundle (repeat to compare)")
    ap.add_argument("--lfw", help="LFW folder (default ../shared/data/lfw)")
    ap.add_argument("--people", type=int, help="only N people, drawn at random (default: all with 2+ photos)")
    ap.add_argument("--split", choices=("train", "test"), default="train",
                    help="LFW people to use (default train: where defaults are chosen; test to report)")
    ap.add_argument("--widths", default=",".join(map(str, WIDTHS)),
                    help=f"door-frame face widths in px, comma-separated (default {','.join(map(str, WIDTHS))})")
    ap.add_argument("--variant", default="clean", choices=tuple(CONDITIONS),
                    help="door-frame picture (convert/bench/door.py CONDITIONS; default clean)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    for b in args.bundle:
        if not (b / "manifest.json").is_file():
            raise SystemExit(f"{b}: no bundle there (manifest.json missing); run `facelock convert --out {b}`")
    root = lfw_dir(args.lfw)
    if not (root / "split.csv").is_file():
        raise SystemExit(f"LFW with split.csv not found at {root}; pass --lfw DIR")
    m = machine()
    print(f"CPU: {m['cpu']}, {m['usable_cores']} usable cores, SIMD {m['simd'] or 'unknown'}")
    try:
        widths = tuple(int(w) for w in args.widths.split(","))
    except ValueError:
        raise SystemExit(f"--widths {args.widths!r}: expected face widths in px, e.g. 40,60,80") from None
    res = measure(args.bundle, root, args.people, args.threads, widths, args.variant, args.split)
    print(f"{res['people']} LFW {args.split} people, enrolled from photo 1, probed with photo 2\n")
    print(table([[n, f"{100 * b['sparsity']:.1f}%", f"{b['gzip_mb']:.2f}", f"{b['threshold']:.4f}",
                  f"{100 * b['train_frr']:.2f}%" if b["train_frr"] is not None else "n/a"]
                 for n, b in res["bundles"].items()],
                ["bundle", "sparsity", "embedder gzip MB", "threshold", "train FRR at it"]))
    print()
    rows = [[n, k, p["lost"], f"{100 * p['tar_1e2']:.2f}%", f"{100 * p['tar_1e3']:.2f}%",
             f"{100 * p['owner_pass']:.2f}%", f"{100 * p['stranger_pass']:.3f}%"]
            for k in res["bundles"][next(iter(res["bundles"]))]["probes"] for n, b in res["bundles"].items()
            for p in [b["probes"][k]]]
    print(table(rows, ["bundle", "probe", "lost", "TAR@FAR 1e-2", "TAR@FAR 1e-3", "owners pass at threshold",
                       "strangers pass at threshold"]))
    if args.json:
        Path(args.json).write_text(json.dumps({**res, "machine": m}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

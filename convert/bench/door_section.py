"""Section 7 of `facelock bench`, door distance (convert.bench.door measures): run it, render its markdown,
plot TAR against face width. Also what benchmarks/door.py prints."""

from __future__ import annotations

from pathlib import Path

from convert.bench.door import BEFORE, FACELOCK, PEER, WIDTHS, door_people, door_table, stability
from convert.bench.util import say

QUICK_PEOPLE = 2  # the demo faces: two people
TARGETS = {40: (0.10, 0.85), 60: (0.02, 0.95)}  # width: (most lost, least TAR@FAR 1e-2); 80+: (0.01, 0.99)


def door_pipelines(bundle: Path, threads: int, peer: bool) -> dict:
    """name -> pipeline: facelock from the bundle, facelock before the landmark model (same model, run once per
    chip as it was then, whatever the bundle's mirror averaging), and
    face_recognition when dlib is there."""
    from convert.bench.door import OursAtTheDoor, PeerAtTheDoor
    from edge.models.bundle import load_bundle
    from edge.models.store import DETECTOR, model_path
    from edge.vision.align import KEYPOINT_TEMPLATE_FILE, FaceAligner, load_template
    from edge.vision.build import Stages, bundle_stages, detector
    from edge.vision.embed import TFLiteEmbedder

    loaded = load_bundle(bundle)
    stages = bundle_stages(loaded, num_threads=threads, use_edgetpu=False)
    legacy = load_template(KEYPOINT_TEMPLATE_FILE)
    once = TFLiteEmbedder(loaded.embedder_file, num_threads=threads, card=loaded.card, mirror=False)
    before = Stages(detector(model_path(DETECTOR), num_threads=threads), FaceAligner(template=legacy), once)
    pipes = {FACELOCK: OursAtTheDoor(stages), BEFORE: OursAtTheDoor(before)}
    if peer:
        pipes[PEER] = PeerAtTheDoor()
    return pipes


def run_door(root: Path, bundle: Path, threads: int = 2, peer: bool = True, limit: int | None = None,
             extra_stability: dict | None = None, progress: bool = False) -> dict:
    """The whole section's figures: the door table and the stability figure (`extra_stability`: more
    pipelines for the stability figure alone, e.g. the float Keras model)."""
    from convert.demo_faces import load_portraits

    pipes = door_pipelines(bundle, threads, peer)
    people = door_people(root, limit)
    say(f"door distance: {len(people)} people x {len(WIDTHS)} sizes x 3 variants, {len(pipes)} pipelines")
    res = door_table(pipes, root, people, progress=progress)
    portrait = load_portraits()["eileen_collins"]
    res["stability"] = stability({**pipes, **(extra_stability or {})}, portrait)
    res["bundle"] = str(bundle)
    return res


def door(opts, ds, conv, peer_ok: bool, img: Path) -> dict:
    """`facelock bench` section 7 on the run's main bundle (and its float Keras model for the stability)."""
    from convert.bench.door import OursAtTheDoor
    from convert.keras_embedder import KerasEmbedder
    from edge.vision.align import FaceAligner
    from edge.vision.build import Stages, detector, landmarker

    marks = landmarker(num_threads=max(opts.threads))
    keras = Stages(detector(num_threads=max(opts.threads)), FaceAligner(landmarker=marks),
                   KerasEmbedder(conv.source_model()), marks)
    root = ds.root if opts.quick else (opts.lfw or ds.pairs.parent)
    res = run_door(Path(root), conv.bundle, max(opts.threads), peer_ok,
                   extra_stability={"facelock, float (Keras)": OursAtTheDoor(keras)}, progress=opts.progress)
    res["quick"] = opts.quick
    res["plot"] = plot_door(res, img / "door_tar.png").name
    return res


def plot_door(res: dict, path: Path) -> Path:
    from convert.bench.util import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"clean": "-", "low_light": "--", "blur": ":"}
    colours = {FACELOCK: "tab:blue", BEFORE: "tab:grey", PEER: "tab:orange"}
    for name, per in res["results"].items():
        for variant, cells in per.items():
            widths = sorted(int(w) for w in cells)
            ax.plot(widths, [100 * cells[w]["tar_1e2"] for w in widths], styles.get(variant, "-"), marker="o",
                    color=colours.get(name), label=f"{name}, {variant.replace('_', ' ')}")
    ax.set_xlabel("face width in a 640x480 frame (px)")
    ax.set_ylabel("TAR at FAR 1e-2 (%)")
    ax.set_title(f"Door distance: LFW test people ({res['people']}), enrolled from one photo")
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def door_rows(res: dict) -> tuple[list[str], list[list[str]]]:
    """The table: one row per variant and width, lost / TAR@1e-2 / TAR@1e-3 for each pipeline."""
    names = list(res["results"])
    header = ["variant", "face px"] + [f"{n}: lost / TAR 1e-2 / TAR 1e-3" for n in names]
    if FACELOCK in names:
        header.append("facelock: gated by the lock's defaults")
    rows = []
    for variant in res["variants"]:
        for w in res["widths"]:
            row = [variant.replace("_", " "), str(w)]
            for n in names:
                c = _cell(res, n, variant, w)
                row.append(f"{_pct(c['lost'] / c['frames'])} / {_pct(c['tar_1e2'])} / {_pct(c['tar_1e3'])}")
            if FACELOCK in names:
                c = _cell(res, FACELOCK, variant, w)
                row.append(f"{c['gated']}/{c['frames'] - c['lost']}")
            rows.append(row)
    return header, rows


def _cell(res: dict, name: str, variant: str, width) -> dict:
    cells = res["results"][name][variant]
    return cells[width] if width in cells else cells[str(width)]  # results.json turns keys into strings


def verdicts(res: dict) -> list[list[str]]:
    """The issue's targets on the clean frames: [target, measured, goal, PASS/FAIL]."""
    if FACELOCK not in res["results"]:
        return []
    out = []
    for w in res["widths"]:
        most_lost, least_tar = TARGETS.get(int(w), (0.01, 0.99))
        c = _cell(res, FACELOCK, "clean", w)
        lost, tar = c["lost"] / c["frames"], c["tar_1e2"]
        peer = _cell(res, PEER, "clean", w) if PEER in res["results"] else None
        ok = lost <= most_lost and tar >= least_tar
        goal = f"lost <= {most_lost:.0%}, TAR >= {least_tar:.0%}"
        if peer is not None:
            ok = ok and tar >= peer["tar_1e2"] and lost <= peer["lost"] / peer["frames"]
            goal += f", >= peer ({_pct(peer['tar_1e2'])}, lost {_pct(peer['lost'] / peer['frames'])})"
        out.append([f"{w} px clean: lost / TAR@FAR 1e-2", f"{_pct(lost)} / {_pct(tar)}", goal,
                    "PASS" if ok else "FAIL"])
    st = res["stability"].get(FACELOCK)
    if st:
        out.append(["same-portrait stability, median cosine (int8)", f"{st['median_cosine']:.4f}", ">= 0.98",
                    "PASS" if st["median_cosine"] >= 0.98 else "FAIL"])
    return out


def render_door(res: dict) -> list[str]:
    from convert.bench.door import __doc__ as method

    header, rows = door_rows(res)
    L = ["## 7. Door distance", "",
         ("How it was measured (convert/bench/door.py): " + " ".join(method.split("\n\n")[1].split())), "",
         f"{res['people']} people (enrolled: " + ", ".join(f"{n} {k}" for n, k in res["enrolled"].items())
         + "); every cell is the same frames for every pipeline.", ""]
    if res.get("quick"):
        L += [("**Quick mode: the two demo portraits, so TAR figures rest on one impostor each; NOT comparable "
              "with the LFW figures.**"), ""]
    L.append(_md_table(header, rows))
    L += ["", ("(lost = no face, or the wrong one; TAR on all frames, a lost frame is a rejection; *gated* = of "
          "the frames facelock recognised, how many the lock's default quality gates would refuse)"), ""]
    st = res["stability"]
    L += [("**Same-portrait stability** (the enrolment portrait in `make demo`'s frames: 80% of the frame "
          "height, +-3 degrees, +-15 px; cosine against its own enrolment)"), ""]
    L.append(_md_table(["pipeline", "median cosine", "lowest", "frames"],
                       [[n, f"{s['median_cosine']:.4f}", f"{s['min_cosine']:.4f}", str(s["frames"])]
                        for n, s in st.items()]))
    v = verdicts(res)
    if v:
        L += ["", _md_table(["target", "measured", "goal", "verdict"], v)]
    if res.get("plot"):
        L += ["", f"![TAR against face width](img/{res['plot']})"]
    L.append("")
    return L


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)

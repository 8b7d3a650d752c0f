"""`facelock convert`: prune, int8-quantize and validate a Keras face embedder, and write a model bundle."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from convert.compress.run import ConvertOptions
from convert.compress.run import __doc__ as PIPELINE_DOC
from convert.datasets import DEFAULT_LFW
from convert.errors import DataError

# One place holds the conversion defaults: ConvertOptions (the help shows them).
DEFAULTS = {f.name: f.default for f in dataclasses.fields(ConvertOptions)}

EPILOG = """\
examples:
  facelock convert                               # dlib ResNet port, LFW train people, 50% sparsity
  facelock convert --quick --out out/demo        # small and fast (demo, tests)
  facelock convert --model my_embedder.keras --data photos/ --pairs pairs.csv --sparsity 0.3
  facelock convert --model arcface.keras --input-size 112 --channels rgb --normalize "mean=127.5,std=128" \\
                   --template arcface112              # bring your own model (docs/conversion.md)
  facelock convert --antispoof my_antispoof.keras --antispoof-crop 2.7 --antispoof-live-class 1 \\
                   --antispoof-licence "Apache-2.0"  # and your anti-spoofing CNN (docs/liveness.md)

Bring your own model: the four "model input" options describe what the Keras model wants; they go into the
bundle's model card, and the board cuts chips of that size with that template. The model must take
(batch, S, S, 3) and give (batch, D); an --input-size it does not take is refused before any work. Channel
order and normalisation become a fixed layer in front of the model, so the int8 model still takes RGB
pixels 0..255 exactly (scale 1, zero point -128). Defaults: the model's own input size, rgb, none, and the
preset made for that size (dlib150 for 150, arcface112 for 112, facenet160 for 160).

Bring your anti-spoofing CNN: it takes a square crop around the face (--antispoof-crop: its side over the
detector box's) and gives (batch, K) scores; the live class, its threshold, licence and the source's sha256
go into the bundle beside its int8 model, and the report says what int8 cost it. facelock ships none.

Data: any folder of face photos, one sub-folder per person. With an LFW-style split.csv next to them only
the `train` people are used for fine-tuning, calibration and the threshold; the pair list (file_a,file_b,same
[,fold]) is only ever used to report results.
"""


def _side(text: str) -> int:
    """`112` or `112x112` -> 112 (chips are square)."""
    parts = text.lower().split("x")
    try:
        sides = {int(p) for p in parts}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a size in pixels, S or SxS") from None
    if len(parts) > 2 or len(sides) != 1:
        raise argparse.ArgumentTypeError(f"{text!r}: chips are square; give S or SxS")
    return sides.pop()


def _folds(text: str) -> tuple[int, ...]:
    if "-" in text:
        lo, hi = text.split("-", 1)
        return tuple(range(int(lo), int(hi) + 1))
    return tuple(int(x) for x in text.split(","))


def run(args: argparse.Namespace) -> int:
    from convert.compress.run import ConvertOptions, check_inputs, run_convert
    from convert.model_card import CardOptions
    from edge.models.store import default_model

    workdir = Path(args.workdir or Path(args.out).parent / "work")
    data = Path(args.data) if args.data else DEFAULT_LFW
    if not args.data and not data.is_dir():
        if not args.quick:
            raise DataError(f"no --data given and LFW is not at {DEFAULT_LFW}: pass a folder of face photos "
                            "(one sub-folder per person), or --quick to use the embedded demo faces")
        from convert.demo_faces import write_demo_faces

        data = workdir / "demo_faces"
        if not (data / "pairs.csv").is_file():
            write_demo_faces(data)
        print(f"[convert] LFW not found at {DEFAULT_LFW}: using the embedded demo faces in {data}", file=sys.stderr)
    default_pairs = next((data / n for n in ("pairs_view2.csv", "pairs.csv") if (data / n).is_file()), None)
    pairs = Path(args.pairs) if args.pairs else default_pairs
    if args.no_pairs:
        pairs = None
    spoof = None
    if args.antispoof:
        from convert.antispoof import AntiSpoofSource

        spoof = AntiSpoofSource(Path(args.antispoof), args.antispoof_crop, args.antispoof_live_class,
                                args.antispoof_output, args.antispoof_channels.upper(), args.antispoof_normalize,
                                args.antispoof_threshold, args.antispoof_licence)
    opts = ConvertOptions(
        model=Path(args.model) if args.model else default_model(), data=data, pairs=pairs,
        folds=_folds(args.folds), out=Path(args.out), workdir=workdir,
        sparsity=args.sparsity, epochs=args.epochs, seed=args.seed, train_faces=args.train_faces,
        calibration=args.calibration, target_far=args.target_far, max_pairs=args.max_pairs, threads=args.threads,
        qat=args.qat, card=CardOptions(input_size=args.input_size, channels=args.channels,
                                       normalize=args.normalize, template=args.template,
                                       mirror_average=not args.no_mirror),
        antispoof=spoof,
    )
    if args.quick:
        opts = opts.quickened()
    check_inputs(opts)
    report = run_convert(opts)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0


def format_report(report: dict) -> str:
    lines = []
    s = report["sizes"]
    lines.append(f"sizes: float TFLite {s['float_tflite_bytes'] / 1e6:.2f} MB, int8 {s['int8_tflite_bytes'] / 1e6:.2f} MB "
                 f"({100 * s['int8_vs_float']:.1f}%), int8 gzip {s['int8_gzip_bytes'] / 1e6:.2f} MB "
                 f"({100 * s['int8_gzip_vs_float']:.1f}%)")
    if "sparsity" in report:
        lines.append(f"sparsity: {100 * report['sparsity']['overall']:.1f}% overall")
    t = report["threshold"]
    lines.append(f"threshold: cosine >= {t['cosine']:.4f} for FAR {t['target_far']:g} on training people "
                 f"(train FRR {100 * (t['train_frr'] or 0):.2f}%)")
    if "verification" in report:
        lines.append(f"{'model':<14} {'AUC':>7} {'best acc':>9} {'TAR@1e-2':>9} {'TAR@1e-3':>9} {'EER':>6}")
        for name, m in report["verification"].items():
            lines.append(f"{name:<14} {m['auc']:7.4f} {100 * m['best_accuracy']:8.2f}% "
                         f"{100 * m['tar_at_far_1e2']:8.2f}% {100 * m['tar_at_far_1e3']:8.2f}% {100 * m['eer']:5.2f}%")
        for name, a in report["agreement_vs_float"].items():
            lines.append(f"{name} vs float cosine: median {a['median_cosine']:.5f}, 1st percentile {a['p1_cosine']:.5f}")
    if "antispoof" in report:
        a = report["antispoof"]
        lines.append(f"anti-spoofing CNN {a['name']} ({a['licence']}), threshold {a['threshold']:g}: bona fide "
                     f"frames taken for attacks float {100 * a['bona_fide_as_attack_float']:.1f}%, int8 "
                     f"{100 * a['bona_fide_as_attack_int8']:.1f}% of {a['bona_fide_frames']}; decisions agree "
                     f"{100 * a['decision_agreement']:.1f}%, live score |float - int8| mean "
                     f"{a['live_score_abs_diff']['mean']:.4f}, max {a['live_score_abs_diff']['max']:.4f}")
    e = report["edgetpu"]
    lines.append(f"Edge TPU: {'ready' if e['ready'] else 'NOT ready'}; ops {e['ops']}; "
                 f"{'compiled' if e['compiled'] else e['log'].splitlines()[0] if e['log'] else ''}")
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="prune + int8-quantize + validate an embedder into a model bundle",
                       description=PIPELINE_DOC, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="tf_keras model file (default: the dlib ResNet port from `facelock models build`)")
    p.add_argument("--data", help=f"folder of face photos (default: {DEFAULT_LFW})")
    p.add_argument("--pairs", help="labelled pair list CSV for validation (default: the data folder's pairs_view2.csv)")
    p.add_argument("--no-pairs", action="store_true", help="skip pair validation")
    p.add_argument("--folds", default="6-10", help="folds of the pair list to report on (default 6-10)")
    p.add_argument("--out", default="out/bundle", help="bundle folder to write (a .tar.gz is written beside it)")
    p.add_argument("--workdir", help="checkpoints, caches and reports (default: beside --out, 'work')")
    p.add_argument("--sparsity", type=float, default=DEFAULTS["sparsity"],
                   help=f"target weight sparsity, 0 to skip pruning (default {DEFAULTS['sparsity']})")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"],
                   help=f"distillation fine-tune epochs (default {DEFAULTS['epochs']}; fewer lose accuracy at the door, "
                        "see docs/conversion.md)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                   help=f"the fine-tune's data order and augmentation (default {DEFAULTS['seed']}); two seeds show "
                        "how far bundles differ by chance alone (docs/conversion.md)")
    p.add_argument("--train-faces", type=int, default=3000, help="training photos to use (default 3000)")
    p.add_argument("--calibration", type=int, default=400, help="int8 calibration chips, >= 300 (default 400)")
    p.add_argument("--target-far", type=float, default=1e-3, help="false accept rate for the threshold (default 1e-3)")
    p.add_argument("--max-pairs", type=int, help="validate on at most this many pairs")
    p.add_argument("--qat", action="store_true",
                   help="quantization-aware fine-tune keeping the sparsity, for models that lose too much in int8")
    card = p.add_argument_group("model input (written into the bundle's model card)")
    card.add_argument("--input-size", type=_side, metavar="S",
                      help="chip side in pixels the model takes, S or SxS (default: the model's own input size)")
    card.add_argument("--channels", type=str.lower, choices=("rgb", "bgr"), default="rgb",
                      help="channel order the model expects (default rgb)")
    card.add_argument("--normalize", default="none", metavar="SPEC",
                      help="what the model wants done to 0..255 pixels: none, or mean=M,std=S for (x - M) / S, "
                           "M and S one number or R:G:B (e.g. mean=127.5,std=128 for [-1, 1]; mean=0,std=255 "
                           "for [0, 1]). Default none")
    card.add_argument("--template", metavar="NAME|FILE",
                      help="alignment template: dlib150, arcface112 or facenet160 (scaled to --input-size), or "
                           "a template JSON for that size (default: the preset made for the input size)")
    card.add_argument("--no-mirror", action="store_true",
                      help="embed each chip once (default: the mean of the chip's and its mirror image's "
                           "embeddings, which costs a second run of the embedder per frame and is more accurate; "
                           "the threshold is chosen the way the bundle says)")
    spoof = p.add_argument_group("anti-spoofing CNN (optional; written into the bundle with its own card)")
    spoof.add_argument("--antispoof", metavar="MODEL.keras", help="a tf_keras anti-spoofing model to bundle, int8")
    spoof.add_argument("--antispoof-crop", type=float, default=1.5, metavar="SCALE",
                       help="the crop's side over the face box's longer side, centred on it (default 1.5)")
    spoof.add_argument("--antispoof-live-class", type=int, metavar="I",
                       help="which of the model's K outputs is the live (bona fide) class (needed when K > 1)")
    spoof.add_argument("--antispoof-output", choices=("probabilities", "logits"), default="probabilities",
                       help="logits: the board applies softmax (K > 1) or the sigmoid (default probabilities)")
    spoof.add_argument("--antispoof-channels", type=str.lower, choices=("rgb", "bgr"), default="rgb",
                       help="channel order the model expects (default rgb)")
    spoof.add_argument("--antispoof-normalize", default="none", metavar="SPEC", help="as --normalize (default none)")
    spoof.add_argument("--antispoof-threshold", type=float, default=0.5, metavar="T",
                       help="live score a frame needs, in (0, 1) (default 0.5; [antispoof] threshold overrides)")
    spoof.add_argument("--antispoof-licence", default="unknown", metavar="TEXT",
                       help="the model's licence, recorded in the bundle (default 'unknown')")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="small and fast (about 2 minutes): 1 epoch over 960 faces, 600 pairs")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(handler=run)

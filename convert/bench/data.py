"""What `facelock bench` measures on: its options, and the data set (LFW View 2 folds 6-10, or in quick
mode the embedded demo faces)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from convert.datasets import DEFAULT_LFW
from convert.errors import DataError

FULL_SPARSITIES = (0.0, 0.3, 0.5, 0.7)
QUICK_SPARSITIES = (0.0, 0.5)
MAIN_SPARSITY = 0.5  # the product default: the accuracy and speed sections use this run's models
PEER = "face_recognition (dlib)"
LFW_RULE = ("calibration, fine-tuning and thresholds use LFW `train` people only; every figure below is on "
            "the pairs of View 2 folds 6-10 (all `test` people, disjoint from `train`)")


@dataclass(frozen=True)
class BenchOptions:
    out: Path = Path("docs")
    work: Path = Path("out/bench")
    lfw: Path | None = None
    model: Path | None = None  # Keras embedder (default: the dlib ResNet port)
    quick: bool = False
    threads: tuple[int, ...] = (1, 2)
    sparsities: tuple[float, ...] | None = None  # default: 0/30/50/70% (quick: 0/50%)
    frames: int | None = None  # frames for the speed section (default 100; quick 12)
    repeat: int | None = None  # passes over those frames (default 3; quick 2)
    match_repeat: int | None = None  # matches per gallery size (default 300; quick 40)
    peer: bool = True
    reuse: tuple[Path, ...] = (Path("out/full"),)  # earlier convert runs (<dir>/bundle, <dir>/work)
    progress: bool = True

    def resolved(self) -> BenchOptions:
        q = self.quick
        return replace(
            self,
            sparsities=tuple(sorted(set(self.sparsities or (QUICK_SPARSITIES if q else FULL_SPARSITIES)))),
            frames=self.frames or (12 if q else 100),
            repeat=self.repeat or (2 if q else 3),
            match_repeat=self.match_repeat or (40 if q else 300),
        )

    @property
    def mode(self) -> str:
        """The work sub-folder of this mode: "quick" or "full"."""
        return "quick" if self.quick else "full"


@dataclass
class DataSet:
    name: str
    root: Path  # face photos (one folder per person)
    pairs: Path  # labelled pair list
    folds: tuple[int, ...]
    note: str


def dataset(opts: BenchOptions) -> DataSet:
    if opts.quick:
        from convert.demo_faces import write_demo_faces

        root = opts.work / "quick" / "demo_faces"
        if not (root / "pairs.csv").is_file():
            write_demo_faces(root)
        return DataSet("demo faces", root, root / "pairs.csv", (),
                       "quick mode: the embedded demo faces (two public-domain portraits, varied); "
                       "NOT comparable with LFW figures")
    lfw = Path(opts.lfw) if opts.lfw else DEFAULT_LFW
    missing = [n for n in ("pairs_view2.csv", "split.csv") if not (lfw / n).is_file()]
    if missing:
        raise DataError(
            f"full mode needs LFW at {lfw} (expected {', '.join(missing)} there and one folder of photos per "
            "person, see ../shared/data/INDEX.md); pass --lfw DIR, set FACELOCK_LFW, or use --quick for the "
            "embedded demo faces")
    return DataSet("LFW View 2, folds 6-10", lfw, lfw / "pairs_view2.csv", (6, 7, 8, 9, 10), LFW_RULE)


def pair_list(ds: DataSet):
    """The data set's pair list (convert.compress.validate.PairList), restricted to its folds."""
    from convert.compress.validate import read_pair_list

    return read_pair_list(ds.pairs, set(ds.folds) if ds.folds else None)

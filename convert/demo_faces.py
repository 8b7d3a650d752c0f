"""An embedded default data set for the demo and the tests: the two public-domain fixture portraits (Eileen
Collins, NASA; Grace Hopper, US Navy) varied the way a door camera varies a face — crops, scale, small
rotations, brightness, mirror images — written as a face folder with a pair list; and door-camera frames
of them for replays. Real faces, shipped with the code, so `make demo` (facelock/demo.py), `facelock convert
--quick`, `facelock bench --quick` and the tests need no downloaded data set."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parent / "portraits"  # package data: the wheel carries them
PEOPLE = {"eileen_collins": "astronaut.png", "grace_hopper": "grace_hopper.jpg"}


def load_portraits(folder: Path = FIXTURES) -> dict[str, np.ndarray]:
    from edge.images import read_image_rgb

    return {person: read_image_rgb(folder / name) for person, name in PEOPLE.items()}


def write_demo_faces(root: str | Path, per_person: int = 170, pairs: int = 60, seed: int = 0,
                     portraits: dict[str, np.ndarray] | None = None) -> Path:
    """Write `root/<person>/<i>.jpg` and `root/pairs.csv` (half genuine, half impostor pairs; no folds).
    Returns the pair list's path."""
    import cv2

    root = Path(root)
    portraits = portraits or load_portraits()
    rng = np.random.default_rng(seed)
    for person, image in portraits.items():
        folder = root / person
        folder.mkdir(parents=True, exist_ok=True)
        h, w = image.shape[:2]
        for i in range(per_person):
            centre = (w / 2 + rng.uniform(-10, 10), h / 2 + rng.uniform(-10, 10))
            m = cv2.getRotationMatrix2D(centre, rng.uniform(-8, 8), rng.uniform(0.75, 1.1))
            out = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT)
            out = np.clip(out.astype(np.float32) * rng.uniform(0.75, 1.25), 0, 255).astype(np.uint8)
            if rng.random() < 0.5:
                out = out[:, ::-1]
            cv2.imwrite(str(folder / f"{i}.jpg"), cv2.cvtColor(out, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 90])
    names = list(portraits)
    pair_list = root / "pairs.csv"
    with open(pair_list, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_a", "file_b", "same"])
        for k in range(pairs):
            i, j = rng.choice(per_person, 2, replace=False)
            person = names[k % len(names)]
            writer.writerow([f"{person}/{i}.jpg", f"{person}/{j}.jpg", 1])
            writer.writerow([f"{names[0]}/{i}.jpg", f"{names[1]}/{j}.jpg", 0])
    return pair_list


def door_frame(image: np.ndarray | None, rng: np.random.Generator, size: tuple[int, int] = (640, 480),
               background: int = 90) -> np.ndarray:
    """One RGB 'door camera' frame of `size` (w, h): the face photo `image` scaled to 80% of the frame
    height, slightly rotated and shifted (a person moving in front of the lock), or an empty doorway."""
    import cv2

    w, h = size
    if image is None:
        return np.full((h, w, 3), background, dtype=np.uint8)
    scale = 0.8 * h / image.shape[0]
    m = cv2.getRotationMatrix2D((image.shape[1] / 2, image.shape[0] / 2), rng.uniform(-3, 3), scale)
    m[:, 2] += [w / 2 - image.shape[1] / 2 + rng.uniform(-15, 15), h / 2 - image.shape[0] / 2]
    return cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(background, background, background))


def write_door_frames(folder: str | Path, portraits: dict[str, np.ndarray], sequence: list[tuple[str | None, int]],
                      size: tuple[int, int] = (640, 480), seed: int = 1) -> int:
    """A replay folder of door-camera frames (`door_frame`): for each (person or None, count), that many
    frames of the person's portrait or of an empty doorway. Returns the number of frames."""
    import cv2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    index = 0
    for person, count in sequence:
        for _ in range(count):
            canvas = door_frame(portraits[person] if person is not None else None, rng, size)
            cv2.imwrite(str(folder / f"{index:04d}.jpg"), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
            index += 1
    return index

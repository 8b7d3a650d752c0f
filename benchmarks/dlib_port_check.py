"""How close is the Keras port to dlib's own ResNet? Max abs difference of the 128-d descriptors on real
chips cut by dlib itself (HOG + 5 landmarks + get_face_chip): the fixture portraits with dlib's jitter, and
LFW test people when LFW is present.

    .venv/bin/python benchmarks/dlib_port_check.py [--lfw-images 300]
"""

from __future__ import annotations

import argparse

import numpy as np
from common import DEFAULT_LFW, REPO, people_of_split


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw-images", type=int, default=300)
    args = ap.parse_args()

    import cv2
    import dlib

    from convert.dlib_port import build_keras_model, read_dlib_resnet
    from edge.models.store import model_path

    resnet_path = str(model_path("dlib_face_recognition_resnet_model_v1.dat"))
    reference = dlib.face_recognition_model_v1(resnet_path)
    predictor = dlib.shape_predictor(str(model_path("shape_predictor_5_face_landmarks.dat")))
    detector = dlib.get_frontal_face_detector()
    port = build_keras_model(read_dlib_resnet(resnet_path))

    def chip_of(path) -> np.ndarray | None:
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        boxes = detector(image, 1)
        return dlib.get_face_chip(image, predictor(image, boxes[0]), size=150, padding=0.25) if boxes else None

    sets = {}
    fixture_chips = []
    for f in sorted((REPO / "convert" / "portraits").glob("*.[jp][pn]g")):
        chip = chip_of(f)
        fixture_chips += [chip, *dlib.jitter_image(chip, num_jitters=11)]
    sets["fixture portraits + dlib jitter"] = np.stack(fixture_chips)
    if (DEFAULT_LFW / "split.csv").is_file():
        people = people_of_split(DEFAULT_LFW, "test")
        chips = [c for c in (chip_of(p) for p in (DEFAULT_LFW / n / "1.jpg" for n in people[: args.lfw_images]))
                 if c is not None]
        sets["LFW test people (first image)"] = np.stack(chips)

    for name, chips in sets.items():
        ours = port(chips.astype(np.float32), training=False).numpy()
        theirs = np.array([np.array(reference.compute_face_descriptor(c)) for c in chips])
        diff = np.abs(ours - theirs)
        print(f"{name}: {len(chips)} chips, max abs difference {diff.max():.3g}, "
              f"mean {diff.mean():.3g} (descriptor norms ~{np.linalg.norm(theirs, axis=1).mean():.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A .tflite cut short or pointing outside itself is refused, naming the part, before a runtime sees it
(tflite-runtime 2.14 on the boards follows such offsets and dies with SIGSEGV: tests/board/board_user.py
runs this file there too)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from edge.errors import ModelError
from edge.vision.interpreter import check_tflite_file
from edge.vision.tflite_bounds import Truncated, check_bounds


@pytest.fixture(scope="module")
def fetched(models_dir):
    from edge.models.store import DETECTOR, DETECTOR_FULL_RANGE, LANDMARKS, model_path

    return {name: model_path(name, directory=models_dir).read_bytes()
            for name in (DETECTOR, DETECTOR_FULL_RANGE, LANDMARKS)}


def test_every_fetched_model_lies_inside_its_file(fetched):
    for name, data in fetched.items():
        try:
            check_bounds(data)
        except Truncated as exc:
            pytest.fail(f"{name}: {exc}")


def test_a_model_cut_short_anywhere_is_refused_naming_the_file_and_the_part(fetched, tmp_path):
    from edge.models.store import DETECTOR

    data = fetched[DETECTOR]
    # Cut points all over the file (the last few bytes of MediaPipe's files are padding no table refers to:
    # the verifying runtime loads the file without them too).
    cuts = np.linspace(16, len(data) - 64, 60).astype(int)  # under 16 bytes: not a model at all
    for cut in cuts:
        bad = tmp_path / f"cut-{cut}.tflite"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelError, match="lies past the end of the file") as err:
            check_tflite_file(bad)
        assert str(bad) in str(err.value) and f"({cut} bytes)" in str(err.value)


def test_an_offset_that_points_outside_the_file_is_named(fetched):
    from edge.models.store import LANDMARKS

    data = bytearray(fetched[LANDMARKS])
    root = struct.unpack_from("<I", data, 0)[0]
    wild = bytearray(data)
    struct.pack_into("<I", wild, 0, len(data) + 1000)  # the root table beyond the end
    with pytest.raises(Truncated, match=r"^model at byte"):
        check_bounds(bytes(wild))
    wild = bytearray(data)
    struct.pack_into("<i", wild, root, -(len(data) * 2))  # the model's vtable beyond the end
    with pytest.raises(Truncated, match="model's vtable"):
        check_bounds(bytes(wild))

"""`facelock convert --quick` end to end on a small folder of real faces, and what the bundle guarantees."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow_model_optimization", reason="convert needs the [convert] extra")

from convert.compress.run import ConvertOptions, run_convert
from edge.errors import BundleError
from edge.models.bundle import SCHEMA, load_bundle
from edge.vision.build import bundle_embedder


@pytest.fixture(scope="module")
def converted(quick_bundle):
    return quick_bundle


def test_bundle_is_int8_pruned_and_small(converted):
    opts, report = converted
    bundle = load_bundle(opts.out)
    assert bundle.manifest["schema"] == SCHEMA
    emb = bundle.manifest["embedder"]
    # int8 in and out; pixels go in exactly (scale 1, zero point -128)
    assert emb["input"]["dtype"] == "int8" and emb["output"]["dtype"] == "int8"
    assert emb["input"]["scale"] == 1.0 and emb["input"]["zero_point"] == -128
    assert report["sizes"]["int8_vs_float"] <= 0.27
    assert abs(report["sparsity"]["overall"] - 0.5) < 0.02
    assert report["edgetpu"]["ready"], report["edgetpu"]["problems"]
    assert (opts.out.parent / "bundle.tar.gz").is_file()
    assert "cosine" in bundle.manifest["threshold"]


def test_bundle_shares_the_embedding_space_of_its_source_model(converted, keras_model_path):
    """A gallery enrolled with the float model matches with the int8 bundle made from it, and the
    gallery can tell both from an unrelated embedder."""
    from convert.keras_embedder import KerasEmbedder

    opts, _ = converted
    space = load_bundle(opts.out).space
    assert space.startswith("space:dlib_resnet_v1@") and space == KerasEmbedder(keras_model_path).space
    assert bundle_embedder(load_bundle(opts.out), num_threads=1).space == space


def test_int8_agrees_with_float_and_separates_people(converted):
    _, report = converted
    assert report["agreement_vs_float"]["int8"]["median_cosine"] > 0.9
    assert report["verification"]["int8"]["auc"] > 0.95
    assert set(report["verification"]) == {"float", "pruned float", "int8"}


def test_the_bundle_embeds_a_chip_and_its_mirror_image_as_its_card_says(converted, portraits):
    """convert's default card asks for mirror averaging: the board's embedder gives the mean of the model's
    embeddings of the chip and of its mirror image, so a mirrored picture embeds the same."""
    from edge.vision.build import load_pipeline_components
    from edge.vision.embed import TFLiteEmbedder, l2_normalize
    from facelock.commands.embed import ImageEmbedder

    opts, _ = converted
    bundle = load_bundle(opts.out)
    assert bundle.card.mirror_average
    stages = load_pipeline_components(opts.out, num_threads=1)
    embedder = stages.embedder
    assert embedder.mirror and embedder.name.endswith("+mirror")
    once = TFLiteEmbedder(bundle.embedder_file, num_threads=1, card=bundle.card, mirror=False)
    pipeline = ImageEmbedder(stages.detector, stages.aligner, embedder, stages.landmarker).pipeline
    chip = stages.aligner.align(portraits[0], pipeline.subject(portraits[0]).face).chip
    flipped = chip[:, ::-1]
    want = l2_normalize(once.embed(chip[None]) + once.embed(flipped[None]))[0]
    got = embedder.embed(chip[None])[0]
    assert np.allclose(got, want, atol=1e-6)
    assert np.allclose(embedder.embed(flipped[None])[0], got, atol=1e-6)
    assert float(once.embed(chip[None])[0] @ once.embed(flipped[None])[0]) < 0.9999  # the two halves differ
    # in two steps (what the lock does when the first run may settle a frame): the same embedding
    first = embedder.embed_once(chip[None])
    assert np.allclose(first, once.embed(chip[None]), atol=1e-6)
    assert np.allclose(embedder.complete(chip[None], first)[0], got, atol=1e-6)


def test_embed_cli_runs_the_bundle(converted, fixtures_dir, keras_model_path):
    from convert.keras_embedder import KerasEmbedder
    from edge.vision.build import load_pipeline_components
    from facelock.commands.embed import ImageEmbedder, read_image_rgb

    opts, _ = converted
    proc = subprocess.run(
        [sys.executable, "-m", "facelock", "embed", "--json", "--model", str(opts.out),
         str(fixtures_dir / "astronaut.png"), str(fixtures_dir / "grace_hopper.jpg")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    a, b = (np.array(r["embedding"]) for r in rows)
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-4)
    # The int8 bundle sees the same face as the float model does, and two people as less alike than that.
    detector, aligner, _ = load_pipeline_components(opts.out)
    reference = ImageEmbedder(detector, aligner, KerasEmbedder(keras_model_path))
    float_a = reference.embed_rgb(read_image_rgb(fixtures_dir / "astronaut.png"))
    assert a @ float_a > 0.9
    assert a @ b < a @ float_a


def test_bundle_refuses_tampering(converted, tmp_path):
    opts, _ = converted
    copy = tmp_path / "bundle"
    shutil.copytree(opts.out, copy)
    model = copy / "embedder.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="embedder.tflite"):
        load_bundle(copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["schema"] = "facelock.bundle/99"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="facelock.bundle/99"):
        load_bundle(copy)


def test_too_few_faces_is_a_clear_error(tmp_path, keras_model_path, fixtures_dir):
    from convert.errors import DataError

    data = tmp_path / "faces" / "someone"
    data.mkdir(parents=True)
    shutil.copy(fixtures_dir / "astronaut.png", data / "a.png")
    (data / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    opts = ConvertOptions(model=keras_model_path, data=tmp_path / "faces", pairs=None,
                          out=tmp_path / "bundle", workdir=tmp_path / "work").quickened()
    with pytest.raises(DataError, match="only 1 usable faces"):
        run_convert(opts)


def test_quantization_aware_finetune_keeps_sparsity(converted, portraits, tmp_path):
    from convert.compress.edgetpu import check_edgetpu
    from convert.compress.prune import PruneOptions, quantization_aware_finetune
    from convert.compress.quantize import to_tflite_int8
    from convert.dlib_port import load_keras_model
    from edge.vision.embed import TFLiteEmbedder

    opts, _ = converted
    pruned = load_keras_model(opts.workdir / "pruned.keras")
    teacher = load_keras_model(opts.model)
    rng = np.random.default_rng(0)
    chips = np.stack([img[y:y + 150, x:x + 150] for img in portraits for y, x in rng.integers(0, 200, (160, 2))])
    qat = quantization_aware_finetune(pruned, teacher, chips[:32], PruneOptions(epochs=1, batch_size=8),
                                      tmp_path / "qat", progress=False)
    path = tmp_path / "qat_int8.tflite"
    path.write_bytes(to_tflite_int8(qat, chips[:300]))
    assert check_edgetpu(path).ready
    interp = TFLiteEmbedder(path).interpreter.interpreter
    kernels = [interp.get_tensor(t["index"]) for t in interp.get_tensor_details()
               if t["dtype"] == np.int8 and len(t["shape"]) == 4 and t["shape"][0] >= 32 and "expand" not in t["name"]]
    zeros = sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels)
    assert zeros > 0.45  # the pruned zeros survive quantization-aware training


def test_seed_goes_from_the_cli_to_the_fine_tune(monkeypatch, tmp_path):
    """`facelock convert --seed N` is the pruning fine-tune's seed (its data order and augmentation): with two
    seeds a user sees how far bundles differ by chance alone."""
    from dataclasses import replace
    from types import SimpleNamespace

    from convert.compress import prune, quantize
    from convert.compress import run as convert_run
    from facelock.cli import build_parser

    made = {}
    monkeypatch.setattr(convert_run, "check_inputs", lambda opts: None)
    monkeypatch.setattr(convert_run, "run_convert", lambda opts: made.setdefault("opts", opts) and {})
    monkeypatch.setattr("facelock.commands.convert.format_report", lambda report: "")
    args = build_parser().parse_args(["convert", "--seed", "7", "--data", str(tmp_path), "--model", "m.keras"])
    assert args.handler(args) == 0
    opts = made["opts"]
    assert opts.seed == 7 and ConvertOptions(model=opts.model, data=opts.data, pairs=None).seed == 0

    class Stop(Exception):
        pass

    def record(teacher, chips, options, workdir, progress=True):
        made["prune"] = options
        raise Stop

    monkeypatch.setattr(quantize, "to_tflite_float", lambda model: b"")
    monkeypatch.setattr(prune, "prune_by_distillation", record)
    train = SimpleNamespace(chips=np.zeros((4, 8, 8, 3), np.uint8))  # what compress reads of a chip set
    with pytest.raises(Stop):
        convert_run.compress(replace(opts, workdir=tmp_path), train, None, None)
    assert made["prune"].seed == 7

"""Any Keras face CNN: the model card (input size, channels, normalisation, template) that `convert` writes
into the bundle and the board reads, the alignment presets, and a small 112x112 model converted and run
through the board's pipeline (plumbing: random weights; the product's model stays dlib's port)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.errors import BundleError, ConfigError, ModelError
from edge.models.bundle import MANIFEST, build_manifest, load_bundle, write_manifest
from edge.models.card import DEFAULT_CARD, EmbedderCard, Normalization, card_of_manifest
from edge.types import Face
from edge.vision.align import FaceAligner, load_template, transform_points
from edge.vision.align_presets import ARCFACE_112, native_preset, preset_template, resolve_template

ARC_CARD = EmbedderCard(input_size=(112, 112), channels="BGR", normalization=Normalization((127.5,) * 3, (128.0,) * 3),
                        preprocessing="layer", embedding_dim=64, template="arcface112", space="space:tiny@0123")


# --- the card -------------------------------------------------------------------------------------------

def test_card_round_trips_and_a_bundle_without_one_is_dlibs_port():
    assert EmbedderCard.from_dict(json.loads(json.dumps(ARC_CARD.to_dict()))) == ARC_CARD
    old = card_of_manifest({"embedder": {"file": "embedder.tflite", "space": "space:dlib_resnet_v1@abc"}}, "m.json")
    assert old.input_size == (150, 150) and old.embedding_dim == 128 and old.template == "dlib150"
    assert old.channels == "RGB" and old.normalization.identity and old.space == "space:dlib_resnet_v1@abc"
    assert DEFAULT_CARD.chip_size == 150 and not DEFAULT_CARD.needs_preprocessing
    # Mirror averaging is part of the embedding its threshold was chosen on: said by the card, off for a
    # bundle that does not say (every bundle before it), carried through a round trip.
    assert not old.mirror_average and not DEFAULT_CARD.mirror_average
    mirrored = EmbedderCard(mirror_average=True)
    assert EmbedderCard.from_dict(json.loads(json.dumps(mirrored.to_dict()))) == mirrored


@pytest.mark.parametrize(("change", "message"), [
    ({"input_size": [112, 96]}, "only square"),
    ({"input_size": [8, 8]}, "outside 32..512"),
    ({"channels": "GBR"}, "channels 'GBR'"),
    ({"preprocessing": "none"}, "need preprocessing 'layer'"),
    ({"normalization": {"mean": [0, 0, 0], "std": [1, 0, 1]}}, "std > 0"),
    ({"schema": "facelock.card/9"}, "facelock.card/9"),
    ({"embedding_dim": "many"}, "malformed model card"),
    ({"mirror_average": "yes"}, "mirror_average must be true or false"),
])
def test_a_bad_card_is_refused_naming_the_manifest(change, message):
    data = {**ARC_CARD.to_dict(), **change}
    with pytest.raises(BundleError, match=message) as err:
        card_of_manifest({"embedder": {"card": data}}, "bundle/manifest.json")
    assert "bundle/manifest.json embedder.card" in str(err.value)


def test_a_card_that_contradicts_itself_cannot_be_made():
    with pytest.raises(ModelError, match="need preprocessing 'layer'"):
        EmbedderCard(channels="BGR")


def test_bundle_carries_the_card_and_refuses_a_chip_size_that_contradicts_it(tmp_path):
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "detector.tflite").write_bytes(b"stand-in detector")
    (folder / "embedder.tflite").write_bytes(b"stand-in embedder")
    manifest = build_manifest(
        embedder_file="embedder.tflite", embedder_input={"size": [112, 112, 3]}, embedder_output={"size": [64]},
        space=ARC_CARD.space, normalization=ARC_CARD.bundled_input(), detector_file="detector.tflite",
        template=preset_template("arcface112").to_dict(), threshold={"cosine": 0.5, "target_far": 1e-3,
                                                                     "chosen_on": "test"},
        metrics={}, provenance={}, card=ARC_CARD)
    assert manifest["alignment"]["chip_size"] == 112  # from the card, not a default
    write_manifest(folder, manifest)
    assert load_bundle(folder).card == ARC_CARD
    data = json.loads((folder / MANIFEST).read_text())
    data["alignment"]["chip_size"] = 150
    (folder / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"chip_size 150 differs from the model card's input_size \[112, 112\]"):
        load_bundle(folder)


# --- alignment presets ------------------------------------------------------------------------------------

def test_arcface112_is_insightfaces_template_and_facenet160_is_derived_from_it():
    arc = preset_template("arcface112")
    assert arc.chip_size == 112 and arc.names == ("right_eye", "left_eye", "nose_tip", "right_mouth_corner",
                                                  "left_mouth_corner")
    assert arc.points[0].tolist() == [38.2946, 51.6963] and arc.points[4].tolist() == [70.7299, 92.2041]
    assert arc.points[0, 0] < 56 < arc.points[1, 0], "the subject's right eye is on the chip's left"
    assert np.allclose(arc.points, [ARCFACE_112[n] for n in arc.names]) and np.all(arc.weights == 1)
    facenet = preset_template("facenet160")
    assert facenet.chip_size == 160
    assert np.allclose(facenet.points, arc.points * 128 / 112 + 16)
    assert "derived" in facenet.to_dict()["reference"]
    dlib = preset_template("dlib150")
    assert np.array_equal(dlib.points, load_template().points) and dlib.chip_size == 150


def test_a_preset_scales_to_another_chip_size_about_the_chip():
    arc224 = preset_template("arcface112", 224)
    assert arc224.chip_size == 224
    assert np.allclose(arc224.points, (preset_template("arcface112").points + 0.5) * 2 - 0.5)
    assert arc224.to_dict()["scaled_from"] == 112
    assert native_preset(112) == "arcface112" and native_preset(150) == "dlib150" and native_preset(128) is None
    with pytest.raises(ConfigError, match="not a preset"):
        resolve_template("arcface113", 112)


def test_a_template_file_must_be_made_for_the_chip_size(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(preset_template("arcface112").to_dict()))
    assert resolve_template(path, 112)[0] == "custom"
    with pytest.raises(ConfigError, match="112x112 chips, the model takes 160x160"):
        resolve_template(path, 160)


def test_aligner_cuts_chips_of_the_card_size_onto_the_template():
    arc = preset_template("arcface112")
    with pytest.raises(ConfigError, match="cuts 112x112 chips, the embedder takes 150x150"):
        FaceAligner.from_template(arc.to_dict(), chip_size=150)
    aligner = FaceAligner.from_template(arc.to_dict(), chip_size=112)
    # A face whose landmarks are the template seen through a known similarity (scale 2.5, 10 degrees).
    a = np.deg2rad(10)
    frame_from_chip = np.array([[2.5 * np.cos(a), -2.5 * np.sin(a), 200], [2.5 * np.sin(a), 2.5 * np.cos(a), 90]])
    landmarks = transform_points(frame_from_chip, arc.points).astype(np.float32)
    face = Face(box=(150, 80, 450, 400), keypoints=np.zeros((6, 2), np.float32), score=0.9, landmarks=landmarks)
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    out = aligner.align(frame, face)
    assert out.chip.shape == (112, 112, 3) and aligner.chip_size == 112
    assert np.allclose(transform_points(out.matrix, landmarks), arc.points, atol=1e-3)
    assert aligner.cache_key != FaceAligner.from_template(preset_template("arcface112", 128)).cache_key


# --- convert: options, the layer in front, refusal, a whole conversion ---------------------------------------

def test_normalize_option():
    from convert.errors import ConvertError
    from convert.model_card import parse_normalization

    assert parse_normalization("none").identity
    n = parse_normalization("mean=127.5, std=128")
    assert n.mean == (127.5,) * 3 and n.std == (128.0,) * 3 and n.describe() == "(x - 127.5) / 128"
    n = parse_normalization("mean=123.7:116.3:103.5,std=58.4:57.1:57.4")
    assert n.mean == (123.7, 116.3, 103.5) and n.std == (58.4, 57.1, 57.4)
    for bad, message in [("mean=a", "not a number"), ("std=0", "std must be > 0"), ("scale=2", "expected 'none'"),
                         ("mean=1:2", "one finite number or three")]:
        with pytest.raises(ConvertError, match=message):
            parse_normalization(bad)


def tiny_model(size: int = 112, dim: int = 64, seed: int = 0):
    """A small face-CNN stand-in: a few convolutions, pooling, a 64-d embedding; random weights."""
    tf_keras = pytest.importorskip("tf_keras")
    tf_keras.utils.set_random_seed(seed)
    layers = tf_keras.layers
    inp = tf_keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(16, 3, strides=2, activation="relu")(inp)
    x = layers.Conv2D(32, 3, strides=2, activation="relu")(x)
    x = layers.Conv2D(32, 3, strides=2, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return tf_keras.Model(inp, layers.Dense(dim, name="embedding")(x), name="tiny_arcface")


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory):
    pytest.importorskip("tensorflow_model_optimization", reason="convert needs the [convert] extra")
    path = tmp_path_factory.mktemp("tiny") / "tiny112.keras"
    tiny_model().save(path)
    return path


def test_pixel_model_is_the_source_model_on_preprocessed_pixels(tiny_model_path, tmp_path):
    import tf_keras

    from convert.compress.prune import prunable
    from convert.dlib_port import load_keras_model
    from convert.model_card import PREPROCESS_LAYER, pixel_model

    source = load_keras_model(tiny_model_path)
    wrapped = pixel_model(source, ARC_CARD)
    assert wrapped.name == source.name and wrapped.input_shape == (None, 112, 112, 3)
    assert not prunable(wrapped.get_layer(PREPROCESS_LAYER)), "pruning must leave the fixed layer whole"
    pixels = np.random.default_rng(1).integers(0, 256, (4, 112, 112, 3)).astype(np.float32)
    expected = source((pixels[..., ::-1] - 127.5) / 128).numpy()  # BGR, (x - 127.5) / 128
    assert np.allclose(wrapped(pixels).numpy(), expected, atol=1e-4)
    wrong = source((pixels - 127.5) / 128).numpy()  # RGB: what a missing flip would give
    assert not np.allclose(wrapped(pixels).numpy(), wrong, atol=1e-3)
    wrapped.save(tmp_path / "w.keras")
    again = tf_keras.models.load_model(tmp_path / "w.keras", compile=False)
    assert np.allclose(again(pixels).numpy(), expected, atol=1e-4)
    assert pixel_model(source, EmbedderCard(input_size=(112, 112), embedding_dim=64)) is source  # nothing to add
    seq = tf_keras.Sequential([tf_keras.Input((112, 112, 3)), *source.layers[1:]], name="seq")
    assert np.allclose(pixel_model(seq, ARC_CARD)(pixels).numpy(), expected, atol=1e-4)


def test_a_model_that_does_not_take_the_input_size_is_refused(tiny_model_path, tmp_path, capsys):
    from convert.compress.run import ConvertOptions, run_convert
    from convert.errors import ConvertError
    from convert.model_card import CardOptions
    from facelock.cli import main

    (tmp_path / "faces").mkdir()
    opts = ConvertOptions(model=tiny_model_path, data=tmp_path / "faces", pairs=None, out=tmp_path / "bundle",
                          workdir=tmp_path / "work", card=CardOptions(input_size=150))
    with pytest.raises(ConvertError) as err:
        run_convert(opts)
    message = str(err.value)
    assert str(tiny_model_path) in message and "(None, 112, 112, 3)" in message and "(None, 150, 150, 3)" in message
    assert "--input-size 112" in message
    assert not (tmp_path / "work").exists(), "refused before any work"
    code = main(["convert", "--model", str(tiny_model_path), "--data", str(tmp_path / "faces"), "--no-pairs",
                 "--out", str(tmp_path / "bundle"), "--input-size", "160x160", "--template", "facenet160"])
    err_text = capsys.readouterr().err
    assert code == 1 and "(None, 112, 112, 3)" in err_text and "(None, 160, 160, 3)" in err_text
    assert "tiny112.keras" in err_text


@pytest.mark.slow
def test_a_112_model_converts_and_embeds_through_the_boards_pipeline(tiny_model_path, tmp_path, portraits,
                                                                   models_dir):
    """Plumbing, end to end: demo faces -> `convert` with BGR, (x - 127.5) / 128, arcface112 -> an int8 bundle
    -> edge builds 112x112 stages from its card -> a fixture portrait gives a 64-d unit embedding that agrees
    with the float model on the same chip."""
    from convert.compress.run import ConvertOptions, run_convert
    from convert.demo_faces import PEOPLE, write_demo_faces
    from convert.keras_embedder import KerasEmbedder
    from convert.model_card import PREPROCESS_LAYER, CardOptions, preprocess_weights
    from edge.vision.build import load_pipeline_components
    from facelock.commands.embed import ImageEmbedder

    data = tmp_path / "faces"
    write_demo_faces(data, portraits=dict(zip(PEOPLE, portraits, strict=True)))
    card_opts = CardOptions(input_size=112, channels="bgr", normalize="mean=127.5,std=128", template="arcface112")
    opts = ConvertOptions(model=tiny_model_path, data=data, pairs=data / "pairs.csv", out=tmp_path / "bundle",
                          workdir=tmp_path / "work", sparsity=0.5, card=card_opts).quickened()
    report = run_convert(opts)

    bundle = load_bundle(opts.out)
    card = bundle.card
    assert (card.input_size, card.channels, card.embedding_dim, card.template) == ((112, 112), "BGR", 64, "arcface112")
    assert card.normalization.mean == (127.5,) * 3 and card.preprocessing == "layer"
    assert card.space.startswith("space:tiny_arcface@")
    emb = bundle.manifest["embedder"]
    assert emb["input"]["size"] == [112, 112, 3] and emb["output"]["size"] == [64]
    # The normalisation is a layer in front: the int8 input is still camera pixels, exactly.
    assert emb["input"]["scale"] == 1.0 and emb["input"]["zero_point"] == -128
    assert bundle.manifest["alignment"]["chip_size"] == 112
    assert bundle.manifest["alignment"]["template"]["preset"] == "arcface112"
    assert report["edgetpu"]["ready"], report["edgetpu"]["problems"]
    assert abs(report["sparsity"]["overall"] - 0.5) < 0.05
    # Pruning left the fixed preprocessing layer exactly as the card says.
    from convert.dlib_port import load_keras_model

    kernel, bias = load_keras_model(opts.workdir / "pruned.keras").get_layer(PREPROCESS_LAYER).get_weights()
    want_kernel, want_bias = preprocess_weights(card)
    assert np.array_equal(kernel, want_kernel) and np.array_equal(bias, want_bias)

    stages = load_pipeline_components(opts.out, num_threads=1)
    detector, aligner, embedder = stages
    assert aligner.chip_size == 112 and embedder.input_size == (112, 112) and embedder.dim == 64
    image_embedder = ImageEmbedder(detector, aligner, embedder, stages.landmarker)
    assert card.mirror_average  # convert's default: the board embeds each chip and its mirror image
    pruned_float = KerasEmbedder(opts.workdir / "pruned.keras", mirror=card.mirror_average)
    vectors, reference = [], []
    for portrait in portraits:
        face = image_embedder.pipeline.subject(portrait).face
        chip = aligner.align(portrait, face).chip
        assert chip.shape == (112, 112, 3)
        vectors.append(image_embedder.embed_rgb(portrait))
        reference.append(pruned_float.embed(chip[None])[0])
    for i, vector in enumerate(vectors):
        assert vector.shape == (64,) and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)
        # Random weights map every face to nearly one direction (cosine ~0.99 between the two people), so
        # the int8 bundle must match its float model on the same chip much more closely than that.
        same, other = float(vector @ reference[i]), float(vector @ reference[1 - i])
        assert same > 0.999 and same > other, (same, other)

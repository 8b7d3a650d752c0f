"""The anti-spoofing CNN slot: its card in the bundle, the crop, the layered judge, and a small anti-spoofing
model made in the test converted by `facelock convert --antispoof` and run by the board's stages.

The test model is plumbing, not an anti-spoofing claim: it calls a crop live when it is warmer (red over
blue) than it is cool, so a portrait is live and the same portrait with red and blue swapped is not. That
makes the channel order, the normalisation layer, the live class, the crop and int8 all visible: any one
of them wrong and a verdict below flips.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from edge.errors import BundleError, ConfigError
from edge.models.bundle import load_bundle
from edge.models.card import AntiSpoofCard
from edge.types import Face, LivenessState, LivenessVerdict
from edge.vision.antispoof import AntiSpoofOptions, crop_matrix, face_crop, live_probability
from edge.vision.layered import FrameEvidence, LayeredLiveness
from edge.vision.liveness import LivenessCheck, LivenessOptions

CARD = AntiSpoofCard(name="tiny_spoof", input_size=(64, 64), crop_scale=2.0, classes=2, live_class=1,
                     threshold=0.5, output="logits")


def face_at(cx, cy, w, h=None):
    h = h or w
    return Face((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), np.zeros((6, 2), np.float32), 0.9)


# --- the card, the crop, the scores ----------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    ({"live_class": 2}, "live_class 2: expected 0..1"),
    ({"threshold": 1.0}, "threshold 1.0"),
    ({"crop_scale": 9.0}, "crop_scale 9.0"),
    ({"input_size": [64, 48]}, "input_size 64x48"),
    ({"output": "votes"}, "output 'votes'"),
    ({"schema": "facelock.antispoof/9"}, "schema 'facelock.antispoof/9' is not supported"),
])
def test_a_bad_card_is_refused_naming_the_manifest(change, message):
    data = {**CARD.to_dict(), **change}
    with pytest.raises(BundleError, match=message) as err:
        AntiSpoofCard.from_dict(data, "bundle/manifest.json antispoof.card")
    assert "bundle/manifest.json antispoof.card" in str(err.value)
    assert AntiSpoofCard.from_dict(CARD.to_dict()) == CARD


def test_the_crop_is_the_square_around_the_box_scaled():
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[200:260, 300:340] = 255  # the face box, 40 x 60 px, centred on (320, 230)
    face = face_at(320, 230, 40, 60)
    m = crop_matrix(face, 2.0, 60)  # side 2 x 60 = 120 frame px -> 60 crop px
    assert np.allclose(m @ [320, 230, 1], [30, 30]) and np.isclose(m[0, 0], 0.5)
    crop = face_crop(frame, face, 2.0, 60)
    white = np.argwhere(crop[..., 0] > 128)
    assert crop.shape == (60, 60, 3)
    assert white[:, 0].min() >= 14 and white[:, 0].max() <= 45  # 60 px tall in frame -> 30 in the crop
    assert white[:, 1].min() >= 19 and white[:, 1].max() <= 40  # 40 wide -> 20
    edge = face_crop(frame, face_at(5, 5, 40), 2.0, 60)  # off the frame's corner: black there, no error
    assert edge.shape == (60, 60, 3) and edge[0, 0].sum() == 0


def test_live_probability_reads_the_card():
    assert live_probability(np.array([0.0, 0.0]), CARD) == pytest.approx(0.5)
    assert live_probability(np.array([-3.0, 3.0]), CARD) > 0.99
    probs = replace(CARD, output="probabilities", live_class=0)
    assert live_probability(np.array([0.8, 0.2]), probs) == pytest.approx(0.8)
    one = replace(CARD, classes=1, live_class=0)
    assert live_probability(np.array([2.0]), one) == pytest.approx(1 / (1 + np.exp(-2.0)))


def test_options_are_checked_and_in_the_example_config():
    from edge.service.config import EXAMPLE_PATH, parse_config

    assert "[antispoof]" in EXAMPLE_PATH.read_text()
    assert parse_config({"antispoof": {"threshold": 0.7}}).antispoof.threshold == 0.7
    with pytest.raises(ConfigError, match="antispoof.threshold"):
        parse_config({"antispoof": {"threshold": 1.5}})
    with pytest.raises(ConfigError, match="antispoof.max_frames"):
        AntiSpoofOptions(min_frames=5, max_frames=3).validate()


# --- the layered judge -----------------------------------------------------------------------------------------

class ScriptedModel:
    """Stands in for the CNN in the judge's logic tests: the live score is the frame's first pixel / 100."""

    name, card = "scripted", CARD

    def live_score(self, frame, face):
        return frame.flat[0] / 100


def ScriptedLayer():
    from edge.vision.antispoof import AntiSpoofLayer

    return AntiSpoofLayer(ScriptedModel())


class MeshSays:
    """Mesh checks that give one fixed verdict, counting what they were shown."""

    def __init__(self, state, check="parallax"):
        self.state, self.check, self.seen, self.attempts = state, check, [], 0

    def sample(self, face, frame=None, ir=None):
        return ("mesh", id(face))

    def judge(self, samples, now=0.0):
        self.seen = list(samples)
        return LivenessVerdict(self.state, self.check, f"mesh says {self.state.value}", len(samples),
                               {"parallax": 0.05})

    def new_attempt(self):
        self.attempts += 1


def evidence(judge, scores):
    face = face_at(100, 100, 50)
    return [judge.sample(face, np.full((4, 4, 3), s, np.uint8)) for s in scores]


def test_every_layer_must_pass_and_an_attack_names_its_layer():
    mesh = MeshSays(LivenessState.LIVE)
    judge = LayeredLiveness(mesh, [ScriptedLayer()])
    frames = evidence(judge, [90, 80, 95])
    assert all(isinstance(f, FrameEvidence) and f.scores["antispoof"] > 0.5 for f in frames)
    live = judge.judge(frames, 1.0)
    assert live.state is LivenessState.LIVE and live.check == "parallax"
    assert "mesh says live" in live.reason and "anti-spoofing CNN (scripted) scored the face live 0.90" in live.reason
    assert live.figures == {"parallax": 0.05, "antispoof": 0.9}
    assert mesh.seen == [f.mesh for f in frames]  # the mesh checks see their own samples
    gap = judge.judge([*frames[:2], None], 1.0)  # a frame without the face: two scored, need three
    assert gap.state is LivenessState.UNDECIDED and gap.check == "antispoof" and "2 frames scored (the anti-spoofing CNN" in gap.reason

    attack = judge.judge(evidence(judge, [90, 10, 20, 30]), 1.0)  # median 0.25: the CNN's attack wins
    assert attack.state is LivenessState.ATTACK and attack.check == "antispoof" and "0.25" in attack.reason

    undecided = LayeredLiveness(MeshSays(LivenessState.UNDECIDED, "motion"), [ScriptedLayer()])
    v = undecided.judge(evidence(undecided, [90, 90, 90]), 1.0)
    assert v.state is LivenessState.UNDECIDED and v.check == "motion" and v.figures["antispoof"] == 0.9
    planar = LayeredLiveness(MeshSays(LivenessState.ATTACK, "planar"), [ScriptedLayer()])
    assert planar.judge(evidence(planar, [90, 90, 90]), 1.0).check == "planar"

    alone = LayeredLiveness(None, [ScriptedLayer()])
    v = alone.judge(evidence(alone, [70, 80, 90]), 1.0)
    assert v.state is LivenessState.LIVE and v.check == "antispoof" and v.frames == 3
    judge.new_attempt()
    assert mesh.attempts == 1 and judge.sample(None, np.zeros((4, 4, 3), np.uint8)) is None


# --- a real conversion ---------------------------------------------------------------------------------------

def tiny_models(tmp_path):
    """(a small 112x112 embedder, a warm-is-live anti-spoofing model on 64x64 BGR crops in [-1, 1])."""
    tf_keras = pytest.importorskip("tf_keras")
    layers = tf_keras.layers
    tf_keras.utils.set_random_seed(0)
    inp = tf_keras.Input((112, 112, 3))
    x = layers.Conv2D(16, 3, strides=2, activation="relu")(inp)
    x = layers.Conv2D(32, 3, strides=2, activation="relu")(x)
    embedder = tf_keras.Model(inp, layers.Dense(32)(layers.GlobalAveragePooling2D()(x)), name="tiny_embedder")
    crop = tf_keras.Input((64, 64, 3))
    pooled = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, padding="same", name="features")(crop))
    spoof = tf_keras.Model(crop, layers.Dense(2, name="classes")(pooled), name="tiny_spoof")
    # features: channels 0 and 2 of the crop (B and R, BGR), in [-1, 1] after (x - 127.5) / 127.5, plus two
    # channels that only make the graph prunable-looking; classes: [spoof, live] logits = 12 x [B - R, R - B]
    kernel = np.zeros((3, 3, 3, 4), np.float32)
    kernel[1, 1, 0, 0] = kernel[1, 1, 2, 1] = 1.0
    kernel[..., 2:] = np.random.default_rng(0).normal(0, 0.01, (3, 3, 3, 2))
    spoof.get_layer("features").set_weights([kernel, np.zeros(4, np.float32)])
    dense = np.zeros((4, 2), np.float32)
    dense[0], dense[1] = [12.0, -12.0], [-12.0, 12.0]
    spoof.get_layer("classes").set_weights([dense, np.array([0.5, -0.5], np.float32)])
    paths = tmp_path / "embedder.keras", tmp_path / "tiny_spoof.keras"
    embedder.save(paths[0])
    spoof.save(paths[1])
    return paths


@pytest.fixture(scope="module")
def spoof_bundle(tmp_path_factory, portraits):
    pytest.importorskip("tensorflow_model_optimization", reason="convert needs the [convert] extra")
    from convert.antispoof import AntiSpoofSource
    from convert.compress.run import ConvertOptions, run_convert
    from convert.demo_faces import PEOPLE, write_demo_faces
    from convert.model_card import CardOptions

    root = tmp_path_factory.mktemp("antispoof")
    embedder, spoof = tiny_models(root)
    data = root / "faces"
    write_demo_faces(data, per_person=170, portraits=dict(zip(PEOPLE, portraits, strict=True)))
    source = AntiSpoofSource(spoof, crop_scale=2.0, live_class=1, output="logits", channels="BGR",
                             normalize="mean=127.5,std=127.5", threshold=0.5, licence="CC0-1.0 (made in a test)")
    opts = ConvertOptions(model=embedder, data=data, pairs=None, out=root / "bundle", workdir=root / "work",
                          sparsity=0.0, card=CardOptions(template="arcface112"), antispoof=source).quickened()
    return opts, run_convert(opts), spoof


@pytest.mark.slow
def test_convert_bundles_the_antispoofing_cnn_int8_with_its_card(spoof_bundle):
    from edge.files import sha256_file

    opts, report, source = spoof_bundle
    bundle = load_bundle(opts.out)
    path, card = bundle.antispoof
    assert path.name == "antispoof.tflite" and "antispoof.tflite" in bundle.manifest["files"]
    assert (card.name, card.classes, card.live_class, card.output, card.channels) == \
        ("tiny_spoof", 2, 1, "logits", "BGR")
    assert card.crop_scale == 2.0 and card.normalization.mean == (127.5,) * 3 and card.input_size == (64, 64)
    assert card.licence == "CC0-1.0 (made in a test)" and card.source_sha256 == sha256_file(source)
    entry = bundle.manifest["antispoof"]
    assert entry["input"]["dtype"] == "int8" and entry["input"]["scale"] == 1.0  # camera pixels, exactly
    a = report["antispoof"]
    assert a["calibration_crops"] == 300 and a["bona_fide_frames"] >= 20
    assert a["decision_agreement"] >= 0.95 and a["live_score_abs_diff"]["mean"] < 0.05, a
    assert a["bona_fide_as_attack_int8"] < 0.2, a  # the demo portraits are warm: live

    tampered = json.loads((opts.out / "manifest.json").read_text())
    tampered["antispoof"]["card"]["live_class"] = 5
    (opts.out / "manifest.json").write_text(json.dumps(tampered))
    try:
        with pytest.raises(BundleError, match="antispoof.card: live_class 5"):
            load_bundle(opts.out)
    finally:
        tampered["antispoof"]["card"]["live_class"] = 1
        (opts.out / "manifest.json").write_text(json.dumps(tampered))


@pytest.mark.slow
def test_the_board_runs_it_and_the_decider_needs_it(spoof_bundle, portraits, tmp_path):
    """The bundle's stages carry the CNN; the owner's portrait in a door frame scores live, the same frame
    with red and blue swapped (a cold cast, as the test model's stand-in for a screen) does not; with the
    layered judge the decider opens for the first and ends the second as an attack naming the CNN (the
    owner's match given: the tiny embedder is random, the evidence is what is tested)."""
    from edge.identity.decide import DecideOptions, Decider, Outcome
    from edge.identity.match import Match
    from edge.vision.antispoof import AntiSpoofModel
    from edge.vision.build import liveness_judge, load_pipeline_components
    from edge.vision.quality import QualityGate

    opts, _, _ = spoof_bundle
    stages = load_pipeline_components(opts.out, num_threads=1)
    assert isinstance(stages.antispoof, AntiSpoofModel)
    # the CNN alone (the portrait is a still, which the passive checks, on by default, would refuse)
    passive_off = LivenessOptions(enabled=False)
    judge = liveness_judge(passive_off, None, stages.landmarker, stages.antispoof, AntiSpoofOptions())
    assert isinstance(judge, LayeredLiveness) and judge.mesh is None
    assert liveness_judge(passive_off, None, stages.landmarker, stages.antispoof,
                          AntiSpoofOptions(enabled=False)) is None
    with_passive = liveness_judge(None, None, stages.landmarker, stages.antispoof, AntiSpoofOptions())
    assert isinstance(with_passive, LayeredLiveness) and isinstance(with_passive.mesh, LivenessCheck)
    pipeline = stages.pipeline(QualityGate(), liveness=judge)
    portrait = portraits[0]

    frame = np.full((480, 640, 3), 120, np.uint8)
    small = portrait[::2, ::2]
    frame[100:100 + small.shape[0], 200:200 + small.shape[1]] = small
    warm = pipeline.process(frame)
    cold = pipeline.process(np.ascontiguousarray(frame[..., ::-1]))
    assert warm.usable and cold.usable and "liveness" in warm.times.extra
    assert warm.liveness.scores["antispoof"] > 0.8 and cold.liveness.scores["antispoof"] < 0.2
    # The crop scale is the card's: a tight crop of the same frame sees less of the grey background.
    face = warm.face
    wide = AntiSpoofModel(stages.antispoof.path, replace(stages.antispoof.card, crop_scale=4.0), num_threads=1)
    assert wide.live_score(frame, face) < stages.antispoof.live_score(frame, face)

    owner = Match("owner", 0.95, None, -1.0, -1.0, 1.95)

    def attempt(analysis):
        d = Decider(DecideOptions(state_path=str(tmp_path / "lockout.json")), liveness=judge)
        return [d.update(owner, 0.1 * i, analysis.liveness) for i in range(6)]

    opened = attempt(warm)
    assert [x.outcome for x in opened].count(Outcome.ACCEPT) == 1
    accept = next(x for x in opened if x.outcome is Outcome.ACCEPT)
    assert accept.person == "owner" and accept.liveness.check == "antispoof"
    refused = attempt(cold)
    assert Outcome.ACCEPT not in [x.outcome for x in refused]
    attack = next(x for x in refused if x.outcome is Outcome.ATTACK)
    assert attack.liveness.check == "antispoof" and "tiny_spoof" in attack.reason

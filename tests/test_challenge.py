"""The active liveness challenge (edge.vision.challenge) and how the decider and the service use it. The head
is the landmark model's own 3D mesh of a real portrait turned in 3D (test_liveness's `head`); the person
at the door answers what the lock asked, frame by frame, after a human reaction time; prints are the same
mesh moved as a plane. The service part runs against a real Mosquitto."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from test_liveness import flat, head, plane_homography, print_moves, vote

from edge.errors import ConfigError
from edge.identity.decide import DecideOptions, Decider, Outcome
from edge.service.config import parse_config, render_example
from edge.types import LivenessState
from edge.vision.build import liveness_judge
from edge.vision.challenge import ACTIONS, ChallengeJudge, ChallengeOptions, blinks, move
from edge.vision.liveness import (
    LEFT_EYE_LIDS,
    RIGHT_EYE_LIDS,
    LivenessCheck,
    LivenessOptions,
    sample_from_mesh,
)

FPS = 10.0
# Where each move takes the head, in the pose convention of `head` (yaw > 0 turns to the person's right,
# pitch > 0 looks down), and how far an honest person goes when asked (degrees).
TARGET = {"turn_left": (-1, 0), "turn_right": (1, 0), "look_up": (0, -1), "look_down": (0, 1)}


def jittered(m, rng, noise=0.3):
    return sample_from_mesh(m + np.column_stack([rng.normal(0, noise, (len(m), 2)), np.zeros(len(m))]))


def closed_eyes(m):
    """The mesh with both eyes shut: the upper lid points on the lower ones."""
    m = m.copy()
    for upper, lower in RIGHT_EYE_LIDS + LEFT_EYE_LIDS:
        m[upper, :2] = m[lower, :2]
    return m


def attempt(mesh, judge, answer, seed=0, face_px=80, reaction_s=0.6, degrees=18.0, speed=40.0, frames=60,
            options=None, pose_limit=None):
    """One attempt at the door: a still face until the lock asks, then `answer(asked)` (a move name, "blink
    twice", or None: do nothing) after `reaction_s`, turning at `speed` degrees/s up to `degrees`. A head
    turned more than `pose_limit` degrees fails the quality gates on pose alone: it is not matched, only its
    sample goes to the decider (as FacePipeline.process gives it). Returns (the decision that ended the
    attempt or the last one, what was asked, when)."""
    rng = np.random.default_rng(seed)
    scale = face_px / np.ptp(mesh[:, 0])
    d = Decider(options or DecideOptions(state_path="/nonexistent/unused"), liveness=judge)
    asked, asked_at, decision = None, None, None
    for i in range(frames):
        now = i / FPS
        yaw = pitch = 0.0
        m = None
        doing = answer(asked) if asked is not None else None
        since = now - asked_at - reaction_s if asked_at is not None else -1.0
        if doing in TARGET and since > 0:
            a = min(degrees, speed * since)
            yaw, pitch = a * TARGET[doing][0], a * TARGET[doing][1]
        m = head(mesh, yaw + rng.normal(0, 0.3), pitch + rng.normal(0, 0.3), scale=scale)
        if doing == "blink_twice" and round(since * FPS) in (1, 5):
            m = closed_eyes(m)
        turned = pose_limit is not None and max(abs(yaw), abs(pitch)) > pose_limit
        decision = d.update(None if turned else vote(), now, jittered(m, rng))
        if decision.liveness is not None and decision.liveness.asked is not None:
            assert asked is None, "one challenge per attempt"
            asked, asked_at = decision.liveness.asked.action, now
        if decision.outcome in (Outcome.ACCEPT, Outcome.REJECT, Outcome.ATTACK):
            break
    return decision, asked, asked_at


def test_a_move_is_read_with_its_direction_and_a_print_makes_none(mesh):
    for face_px in (60, 120):
        scale = face_px / np.ptp(mesh[:, 0])
        ref = sample_from_mesh(head(mesh, 0, 0, scale=scale))
        for action, (sy, sp) in TARGET.items():
            m = move(ref, sample_from_mesh(head(mesh, 15 * sy, 15 * sp, scale=scale)))
            assert m.action() == action and m.size >= 0.09, (face_px, action, m)
            mirrored = move(ref, sample_from_mesh(head(mesh, 15 * sy, 15 * sp, scale=scale)), mirrored=True)
            swap = {"turn_left": "turn_right", "turn_right": "turn_left"}.get(action, action)
            assert mirrored.action() == swap
        small = move(ref, sample_from_mesh(head(mesh, 5, 0, scale=scale)))
        assert small.size < ChallengeOptions().move_parallax  # a glance is not an answer
        centre = mesh[:, :2].mean(0)
        for seed in range(3):
            for name, poses in print_moves(np.random.default_rng(seed)).items():
                hs = [plane_homography(centre, scale, y, p, r, (320 + s[0], 240 + s[1])) for y, p, r, s in poses]
                ref = sample_from_mesh(flat(mesh, hs[0]))
                for h in hs[1:]:
                    assert move(ref, sample_from_mesh(flat(mesh, h))).size < 0.01, name


def test_blinks_are_counted_as_closings():
    assert blinks([0.3, 0.3, 0.1, 0.3, 0.3, 0.1, 0.1, 0.3], 0.6) == 2
    assert blinks([0.3, 0.31, 0.29, 0.3], 0.6) == 0
    assert blinks([0.1, 0.3, 0.3, 0.3], 0.6) == 1


@pytest.mark.parametrize("seed", range(8))
def test_the_owner_who_answers_is_let_in(mesh, seed):
    judge = ChallengeJudge(ChallengeOptions(), rng=random.Random(seed))
    decision, asked, asked_at = attempt(mesh, judge, lambda a: a, seed=seed)
    assert asked in TARGET
    assert decision.outcome is Outcome.ACCEPT, decision.reason
    assert decision.liveness.check == "challenge" and "live (challenge)" in decision.reason
    assert decision.time - asked_at <= 0.6 + 1.0  # reaction, then ~11 degrees at 40 degrees/s


@pytest.mark.parametrize("seed", range(4))
def test_an_owner_who_turns_past_the_pose_gates_and_holds_it_is_let_in(mesh, seed):
    # Asked to turn, people overshoot: 40 degrees, held, past a 12-degree gate (the lock's is 30 degrees,
    # from a frontal start; a head that starts turned gets there sooner). Those frames are not recognised,
    # but they answer the challenge and keep the attempt going (it would end after attempt_gap_s).
    judge = ChallengeJudge(ChallengeOptions(actions=tuple(TARGET)), rng=random.Random(seed))
    decision, asked, asked_at = attempt(mesh, judge, lambda a: a, seed=seed, degrees=40.0, pose_limit=12.0)
    assert asked in TARGET
    assert decision.outcome is Outcome.ACCEPT, decision.reason
    assert decision.time - asked_at <= 0.6 + 1.0
    # The same frames while no liveness is pending are gaps: they start and extend nothing.
    d = Decider(DecideOptions(state_path="/nonexistent/unused"), liveness=ChallengeJudge(ChallengeOptions()))
    sample = sample_from_mesh(head(mesh, 40.0, 0.0))
    assert d.update(None, 0.0, sample).outcome is Outcome.IDLE
    assert d.update(vote(), 0.1, sample).outcome is Outcome.PENDING
    assert d.update(None, 0.2, sample).reason == "no usable face this frame"


def test_the_draw_covers_every_action_and_is_unpredictable_by_default(mesh):
    seen = {ChallengeJudge(ChallengeOptions(), rng=random.Random(s))._issue(0.0, None).action for s in range(40)}
    assert seen == set(ChallengeOptions().actions)
    assert type(ChallengeJudge(ChallengeOptions()).rng).__name__ == "SystemRandom"


def test_a_wrong_move_fails_the_attempt_without_calling_it_an_attack(mesh):
    wrong = {"turn_left": "turn_right", "turn_right": "turn_left", "look_up": "look_down", "look_down": "look_up"}
    for seed in range(4):
        judge = ChallengeJudge(ChallengeOptions(), rng=random.Random(seed))
        decision, asked, _ = attempt(mesh, judge, lambda a: wrong[a], seed=seed)
        assert decision.outcome is Outcome.REJECT, decision.reason
        assert decision.liveness.state is LivenessState.FAILED
        assert f"asked {asked}, the face made {wrong[asked]} first" in decision.reason


def test_no_answer_fails_at_the_deadline_and_the_next_attempt_gets_a_new_challenge(mesh):
    judge = ChallengeJudge(ChallengeOptions(deadline_s=3.0), rng=random.Random(1))
    decision, asked, asked_at = attempt(mesh, judge, lambda a: None)
    assert decision.outcome is Outcome.REJECT and f"asked {asked}, no answer within 3 s" in decision.reason
    assert 3.0 < decision.time - asked_at <= 3.3
    assert judge.asked is None  # the decider's new attempt cleared it
    decision, again, _ = attempt(mesh, judge, lambda a: a, seed=5)
    assert again is not None and decision.outcome is Outcome.ACCEPT


def test_a_video_that_turns_both_ways_does_not_pass_any_turn(mesh):
    """A replayed video of the owner looking around: whatever is asked, its first move decides, so a
    sweep left then right passes turn_left at most, never turn_right."""
    passed = set()
    for seed in range(12):
        judge = ChallengeJudge(ChallengeOptions(), rng=random.Random(seed))
        rng = np.random.default_rng(seed)
        scale = 80 / np.ptp(mesh[:, 0])
        d = Decider(DecideOptions(state_path="/nonexistent/unused"), liveness=judge)
        asked = None
        for i in range(60):
            t = i / FPS  # the video: 1 s still, then left to 20 degrees, then right to 20 (ignores the lock)
            yaw = 0.0 if t < 1 else (-min(20, 40 * (t - 1)) if t < 2 else -20 + min(40, 40 * (t - 2)))
            out = d.update(vote(), t, jittered(head(mesh, yaw, 0, scale=scale), rng))
            if out.liveness is not None and out.liveness.asked is not None:
                asked = out.liveness.asked.action
            if out.outcome in (Outcome.ACCEPT, Outcome.REJECT, Outcome.ATTACK):
                break
        if out.outcome is Outcome.ACCEPT:
            passed.add(asked)
    assert passed <= {"turn_left"} and "turn_right" not in passed


def test_a_print_moved_in_3d_never_answers(mesh):
    """A print of the owner, tilted up to 25 degrees each way while the lock asks: no move of a plane is
    an answer, so every attempt fails at the deadline (with the passive checks on: as an attack)."""
    centre = mesh[:, :2].mean(0)
    scale = 80 / np.ptp(mesh[:, 0])
    for passive in (None, LivenessCheck(LivenessOptions(enabled=True))):
        for seed in range(3):
            rng = np.random.default_rng(seed)
            judge = ChallengeJudge(ChallengeOptions(deadline_s=4.0), passive=passive, rng=random.Random(seed))
            d = Decider(DecideOptions(state_path="/nonexistent/unused"), liveness=judge)
            outcomes = []
            for i in range(80):
                y, p = 25 * math.sin(i / 4), 20 * math.cos(i / 5)
                m = flat(mesh, plane_homography(centre, scale, y, p, 3 * math.sin(i / 3), (320 + i, 240)))
                outcomes.append(d.update(vote(), i / FPS, jittered(m, rng)).outcome)
            assert Outcome.ACCEPT not in outcomes
            assert (Outcome.ATTACK if passive else Outcome.REJECT) in outcomes


def test_blink_twice_is_answered_by_blinks_and_not_by_a_nod(mesh):
    options = ChallengeOptions(actions=("blink_twice", "look_up"))
    for seed in range(6):
        judge = ChallengeJudge(options, rng=random.Random(seed))
        decision, asked, _ = attempt(mesh, judge, lambda a: a, seed=seed)
        assert decision.outcome is Outcome.ACCEPT, (asked, decision.reason)
        if asked == "blink_twice":
            judge = ChallengeJudge(options, rng=random.Random(seed))
            decision, _, _ = attempt(mesh, judge, lambda a: "look_down", seed=seed)
            assert decision.outcome is Outcome.REJECT and "made look_down first" in decision.reason


def test_options_config_and_build():
    with pytest.raises(ConfigError, match=r"challenge\.actions"):
        ChallengeOptions(actions=("turn_left",)).validate()
    with pytest.raises(ConfigError, match=r"challenge\.actions.*unknown: spin"):
        ChallengeOptions(actions=("turn_left", "spin")).validate()
    with pytest.raises(ConfigError, match=r"challenge\.move_parallax"):
        ChallengeOptions(move_parallax=0.02).validate()
    text = render_example()
    assert "[challenge]" in text and "enabled = false" in text.split("[challenge]")[1]
    with pytest.raises(ConfigError, match=r"challenge\.deadline_s = 12 must be under decide\.attempt_max_s = 10"):
        parse_config({"challenge": {"enabled": True, "deadline_s": 12}})
    config = parse_config({"challenge": {"enabled": True, "actions": ["turn_left", "blink_twice"]}})
    assert config.challenge.actions == ("turn_left", "blink_twice")
    assert set(ACTIONS) >= set(ChallengeOptions().actions)
    # the passive checks on by default, the challenge off
    assert isinstance(liveness_judge(LivenessOptions(), ChallengeOptions(), object()), LivenessCheck)
    assert liveness_judge(LivenessOptions(enabled=False), ChallengeOptions(), None) is None
    with pytest.raises(ConfigError, match="challenge.enabled = true needs the face-landmark model"):
        liveness_judge(LivenessOptions(enabled=False), ChallengeOptions(enabled=True), None)
    judge = liveness_judge(LivenessOptions(enabled=True), ChallengeOptions(enabled=True), object())
    assert isinstance(judge, ChallengeJudge) and isinstance(judge.passive, LivenessCheck)


class AnsweringPerson:
    """A frame source: the owner (the portrait rendered as a head, convert.bench.attacks.HeadRenderer) at
    the door, who hears the lock's challenge on MQTT (as Home Assistant would speak it) and, three frames
    later, makes the move asked; frames are stamped 0.1 s apart (a 10 fps camera)."""

    def __init__(self, portrait, mesh, subscriber, topic, frames=70):
        from convert.bench.attacks import HeadRenderer

        self.rng = np.random.default_rng(11)
        self.head = HeadRenderer(portrait, mesh, self.rng, 110.0)
        self.subscriber, self.topic, self.n = subscriber, topic, frames
        self.heard_at: int | None = None
        self.asked: str | None = None

    def frame(self, pose, i):
        return self.head.render(pose, i / FPS, 1.0, False, self.rng)[0]

    def frames(self):
        import time as _time

        from edge.device.sources import Frame

        t0 = _time.monotonic()
        for i in range(self.n):
            heard = self.subscriber.on(self.topic)
            if heard and self.heard_at is None:
                self.heard_at, self.asked = i, json.loads(heard[0][0])["event_type"]
            yaw = pitch = 0.0
            if self.heard_at is not None and i > self.heard_at + 3:
                a = min(18.0, 4.0 * (i - self.heard_at - 3))
                yaw, pitch = a * TARGET[self.asked][0], a * TARGET[self.asked][1]
            yield Frame(self.frame((yaw, pitch, 0.0), i), t0 + i / FPS, i, f"door{i}")

    def close(self):
        pass


def _owner_at_a_challenging_door(stages, mesh, portrait, listener, port, tmp_path):
    """(components, the AnsweringPerson hearing through `listener`, a config with the challenge on and MQTT
    on `port`): the owner enrolled from the camera's own frontal view."""
    from test_landmarks import Embedder

    from edge.identity.gallery import Gallery
    from edge.service.config import default_config
    from edge.vision.align import FaceAligner
    from edge.vision.build import Stages

    detector, landmarker = stages
    components = Stages(detector, FaceAligner(landmarker=landmarker), Embedder(), landmarker)
    person = AnsweringPerson(portrait, mesh, listener, "facelock/door/challenge")
    with Gallery(tmp_path / "gallery.db") as g:
        g.enroll("owner", components.pipeline().embed_image(person.frame((0, 0, 0), 0))[None])
    c = default_config().replace("gallery", path=str(tmp_path / "gallery.db"))
    c = c.replace("outbox", path=str(tmp_path / "outbox.db"), fsync=False)
    c = c.replace("mqtt", host="127.0.0.1", port=port, device_id="door", reconnect_max_s=1.0)
    c = c.replace("decide", threshold=0.8, state_path=str(tmp_path / "lockout.json"))
    return components, person, c.replace("challenge", enabled=True)


def test_the_service_asks_over_mqtt_and_the_owner_who_answers_is_let_in(broker, stages, mesh, portraits, tmp_path):
    from gpiozero.pins.mock import MockFactory
    from mqtt_broker import Subscriber

    from edge.device.indicator import Indicator
    from edge.service.loop import Service

    sub = Subscriber(broker.port, ["facelock/door/#", "homeassistant/#"])
    components, person, c = _owner_at_a_challenging_door(stages, mesh, portraits[0], sub, broker.port, tmp_path)
    c = c.replace("challenge", indicator_pin=22)
    c = c.replace("service", shutdown_flush_s=5.0)
    factory = MockFactory()
    indicator = Indicator(22, factory=factory)
    pin = factory.pin(22)
    service = Service(c, components=components, source_factory=lambda _o: person, install_signals=False,
                      indicator=indicator)
    assert service.run() == 0
    assert sub.wait_for(lambda m: any(t.endswith("/event") for t, _, _ in m), timeout=10)
    (payload, retained), = sub.on("facelock/door/challenge")
    challenge = json.loads(payload)
    assert not retained and challenge["schema"] == "facelock.challenge/1"
    assert challenge["event_type"] in ChallengeOptions().actions and challenge["deadline_s"] == 5.0
    assert challenge["prompt"] == ACTIONS[challenge["event_type"]][0]
    events = [json.loads(p) for p, _ in sub.on("facelock/door/event")]
    assert [e["event_type"] for e in events] == ["recognized"] and events[0]["person"] == "owner"
    assert "live (challenge)" in events[0]["reason"]
    assert service.stats.challenges == 1 and indicator.signals == 1
    # the indicator flashed `pulses` times (in the background): the mock pin's history holds each on and off
    import time

    flashes = lambda: sum(1 for a, b in zip(pin.states, pin.states[1:]) if b.state and not a.state)
    deadline = time.monotonic() + 5
    while flashes() < challenge["pulses"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert flashes() == challenge["pulses"]
    config, = [json.loads(p) for p, r in sub.on("homeassistant/event/facelock_door/challenge/config") if p]
    assert config["state_topic"] == "facelock/door/challenge" and config["event_types"] == list(ChallengeOptions().actions)
    sub.close()


def test_a_challenge_nobody_can_hear_is_refused_at_its_deadline_and_says_why(stages, mesh, portraits, tmp_path,
                                                                            caplog):
    """The broker is away and there is no indicator: the lock still fails closed (skipping the challenge
    would let a replay in by cutting the Wi-Fi), and the log says the challenge could not be heard instead
    of leaving it to look like an owner who did not answer."""
    import logging

    from mqtt_broker import free_port

    from edge.service.loop import Service

    class Nobody:  # no broker, so nothing is ever heard
        def on(self, topic):
            return []

    components, person, c = _owner_at_a_challenging_door(stages, mesh, portraits[0], Nobody(), free_port(),
                                                         tmp_path)
    c = c.replace("service", shutdown_flush_s=0.5)
    caplog.set_level(logging.INFO, logger="edge.service.loop")
    service = Service(c, components=components, source_factory=lambda _o: person, install_signals=False)
    assert service.run() == 0
    assert service.stats.challenges >= 1
    unheard = [r.getMessage() for r in caplog.records if "nobody can hear it" in r.getMessage()]
    assert len(unheard) == service.stats.challenges and "indicator_pin" in unheard[0], unheard
    assert service.last_decision != "accept"  # failed closed


def test_an_answer_that_lowers_the_match_below_the_bar_still_counts_while_the_votes_last(mesh):
    """A head turned to answer matches less well: once the person had the votes, their frames below the
    bar still go to the judge while the k votes are within window_s; a frame of someone else does not."""
    scale = 80 / np.ptp(mesh[:, 0])
    for other, expected in (("owner", Outcome.ACCEPT), ("mallory", None)):
        rng = np.random.default_rng(2)
        judge = ChallengeJudge(ChallengeOptions(), rng=random.Random(0))
        d = Decider(DecideOptions(threshold=0.9, state_path="/nonexistent/unused"), liveness=judge)
        asked = None
        outcomes = []
        for i in range(12):
            t = i / FPS
            yaw, pitch = 0.0, 0.0
            if asked is not None and i >= 6:
                sy, sp = TARGET[asked]
                yaw, pitch = 4.0 * (i - 5) * sy, 4.0 * (i - 5) * sp
            match = vote() if i < 4 else vote(other, 0.8)  # turned: below the bar
            out = d.update(match, t, jittered(head(mesh, yaw, pitch, scale=scale), rng))
            if out.liveness is not None and out.liveness.asked is not None:
                asked = out.liveness.asked.action
            outcomes.append(out.outcome)
        assert asked is not None
        if expected is Outcome.ACCEPT:
            assert Outcome.ACCEPT in outcomes and outcomes.index(Outcome.ACCEPT) >= 8
        else:
            assert Outcome.ACCEPT not in outcomes

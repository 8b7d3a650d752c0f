"""The fuzz harness of the lock's security boundary: whatever an attacker (or a typo) feeds the lock ends in
the product's own clean error (a FacelockError subclass), never in a traceback that stops the service.

Seeded (tests/support/fuzz_cases.py), so every run tries the same cases; the counts are printed in one
line when the module is done. Three inputs:
- configs: edge/config.example.toml mutated (keys deleted or duplicated, wrong types, huge numbers,
  inf/nan, NUL characters, deep nesting, random bytes); each ends in ConfigError, or it loads and then the
  stages that need no model are built from it ("what passes --check starts");
- image files: header bombs in every format, tiny, truncated, bit-flipped, junk, folders; each decodes
  within the limits or is an ImageError, and a folder source of them skips the bad ones;
- MQTT command payloads: random JSON, deep nesting, huge numbers, wrong types, invalid UTF-8, retained;
  each goes through the link's parser and the service's command handler and gets exactly one reply.
And a real `Service` on a folder with a header bomb and a 1x1 PNG among good frames keeps running.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
import typing
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.fake_service import FakeAligner, FakeDetector, FakeEmbedder, built_service, service_config
from support.fuzz_cases import command_cases, config_cases
from support.hostile import hostile_files, png_claiming

from edge.device.sources import IMAGE_SUFFIXES, FolderSource
from edge.errors import ConfigError, ImageError
from edge.images import MAX_PIXELS, MIN_SIDE, read_image_rgb
from edge.mqtt.commands import Command, CommandRejected, parse_command
from edge.service.config import SECTIONS, default_config, load_config, options_class
from edge.types import Face

SEED = 13
N_CONFIGS, N_IMAGES, N_COMMANDS = 400, 300, 500


@pytest.fixture(scope="module")
def counts(request):
    """Each test's counts; the whole harness's summary line is written when the module is done."""
    found: dict[str, str] = {}
    yield found
    _say(request, "fuzz: " + ", ".join(found[k] for k in ("configs", "images", "commands") if k in found))


def _say(request, line: str) -> None:
    """`line` on the terminal, past pytest's output capture (the counts are the harness's report)."""
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line(line)


def _summary(n: int, what: str, outcomes: Counter) -> str:
    return f"{n} {what} (" + ", ".join(f"{v} {k}" for k, v in outcomes.most_common()) + ")"


def start_without_model(config, tmp: Path) -> None:
    """Build (and briefly run) every stage a loaded config makes that needs no model, on files in `tmp`
    (shared by the cases: an empty gallery, an outbox, a folder with one frame): what `--check` passed
    must start. The config's paths are replaced by those files."""
    from gpiozero.pins.mock import MockFactory

    from edge.device.relay import Relay
    from edge.identity.decide import Decider
    from edge.identity.gallery import Gallery
    from edge.identity.match import Match, Matcher
    from edge.mqtt.outbox import Outbox
    from edge.service.enrolment import FrameCollector
    from edge.vision.quality import QualityGate

    decider = Decider(dataclasses.replace(config.decide, state_path=str(tmp / "lockout.json")))
    match = Match("alice", 0.99, None, -1.0, -1.0, 1.99)
    for i in range(12):
        decider.update(match if i % 3 else None, 1000.0 + 0.25 * i)
    with Gallery(tmp / "gallery.db") as gallery:
        matcher = Matcher(gallery, config.match)
        matcher.match(np.eye(8, dtype=np.float32)[0])
        matcher.refresh(force=True)
    outbox = Outbox(dataclasses.replace(config.outbox, path=str(tmp / "outbox.db"), fsync=False))
    outbox.put("e1", "facelock/door/event", b"{}")
    outbox.close()
    frame = np.full((240, 320, 3), 90, np.uint8)
    kp = np.array([[140, 100], [180, 100], [160, 125], [160, 145], [120, 110], [200, 110]], np.float32)
    QualityGate(config.quality).check(frame, Face((110.0, 70.0, 210.0, 180.0), kp, 0.9))
    relay = Relay(config.relay, pin_factory=MockFactory())
    relay.unlock()
    relay.lock()
    relay.close()
    s = config.service
    FrameCollector(s.enroll_frames, s.enroll_interval_s, s.enroll_timeout_s, config.quality.min_face_px).expired()
    folder = tmp / "frames"
    folder.mkdir(exist_ok=True)
    cv2.imwrite(str(folder / "a.png"), frame)
    source = FolderSource(dataclasses.replace(config.source, kind="folder", uri=str(folder)))
    next(source.frames())
    source.close()


def test_fuzzed_configs_end_in_config_error_or_start(tmp_path, counts):
    rng = random.Random(SEED)
    outcomes: Counter = Counter()
    path = tmp_path / "fuzzed.toml"
    for i, raw in enumerate(config_cases(rng, N_CONFIGS)):
        path.write_bytes(raw)
        try:
            config = load_config(path)
        except ConfigError as exc:
            assert str(path) in str(exc), exc  # names the file
            outcomes["ConfigError"] += 1
            continue
        except Exception as exc:  # noqa: BLE001 -- the harness's finding: show the case
            pytest.fail(f"config case {i} raised {type(exc).__name__}: {exc}\n{raw[:600]!r}")
        try:
            start_without_model(config, tmp_path)
        except Exception as exc:  # noqa: BLE001 -- show the case
            pytest.fail(f"config case {i} passed --check but its stages failed to start: "
                        f"{type(exc).__name__}: {exc}\n{raw[:600]!r}")
        outcomes["loaded and started"] += 1
    assert outcomes["ConfigError"] >= N_CONFIGS // 4 and outcomes["loaded and started"] >= N_CONFIGS // 10
    counts["configs"] = _summary(N_CONFIGS, "configs", outcomes)


def _numeric_fields():
    for section in SECTIONS:
        cls = options_class(section)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] in (int, float):
                yield section, f.name, hints[f.name]


@pytest.mark.parametrize("section, key, tp", list(_numeric_fields()), ids=lambda v: getattr(v, "__name__", v))
def test_every_number_in_the_config_is_bounded(tmp_path, section, key, tp):
    """A value that passes `--check` must start: `decide.n = 10**20` passed and then crashed the Decider
    (deque maxlen: OverflowError), a sleep of 1e300 s crashes time.sleep."""
    path = tmp_path / "c.toml"
    never = {("match", "reload_check_s")}  # below 0 means "never": no lower bound needed
    for value in ("100000000000000000000", "1e300") + (() if (section, key) in never else
                                                         ("-100000000000000000000", "-1e300")):
        if tp is int and "e" in value:
            continue
        path.write_text(f"[{section}]\n{key} = {value}\n")
        with pytest.raises(ConfigError, match=rf"{section}\.\w+ = "):  # n's own check, or k's `<= n`
            load_config(path)


@pytest.mark.parametrize("text, expected", [
    ("[decide]\nn = 100000000000000000000\n", r"decide\.n = 100000000000000000000: expected 1-1000"),
    ("[decide]\nn = 5000\nk = 3\n", r"decide\.n = 5000: expected 1-1000"),
    ('[gallery]\npath = "gallery\\u0000.db"\n', r"gallery\.path = .*: expected a string without NUL"),
    ('[mqtt]\nca_file = "/etc/ssl/\\u0000"\n', r"mqtt\.ca_file"),
    ('[source]\nuri = "' + "x" * 5000 + '"\n', r"source\.uri = .*at most 4096 characters"),
    ("[decide]\nthreshold = " + "1" * 400 + "\n", r"decide\.threshold = 1111.*\(400 characters\): expected a number"),
    ("[decide]\nk = " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
    ("[decide]\nk = " + "{a=" * 3000 + "1" + "}" * 3000 + "\n", "nested too deeply"),
    ("[decide]\nk = " + "1" * 5000 + "\n", "not valid TOML"),
    ("[source]\nfps = 1e-300\n", r"source\.fps"),
    ("[service]\nsource_retry_s = 1e300\n", r"service\.source_retry_s"),
])
def test_config_values_that_used_to_crash(tmp_path, text, expected):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected) as err:
        load_config(path)
    assert str(path) in str(err.value)


# -- images --------------------------------------------------------------------------------------------------


def test_hostile_images_decode_within_limits_or_are_image_errors(tmp_path, counts):
    rng = random.Random(SEED)
    files = hostile_files(tmp_path / "hostile", rng, N_IMAGES)
    outcomes: Counter = Counter()
    decoded = []
    start = time.monotonic()
    for path, kind in files:
        try:
            image = read_image_rgb(path)
        except ImageError as exc:
            assert path.name in str(exc), exc
            outcomes["ImageError"] += 1
            continue
        except Exception as exc:  # noqa: BLE001 -- show the case
            pytest.fail(f"{path.name} ({kind}) raised {type(exc).__name__}: {exc}")
        assert not kind.startswith(("bomb", "tiny", "empty", "folder", "random")), f"{path.name} decoded"
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert image.shape[0] * image.shape[1] <= MAX_PIXELS and min(image.shape[:2]) >= MIN_SIDE
        outcomes["decoded"] += 1
        decoded.append(path)
    assert time.monotonic() - start < 20
    assert outcomes["ImageError"] > N_IMAGES // 2 and outcomes["decoded"] > 0
    # The same files as a folder source: only the decodable ones come out, in name order, nothing raises.
    source = FolderSource(dataclasses.replace(default_config().source, kind="folder", uri=str(tmp_path / "hostile"),
                                              fps=0.0))
    labels = [f.label for f in source.frames()]
    assert labels == [p.name for p in decoded if p.suffix in IMAGE_SUFFIXES]
    counts["images"] = _summary(N_IMAGES, "images", outcomes)


# -- commands ------------------------------------------------------------------------------------------------



def test_fuzzed_commands_each_get_one_reply_and_never_raise(tmp_path, counts):
    """Through the link's parser (as if from the broker) and the service's command handler: every message
    is answered exactly once, with an error unless it was a well-formed command that may act."""
    rng = random.Random(SEED)
    service = built_service(service_config(tmp_path))
    outcomes: Counter = Counter()
    answered: Counter = Counter()
    try:
        for i, (name, payload, max_bytes, retained) in enumerate(command_cases(rng, N_COMMANDS)):
            try:
                command = parse_command(name, payload, max_bytes, retained)
            except CommandRejected:
                outcomes["CommandRejected"] += 1
            except Exception as exc:  # noqa: BLE001 -- show the case
                pytest.fail(f"command case {i} ({name!r}, {payload[:80]!r}) raised {type(exc).__name__}: {exc}")
            else:
                assert isinstance(command, Command)
                outcomes["parsed"] += 1
            before = len(service.replies)
            service.link._handle_message(service.link.topics.command(name), payload, retained)
            service._commands()
            answers = service.replies[before:]
            assert len(answers) == 1, (i, name, payload[:80], answers)
            answered["ok" if answers[0]["ok"] else "error"] += 1
            assert answers[0]["ok"] or answers[0]["error"]
    finally:
        service._shutdown()
    assert outcomes["CommandRejected"] > N_COMMANDS // 3 and outcomes["parsed"] > 0
    counts["commands"] = (_summary(N_COMMANDS, "commands", outcomes)[:-1]
                          + f"; every one answered once: {answered['error']} errors, {answered['ok']} ok)")


@pytest.mark.parametrize("payload, max_bytes", [
    (b"[" * 4000, 4096),  # the old parser: RecursionError, a traceback and no reply
    (b'{"name": ' * 1500 + b'"x"' + b"}" * 1500, 1 << 20),
    (b'{"name": "bob", "frames": ' + b"9" * 5000 + b"}", 1 << 20),  # the old parser: AttributeError
])
def test_deeply_nested_and_huge_commands_are_rejected(payload, max_bytes):
    with pytest.raises(CommandRejected, match="payload is not JSON"):
        parse_command("remove", payload, max_bytes)
    with pytest.raises(CommandRejected):
        parse_command("lock", b"{" + payload, max_bytes + 1)


def test_the_command_handler_answers_any_exception(tmp_path):
    """A command whose execution raises something no one planned for still gets its error reply, and the
    handler returns."""
    service = built_service(service_config(tmp_path))

    class Exploding:
        names = ()

        def refresh(self, force=False):
            raise RuntimeError("matcher exploded")

    try:
        service.commands.matcher = Exploding()
        service.link.commands.put(parse_command("reload", b'{"id": "r1"}', 4096))
        service._commands()
        (reply,) = service.replies
        assert reply["id"] == "r1" and not reply["ok"] and "RuntimeError: matcher exploded" in reply["error"]
    finally:
        service.commands.matcher = service.matcher
        service._shutdown()


def _frame_of(who: int, i: int):
    from edge.device.sources import Frame

    img = np.zeros((200, 200, 3), np.uint8)
    img[0, 0, 0] = who
    return Frame(img, time.monotonic(), i, f"f{i}")


def test_an_enrolment_that_ends_on_a_locked_gallery_is_answered(tmp_path):
    """Measured: a locked gallery when an MQTT enrolment ended let sqlite3.OperationalError out (exit 1).
    Now the reply says the gallery is locked and to try again, and the loop goes on."""
    import sqlite3

    from edge.identity.gallery import Gallery
    from edge.service.commands import Enrolment
    from edge.service.enrolment import FrameCollector

    config = service_config(tmp_path)
    service = built_service(config)
    writer = sqlite3.connect(config.gallery.path, isolation_level=None)
    try:
        # the service's gallery, with a short busy timeout so the test does not wait 10 s
        service.commands.gallery = Gallery(config.gallery.path, timeout_s=0.2)
        service.commands.enrolment = Enrolment("carol", "e1", FrameCollector(1, 0.0, 60.0, 10.0))
        writer.execute("BEGIN IMMEDIATE")  # `facelock enroll` writing at that moment
        service._frame(_frame_of(2, 0))
        (reply,) = service.replies
        assert reply["command"] == "enroll" and reply["id"] == "e1" and not reply["ok"]
        assert "database is locked, try again" in reply["error"] and config.gallery.path in reply["error"]
        writer.execute("ROLLBACK")
        service._frame(_frame_of(1, 1))  # the loop carries on, deciding again
        assert service.commands.enrolment is None and service.stats.frames == 2
    finally:
        writer.close()
        service.commands.gallery.close()
        service._shutdown()


# -- a real service on a hostile folder ----------------------------------------------------------------------


def test_service_keeps_running_past_a_header_bomb_and_a_one_pixel_png(broker, tmp_path):
    """A folder source with a 62-byte PNG claiming 40000 x 40000 pixels and a 1x1 PNG among good frames:
    the old service exited with cv2.error on the bomb (and again on every restart). Now both are skipped
    and the good frames are decided on: alice is let in."""
    from mqtt_broker import Subscriber

    from edge.service.loop import Service

    folder = tmp_path / "frames"
    folder.mkdir()
    good = np.zeros((200, 200, 3), np.uint8)
    good[0, 0, 0] = 1  # alice, for the fake stages (PNG is lossless: the pixel survives)
    names = ["00.png", "01.png", "02-bomb.png", "03-tiny.png", "04.png", "05.png", "06.png"]
    for name in names:
        if "bomb" in name:
            (folder / name).write_bytes(png_claiming(40000, 40000))
        elif "tiny" in name:
            assert cv2.imwrite(str(folder / name), np.zeros((1, 1, 3), np.uint8))
        else:
            assert cv2.imwrite(str(folder / name), cv2.cvtColor(good, cv2.COLOR_RGB2BGR))
    config = service_config(tmp_path, broker.port).replace("source", kind="folder", uri=str(folder), fps=20.0)
    config = config.replace("decide", threshold=0.5, k=2, n=3, min_attempt_frames=1, attempt_gap_s=5.0,
                            cooldown_s=60.0, state_path=str(tmp_path / "lockout.json"))
    from gpiozero.pins.mock import MockFactory

    from edge.device.relay import Relay

    relay = Relay(config.relay, pin_factory=MockFactory())
    unlocks = []
    original = relay.unlock
    relay.unlock = lambda seconds=None: (unlocks.append(time.monotonic()), original(seconds))
    sub = Subscriber(broker.port, ["facelock/fuzz/event"])
    service = Service(config, components=(FakeDetector(), FakeAligner(), FakeEmbedder()), relay=relay,
                      install_signals=False)
    try:
        assert service.run() == 0  # the folder ends (no loop): a clean stop, not a crash
        assert service.stats.frames == 5 and service.stats.bad_frames == 0
        assert len(unlocks) == 1  # alice let in once (cooldown after)
        assert sub.wait_for(lambda m: any(json.loads(p).get("person") == "alice" for _, p, _ in m), timeout=10)
    finally:
        sub.close()

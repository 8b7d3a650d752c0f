"""Signed commands without a broker: the envelope's parsing, the signature, the replay window, the nonces
kept across restarts, the key files (`facelock admin keygen`), and the config rule that commands need TLS
and credentials."""

from __future__ import annotations

import base64
import json
import stat
import time

import pytest

from edge.errors import ConfigError
from edge.mqtt.commands import CommandRejected, parse_command
from edge.mqtt.signing import CommandRefused, NonceStore, Verifier, new_key, read_key_file, sign, signature
from edge.service.config import parse_config

TOPIC = "facelock/door/cmd/remove"


def _verify(verifier: Verifier, payload: bytes, topic: str = TOPIC, name: str = "remove"):
    command = parse_command(name, payload, 4096)
    verifier.verify(topic, command.envelope)
    return command


def test_signed_command_parses_and_verifies_once():
    key = new_key()
    verifier = Verifier(key, NonceStore(None))
    command = _verify(verifier, sign(key, TOPIC, {"name": "Alice", "id": "r1"}))
    assert command.name == "remove" and command.args == {"name": "Alice"} and command.request_id == "r1"
    with pytest.raises(CommandRefused, match="replayed"):
        _verify(verifier, sign(key, TOPIC, {"name": "Alice"}, nonce=command.envelope.nonce))


def test_what_breaks_a_signature():
    key = new_key()
    verifier = Verifier(key, NonceStore(None))
    good = json.loads(sign(key, TOPIC, {"name": "bob"}))
    tampered = dict(good, cmd={"name": "alice"})  # a captured command aimed at someone else
    cases = {
        "other key": sign(new_key(), TOPIC, {"name": "bob"}),
        "tampered command": json.dumps(tampered).encode(),
        "tampered ts": json.dumps(dict(good, ts=good["ts"] + 1)).encode(),
        "tampered nonce": json.dumps(dict(good, nonce="0" * 32)).encode(),
        "all-zero signature": json.dumps(dict(good, sig="0" * 64)).encode(),
    }
    for what, payload in cases.items():
        with pytest.raises(CommandRefused, match="^bad signature") as info:
            _verify(verifier, payload)
        assert "key" not in str(info.value).replace("command key", ""), what  # never which part was wrong
    # the same command for another lock (or another command name) does not verify on this one
    with pytest.raises(CommandRefused, match="bad signature"):
        _verify(verifier, sign(key, "facelock/garage/cmd/remove", {"name": "bob"}))
    with pytest.raises(CommandRefused, match="bad signature"):
        _verify(verifier, sign(key, "facelock/door/cmd/rename", {"name": "bob"}))
    _verify(verifier, json.dumps(good).encode())  # the untouched one still works


def test_replay_window():
    key = new_key()
    now = float(int(time.time()))
    verifier = Verifier(key, NonceStore(None, clock=lambda: now - 3600), clock=lambda: now)
    with pytest.raises(CommandRefused, match="stale: signed 61 s before"):
        _verify(verifier, sign(key, TOPIC, {"name": "a"}, ts=int(now) - 61))
    with pytest.raises(CommandRefused, match="stale: signed 90 s after"):
        _verify(verifier, sign(key, TOPIC, {"name": "a"}, ts=int(now) + 90))
    _verify(verifier, sign(key, TOPIC, {"name": "a"}, ts=int(now) - 59))
    _verify(verifier, sign(key, TOPIC, {"name": "a"}, ts=int(now) + 59))
    # a stale command with a wrong signature learns nothing about the clock
    with pytest.raises(CommandRefused, match="bad signature"):
        _verify(verifier, sign(new_key(), TOPIC, {"name": "a"}, ts=int(now) - 500))


def test_no_key_refuses_every_signed_command():
    with pytest.raises(CommandRefused, match="no command key"):
        _verify(Verifier(None, NonceStore(None)), sign(new_key(), TOPIC, {"name": "a"}))


def test_nonces_survive_a_restart(tmp_path):
    key = new_key()
    path = tmp_path / "state" / "command-nonces.json"
    payload = sign(key, TOPIC, {"name": "a"}, ts=int(time.time()) - 5)
    first = Verifier(key, NonceStore(path))
    assert first.nonces.not_before is not None  # no file yet: commands signed before the start are refused
    first.nonces.not_before = None  # (as if the file had existed)
    _verify(first, payload)
    assert json.loads(path.read_text())["nonces"]
    restarted = Verifier(key, NonceStore(path))
    assert restarted.nonces.not_before is None
    with pytest.raises(CommandRefused, match="replayed"):
        _verify(restarted, payload)
    _verify(restarted, sign(key, TOPIC, {"name": "a"}))  # a fresh one is fine


def test_missing_or_damaged_nonce_file_refuses_what_was_signed_before_the_start(tmp_path):
    key = new_key()
    path = tmp_path / "command-nonces.json"
    for content in (None, "{not json", '{"nonces": {"ab": "x"}}', "[]"):
        if content is not None:
            path.write_text(content)
        verifier = Verifier(key, NonceStore(path))
        with pytest.raises(CommandRefused, match="before the lock's service started"):
            _verify(verifier, sign(key, TOPIC, {"name": "a"}, ts=int(time.time()) - 10))
        _verify(verifier, sign(key, TOPIC, {"name": "a"}, ts=int(time.time()) + 1))
        path.unlink()


def test_a_nonce_that_cannot_be_stored_refuses_the_command(tmp_path):
    key = new_key()
    (tmp_path / "file").write_text("x")
    verifier = Verifier(key, NonceStore(tmp_path / "file" / "nonces.json"))  # its folder is a file
    with pytest.raises(CommandRefused, match="cannot record"):
        _verify(verifier, sign(key, TOPIC, {"name": "a"}, ts=int(time.time()) + 1))


def test_malformed_envelopes_are_rejected_by_the_parser():
    key = new_key()
    good = json.loads(sign(key, TOPIC, {"name": "bob"}))
    bad = {
        "extra key": dict(good, more=1),
        "missing sig": {k: v for k, v in good.items() if k != "sig"},
        "ts a string": dict(good, ts=str(good["ts"])),
        "ts a bool": dict(good, ts=True),
        "short nonce": dict(good, nonce="abcd"),
        "upper-case sig": dict(good, sig=good["sig"].upper()),
        "cmd a list": dict(good, cmd=["bob"]),
        "inner name invalid": dict(good, cmd={"name": "bo/b"}),
        "inner unknown key": dict(good, cmd={"name": "bob", "all": True}),
    }
    for what, envelope in bad.items():
        try:
            parse_command("remove", json.dumps(envelope).encode(), 4096)
        except CommandRejected:
            continue
        pytest.fail(f"{what}: accepted")
    assert parse_command("remove", b'{"name": "bob"}', 4096).envelope is None  # plain: unsigned
    enroll = parse_command("enroll", sign(key, "t", {"name": "bob", "add": True, "frames": 2}), 4096)
    assert enroll.args == {"name": "bob", "add": True, "frames": 2} and enroll.envelope is not None
    assert parse_command("rename", sign(key, "t", {"name": "bob", "to": "Robert"}), 4096).args["to"] == "Robert"


def test_signature_is_over_canonical_json():
    key = bytes(range(32))
    # a fixed vector, so another implementation of the admin's side can check itself against this one
    sig = signature(key, "facelock/door/cmd/unlock", 1767225600, "00112233445566778899aabbccddeeff", {"id": "x"})
    import hashlib
    import hmac

    message = b'["facelock.cmd/1","facelock/door/cmd/unlock",1767225600,"00112233445566778899aabbccddeeff",{"id":"x"}]'
    assert sig == hmac.new(key, message, hashlib.sha256).hexdigest()


def test_keygen_writes_0600_and_prints_the_key_once(tmp_path, capsys):
    from facelock.cli import main

    out = tmp_path / "command.key"
    assert main(["admin", "keygen", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    key = read_key_file(out)
    assert len(key) == 32 and base64.b64encode(key).decode() in printed.splitlines()
    assert main(["admin", "keygen", "--out", str(out)]) == 1  # never overwrites a key in use ...
    assert read_key_file(out) == key
    assert main(["admin", "keygen", "--out", str(out), "--force"]) == 0  # ... unless told to
    assert read_key_file(out) != key


def test_key_files_that_are_refused(tmp_path):
    path = tmp_path / "k"
    secret = base64.b64encode(new_key()).decode()
    path.write_text(secret + "\n")
    path.chmod(0o640)
    assert len(read_key_file(path)) == 32  # the service's group may read it
    for mode in (0o644, 0o660, 0o602):
        path.chmod(mode)
        with pytest.raises(ConfigError, match="by others") as info:
            read_key_file(path)
        assert secret not in str(info.value)
    path.chmod(0o600)
    for text in ("not base64!", base64.b64encode(b"short").decode(), ""):
        path.write_text(text)
        with pytest.raises(ConfigError, match="not a facelock command key") as info:
            read_key_file(path)
        assert not text or text not in str(info.value)
    with pytest.raises(ConfigError, match="cannot read"):
        read_key_file(tmp_path / "missing")


def test_commands_need_tls_and_credentials():
    def mqtt(**keys):
        return parse_config({"mqtt": keys}).mqtt

    refused = [
        {"commands": True},  # anonymous, plain text: anyone on the network
        {"commands": True, "tls": True},  # anonymous over TLS
        {"commands": True, "username": "lock", "password": "hunter2"},  # a password in clear text
        {"commands": True, "tls": True, "username": "lock"},  # a user name without password
        {"unsigned_unlock": True},
    ]
    for keys in refused:
        with pytest.raises(ConfigError, match=r"mqtt\.(commands|unsigned_unlock)") as info:
            mqtt(**keys)
        assert "hunter2" not in str(info.value)
    assert mqtt(commands=True, tls=True, username="lock", password_file="/etc/facelock/mqtt.pw").commands
    assert mqtt(commands=True, tls=True, cert_file="/etc/facelock/lock.crt").commands
    assert mqtt(commands=True, tls=True, username="u", password="p", unsigned_unlock=True).unsigned_unlock
    defaults = mqtt()
    assert not defaults.commands and not defaults.unsigned_unlock and not defaults.reveal_candidates

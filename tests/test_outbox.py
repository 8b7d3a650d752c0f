"""The durable outbox: order, ack, idempotent put, bounded size, survives reopening."""

from __future__ import annotations

import pytest

from edge.errors import ConfigError
from edge.mqtt.outbox import Outbox, OutboxError, OutboxOptions


def _box(tmp_path, **kw) -> Outbox:
    return Outbox(OutboxOptions(path=str(tmp_path / "o.db"), **kw))


def test_put_pending_ack_in_order(tmp_path):
    box = _box(tmp_path)
    for i in range(5):
        assert box.put(f"e{i}", "t/event", b"{}")
    entries = box.pending()
    assert [e.id for e in entries] == [f"e{i}" for i in range(5)]
    box.ack(entries[1].seq)
    assert [e.id for e in box.pending()] == ["e0", "e2", "e3", "e4"]
    assert [e.id for e in box.pending(after_seq=entries[2].seq)] == ["e3", "e4"]
    assert len(box) == 4


def test_same_id_stored_once(tmp_path):
    box = _box(tmp_path)
    assert box.put("e1", "t", b"a")
    assert not box.put("e1", "t", b"a")
    assert len(box) == 1


def test_survives_reopen(tmp_path):
    box = _box(tmp_path)
    box.put("e1", "t", b"payload")
    box.close()
    again = _box(tmp_path)
    (entry,) = again.pending()
    assert (entry.id, entry.topic, entry.payload, entry.qos) == ("e1", "t", b"payload", 1)


def test_full_drop_oldest(tmp_path):
    box = _box(tmp_path, max_events=3)
    for i in range(5):
        box.put(f"e{i}", "t", b"x")
    assert [e.id for e in box.pending()] == ["e2", "e3", "e4"]
    assert box.dropped == 2


def test_full_drop_newest(tmp_path):
    box = _box(tmp_path, max_events=2, when_full="drop_newest")
    assert box.put("a", "t", b"x") and box.put("b", "t", b"x")
    assert not box.put("c", "t", b"x")
    assert [e.id for e in box.pending()] == ["a", "b"]
    assert box.dropped == 1


def test_payload_limit_and_options(tmp_path):
    box = _box(tmp_path, max_payload_bytes=256)
    with pytest.raises(OutboxError, match="max_payload_bytes"):
        box.put("big", "t", b"x" * 1000)
    with pytest.raises(ConfigError, match="outbox.max_events"):
        OutboxOptions(max_events=0).validate()


def test_unwritable_path(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutboxError, match="cannot open"):
        Outbox(OutboxOptions(path=str(tmp_path / "file" / "o.db")))


def _ids(box) -> list[str]:
    return [e.id for e in box.pending(limit=1000)]


def test_full_never_drops_security_events_and_the_count_survives(tmp_path, caplog):
    box = _box(tmp_path, max_events=4)
    box.put("lock1", "t", b"x", security=True)
    box.put("a", "t", b"x")
    box.put("open1", "t", b"x", security=True)
    box.put("b", "t", b"x")  # full now
    assert box.put("c", "t", b"x")  # drops the oldest ordinary one, "a", not "lock1"
    assert box.put("lock2", "t", b"x", security=True)  # takes the place of "b"
    assert box.put("d", "t", b"x")  # drops "c"
    assert _ids(box) == ["lock1", "open1", "lock2", "d"] and box.dropped == 3
    assert box.put("cmd1", "t", b"x", security=True)  # drops "d", the last ordinary one
    assert not box.put("e", "t", b"x")  # only security events left: the new ordinary one is dropped
    assert box.put("lock3", "t", b"x", security=True)  # and a security event goes beyond the cap
    assert _ids(box) == ["lock1", "open1", "lock2", "cmd1", "lock3"]
    assert box.dropped == 5 and box.over_cap == 1
    full = [r for r in caplog.records if "outbox" in r.getMessage() and "full" in r.getMessage()]
    assert sum("dropped" in r.getMessage() for r in full) == 1  # one warning for the episode, not per drop
    assert sum("beyond the cap" in r.getMessage() for r in full) == 1
    box.close()
    again = _box(tmp_path, max_events=4)
    assert again.dropped == 5 and again.over_cap == 1 and _ids(again) == ["lock1", "open1", "lock2", "cmd1", "lock3"]
    for e in again.pending():  # delivered: back under the cap, ordinary events are stored again
        again.ack(e.seq)
    assert again.put("f", "t", b"x") and again.dropped == 5


def test_full_drop_newest_still_keeps_a_new_security_event(tmp_path):
    box = _box(tmp_path, max_events=2, when_full="drop_newest")
    assert box.put("a", "t", b"x") and box.put("b", "t", b"x")
    assert not box.put("c", "t", b"x")  # an ordinary new one is refused ...
    assert box.put("lock", "t", b"x", security=True)  # ... a security one takes the oldest ordinary one's place
    assert _ids(box) == ["b", "lock"] and box.dropped == 2
    assert not box.put("b", "t", b"x", security=True)  # already stored: no-op, nothing dropped for it
    assert box.dropped == 2


def test_which_events_are_security_events():
    from edge.mqtt.messages import RecognitionEvent, is_security_payload

    kept = [RecognitionEvent("lockout", "unknown", "lockout"), RecognitionEvent("unlock_allowed", "unknown",
            "unlock_allowed"), RecognitionEvent("recognized", "alice", "accept"),
            RecognitionEvent("command", "unknown", "refused", command="unlock")]
    ordinary = [RecognitionEvent("rejected", "unknown", "reject"), RecognitionEvent("unknown", "unknown", "reject")]
    assert all(e.security for e in kept) and not any(e.security for e in ordinary)
    assert [is_security_payload(e.to_json()) for e in kept + ordinary] == [True] * 4 + [False] * 2
    assert not is_security_payload(b"\xff not json") and not is_security_payload(b'{"event_type": ["lockout"]}')


def test_an_old_outbox_gets_its_security_events_marked(tmp_path):
    import sqlite3

    from edge.mqtt.messages import RecognitionEvent

    path = tmp_path / "o.db"
    db = sqlite3.connect(path)  # the schema before security events were marked
    db.executescript("CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, "
                     "topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL, created REAL NOT NULL);"
                     "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
                     "INSERT INTO counters VALUES ('dropped', 7);")
    for event_id, event in [("old-lockout", RecognitionEvent("lockout", "unknown", "lockout")),
                            ("old-reject", RecognitionEvent("rejected", "unknown", "reject"))]:
        db.execute("INSERT INTO events (id, topic, payload, qos, created) VALUES (?, 't', ?, 1, 0)",
                   (event_id, event.to_json()))
    db.commit()
    db.close()
    box = Outbox(OutboxOptions(path=str(path), max_events=2))
    assert box.dropped == 7
    assert box.put("new", "t", b"x")  # full: the old reject goes, the old lockout stays
    assert _ids(box) == ["old-lockout", "new"] and box.dropped == 8

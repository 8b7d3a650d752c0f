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

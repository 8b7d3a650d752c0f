"""Gallery on real SQLite files: enrolment, negatives, names, rename/remove, export/import, and the
`facelock people` commands."""

import json
import sqlite3

import numpy as np
import pytest

from edge.errors import GalleryError
from edge.identity.gallery import Gallery
from edge.identity.transfer import EXPORT_SCHEMA
from edge.names import validate_name
from facelock.cli import main

DIM = 128


def embs(n, seed):
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def gallery(tmp_path):
    with Gallery(tmp_path / "gallery.db") as g:
        g.enroll("Alice", embs(3, 1), model="test-model")
        g.enroll("bob", embs(2, 2))
        yield g


def state(g):
    return [(p.name, p.templates, p.negatives) for p in g.people()], g.revision()


def test_enroll_counts_dedup_and_case(gallery):
    assert state(gallery)[0] == [("Alice", 3, 0), ("bob", 2, 0)]
    assert gallery.enroll("alice", embs(3, 1)) == 0  # same person (case-insensitive), same embeddings
    assert gallery.enroll("ALICE", embs(1, 3)) == 1
    assert state(gallery)[0][0] == ("Alice", 4, 0)  # the stored spelling is kept
    np.testing.assert_allclose(gallery.embeddings("alice")[:3], embs(3, 1), atol=1e-7)
    # Stored as unit vectors whatever was given.
    gallery.enroll("carol", 5.0 * embs(1, 4))
    assert np.linalg.norm(gallery.embeddings("carol")[0]) == pytest.approx(1.0, abs=1e-6)


def test_wal_schema_and_revision(gallery):
    db = sqlite3.connect(gallery.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    before = gallery.revision()
    gallery.enroll("bob", embs(1, 9))
    assert gallery.revision() == before + 1


@pytest.mark.parametrize("bad, why", [
    ("", "non-empty"), (" alice", "leading"), ("a/b", "not allowed"), ("x" * 65, "at most 64"),
    ("Unknown", "reserved"), (42, "expected a string"), ("a  b", "double"),
])
def test_name_validation(bad, why):
    with pytest.raises(GalleryError, match=why):
        validate_name(bad)


def test_valid_names():
    assert validate_name("Zoë O'Brien-Smith") == "Zoë O'Brien-Smith"
    assert validate_name("dr. who_2") == "dr. who_2"


def test_bad_embeddings_write_nothing(gallery):
    before = state(gallery)
    bad = embs(3, 5)
    bad[2, 0] = np.nan
    with pytest.raises(GalleryError, match="NaN"):
        gallery.enroll("dave", bad)
    with pytest.raises(GalleryError, match="64 dimensions, the gallery holds 128"):
        gallery.enroll("dave", np.ones((1, 64)))
    with pytest.raises(GalleryError, match="all zeros"):
        gallery.enroll("dave", np.zeros((1, DIM)))
    assert state(gallery) == before


def test_negatives_need_the_person(gallery):
    with pytest.raises(GalleryError, match="enrol 'zed' before"):
        gallery.enroll_negative("zed", embs(1, 6))
    assert gallery.enroll_negative("alice", embs(2, 6)) == 2
    snap = gallery.snapshot()
    assert snap.names == ("Alice", "bob")
    assert snap.negative_owner.tolist() == [0, 0]
    assert snap.template_offsets.tolist() == [0, 3, 5]
    assert gallery.remove("alice", negatives_only=True) == 2
    assert state(gallery)[0][0] == ("Alice", 3, 0)


def test_rename_keeps_templates_and_negatives(gallery):
    gallery.enroll_negative("bob", embs(1, 8))
    before = gallery.embeddings("bob")
    gallery.rename("bob", "Robert")
    np.testing.assert_array_equal(gallery.embeddings("robert"), before)
    assert gallery.embeddings("Robert", "negative").shape == (1, DIM)
    with pytest.raises(GalleryError, match="no person 'bob'"):
        gallery.embeddings("bob")
    gallery.rename("robert", "ROBERT")  # changing only the case is fine
    with pytest.raises(GalleryError, match="'alice' is already enrolled"):
        gallery.rename("ROBERT", "alice")
    with pytest.raises(GalleryError, match="no person 'nobody2'"):
        gallery.rename("nobody2", "x")


def test_remove(gallery):
    assert gallery.remove("ALICE") == 3
    assert [p.name for p in gallery.people()] == ["bob"]
    with pytest.raises(GalleryError, match="no person 'alice'"):
        gallery.remove("alice")
    # Templates went with the person (foreign key cascade), not left as orphans.
    db = sqlite3.connect(gallery.path)
    assert db.execute("SELECT COUNT(*) FROM templates").fetchone()[0] == 2


def test_export_import_round_trip(gallery, tmp_path):
    gallery.enroll_negative("alice", embs(2, 11))
    out = tmp_path / "export.json"
    assert gallery.export(out) == 2
    doc = json.loads(out.read_text())
    assert doc["schema"] == EXPORT_SCHEMA
    assert set(doc["people"][0]) == {"name", "templates", "negatives"}  # embeddings only, no photos
    with Gallery(tmp_path / "copy.db") as copy:
        assert copy.import_(out) == 2
        a, b = gallery.snapshot(), copy.snapshot()
        assert a.names == b.names
        np.testing.assert_allclose(a.templates, b.templates, atol=1e-7)
        np.testing.assert_allclose(a.negatives, b.negatives, atol=1e-7)
        # Importing again merges without duplicating identical embeddings.
        copy.import_(out)
        assert state(copy)[0] == [("Alice", 3, 2), ("bob", 2, 0)]
        # --replace empties first.
        copy.enroll("zed", embs(1, 12))
        copy.import_(out, replace=True)
        assert [p.name for p in copy.people()] == ["Alice", "bob"]


def good_doc():
    return {"schema": EXPORT_SCHEMA, "people": [
        {"name": "carol", "templates": embs(2, 20).tolist(), "negatives": []},
        {"name": "dave", "templates": embs(1, 21).tolist()},
    ]}


@pytest.mark.parametrize("break_it, why", [
    (lambda d: d.update(schema="other/9"), "schema"),
    (lambda d: d.update(people={}), "must be a list"),
    (lambda d: d["people"][1].update(name="da/ve"), r"people\[1\].*not allowed"),
    (lambda d: d["people"][1].update(templates=[[1.0, "x"]]), r"people\[1\].*expected numbers"),
    (lambda d: d["people"][1].update(templates=embs(1, 3)[:, :64].tolist()), "64 dimensions"),
    (lambda d: d["people"][1].update(templates=[]), r"people\[1\]"),
    (lambda d: d["people"][1].update(name="CAROL"), "appears twice"),
    (lambda d: d["people"][0].update(photo="base64..."), "unknown keys"),
    (lambda d: d["people"][1]["templates"][0].__setitem__(5, float("nan")), "NaN"),
])
def test_malformed_import_writes_nothing(gallery, tmp_path, break_it, why):
    doc = good_doc()
    break_it(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    before = state(gallery)
    with pytest.raises(GalleryError, match=why):
        gallery.import_(path, replace=True)
    assert state(gallery) == before


def test_import_not_json(gallery, tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{not json")
    with pytest.raises(GalleryError, match="x.json: not valid JSON"):
        gallery.import_(path)


def test_not_a_gallery(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(GalleryError, match="junk.db"):
        Gallery(junk)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)")
    with pytest.raises(GalleryError, match="not a facelock gallery"):
        Gallery(other)
    future = tmp_path / "future.db"
    Gallery(future).close()
    db = sqlite3.connect(future)
    db.execute("UPDATE schema_version SET version = 99")
    db.commit()
    db.close()
    with pytest.raises(GalleryError, match="schema version 99"):
        Gallery(future)
    with pytest.raises(GalleryError, match="no such gallery"):
        Gallery(tmp_path / "absent.db", create=False)


def test_people_cli(gallery, tmp_path, capsys):
    path = str(gallery.path)
    assert main(["people", "--gallery", path, "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(p["name"], p["templates"]) for p in listed["people"]] == [("Alice", 3), ("bob", 2)]
    assert main(["people", "rename", "bob", "robert", "--gallery", path]) == 0
    assert main(["people", "remove", "nobody", "--gallery", path]) == 1
    assert "no person 'nobody'" in capsys.readouterr().err
    out = tmp_path / "e.json"
    assert main(["people", "export", str(out), "--gallery", path]) == 0
    assert main(["people", "remove", "alice", "--gallery", path]) == 0
    assert main(["people", "import", str(out), "--gallery", path]) == 0
    capsys.readouterr()
    assert main(["people", "list", "--gallery", path]) == 0
    text = capsys.readouterr().out
    assert "Alice" in text and "robert" in text and "bob" not in text.replace("robert", "")


def test_people_list_does_not_create_a_gallery(tmp_path, capsys):
    path = tmp_path / "none.db"
    assert main(["people", "list", "--json", "--gallery", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["people"] == []
    assert main(["people", "remove", "x", "--gallery", str(path)]) == 1
    assert "no such gallery" in capsys.readouterr().err
    assert not path.exists()


def test_snapshot_leaves_out_templates_of_another_embedding_space(tmp_path, caplog):
    from edge.identity.match import Matcher

    mine, other = "space:dlib_resnet_v1@aaaaaaaaaaaa", "space:some_other_net@bbbbbbbbbbbb"
    with Gallery(tmp_path / "g.db") as g:
        g.enroll("alice", embs(2, 1), model=mine)
        g.enroll("bob", embs(2, 2), model=other)  # enrolled before a change of embedder
        g.enroll("carol", embs(1, 3))  # unknown space (an older gallery): kept
        assert g.snapshot().names == ("alice", "bob", "carol")
        snap = g.snapshot(mine)
        assert snap.names == ("alice", "carol") and snap.ignored == ("bob",) and snap.ignored_templates == 2
        with caplog.at_level("WARNING"):
            matcher = Matcher(g, space=mine)
        assert matcher.names == ("alice", "carol")
        assert "2 templates of bob were made with another embedder" in caplog.text


def test_a_new_embedder_of_another_size_can_enrol_beside_the_old_templates(tmp_path):
    old, new = "space:dlib_resnet_v1@aaaaaaaaaaaa", "space:mobilefacenet@cccccccccccc"
    with Gallery(tmp_path / "g.db") as g:
        g.enroll("alice", embs(2, 1), model=old)
        small = np.ones((1, 64), np.float32)
        g.enroll("dave", small, model=new)  # 64-d: fine, the 128-d ones are another space
        assert g.snapshot(new).names == ("dave",) and g.snapshot(new).dim == 64
        assert g.snapshot(old).names == ("alice",)
        with pytest.raises(GalleryError, match="64 dimensions, the gallery holds 128-d"):
            g.enroll("erin", small, model=old)


class _WriteLock:
    """Another process writing: a second connection holding SQLite's write lock (BEGIN IMMEDIATE)."""

    def __init__(self, path):
        self.db = sqlite3.connect(path, isolation_level=None)

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("UPDATE meta SET value = value WHERE key = 'revision'")
        return self

    def __exit__(self, *exc):
        self.db.execute("ROLLBACK")
        self.db.close()


def test_a_locked_gallery_is_a_gallery_error_that_says_try_again(gallery):
    """The old gallery let sqlite3.OperationalError escape: an MQTT enrolment that ended while `facelock
    enroll` wrote stopped the service (exit 1)."""
    with Gallery(gallery.path, timeout_s=0.1) as g, _WriteLock(gallery.path):
        for change in (lambda: g.enroll("carol", embs(1, 5)), lambda: g.remove("bob"),
                       lambda: g.rename("bob", "robert"), lambda: g.enroll_negative("Alice", embs(1, 6))):
            with pytest.raises(GalleryError, match="database is locked, try again") as err:
                change()
            assert str(gallery.path) in str(err.value)
    assert state(gallery)[0] == [("Alice", 3, 0), ("bob", 2, 0)]  # nothing half-written
    with _WriteLock(gallery.path), pytest.raises(GalleryError, match="database is locked, try again"):
        Gallery(gallery.path, timeout_s=0.1)  # opening for writing takes the lock too


def test_read_only_open_reads_while_another_process_writes(gallery, tmp_path):
    with _WriteLock(gallery.path), Gallery(gallery.path, read_only=True, timeout_s=0.1) as ro:
        assert [(p.name, p.templates) for p in ro.people()] == [("Alice", 3), ("bob", 2)]
        assert ro.snapshot().names == ("Alice", "bob") and ro.revision() == gallery.revision()
        ro.export(tmp_path / "out.json")
    assert len(json.loads((tmp_path / "out.json").read_text())["people"]) == 2
    with Gallery(gallery.path, read_only=True) as ro, pytest.raises(GalleryError, match="readonly"):
        ro.enroll("carol", embs(1, 7))
    assert [p.name for p in gallery.people()] == ["Alice", "bob"]


def test_read_only_open_writes_nothing(tmp_path):
    with pytest.raises(GalleryError, match="no such gallery"):
        Gallery(tmp_path / "absent.db", read_only=True)
    assert not (tmp_path / "absent.db").exists()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")  # an empty file: the writable open would create the schema in it
    with pytest.raises(GalleryError, match="not a facelock gallery"):
        Gallery(empty, read_only=True)
    assert empty.read_bytes() == b""


def test_people_list_and_export_answer_during_a_write(gallery, tmp_path, capsys):
    """`people list` used to open for writing (BEGIN IMMEDIATE for the schema check) and wait out the
    10-s busy timeout while the service or `facelock enroll` wrote."""
    import time

    path = str(gallery.path)
    with _WriteLock(gallery.path):
        start = time.monotonic()
        assert main(["people", "--gallery", path, "list", "--json"]) == 0
        assert main(["people", "--gallery", path, "export", str(tmp_path / "e.json")]) == 0
        assert time.monotonic() - start < 3.0
    out = capsys.readouterr().out
    assert [p["name"] for p in json.loads(out.splitlines()[0])["people"]] == ["Alice", "bob"]
    assert len(json.loads((tmp_path / "e.json").read_text())["people"]) == 2


def test_new_only_enrolment_refuses_a_person_another_process_enrolled_meanwhile(tmp_path):
    """The MQTT enrolment checks the name when it starts and again when its frames are in; a `facelock
    enroll` on the lock (another process, another connection) can land between that check and the insert.
    `new_only` makes the check part of the insert's own transaction."""
    path = tmp_path / "gallery.db"
    with Gallery(path) as service_side, Gallery(path) as cli_side:
        assert service_side.people() == []  # the command's check: nobody called alice yet
        cli_side.enroll("Alice", embs(2, 1))  # meanwhile, on the lock's console
        with pytest.raises(GalleryError, match="'alice' is enrolled already"):
            service_side.enroll("alice", embs(3, 9), new_only=True)
        assert state(service_side)[0] == [("Alice", 2, 0)]  # the stranger's frames were not merged in
        assert service_side.enroll("bob", embs(1, 2), new_only=True) == 1

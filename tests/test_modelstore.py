"""The model store refuses missing, truncated and corrupt files by name; fetching is verified and idempotent."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from convert import fetch
from convert.errors import FetchError
from edge.errors import ModelError
from edge.models import store as modelstore
from edge.models.store import DETECTOR, DLIB_SHAPE5, model_path, spec

# The smallest catalogued file keeps these tests fast.
SMALL = DETECTOR


@pytest.fixture(autouse=True)
def _fresh_cache():
    modelstore.forget_verified()
    yield
    modelstore.forget_verified()


@pytest.fixture
def good_copy(models_dir, tmp_path) -> Path:
    shutil.copy2(models_dir / SMALL, tmp_path / SMALL)
    return tmp_path / SMALL


def test_models_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FACELOCK_MODELS", str(tmp_path / "m"))
    assert modelstore.models_dir() == tmp_path / "m"
    monkeypatch.delenv("FACELOCK_MODELS")
    assert modelstore.models_dir() == Path.home() / ".cache" / "facelock" / "models"


def test_missing_model_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(ModelError) as err:
        model_path(SMALL, directory=tmp_path)
    assert str(tmp_path / SMALL) in str(err.value)
    assert "facelock models fetch" in str(err.value)


def test_truncated_model_is_refused(good_copy):
    data = good_copy.read_bytes()
    good_copy.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated") as err:
        model_path(SMALL, directory=good_copy.parent)
    assert str(good_copy) in str(err.value)


def test_same_size_wrong_checksum_is_refused(good_copy):
    data = bytearray(good_copy.read_bytes())
    data[1000] ^= 0xFF
    good_copy.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="corrupt") as err:
        model_path(SMALL, directory=good_copy.parent)
    assert str(good_copy) in str(err.value)


def test_verification_is_cached_but_sees_rewrites(good_copy, monkeypatch):
    calls = []
    real = modelstore.sha256_file
    monkeypatch.setattr(modelstore, "sha256_file", lambda p: calls.append(p) or real(p))
    for _ in range(3):
        assert model_path(SMALL, directory=good_copy.parent) == good_copy
    assert len(calls) == 1, "a file whose size and mtime did not change must not be re-hashed"

    data = bytearray(good_copy.read_bytes())
    data[0] ^= 0xFF
    good_copy.write_bytes(bytes(data))  # same size, new mtime
    with pytest.raises(ModelError, match="corrupt"):
        model_path(SMALL, directory=good_copy.parent)


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ModelError, match=DETECTOR):
        model_path("nope.tflite")


def test_fetch_is_idempotent(models_dir):
    before = {n: (models_dir / n).stat().st_mtime_ns for n in modelstore.CATALOGUE}
    results = fetch.fetch_models(models_dir, log=lambda _m: None)
    assert {r.action for r in results} == {"present"}
    assert before == {n: (models_dir / n).stat().st_mtime_ns for n in modelstore.CATALOGUE}


def test_fetch_replaces_a_corrupt_file_atomically(models_dir, tmp_path, monkeypatch):
    # The "installed package" is the verified session copy, so no registry is needed here.
    monkeypatch.setattr(fetch, "_installed_copy", lambda m: models_dir / m.filename)
    target = tmp_path / SMALL
    target.write_bytes(b"garbage")
    (result,) = fetch.fetch_models(tmp_path, names=[SMALL], log=lambda _m: None)
    assert result.action == "installed"
    assert model_path(SMALL, directory=tmp_path) == target
    assert sorted(p.name for p in tmp_path.iterdir()) == [SMALL], "no temporary files left behind"
    (again,) = fetch.fetch_models(tmp_path, names=[SMALL], log=lambda _m: None)
    assert again.action == "present"


def test_checksum_mismatch_from_the_source_is_a_fetch_error(tmp_path, monkeypatch):
    bogus = tmp_path / "src.tflite"
    bogus.write_bytes(b"\0" * spec(SMALL).size)
    monkeypatch.setattr(fetch, "_installed_copy", lambda m: bogus)
    out = tmp_path / "out"
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch.fetch_models(out, names=[SMALL], log=lambda _m: None)
    assert not any(out.iterdir()), "a file that failed verification must not be installed"


def test_failed_download_is_a_clear_fetch_error(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "_installed_copy", lambda m: None)

    def fake_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found\n")

    monkeypatch.setattr(fetch.subprocess, "run", fake_run)
    with pytest.raises(FetchError, match=r"mediapipe==0\.10\.14: pip download failed"):
        fetch.fetch_models(tmp_path, names=[SMALL], log=lambda _m: None)


def test_extracts_the_single_member_of_a_wheel(models_dir, tmp_path):
    model = spec(SMALL)
    wheel = tmp_path / "mediapipe-0.10.14-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(models_dir / SMALL, f"{model.module}/{model.member}")
        zf.writestr("mediapipe/modules/other.tflite", b"x")
    out = fetch._extract_member(wheel, model, tmp_path / "x")
    assert out.read_bytes() == (models_dir / SMALL).read_bytes()

    sdist_model = replace(spec(DLIB_SHAPE5), member="models/missing.dat")
    with pytest.raises(FetchError, match="expected one member"):
        fetch._extract_member(wheel, sdist_model, tmp_path / "y")


def test_models_list_json(models_dir, capsys):
    from facelock.cli import main

    assert main(["models", "list", "--json", "--dir", str(models_dir)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(modelstore.CATALOGUE)
    assert all(r["state"] == "ok" for r in rows)


def test_cli_fetch_reports_present_models(models_dir, capsys):
    from facelock.cli import main

    assert main(["models", "fetch", "--dir", str(models_dir)]) == 0
    err = capsys.readouterr().err
    assert all(f"{name}: present and verified" in err for name in modelstore.CATALOGUE)

"""Model bundles are verified whole: every file the board loads is listed with sha256 and bytes, names stay
inside the bundle, a .tar.gz works wherever a folder does, extraction is safe and leaves no folder behind."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from edge.errors import BundleError
from edge.files import sha256_file
from edge.models.bundle import MANIFEST, load_bundle, write_manifest

REPO = Path(__file__).resolve().parents[1]


def _manifest(**over) -> dict:
    m = {
        "created": "2026-01-01T00:00:00Z",
        "embedder": {"file": "embedder.tflite", "edgetpu_file": None, "space": "space:test"},
        "detector": {"file": "detector.tflite", "kind": "blazeface", "input_size": [128, 128]},
        "alignment": {"chip_size": 150, "template": {"points": [[0.3, 0.3], [0.7, 0.3], [0.5, 0.7]]}},
        "threshold": {"cosine": 0.42, "target_far": 1e-4, "chosen_on": "test"},
    }
    m.update(over)
    return m


def _bundle(folder: Path, **over) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "detector.tflite").write_bytes(b"TFL3 stand-in detector")
    (folder / "embedder.tflite").write_bytes(b"TFL3 stand-in embedder")
    write_manifest(folder, _manifest(**over))
    return folder


def _edit(folder: Path, change) -> None:
    path = folder / MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _tar(folder: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return out


@pytest.fixture
def tmpdir_for_bundles(tmp_path, monkeypatch) -> Path:
    """Where load_bundle extracts archives in this test: it must be empty again afterwards."""
    d = tmp_path / "tmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


# -- every loaded file is listed --------------------------------------------------------------------------

def test_a_whole_bundle_loads(tmp_path):
    b = load_bundle(_bundle(tmp_path / "b"))
    assert b.embedder_file == tmp_path / "b" / "embedder.tflite" and b.owned is None
    assert b.threshold.cosine == 0.42 and b.edgetpu_file is None


@pytest.mark.parametrize("key, section, name", [
    ("embedder.file", "embedder", "file"),
    ("detector.file", "detector", "file"),
])
def test_a_loaded_file_missing_from_files_is_refused(tmp_path, key, section, name):
    folder = _bundle(tmp_path / "b")
    unlisted = f"{section}.tflite"
    _edit(folder, lambda m: m["files"].pop(unlisted))
    with pytest.raises(BundleError, match=rf"{key} '{unlisted}' is not listed in 'files'"):
        load_bundle(folder)
    with pytest.raises(BundleError, match=key):  # unchecked files are refused even without hashing
        load_bundle(folder, verify=False)


def test_an_unlisted_edgetpu_model_or_any_other_loaded_file_is_refused(tmp_path):
    folder = _bundle(tmp_path / "b")
    (folder / "embedder_edgetpu.tflite").write_bytes(b"TPU model added after the manifest was written")
    _edit(folder, lambda m: m["embedder"].update(edgetpu_file="embedder_edgetpu.tflite"))
    with pytest.raises(BundleError, match=r"embedder\.edgetpu_file 'embedder_edgetpu.tflite' is not listed"):
        load_bundle(folder)
    # a future stage's model (any `file` / `*_file` key) is held to the same rule
    other = _bundle(tmp_path / "c", landmarks={"landmarks_file": "lm.tflite"})
    with pytest.raises(BundleError, match=r"landmarks\.landmarks_file 'lm.tflite'"):
        load_bundle(other)


def test_a_listed_edgetpu_model_is_verified(tmp_path):
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "embedder_edgetpu.tflite").write_bytes(b"TPU model")
    _bundle(folder, embedder={"file": "embedder.tflite", "edgetpu_file": "embedder_edgetpu.tflite"})
    assert load_bundle(folder).edgetpu_file == folder / "embedder_edgetpu.tflite"
    (folder / "embedder_edgetpu.tflite").write_bytes(b"TPU modeL")
    with pytest.raises(BundleError, match="embedder_edgetpu.tflite: checksum does not match"):
        load_bundle(folder)


@pytest.mark.parametrize("meta, wanted", [
    ({"sha256": "0" * 64}, "'bytes' missing"),
    ({"bytes": 22}, "'sha256' missing"),
    ({"bytes": "22", "sha256": "0" * 64}, "'bytes' missing or not a size"),
    ({"bytes": 22, "sha256": "not hex"}, "'sha256' missing or not 64"),
    ("just a string", "expected {sha256, bytes}"),
])
def test_an_incomplete_entry_is_a_bundle_error_not_a_key_error(tmp_path, meta, wanted):
    folder = _bundle(tmp_path / "b")
    _edit(folder, lambda m: m["files"].update({"detector.tflite": meta}))
    with pytest.raises(BundleError, match=r"files\['detector.tflite'\]: " + wanted.replace("{", r"\{")):
        load_bundle(folder)


# -- names stay inside --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../etc/x", "/etc/passwd", "sub/../../x", "..\\x", ""])
def test_a_listed_name_outside_the_bundle_is_refused(tmp_path, name):
    folder = _bundle(tmp_path / "b")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "x").write_bytes(b"outside")
    meta = {"bytes": 7, "sha256": sha256_file(tmp_path / "etc" / "x")}
    _edit(folder, lambda m: m["files"].update({name: meta}))
    with pytest.raises(BundleError, match="inside the bundle"):
        load_bundle(folder)


def test_a_loaded_name_outside_the_bundle_is_refused(tmp_path):
    folder = _bundle(tmp_path / "b")
    (tmp_path / "evil.tflite").write_bytes(b"TFL3 stand-in embedder")
    _edit(folder, lambda m: (m["embedder"].update(file="../evil.tflite"),
                             m["files"].update({"../evil.tflite": m["files"]["embedder.tflite"]})))
    with pytest.raises(BundleError, match=r"'\.\./evil\.tflite'.*inside the bundle"):
        load_bundle(folder)


def test_a_symlink_out_of_the_bundle_is_refused(tmp_path):
    folder = _bundle(tmp_path / "b")
    outside = tmp_path / "elsewhere.tflite"
    shutil.move(folder / "embedder.tflite", outside)  # same bytes, same checksum, but not in the bundle
    (folder / "embedder.tflite").symlink_to(outside)
    with pytest.raises(BundleError, match="outside the bundle"):
        load_bundle(folder)
    # a symlink that stays inside is fine
    (folder / "embedder.tflite").unlink()
    (folder / "models").mkdir()
    shutil.move(outside, folder / "models" / "embedder.tflite")
    (folder / "embedder.tflite").symlink_to("models/embedder.tflite")
    assert load_bundle(folder).embedder_file.read_bytes() == b"TFL3 stand-in embedder"


# -- .tar.gz: everywhere, safely, nothing left behind ------------------------------------------------------

def test_an_archive_loads_and_its_folder_goes_on_close(tmp_path, tmpdir_for_bundles):
    archive = _tar(_bundle(tmp_path / "bundle"), tmp_path / "bundle.tar.gz")
    b = load_bundle(archive)
    assert b.owned is not None and b.owned.parent == tmpdir_for_bundles
    assert b.embedder_file.read_bytes() == b"TFL3 stand-in embedder" and b.threshold.cosine == 0.42
    b.close()
    assert not list(tmpdir_for_bundles.iterdir())
    with load_bundle(archive) as b:
        assert b.detector_file.is_file()
    assert not list(tmpdir_for_bundles.iterdir())


def test_a_refused_archive_leaves_no_folder(tmp_path, tmpdir_for_bundles):
    folder = _bundle(tmp_path / "bundle")
    (folder / "embedder.tflite").write_bytes(b"tampered")
    with pytest.raises(BundleError, match="embedder.tflite: checksum"):
        load_bundle(_tar(folder, tmp_path / "bad.tar.gz"))
    (tmp_path / "junk.tar.gz").write_bytes(b"not gzip at all")
    with pytest.raises(BundleError, match="not a readable bundle archive"):
        load_bundle(tmp_path / "junk.tar.gz")
    assert not list(tmpdir_for_bundles.iterdir())


def test_an_unclosed_archive_is_removed_at_exit(tmp_path):
    archive = _tar(_bundle(tmp_path / "bundle"), tmp_path / "bundle.tar.gz")
    proc = subprocess.run(
        [sys.executable, "-c", ("import sys; from edge.models.bundle import load_bundle; "
         "print(load_bundle(sys.argv[1]).owned)"), str(archive)],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=True)
    owned = Path(proc.stdout.strip())
    assert owned.name.startswith("facelock-bundle-") and not owned.exists()


def _evil(tmp_path: Path, kind: str) -> Path:
    """A bundle archive with one hostile member besides a good bundle."""
    good = _bundle(tmp_path / "src" / "bundle")
    out = tmp_path / f"{kind}.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(good, arcname="bundle")
        info = tarfile.TarInfo({"dotdot": "bundle/../../escaped", "absolute": "/tmp/facelock-escaped",
                                }.get(kind, f"bundle/{kind}"))
        data = b"escaped"
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, str(tmp_path / "outside")
        elif kind == "symlink_up":
            info.type, info.linkname = tarfile.SYMTYPE, "../../outside"
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
        elif kind == "device":
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        elif kind == "fifo":
            info.type = tarfile.FIFOTYPE
        if info.type == tarfile.REGTYPE:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        else:
            tar.addfile(info)
    return out


HOSTILE = ["dotdot", "absolute", "symlink", "symlink_up", "hardlink", "device", "fifo"]


@pytest.mark.parametrize("filters", [True, False], ids=["data_filter", "no_data_filter"])
@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_archive_members_are_refused(tmp_path, tmpdir_for_bundles, monkeypatch, kind, filters):
    if not filters:  # Raspberry Pi OS Bookworm's Python 3.11.2: tarfile has no extraction filters
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive = _evil(tmp_path, kind)
    with pytest.raises(BundleError, match="refused"):
        load_bundle(archive)
    assert not list(tmpdir_for_bundles.iterdir())
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/facelock-escaped").exists()


def test_bookworms_python_without_tar_filters(tmp_path):
    """The real thing where it is here: a Python without tarfile.data_filter (Debian's 3.11.2)."""
    py = shutil.which("python3", path="/usr/bin:/bin")
    probe = subprocess.run([py or "python3", "-c", "import tarfile, numpy; print(hasattr(tarfile, 'data_filter'))"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0 or probe.stdout.strip() != "False":
        pytest.skip(f"{py}: no Python without tarfile.data_filter (with numpy) here")
    good = _tar(_bundle(tmp_path / "bundle"), tmp_path / "good.tar.gz")
    code = ("import sys; from edge.models.bundle import load_bundle\n"
            "b = load_bundle(sys.argv[1]); print(b.threshold.cosine); b.close(); print(b.owned.exists())\n"
            "try:\n    load_bundle(sys.argv[2])\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    proc = subprocess.run([py, "-c", code, str(good), str(_evil(tmp_path, "symlink"))], capture_output=True,
                          text=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["0.42", "False"] and lines[2].startswith("BundleError") and "refused" in lines[2]


def test_the_service_reads_an_archive_as_model_path(tmp_path):
    """`[model] path = "bundle.tar.gz"`: the service opens it like a folder (its threshold decides)."""
    from edge.service.config import default_config
    from edge.service.loop import Service

    archive = _tar(_bundle(tmp_path / "bundle"), tmp_path / "bundle.tar.gz")
    config = default_config().replace("model", path=str(archive))
    service = Service(config, components=(object(), object(), object()), install_signals=False)
    _, bundle = service._load_model()
    try:
        assert bundle is not None and bundle.owned is not None and bundle.owned.is_dir()
        from edge.service.operating_point import operating_point

        assert operating_point(config, bundle)[0].threshold == 0.42
    finally:
        bundle.close()
    assert not bundle.owned.exists()


@pytest.mark.slow
def test_embed_cli_takes_a_bundle_archive(quick_bundle, fixtures_dir, tmp_path):
    """`facelock embed --model bundle.tar.gz` (the archive `facelock convert` writes beside the folder)."""
    opts, _ = quick_bundle
    archive = opts.out.with_name(opts.out.name + ".tar.gz")
    assert archive.is_file()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "facelock", "embed", "--json", "--model", str(archive),
         str(fixtures_dir / "astronaut.png")],
        capture_output=True, text=True, timeout=180, check=False, env={**os.environ, "TMPDIR": str(tmp)})
    assert proc.returncode == 0, proc.stderr
    embedding = json.loads(proc.stdout.splitlines()[0])["embedding"]
    assert len(embedding) > 0 and abs(sum(v * v for v in embedding) - 1.0) < 1e-3
    assert not list(tmp.iterdir())  # the extracted copy is gone when the command ends


def test_the_service_takes_the_dim_light_threshold_from_the_bundle_or_refuses_dim_faces(tmp_path):
    """edge.service.operating_point: a bundle's `threshold.dim` becomes `[decide] dim_threshold` (dim faces
    vote at it); a bundle without one leaves dim faces refused as too dark, as before it existed; what the
    config sets itself stands; a malformed entry is refused naming the key."""
    from edge.service.config import default_config
    from edge.service.operating_point import operating_point

    config = default_config()
    dim = {"cosine": 0.45, "min_contrast": 8.0, "chosen_on": "test"}
    with_dim = load_bundle(_bundle(tmp_path / "a", threshold={"cosine": 0.42, "target_far": 1e-3,
                                                               "chosen_on": "t", "dim": dim}))
    assert with_dim.threshold.dim.cosine == 0.45 and with_dim.threshold.dim.floor == 8.0
    decide, quality = operating_point(config, with_dim)
    assert (decide.threshold, decide.dim_threshold) == (0.42, 0.45)
    assert quality.min_contrast == config.quality.min_contrast < quality.dim_contrast  # dim faces are tried
    without = load_bundle(_bundle(tmp_path / "b"))
    assert without.threshold.dim is None
    decide, quality = operating_point(config, without)
    assert decide.dim_threshold == 0 and quality.min_contrast == quality.dim_contrast  # dim: too dark
    decide, quality = operating_point(config.replace("quality", min_contrast=5.0), without)
    assert quality.min_contrast == 5.0  # set by the config: it stands
    decide, _ = operating_point(config.replace("decide", dim_threshold=0.5), with_dim)
    assert decide.dim_threshold == 0.5
    bad = _bundle(tmp_path / "c", threshold={"cosine": 0.42, "target_far": 1e-3, "chosen_on": "t",
                                             "dim": {"cosine": "high"}})
    with pytest.raises(BundleError, match="threshold.dim"):
        _ = load_bundle(bad).threshold


def test_the_service_takes_the_soft_face_threshold_from_the_bundle_or_votes_soft_faces_at_the_threshold(tmp_path):
    """A bundle's `threshold.soft` becomes `[decide] soft_threshold`; without one soft faces vote at the
    threshold (0: none), as before it existed; the config's own value stands; a malformed entry is refused
    naming the key and the field it lacks."""
    from edge.service.config import default_config
    from edge.service.operating_point import operating_point

    config = default_config()
    soft = {"cosine": 0.44, "min_sharpness": 0.16, "chosen_on": "test"}
    with_soft = load_bundle(_bundle(tmp_path / "a", threshold={"cosine": 0.42, "target_far": 1e-3,
                                                                "chosen_on": "t", "soft": soft}))
    assert with_soft.threshold.soft.cosine == 0.44 and with_soft.threshold.soft.floor == 0.16
    assert with_soft.threshold.dim is None
    decide, quality = operating_point(config, with_soft)
    assert (decide.threshold, decide.soft_threshold) == (0.42, 0.44)
    assert quality.min_sharpness == config.quality.min_sharpness  # soft faces are tried, not refused
    decide, _ = operating_point(config, load_bundle(_bundle(tmp_path / "b")))
    assert decide.soft_threshold == 0
    decide, _ = operating_point(config.replace("decide", soft_threshold=0.5), with_soft)
    assert decide.soft_threshold == 0.5
    bad = _bundle(tmp_path / "c", threshold={"cosine": 0.42, "target_far": 1e-3, "chosen_on": "t",
                                             "soft": {"cosine": 0.5, "min_contrast": 8.0}})
    with pytest.raises(BundleError, match="threshold.soft.*min_sharpness"):
        _ = load_bundle(bad).threshold

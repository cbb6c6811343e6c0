import hashlib
import json
import logging

import pytest

from encoders.registry import ModelIntegrityError, ModelNotFoundError, ModelRegistry, ModelWatcher, TensorSpec


def _write(content: bytes):
    def w(d):
        (d / "model.onnx").write_bytes(content)
    return w


def test_publish_load_and_current(tmp_path):
    reg = ModelRegistry(tmp_path)
    with pytest.raises(ModelNotFoundError):
        reg.load("m")
    spec = dict(inputs=[TensorSpec("x", "float32", ["batch", 3])], outputs=[TensorSpec("y", "float32", ["batch", 2])],
                dim=2, opset=17)
    reg.publish("m", "1", _write(b"one"), **spec)
    w = ModelWatcher(reg, "m")
    assert w.changed() is None
    mv = reg.load("m")
    assert mv.manifest.version == "1" and mv.manifest.dim == 2 and mv.manifest.inputs[0].shape == ["batch", 3]
    reg.publish("m", "2", _write(b"two"), **spec)
    assert reg.current_version("m") == "2" and reg.versions("m") == ["1", "2"]
    assert w.changed() == "2" and w.changed() is None
    with pytest.raises(FileExistsError):
        reg.publish("m", "2", _write(b"x"), **spec)


def test_tampered_model_is_refused(tmp_path):
    reg = ModelRegistry(tmp_path)
    reg.publish("m", "1", _write(b"abc"), inputs=[], outputs=[], dim=1, opset=17)
    (tmp_path / "m" / "1" / "model.onnx").write_bytes(b"abd")
    with pytest.raises(ValueError, match="sha256"):
        reg.load("m")


def test_failed_writer_leaves_nothing(tmp_path):
    reg = ModelRegistry(tmp_path)

    def boom(d):
        (d / "model.onnx").write_bytes(b"half")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        reg.publish("m", "1", boom, inputs=[], outputs=[], dim=1, opset=17)
    assert reg.versions("m") == [] and reg.current_version("m") is None
    assert [p for p in (tmp_path / "m").iterdir()] == []


# ---------------------------------------------------------------------------------- every file hashed, verified
SPEC = dict(inputs=[], outputs=[], dim=1, opset=17)


def _with_side_files(d):
    (d / "model.onnx").write_bytes(b"graph")
    (d / "schema.json").write_text('{"vocab": {"a": 1}}')
    (d / "tok").mkdir()
    (d / "tok" / "tokenizer.json").write_text('{"model": "wordpiece"}')


def test_the_manifest_records_every_file(tmp_path):
    reg = ModelRegistry(tmp_path)
    mv = reg.publish("m", "1", _with_side_files, **SPEC)
    files = json.loads((mv.path / "manifest.json").read_text())["files"]
    assert sorted(files) == ["model.onnx", "schema.json", "tok/tokenizer.json"]
    assert files["schema.json"] == hashlib.sha256(b'{"vocab": {"a": 1}}').hexdigest()
    assert mv.manifest.sha256 == files["model.onnx"] == hashlib.sha256(b"graph").hexdigest()
    assert reg.load("m").manifest.files == files


@pytest.mark.parametrize("side", ["schema.json", "tok/tokenizer.json"])
def test_a_corrupted_side_file_is_refused(tmp_path, side):
    reg = ModelRegistry(tmp_path)
    reg.publish("m", "1", _with_side_files, **SPEC)
    f = tmp_path / "m" / "1" / side
    f.write_text(f.read_text() + " ")  # still the same JSON: only the hash tells
    with pytest.raises(ModelIntegrityError, match="sha256") as info:
        reg.load("m")
    assert (info.value.reason, info.value.file) == ("hash_mismatch", side)


def test_a_missing_file_and_a_corrupt_manifest_are_refused(tmp_path):
    reg = ModelRegistry(tmp_path)
    reg.publish("m", "1", _with_side_files, **SPEC)
    reg.publish("m", "2", _with_side_files, **SPEC)
    (tmp_path / "m" / "1" / "schema.json").unlink()
    with pytest.raises(ModelIntegrityError) as info:
        reg.load("m", "1")
    assert (info.value.reason, info.value.file) == ("missing_file", "schema.json")
    (tmp_path / "m" / "2" / "manifest.json").write_text('{"name": "m", "version": ')
    with pytest.raises(ModelIntegrityError) as info:
        reg.load("m", "2")
    assert info.value.reason == "corrupt_manifest"


@pytest.mark.parametrize("name", ["../../outside.json", "/etc/hostname", "./schema.json", ""])
def test_a_manifest_naming_a_file_outside_the_version_is_refused(tmp_path, name):
    reg = ModelRegistry(tmp_path)
    mv = reg.publish("m", "1", _with_side_files, **SPEC)
    d = json.loads((mv.path / "manifest.json").read_text())
    d["files"][name] = hashlib.sha256(b"x").hexdigest()
    (mv.path / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(ModelIntegrityError) as info:
        reg.load("m")
    assert info.value.reason == "corrupt_manifest"


def test_kept_bytes_are_the_verified_ones(tmp_path):
    """A file swapped on disk after verification: the kept bytes are still the verified ones; a later read without
    kept bytes checks again and refuses the swap."""
    reg = ModelRegistry(tmp_path)
    reg.publish("m", "1", _with_side_files, **SPEC)
    kept = reg.load("m", keep_bytes=True)
    assert kept.kept == ("model.onnx", "schema.json", "tok/tokenizer.json")
    plain = reg.load("m")
    assert plain.kept == ()
    (tmp_path / "m" / "1" / "schema.json").write_text('{"vocab": {"a": 2}}')
    assert kept.read_json("schema.json") == {"vocab": {"a": 1}}
    with pytest.raises(ModelIntegrityError, match="sha256"):
        plain.read_bytes("schema.json")
    kept.release()
    assert kept.kept == ()
    with pytest.raises(ModelIntegrityError, match="sha256"):
        kept.read_bytes("schema.json")


def test_a_file_added_after_publishing_is_never_served(tmp_path):
    reg = ModelRegistry(tmp_path)
    reg.publish("m", "1", _with_side_files, **SPEC)
    (tmp_path / "m" / "1" / "extra.json").write_text("{}")
    mv = reg.load("m")  # the recorded files verify
    with pytest.raises(ModelIntegrityError) as info:
        mv.read_bytes("extra.json")
    assert info.value.reason == "unrecorded_file"


def test_an_old_manifest_checks_the_graph_and_warns_about_its_side_files(tmp_path, caplog):
    """Manifests written before per-file hashes: the graph's sha256 is still checked; side files are read
    unchecked, with one warning per version (republish to record them)."""
    reg = ModelRegistry(tmp_path)
    mv = reg.publish("m", "1", _with_side_files, **SPEC)
    d = json.loads((mv.path / "manifest.json").read_text())
    del d["files"]
    (mv.path / "manifest.json").write_text(json.dumps(d))
    with caplog.at_level(logging.WARNING, logger="thaw.models"):
        old = reg.load("m", keep_bytes=True)
        assert old.manifest.files is None and old.kept == ("model.onnx",)
        assert old.read_json("schema.json") == {"vocab": {"a": 1}}
        reg.load("m")
    warned = [r.getMessage() for r in caplog.records if r.name == "thaw.models"]
    assert len(warned) == 1 and "republish" in warned[0]
    (mv.path / "model.onnx").write_bytes(b"grapH")
    with pytest.raises(ModelIntegrityError, match="sha256"):
        reg.load("m")


def test_a_crashed_publish_is_not_a_version(tmp_path):
    """A hidden temporary directory (a publish in progress, or one a crash left after writing its manifest) is
    never listed or served."""
    reg = ModelRegistry(tmp_path)
    reg.publish("m", "1", _with_side_files, **SPEC)
    half = tmp_path / "m" / ".2.abc123"
    half.mkdir()
    (half / "model.onnx").write_bytes(b"half")
    (half / "manifest.json").write_text((tmp_path / "m" / "1" / "manifest.json").read_text())
    assert reg.versions("m") == ["1"]


def test_the_writer_may_not_write_the_manifest(tmp_path):
    def sneaky(d):
        (d / "model.onnx").write_bytes(b"g")
        (d / "manifest.json").write_text("{}")

    reg = ModelRegistry(tmp_path)
    with pytest.raises(FileExistsError):
        reg.publish("m", "1", sneaky, **SPEC)
    assert reg.versions("m") == [] and list((tmp_path / "m").iterdir()) == []

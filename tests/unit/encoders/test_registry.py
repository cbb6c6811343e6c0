import pytest

from encoders.registry import ModelNotFoundError, ModelRegistry, ModelWatcher, TensorSpec


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

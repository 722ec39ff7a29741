"""Checkpoint files: atomic save, our format and the release format, clear refusals."""
import pytest
import torch

from model import CENet, EKNet
from model.release import to_release
from util.data.info import MFNET
from util.engine.checkpoint import (
    FORMAT,
    CheckpointError,
    build_from_weights,
    export_release,
    load_state,
    model_config,
    save_atomic,
)

H, W = 64, 96


def _ours(model):
    return {"format": FORMAT, "network": type(model).__name__, "config": model_config(model),
            "model": model.state_dict(), "epoch": 3}


def test_save_atomic_leaves_no_temporary_file(tmp_path):
    path = save_atomic({"a": torch.arange(3)}, tmp_path / "x.pth")
    save_atomic({"a": torch.arange(4)}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["x.pth"]
    assert torch.equal(torch.load(path)["a"], torch.arange(4))


@pytest.mark.parametrize("cls", [CENet, EKNet])
def test_round_trip_in_both_formats(tmp_path, cls):
    src = cls(depth=18, height=H, width=W).eval()
    save_atomic(_ours(src), tmp_path / "ours.pth")
    export_release(src, tmp_path / "final.pth")
    release_keys = list(torch.load(tmp_path / "final.pth"))
    assert release_keys == list(to_release(src.state_dict()))
    x = torch.rand(1, cls.in_channels, H, W)
    for name in ("ours.pth", "final.pth"):
        dst = cls(depth=18, height=H, width=W).eval()
        obj = load_state(dst, tmp_path / name)
        assert obj.get("epoch") == (3 if name == "ours.pth" else None)
        assert torch.equal(dst(x).logits, src(x).logits)
        built, info = build_from_weights(tmp_path / name)  # built on the meta device, the file's tensors assigned
        assert type(built) is cls and model_config(built) == model_config(src) and info == MFNET
        assert torch.equal(built.eval()(x).logits, src(x).logits)
        assert all(p.requires_grad and type(p) is torch.nn.Parameter for p in built.parameters())
        assert [n for n, b in built.named_buffers()] == [n for n, b in src.named_buffers()]


def test_weights_of_another_shape_or_a_missing_tensor_are_refused_by_the_built_network(tmp_path):
    src = EKNet(depth=18, height=H, width=W)
    sd = src.state_dict()
    key = next(k for k, v in sd.items() if v.ndim == 4 and v.shape[0] > 1)
    save_atomic({**_ours(src), "model": {**sd, key: sd[key][:1]}}, tmp_path / "shape.pth")
    with pytest.raises(RuntimeError, match=f"size mismatch for {key}"):
        build_from_weights(tmp_path / "shape.pth")
    save_atomic({**_ours(src), "model": {k: v for k, v in sd.items() if k != key}}, tmp_path / "missing.pth")
    with pytest.raises(RuntimeError, match=f"Missing key.*{key}"):
        build_from_weights(tmp_path / "missing.pth")


def test_refuses_the_other_network_and_other_sizes(tmp_path):
    teacher = CENet(depth=18, height=H, width=W)
    save_atomic(_ours(teacher), tmp_path / "t.pth")
    export_release(EKNet(depth=18, height=H, width=W), tmp_path / "s.pth")
    with pytest.raises(CheckpointError, match=r"t.pth holds CENet \(teacher\) weights, but EKNet \(student\) was asked for"):
        load_state(EKNet(depth=18, height=H, width=W), tmp_path / "t.pth")
    with pytest.raises(CheckpointError, match=r"holds EKNet \(student\) weights, but CENet \(teacher\)"):
        load_state(teacher, tmp_path / "s.pth")
    with pytest.raises(CheckpointError, match="with classes 9, but the model was built with 5"):
        load_state(EKNet(n_class=5, depth=18, height=H, width=W), tmp_path / "s.pth")
    with pytest.raises(CheckpointError, match="ResNet depth 18, but the model was built with 34"):
        load_state(EKNet(depth=34, height=H, width=W), tmp_path / "s.pth")
    with pytest.raises(CheckpointError, match="input width 96, but the model was built with 128"):
        load_state(EKNet(depth=18, height=H, width=128), tmp_path / "s.pth")
    with pytest.raises(CheckpointError, match="but CENet"):
        build_from_weights(tmp_path / "s.pth", expect="CENet")


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found: .*nope.pth"):
        load_state(EKNet(depth=18, height=H, width=W), tmp_path / "nope.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read weights file .*bad.pth"):
        load_state(EKNet(depth=18, height=H, width=W), tmp_path / "bad.pth")


def test_the_loader_returns_the_classes_that_travel_with_the_weights(tmp_path):
    """Our checkpoints carry the dataset's description; release files get MFNet's (9 classes) or generic names;
    an ONNX export writes the classes it is given, and refuses a description of another class count."""
    import json

    from util.data.info import DatasetInfo
    from util.deploy.export import export_onnx, model_metadata, read_metadata

    toy = DatasetInfo("toy", ("road", "car", "person"), ((1, 2, 3), (4, 5, 6), (7, 8, 9)), ignore_index=0)
    student = EKNet(n_class=3, depth=18, height=H, width=W).eval()
    save_atomic({**_ours(student), "dataset": toy.to_dict()}, tmp_path / "ours.pth")
    export_release(student, tmp_path / "final.pth")
    model, info = build_from_weights(tmp_path / "ours.pth")
    assert info == toy and model.n_class == 3
    _, generic = build_from_weights(tmp_path / "final.pth")
    assert generic.class_names == ("class_0", "class_1", "class_2") and generic.ignore_index is None
    onnx_path = export_onnx(model, tmp_path / "s.onnx", info)
    assert DatasetInfo.from_dict(json.loads(read_metadata(onnx_path)["dataset"])) == toy
    with pytest.raises(ValueError, match="the dataset description has 9 classes, the EKNet 3"):
        model_metadata(model, MFNET)

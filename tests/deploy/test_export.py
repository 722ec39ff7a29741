"""util/deploy/export.py (python -m util.export): ONNX export of the student, its checks, int8 quantisation and refusals."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model import CENet, EKNet
from util.data.dataset import MFDataset
from util.data.info import MFNET
from util.data.mfnet import N_CLASS
from util.data.synthetic import generate_dataset
from util.deploy.backends import OnnxSegmenter, TorchSegmenter
from util.deploy.export import compare, export_onnx, main, random_thermal, read_metadata
from util.engine.card import check_against_card, sha256_file, verify_card, write_card
from util.engine.checkpoint import build_from_weights, export_release, save_atomic

SIZE = 64


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """An EKNet-18 fitted for 20 SGD steps on synthetic frames (so that its labels are not arbitrary),
    saved as a released-style final.pth, with the synthetic data."""
    root = tmp_path_factory.mktemp("export")
    data = generate_dataset(root / "syn", n_frames=16, height=SIZE, width=SIZE, seed=1)
    train = MFDataset(data, "train", SIZE, SIZE, edges=False, n_class=N_CLASS)
    x = torch.stack([train[i]["image"][3:4] for i in range(len(train))])
    y = torch.stack([train[i]["label"] for i in range(len(train))])
    torch.manual_seed(0)
    model = EKNet(depth=18, height=SIZE, width=SIZE)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = torch.randint(0, len(x), (4,), generator=gen)
        loss = F.cross_entropy(model(x[idx]).logits, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    export_release(model, root / "final.pth")
    return model, root / "final.pth", data


def test_round_trip_dynamic_batch_and_metadata(fitted, tmp_path):
    model, _, _ = fitted
    path = export_onnx(model, tmp_path / "student.onnx", MFNET)
    onnx_seg, torch_seg = OnnxSegmenter(path), TorchSegmenter(model, MFNET, "cpu", channels_last=False)
    for batch in (1, 3):  # exported with batch 2: both other sizes must run
        r = compare(torch_seg, onnx_seg, random_thermal(batch, SIZE, SIZE, seed=batch), batch)
        assert r["relative_diff"] <= 1e-4
        assert r["agreement"] >= 0.999
    meta = read_metadata(path)
    assert {k: meta.get(k) for k in ("network", "n_class", "depth", "height", "width", "precision")} == {
        "network": "EKNet", "n_class": "9", "depth": "18", "height": "64", "width": "64", "precision": "fp32"}
    assert (onnx_seg.height, onnx_seg.width, onnx_seg.n_class, onnx_seg.name) == (64, 64, 9, "onnxruntime CPU, fp32")
    assert onnx_seg.info == MFNET


def test_cli_int8_keeps_the_labels(fitted, tmp_path, capsys):
    _, weights, data = fitted
    out = tmp_path / "student.onnx"
    result = main(["--weights", str(weights), "--out", str(out), "--int8", "--calib-data", str(data),
                   "--calib-frames", "8", "--calib-method", "minmax", "--keep-float", "none"])  # tune_int8: test_quantize
    printed = capsys.readouterr().out
    assert [c["relative_diff"] <= 1e-4 for c in result["checks"]] == [True, True]
    # fp32 in onnxruntime and in PyTorch sum in other orders (and differently on each CPU kind), so a pixel
    # whose two best logits tie to rounding may flip: all but 0.1% of the labels must agree, not all of them.
    assert [c["agreement"] >= 0.999 for c in result["checks"]] == [True, True]
    assert "vs PyTorch" in printed and "argmax agreement" in printed and "int8 vs fp32" in printed
    assert "; QDQ, uint8 activations x int8 per-channel weights, minmax calibration)" in printed
    speed = f"[export] int8 {result['int8']['int8_ms']:.1f} ms/frame vs fp32 {result['int8']['fp32_ms']:.1f} ms/frame"
    assert speed in printed and "on this machine (" in printed
    int8 = tmp_path / "student.int8.onnx"
    assert read_metadata(int8)["precision"] == "int8" and OnnxSegmenter(int8).name == "onnxruntime CPU, int8"
    assert int8.stat().st_size < out.stat().st_size / 2
    # 20 steps teach the model several classes, so agreement is not won by predicting background alone
    # (about 75% of the pixels); measured about 98%, the floor of 90% leaves room for other CPUs' int8 kernels.
    held = OnnxSegmenter(out)(random_thermal(1, SIZE, SIZE))  # any input: the model must not be constant
    assert len(np.unique(held.argmax(1))) >= 2
    assert result["int8_vs_fp32"]["frames"] == 4  # the val split of the synthetic data, not used to calibrate
    assert result["int8_vs_fp32"]["agreement"] >= 0.90
    # the card beside the files: each file's sha256, the source weights, the agreements and speeds measured above
    card = json.loads((tmp_path / "student.card.json").read_text())
    assert verify_card(tmp_path / "student.card.json") == {"student.onnx": "ok", "student.int8.onnx": "ok"}
    assert card["source"]["sha256"] == sha256_file(weights) and card["source"]["card"] is None
    assert card["export"]["int8"]["vs_fp32_held_out"]["agreement"] == result["int8_vs_fp32"]["agreement"]
    assert card["export"]["int8"]["int8_ms_per_frame"] == result["int8"]["int8_ms"]
    assert card["export"]["onnxruntime_vs_pytorch_random_thermal"] == result["checks"]
    assert "student.int8.onnx" in (tmp_path / "student.MODEL_CARD.md").read_text()
    assert check_against_card(int8) == tmp_path / "student.card.json"


def test_cli_refusals(fitted, tmp_path, capsys):
    _, weights, _ = fitted
    teacher = tmp_path / "teacher.pth"
    torch.save(CENet(depth=18, height=SIZE, width=SIZE).state_dict(), teacher)
    existing = tmp_path / "taken.onnx"
    existing.write_bytes(b"keep me")
    cases = [
        (["--weights", str(teacher), "--out", str(tmp_path / "t.onnx")], "holds CENet (teacher) weights, but EKNet"),
        (["--weights", str(weights), "--out", str(existing)], f"--out {existing} exists; pass --overwrite"),
        (["--weights", str(weights), "--out", str(tmp_path / "s.pth")], "expected a file name ending in .onnx"),
        (["--weights", str(weights), "--out", str(tmp_path / "s.onnx"), "--int8"], "--int8 needs --calib-data"),
        (["--weights", str(weights), "--out", str(tmp_path / "s.onnx"), "--opset", "12"], "argument --opset: must be an integer from 14 to 20"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exc:
            main(args)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["--weights", str(weights), "--out", str(tmp_path / "s.onnx"), "--min-agreement", "101"])
    assert "error: argument --min-agreement: must be a finite number greater than 0 and at most 100, got '101'" in \
        capsys.readouterr().err
    assert existing.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.onnx", "teacher.pth"]  # nothing else written


def test_export_our_checkpoint_format(fitted, tmp_path):
    model, _, _ = fitted
    ckpt = save_atomic({"format": "cekd-pytorch", "network": "EKNet", "model": model.state_dict()}, tmp_path / "best.pth")
    result = main(["--weights", str(ckpt), "--out", str(tmp_path / "s.onnx")])
    assert result["metadata"]["depth"] == "18" and result["checks"][1]["batch_size"] == 2
    x = random_thermal(2, SIZE, SIZE)
    agree = (OnnxSegmenter(tmp_path / "s.onnx").labels(x)
             == TorchSegmenter(*build_from_weights(ckpt), "cpu").labels(x))
    assert agree.mean() >= 0.999


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_export_leaves_the_model_as_it_found_it(tmp_path, dtype):
    """Mode of every module, weights (bitwise), dtype and device are the caller's after export_onnx."""
    torch.manual_seed(0)
    model = EKNet(depth=18, height=SIZE, width=SIZE).to(dtype).train()
    next(iter(model.children())).eval()  # a mixed tree: one branch in eval mode, the rest training
    modes = {name: m.training for name, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "s.onnx", MFNET)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert len(set(modes.values())) == 2  # the check covers both modes
    after = model.state_dict()
    assert all(torch.equal(after[k], v) and after[k].dtype == v.dtype for k, v in state.items())
    assert next(model.parameters()).dtype == dtype and next(model.parameters()).device.type == "cpu"
    assert read_metadata(tmp_path / "s.onnx")["precision"] == "fp32"


# ---------------------------------------------------------------- issue 16: every input read before any output is written
def test_bad_calibration_data_writes_nothing_and_the_corrected_rerun_works(fitted, tmp_path, capsys):
    import shutil

    import cv2

    _, weights, data = fitted
    out = tmp_path / "student.onnx"
    empty = tmp_path / "empty"
    empty.mkdir()
    colour = tmp_path / "colour"
    colour.mkdir()
    for i in range(3):
        cv2.imwrite(str(colour / f"{i}.png"), np.dstack([np.full((40, 40), v, np.uint8) for v in (30, 120, 220)]))
    escape = tmp_path / "escape"
    shutil.copytree(data, escape)
    (escape / "train.txt").write_text((escape / "train.txt").read_text() + "../../secret\n")
    cases = [(empty, "expected at least 2 readable thermal frames"),
             (colour, "expected at least 2 readable thermal frames"),
             (escape, f"{escape / 'train.txt'}: frame name '../../secret' is not a plain file name")]
    for calib, message in cases:
        with pytest.raises(SystemExit) as exc:
            main(["--weights", str(weights), "--out", str(out), "--int8", "--calib-data", str(calib)])
        assert exc.value.code == 2 and message in capsys.readouterr().err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["colour", "empty", "escape"]  # no output, no temp file
    result = main(["--weights", str(weights), "--out", str(out), "--int8", "--calib-data", str(data),
                   "--calib-frames", "4", "--heldout-frames", "2", "--calib-method", "minmax", "--keep-float", "none"])
    assert out.is_file() and (tmp_path / "student.int8.onnx").is_file() and result["int8_out"]


def test_a_failed_quantisation_leaves_no_output(fitted, tmp_path, monkeypatch, capsys):
    from util.deploy import export

    _, weights, data = fitted

    def fail(*a, **kw):
        raise ValueError("quantisation failed")
    monkeypatch.setattr(export, "tune_int8", fail)
    with pytest.raises(SystemExit):
        main(["--weights", str(weights), "--out", str(tmp_path / "s.onnx"), "--int8", "--calib-data", str(data),
              "--calib-frames", "2", "--heldout-frames", "1"])
    assert "error: quantisation failed" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_unlabeled_set_calibrates(tmp_path):
    """A robot's recording converted to an unlabeled set (train.txt only) is the natural calibration data."""
    from util.data.synthetic import generate_unlabeled_pool
    from util.deploy.export import calibration_frames

    pool = generate_unlabeled_pool(tmp_path / "pool", 8, height=64, width=64, seed=0)
    calib, held, where = calibration_frames(pool, 32, 32, n_calib=16, n_held=4)
    assert calib.shape == (6, 1, 32, 32) and held.shape == (2, 1, 32, 32)
    assert where == f"6 calibration / 2 held-out train frames of {pool}"


@pytest.mark.parametrize("key, value, graph", [("n_class", "4", "output channel count (classes) is 9"),
                                               ("n_class", "12", "output channel count (classes) is 9"),
                                               ("height", "96", "input height is 64")])
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_metadata_that_disagrees_with_the_graph_is_refused_at_load(fitted, tmp_path, capsys, key, value, graph,
                                                                   backend):
    """Metadata claiming 4 or 12 classes for a graph of 9 output channels (or another size): one line naming
    the file, before any output folder is made."""
    import cv2

    import run_demo_student
    from util.deploy.onnxfile import write_metadata

    if backend == "openvino":
        pytest.importorskip("openvino")
    path = export_onnx(fitted[0], tmp_path / "student.onnx", MFNET)
    write_metadata(path, {**read_metadata(path), key: value})
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "f.png"), np.full((SIZE, SIZE), 120, np.uint8))
    with pytest.raises(SystemExit) as stop:
        run_demo_student.main(["--weights", str(path), "--input", str(frames), "--runs-dir", str(tmp_path / "runs"),
                               "--no-progress", "--device", "cpu", "--backend", backend, "--precision", "fp32"])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and err == [f"error: {path}: its metadata says {key} {value} but its graph's {graph}; "
                                            f"the metadata does not describe this model (not as python -m "
                                            f"util.export wrote it): export it again"], err
    assert not (tmp_path / "runs").exists()


def _with_external_data(model_path, folder, location):
    """A copy of `model_path` in `folder` whose weights live in one external file, named `location` there."""
    import os

    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "ext.onnx"
    onnx.save(onnx.load(str(model_path)), str(out), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.bin", size_threshold=0)
    target = (folder / location)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(folder / "ext.bin", target)
    proto = onnx.load(str(out), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(proto, str(out))
    return out


def test_openvino_refuses_external_data_outside_the_folder_in_our_words(fitted, tmp_path):
    """Same rule as onnxruntime's (data files only in the model's folder), said in one line naming the file and
    why (OpenVINO alone says only "Exception from src/inference/src/cpp/core.cpp:84:"); data beside it load."""
    pytest.importorskip("openvino")
    from util.deploy.backends import OpenVinoSegmenter

    path = export_onnx(fitted[0], tmp_path / "student.onnx", MFNET)
    inside = _with_external_data(path, tmp_path / "in", "data/ext.bin")
    assert OpenVinoSegmenter(inside).n_class == 9
    outside = _with_external_data(path, tmp_path / "m", "../elsewhere.bin")
    with pytest.raises(ValueError) as exc:
        OpenVinoSegmenter(outside)
    assert str(exc.value).startswith(f"{outside}: tensor ") and "'../elsewhere.bin', outside the model's folder " \
        f"{tmp_path / 'm'}; refused" in str(exc.value)
    (tmp_path / "in" / "data" / "ext.bin").unlink()
    with pytest.raises(ValueError, match=r"keeps its data in 'data/ext.bin', which is not in .*in; copy it beside"):
        OpenVinoSegmenter(inside)
def test_export_checks_its_source_against_the_source_card(fitted, tmp_path, capsys):
    _, weights, _ = fitted
    source = tmp_path / "run" / "final.pth"
    source.parent.mkdir()
    source.write_bytes(weights.read_bytes())
    write_card(source.parent, {"files": {"final.pth": {"sha256": "0" * 64, "bytes": 1}}})  # another file's card
    with pytest.raises(SystemExit) as exc:
        main(["--weights", str(source), "--out", str(tmp_path / "s.onnx")])
    assert exc.value.code == 2 and "differs" in capsys.readouterr().err
    assert not (tmp_path / "s.onnx").exists()
    write_card(source.parent, {"files": {"final.pth": {"sha256": sha256_file(source), "bytes": 1}}})
    main(["--weights", str(source), "--out", str(tmp_path / "s.onnx")])
    card = json.loads((tmp_path / "s.card.json").read_text())
    assert card["source"]["card_sha256"] == sha256_file(source.parent / "card.json")
    (tmp_path / "s.onnx").unlink()  # a card left from before is not overwritten silently either
    with pytest.raises(SystemExit):
        main(["--weights", str(source), "--out", str(tmp_path / "s.onnx")])
    assert "s.card.json exists; pass --overwrite" in capsys.readouterr().err

"""util/deploy/quantize.py: the int8 file's form (QDQ, uint8 activations, int8 per-channel weights), the
signed option, node groups left in float, and tune_int8's measured choices."""
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

import util.deploy.agreement
import util.deploy.quantize
from model import EKNet
from util.data.info import MFNET
from util.data.owned import PARTIAL, work_dir
from util.deploy.agreement import random_thermal
from util.deploy.backends import OnnxSegmenter
from util.deploy.export import export_onnx, read_metadata
from util.deploy.quantize import KEEP_FLOAT_GROUPS, quantize_int8, tune_int8

SIZE = 64
UINT8, INT8 = onnx.TensorProto.UINT8, onnx.TensorProto.INT8


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    torch.manual_seed(0)
    return export_onnx(EKNet(depth=18, height=SIZE, width=SIZE).eval(), tmp_path_factory.mktemp("q") / "s.onnx", MFNET)


def _dq_inputs(path):
    """{tensor name: (zero-point dtype, scale length, dequantises an initializer, its first dimension)}
    of every DequantizeLinear output, and the graph."""
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and len(n.input) == 3 and n.input[2] in inits:
            x = inits.get(n.input[0])
            out[n.output[0]] = (inits[n.input[2]].data_type, int(np.prod(inits[n.input[1]].dims or [1])),
                                x is not None, x.dims[0] if x is not None and x.dims else None)
    return out, model.graph


def test_default_form_uint8_activations_int8_per_channel_weights(fp32, tmp_path):
    path = quantize_int8(fp32, tmp_path / "s.int8.onnx", random_thermal(2, SIZE, SIZE))
    dq, graph = _dq_inputs(path)
    weights = {k: v for k, v in dq.items() if v[2]}  # dequantised initializers: the weights
    activations = {k: v for k, v in dq.items() if not v[2]}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert convs and all(n.input[1] in weights for n in convs)  # every convolution's weight is int8
    assert {v[0] for k, v in weights.items() if any(n.input[1] == k for n in convs)} == {INT8}
    assert all(weights[n.input[1]][1] == weights[n.input[1]][3] for n in convs)  # one scale per output channel
    assert sum(weights[n.input[1]][1] > 1 for n in convs) > len(convs) // 2
    assert activations and {v[0] for v in activations.values()} == {UINT8}
    info = json.loads(read_metadata(path)["int8"])
    assert (info["activations"], info["calibration"], info["keep_float"]) == ("uint8", "minmax", [])
    assert read_metadata(path)["precision"] == "int8"


def test_signed_activations_and_groups_in_float(fp32, tmp_path):
    path = quantize_int8(fp32, tmp_path / "s8.onnx", random_thermal(2, SIZE, SIZE), activations="int8",
                         keep_float=["transposed convolutions"])
    dq, graph = _dq_inputs(path)
    assert {v[0] for v in dq.values() if not v[2]} == {INT8}
    deconvs = [n for n in graph.node if n.op_type == "ConvTranspose"]
    floats = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert deconvs and all(n.input[1] in floats for n in deconvs)  # float weights: a float kernel
    assert any(n.input[1] in dq for n in graph.node if n.op_type == "Conv")  # the rest still int8
    with pytest.raises(ValueError, match="keep_float 'decoder': expected some of transposed convolutions"):
        quantize_int8(fp32, tmp_path / "x.onnx", random_thermal(1, SIZE, SIZE), keep_float=["decoder"])
    assert not (tmp_path / "x.onnx").exists()


def test_tune_int8_keeps_in_float_what_measures_faster(fp32, tmp_path, monkeypatch):
    """Timing replaced by fixed numbers: only the file with attention in float is faster, so it is written."""
    fake = {"fp32": 10.0, "()": 8.0, "('attention',)": 5.0}

    def fake_ms(segs, frames, reps=5, warmup=2):
        out = []
        for s in segs:
            meta = s.session.get_modelmeta().custom_metadata_map
            key = "fp32" if "int8" not in meta else str(tuple(json.loads(meta["int8"])["keep_float"]))
            out.append(fake.get(key, 9.0))
        return out

    monkeypatch.setattr(util.deploy.agreement, "ms_per_frame", fake_ms)
    groups = {g: KEEP_FLOAT_GROUPS[g] for g in ("transposed convolutions", "attention")}
    monkeypatch.setattr(util.deploy.quantize, "KEEP_FLOAT_GROUPS", groups)  # two trials are enough here
    calib, held = random_thermal(2, SIZE, SIZE, seed=1), random_thermal(2, SIZE, SIZE, seed=2)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = work_dir(tmp_path / "t.onnx", PARTIAL, dead.pid)  # what a killed earlier run left behind
    killed.mkdir()
    (killed / "trial0.onnx").write_bytes(b"half")
    running = work_dir(tmp_path / "t.onnx", PARTIAL, os.getppid())  # another run's, still going: kept
    running.mkdir()
    log = []
    r = tune_int8(fp32, tmp_path / "t.onnx", calib, held, methods=("minmax", "percentile"), min_agreement=0.5,
                  log=log.append)
    assert r["method"] == max(("minmax", "percentile"), key=lambda m: r["methods"][m])  # best agreement
    assert (r["keep_float"], r["int8_ms"], r["fp32_ms"]) == (["attention"], 5.0, 10.0)
    assert r["groups"] == {"transposed convolutions": 9.0, "attention": 5.0}
    info = json.loads(read_metadata(tmp_path / "t.onnx")["int8"])
    assert (info["calibration"], info["keep_float"]) == (r["method"], ["attention"])
    assert any("attention in float: 5.0 ms/frame" in line and "kept in float" in line for line in log)
    assert sorted(p.name for p in tmp_path.iterdir()) == [running.name, "t.onnx"]  # trial files, killed run's gone
    agree = (OnnxSegmenter(tmp_path / "t.onnx").labels(held) == OnnxSegmenter(fp32).labels(held)).mean()
    assert agree == pytest.approx(r["agreement"])


def test_calibration_in_chunks_gives_the_same_minmax_file(fp32, tmp_path, monkeypatch):
    """Chunks bound the calibrator's memory (it holds every activation of the frames it is given)."""
    assert [util.deploy.quantize.calib_stride(n) for n in (32, 6, 7, 1)] == [4, 3, 1, 1]
    reader = util.deploy.quantize._FrameReader("thermal", np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1))
    reader.set_range(1, 3)
    assert [float(d["thermal"][0, 0, 0, 0]) for d in iter(reader.get_next, None)] == [1.0, 2.0] and len(reader) == 5
    x = random_thermal(4, SIZE, SIZE, seed=3)
    whole = quantize_int8(fp32, tmp_path / "whole.onnx", x)  # 4 frames: one chunk
    monkeypatch.setattr(util.deploy.quantize, "CALIB_CHUNK", 1)
    chunks = quantize_int8(fp32, tmp_path / "chunks.onnx", x)
    a, b = ({i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(p)).graph.initializer} for p in (whole, chunks))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

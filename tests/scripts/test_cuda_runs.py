"""What only a GPU can check (marked cuda: `pytest -m cuda` on a GPU machine; skipped with the reason on the
CPU): memory bounds of every inference path `--backend auto` may choose, the auto choice with CUDA graphs,
fp16 with its GradScaler, bf16 + channels-last, the compiled step (--fast), and SyncBatchNorm under torchrun."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import run_demo_student
import trainTeacher
from conftest import ROOT
from model import CENet, EKNet
from util.data.info import MFNET
from util.data.synthetic import generate_dataset
from util.deploy.backends import TorchSegmenter

pytestmark = pytest.mark.cuda
GIB = 2**30
SMALL = ["--depth", "18", "--height", "64", "--width", "96", "--batch-size", "2", "--no-pretrained",
         "--workers", "0", "--no-progress", "--device", "cuda", "--max-steps-per-epoch", "4", "--eval-splits", "test"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("data") / "syn", n_frames=12, height=64, width=96, seed=2)


def _peak_gib(fn) -> float:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / GIB


@pytest.mark.parametrize("backend,precision", [("torch", "fp32"), ("torch", "bf16"), ("cudagraph", "fp32"),
                                               ("cudagraph", "bf16"), ("cudagraph", "fp16")])
@torch.inference_mode()
def test_student_inference_memory_at_480x640(backend, precision):
    """EKNet-50 at 480x640, batch 1, warm-up (and capture) included: at most 2 GiB on every path."""
    torch.backends.cudnn.benchmark = False  # the segmenters' setting: no algorithm trials with big workspaces
    model = EKNet(9, 50, 480, 640, pretrained=False).eval()
    x = np.random.default_rng(0).random((1, 1, 480, 640), dtype=np.float32)

    def run():
        seg = TorchSegmenter(model, MFNET, "cuda", True, precision, graphs=backend == "cudagraph")
        for _ in range(5):
            seg.labels(x)
    assert _peak_gib(run) <= 2.0


@torch.inference_mode()
def test_teacher_inference_memory_at_480x640():
    torch.backends.cudnn.benchmark = False
    model = CENet(9, 50, 480, 640, pretrained=False).cuda().eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, 4, 480, 640, device="cuda").contiguous(memory_format=torch.channels_last)
    assert _peak_gib(lambda: [model(x) for _ in range(3)]) <= 4.0


def test_auto_times_cuda_graphs_and_caches(tiny_student, tmp_path, capsys):
    import cv2

    weights, frames = tiny_student, tmp_path / "frames"
    frames.mkdir()
    for i in range(7):  # batches of 3, 3 and 1
        cv2.imwrite(str(frames / f"f{i}.png"), np.random.default_rng(i).integers(0, 255, (48, 80), np.uint8))
    argv = ["--weights", str(weights), "--input", str(frames), "--runs-dir", str(tmp_path), "--no-progress",
            "--device", "cuda", "--batch-size", "3"]
    first = run_demo_student.main(argv + ["--run-name", "a"])
    table = first["inference"]["table"]
    assert {r["backend"] for r in table} == {"torch", "cudagraph"} and len(table) >= 4
    mem = json.loads((tmp_path / "a" / "summary.json").read_text())["inference"]["gpu_memory_gib"]
    assert set(mem) == {"choosing_peak", "segmenting_peak"}
    second = run_demo_student.main(argv + ["--run-name", "b"])
    assert "cached" in second["inference"] and second["backend"] == first["backend"]
    forced = run_demo_student.main(argv + ["--run-name", "c", "--backend", "cudagraph", "--precision", "fp16"])
    graphs = forced["inference"]["cuda_graphs"]
    assert forced["backend"].startswith("PyTorch cuda:0, CUDA graphs, fp16") and graphs["fallback"] is None
    assert 3 in graphs["captured_batches"]  # and the last, smaller batch its own graph or eager, as counted
    assert capsys.readouterr()


@pytest.mark.parametrize("extra", [["--amp", "fp16"], ["--amp", "bf16", "--channels-last"], ["--fast"]])
def test_trainer_modes_on_cuda(data, tmp_path, extra):
    trainTeacher.cli(["--data-dir", str(data), "--runs-dir", str(tmp_path), "--run-name", "t", "--epochs", "1",
                      *SMALL, *extra])
    last = torch.load(tmp_path / "t" / "last.pth", weights_only=True)
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert (last["scaler"] is not None) == ("fp16" in extra)


def test_sync_bn_under_torchrun_one_process(data, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
           str(ROOT / "trainTeacher.py"), "--data-dir", str(data), "--runs-dir", str(tmp_path), "--run-name", "d",
           "--epochs", "1", "--sync-bn", *SMALL]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "d" / "final.pth").is_file()

"""benchmarks/bench_deploy.py, bench_gpu.py, bench_models.py and bench_confusion.py at a tiny size (the figures
themselves are not checked)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_deploy  # noqa: E402
import bench_gpu  # noqa: E402
import bench_models  # noqa: E402

SIZE = 64


def test_deploy_rows_run_in_their_own_processes(tmp_path):
    """One row per backend kind: the onnxruntime rows load no torch; the table renders."""
    from model import EKNet
    from util.data.info import MFNET
    from util.deploy.export import export_onnx, quantize_int8

    torch.manual_seed(0)
    fp32 = export_onnx(EKNet(depth=18, height=SIZE, width=SIZE), tmp_path / "m.onnx", MFNET)
    int8 = quantize_int8(fp32, tmp_path / "m.int8.onnx", np.random.default_rng(0).random((2, 1, SIZE, SIZE), np.float32))
    rows = []
    x = np.random.default_rng(1).random((2, 1, SIZE, SIZE), np.float32)
    np.save(tmp_path / "x.npy", x)
    preds = {}
    for backend, path in (("ort-fp32", fp32), ("ort-int8", int8), ("ov-fp32", fp32), ("torch-cl", None),
                          ("torch-bf16", None)):
        spec = {"depth": 18, "backend": backend, "height": SIZE, "width": SIZE, "seed": 0, "threads": 1,
                "warmup": 0, "iters": 2, "onnx": str(path) if path else None, "eval_x": str(tmp_path / "x.npy"),
                "pred_out": str(tmp_path / f"{backend}.npy")}
        result = bench_deploy.spawn_row(spec, timeout=120)
        assert "error" not in result, result
        assert len(result["ms_each"]) == 2 and result["peak_rss_mib"] > 0
        assert result["torch_imported"] == backend.startswith("torch")
        preds[backend] = np.load(tmp_path / f"{backend}.npy")
        assert preds[backend].shape == (2, SIZE, SIZE) and preds[backend].dtype == np.uint8
        rows.append({"depth": 18, "backend": backend, "label": bench_deploy.BACKENDS[backend], "params_m": 14.2,
                     "gflop": 0.5, "ms": result["ms_each"][0], "speedup": 1.0, "note": "", **result})
    rows.append({"depth": 50, "backend": "torch-fp32", "label": "PyTorch fp32", "params_m": 1.0, "gflop": 1.0,
                 "note": "error: exit 1: boom"})
    text = bench_deploy.text_table(["header"], rows)
    assert "onnxruntime int8" in text and "error: exit 1: boom" in text
    assert bench_deploy.markdown_table(["header"], rows).count("\n| EKNet-") == 6
    assert (preds["ov-fp32"] == preds["ort-fp32"]).mean() >= 0.999  # the same file in two runtimes
    assert (preds["torch-bf16"] == preds["torch-cl"]).mean() >= 0.98


def test_deploy_accuracy_columns(tmp_path):
    """mIoU from each row's saved class ids against the labels, agreement against the PyTorch fp32 row."""
    from util.data.info import info_for_classes

    labels = np.array([[[0, 0], [1, 2]]])
    np.save(tmp_path / "ref.npy", np.array([[[0, 0], [1, 1]]], np.uint8))
    np.save(tmp_path / "q.npy", np.array([[[0, 1], [1, 2]]], np.uint8))
    rows = [{"depth": 18, "backend": "torch-fp32", "pred_file": "ref.npy"},
            {"depth": 18, "backend": "ort-int8", "pred_file": "q.npy"},
            {"depth": 50, "backend": "torch-fp32", "pred_file": None}]
    bench_deploy.add_accuracy(rows, labels, info_for_classes(3), tmp_path)
    # reference: IoU 1, 1/2, 0 -> 1/2; candidate: IoU 1/2, 1/2, 1 -> 2/3; they agree on 2 of 4 pixels
    assert rows[0]["miou"] == pytest.approx(0.5) and rows[1]["miou"] == pytest.approx(2 / 3)
    assert (rows[0]["agreement"], rows[1]["agreement"]) == (1.0, 0.5) and "miou" not in rows[2]
    row = {"depth": 18, "label": "x", "params_m": 1.0, "gflop": 2.0, "ms": 4.0, "gflops": 500.0, **rows[1]}
    assert bench_deploy.cells(row)[7:] == ["500", "-", "-", "66.67", "50.00", ""]


def test_deploy_worker_failure_is_a_row_error():
    spec = {"depth": 18, "backend": "ort-fp32", "height": SIZE, "width": SIZE, "seed": 0, "threads": 1,
            "warmup": 0, "iters": 1, "onnx": "/nonexistent.onnx"}
    assert bench_deploy.spawn_row(spec, timeout=60)["error"].startswith("exit 1:")


@pytest.mark.slow
def test_deploy_cli_tiny(tmp_path):
    out = [str(tmp_path / "t.json"), str(tmp_path / "t.md")]
    rows = bench_deploy.main(["--height", str(SIZE), "--width", str(SIZE), "--warmup", "0", "--iters", "1",
                              "--depths", "18", "--out", *out])
    assert [(r["depth"], r["backend"]) for r in rows][0] == (50, "torch-fp32")
    assert len(rows) == 2 + len(bench_deploy.BACKENDS) and all(r.get("ms") for r in rows)
    assert json.loads((tmp_path / "t.json").read_text())["rows"][0]["note"] == "baseline"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_gpu_refuses_without_cuda():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [bench_gpu.NEEDS_GPU]


def _dry(*extra):
    return ["--cpu-dry-run", "--height", str(SIZE), "--width", str(SIZE), "--depth", "18", "--warmup", "0",
            "--iters", "1", "--train-warmup", "0", "--train-iters", "1", *extra]


def test_gpu_rows_on_cpu_and_failures_in_the_table(monkeypatch, capsys):
    def broken(*a, **k):
        raise RuntimeError("no compiler\nsecond line")
    monkeypatch.setattr(torch, "compile", broken)
    rows = bench_gpu.main(_dry("--networks", "student", "--no-train"))
    assert [r["setting"] for r in rows][:2] == ["fp32, release-equivalent", "fp32"]
    assert all(r.get("ms") for r in rows if not r["compile"])
    assert rows[0]["speedup"] == 1.0 and rows[1]["max_abs_dlogits"] == 0.0
    assert [r["note"] for r in rows if r["compile"]] == ["error: RuntimeError: no compiler"] * 2
    assert "error: RuntimeError: no compiler" in capsys.readouterr().out


def test_gpu_budget_skips_rows():
    rows = bench_gpu.main(_dry("--budget-s", "0"))
    assert rows and all(r["note"].startswith("skipped: time budget") for r in rows)


@pytest.mark.slow
def test_gpu_training_rows_on_cpu():
    rows = bench_gpu.main(_dry("--no-compile"))
    train = [r for r in rows if r["phase"] == "train"]
    assert len(train) == 12 and all(r.get("ms") for r in train), [r["note"] for r in train]  # 5 per network, 2 epochs


def test_models_tiny_run_writes_its_json(tmp_path, capsys):
    """bench_models.py at a tiny size: the fp32 row is the logits reference, and --json holds what was printed."""
    out = tmp_path / "m.json"
    rows = bench_models.main(["--device", "cpu", "--networks", "student", "--depth", "18", "--height", str(SIZE),
                              "--width", str(SIZE), "--modes", "fp32", "channels-last", "--warmup", "0", "--iters",
                              "2", "--train-warmup", "0", "--train-iters", "1", "--student-loss", "gt",
                              "--json", str(out)])
    assert [r["mode"] for r in rows] == ["fp32", "channels-last"]
    assert all(len(r["infer_ms_each"]) == 2 and len(r["train_s_each"]) == 1 for r in rows)
    assert rows[0]["max_abs_dlogits"] is None and rows[1]["argmax_agree_pct"] >= 99.0
    saved = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert saved["rows"] == rows and all(line in printed for line in saved["header"])
    assert saved["header"][0].startswith("device: cpu = ")


def test_models_deploy_table_hands_over_to_bench_deploy():
    """--deploy-table runs bench_deploy.py with the other options and keeps its exit status (2: a bad option)."""
    with pytest.raises(SystemExit) as stop:
        bench_models.main(["--deploy-table", "--height", "33"])
    assert stop.value.code == 2


def test_confusion_tiny_run():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_confusion.py"), "--frames", "2",
                           "--height", "32", "--width", "32", "--device", "cpu"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "matrices equal" in proc.stdout.splitlines()[0]

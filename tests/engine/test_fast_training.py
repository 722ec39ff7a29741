"""The trainers' GPU-pace options on the CPU: --fast's preset, --sync-every's deferred finite check,
--fused-sgd and --compile (the network wrapped by torch.compile; the CPU test uses dynamo's "eager"
backend, which traces the network as inductor would but builds no kernels: the wrapper's checkpoints,
evaluation and resume are what it checks; inductor itself runs in the cuda-marked trainer test), and
exact resume within a mode."""
import dataclasses
import json

import pytest
import torch

import trainTeacher
import util.engine.build as build
from util.data.synthetic import generate_dataset
from util.engine.config import FAST_SYNC_EVERY, TeacherConfig, fast_preset
from util.engine.loop import DeferredCheck

SMALL = ["--depth", "18", "--height", "64", "--width", "64", "--batch-size", "2", "--no-pretrained",
         "--workers", "0", "--no-progress", "--max-steps-per-epoch", "3", "--eval-splits", "test", "--image-every", "0"]


def test_fast_preset_fills_defaults_only(monkeypatch):
    cpu = fast_preset(TeacherConfig(fast=True), torch.device("cpu"))
    assert (cpu.fused_sgd, cpu.sync_every, cpu.amp, cpu.channels_last, cpu.compile) == (
        True, FAST_SYNC_EVERY, "none", False, False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    gpu = fast_preset(TeacherConfig(fast=True), torch.device("cuda"))
    assert (gpu.fused_sgd, gpu.sync_every, gpu.amp, gpu.channels_last, gpu.compile) == (
        True, FAST_SYNC_EVERY, "bf16", True, True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert fast_preset(TeacherConfig(fast=True), torch.device("cuda")).amp == "fp16"
    given = fast_preset(TeacherConfig(fast=True, sync_every=7, amp="fp16"), torch.device("cuda"))
    assert (given.sync_every, given.amp) == (7, "fp16")  # what the user gave wins
    plain = TeacherConfig()
    assert fast_preset(plain, torch.device("cuda")) is plain  # no --fast: nothing changes
    assert (plain.compile, plain.fused_sgd, plain.sync_every) == (False, False, 1)  # the release's loop


def test_deferred_check_reads_the_device_every_n_steps():
    check = DeferredCheck(4, torch.device("cpu"))
    finite = {"total": torch.tensor(1.0), "ce": torch.tensor(0.5)}
    for step in range(3):
        check.add(finite, step)
        assert not check.due(step)
    check.add({"total": torch.tensor(float("nan")), "ce": torch.tensor(0.5)}, 3)
    assert check.due(3)
    with pytest.raises(FloatingPointError, match=r"epoch 2, one of steps 0\.\.3 \(--sync-every 4\): total"):
        check.check(3, epoch=2)
    check = DeferredCheck(4, torch.device("cpu"))
    check.add(finite, 4)
    check.check(4, epoch=2)  # finite: nothing raised, the count starts again
    assert check.first_step is None and check.bad == {}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("data") / "syn", n_frames=12, height=64, width=64, seed=3)


def _train(data, runs, name, *extra):
    return trainTeacher.cli(["--data-dir", str(data), "--runs-dir", str(runs), "--run-name", name,
                             "--epochs", "2", *SMALL, *extra])


def _losses(run_dir):
    return [h["train"]["total"] for h in json.loads((run_dir / "results.json").read_text())["history"]]


def test_fast_options_keep_the_recipe(data, tmp_path, monkeypatch):
    """--compile --fused-sgd --sync-every over the same steps: the losses of the plain fp32 loop within the
    pinned test's tolerance, checkpoints of the bare network, and a resumed run equal to an unbroken one."""
    monkeypatch.setattr(build, "COMPILE_BACKEND", "eager")
    _train(data, tmp_path, "plain")
    fast = ["--compile", "--fused-sgd", "--sync-every", "3"]
    _train(data, tmp_path, "fast", *fast)
    assert _losses(tmp_path / "fast") == pytest.approx(_losses(tmp_path / "plain"), rel=1e-4)
    last = torch.load(tmp_path / "fast" / "last.pth", weights_only=True)
    assert not [k for k in last["model"] if "_orig_mod" in k or k.startswith("module.")]
    saved = json.loads((tmp_path / "fast" / "run.json").read_text())["config"]
    assert (saved["compile"], saved["fused_sgd"], saved["sync_every"]) == (True, True, 3)
    _train(data, tmp_path, "split", *fast, "--stop-after-epochs", "1")
    trainTeacher.cli(["--resume", str(tmp_path / "split"), "--no-progress"])
    a = torch.load(tmp_path / "split" / "last.pth", weights_only=True)["model"]
    assert all(torch.equal(a[k], last["model"][k]) for k in a), "resume within the fast mode is not exact"


def test_sync_every_stops_on_a_nan_without_a_bad_checkpoint(data, tmp_path, monkeypatch, capsys):
    real = trainTeacher.TeacherTask.loss
    calls = []

    def loss(self, model, batch):  # the 3rd step's loss is NaN
        losses, out = real(self, model, batch)
        calls.append(1)
        if len(calls) == 3:
            losses = {**losses, "total": losses["total"] * float("nan")}
        return losses, out
    monkeypatch.setattr(trainTeacher.TeacherTask, "loss", loss)
    with pytest.raises(SystemExit):
        _train(data, tmp_path, "nan", "--sync-every", "4")
    err = capsys.readouterr().err
    assert "non-finite loss at epoch 1, one of steps 0..2 (--sync-every 4): total" in err  # 3 batches: checked at the epoch end
    assert not (tmp_path / "nan" / "last.pth").exists()


def test_config_fields_round_trip():
    cfg = TeacherConfig(compile=True, fused_sgd=True, sync_every=5, fast=True)
    assert TeacherConfig.from_dict(cfg.to_dict()) == cfg
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("compile", "fused_sgd", "sync_every", "fast")}
    assert dataclasses.asdict(TeacherConfig.from_dict(old))["sync_every"] == 1  # older run.json: the plain loop

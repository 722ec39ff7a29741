"""Both trainers end to end on tiny synthetic data (ResNet-18, 64x96, CPU)."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import trainStudent
import trainTeacher
import trainTeacher as teacher_script
from conftest import ROOT
from util.data.synthetic import generate_dataset

SMALL = ["--depth", "18", "--height", "64", "--width", "96", "--batch-size", "2", "--no-pretrained",
         "--workers", "0", "--no-progress", "--lr", "0.01"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 23 frames: 11 for training, so the last batch of 2 holds one image (TEM's BatchNorm1d case).
    data = generate_dataset(tmp_path_factory.mktemp("data") / "syn", n_frames=23, height=64, width=96, seed=1)
    assert len((data / "train.txt").read_text().split()) == 11
    return data


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def teacher_run(data, runs):
    trainTeacher.cli(["--data-dir", str(data), "--runs-dir", str(runs), "--run-name", "teacher",
                       "--epochs", "2", "--image-every", "3", *SMALL])
    return runs / "teacher"


def _results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def _assert_complete_run(run_dir, role):
    results = _results(run_dir)
    assert results["role"] == role
    assert len(results["history"]) == 2
    first, second = (h["train"]["total"] for h in results["history"])
    assert second < first, "training loss did not go down"
    for split in ("test", "test_day", "test_night"):
        m = results["splits"][split]
        assert 0 <= m["miou"] <= 1 and len(m["iou"]) == 9 and m["images"] > 0
    for name in ("last.pth", "best.pth", "final.pth"):
        assert (run_dir / name).is_file()
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    for name in ("confusion.png", "per_class_iou.png"):  # the final test's pictures beside results.json
        assert (run_dir / name).read_bytes()[:4] == b"\x89PNG"
    _assert_card(run_dir, role, results)
    last = torch.load(run_dir / "last.pth", weights_only=True)
    assert last["epoch"] == 2 and last["best"]["epoch"] == results["best_epoch"]
    return results


def _assert_card(run_dir, role, results):
    from util.engine.card import sha256_file, verify_card

    card = json.loads((run_dir / "card.json").read_text())
    assert verify_card(run_dir / "card.json") == dict.fromkeys(("best.pth", "last.pth", "final.pth"), "ok")
    assert card["files"]["final.pth"]["sha256"] == sha256_file(run_dir / "final.pth")
    assert card["role"] == role and card["network"]["depth"] == 18
    assert (card["network"]["height"], card["network"]["width"]) == (64, 96) and len(card["classes"]) == 9
    assert card["data"]["splits"]["train"]["frames"] == 11
    assert card["data"]["splits"]["test"]["sha256"] == sha256_file(Path(card["data"]["data_dir"]) / "test.txt")
    assert card["data"]["frames"] == {"labelled": 11, "unlabeled": 0}
    assert card["best_epoch"] == results["best_epoch"] and card["epochs_done"] == 2
    assert card["metrics"]["test"]["miou"] == pytest.approx(results["splits"]["test"]["miou"])
    assert card["metrics"]["val"]["epoch"] == results["best_epoch"]
    assert card["config"]["epochs"] == 2 and card["command"].startswith("python ")
    assert card["environment"]["torch"] == torch.__version__ and card["environment"]["cpu"]
    assert "## Metrics" in (run_dir / "MODEL_CARD.md").read_text()


def test_teacher_trains_end_to_end(teacher_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    results = _assert_complete_run(teacher_run, "teacher")
    assert "edge" in results["history"][0]["train"]
    assert sum(1 for _ in (teacher_run / "tb").iterdir()) == 1
    events = EventAccumulator(str(teacher_run / "tb"), size_guidance={"images": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/ce", "train/edge", "train/total", "train/lr", "val/mIoU", "val/loss",
            "train/images_per_s", "val_iou/unlabeled"} <= scalars
    assert len(events.Scalars("val/mIoU")) == 2
    pictures = events.Images("train/thermal_rgb_gt_pred_edges")
    assert len(pictures) == 4  # steps 3, 6, 9, 12 of 12 (--image-every 3)
    assert pictures[0].width > 4 * 96  # thermal | RGB | truth | prediction | edge target | edge prediction
    confusion = events.Images("val/confusion")  # the validation confusion matrix, each epoch
    assert [c.step for c in confusion] == [1, 2] and confusion[0].width >= 200


def test_student_distils_from_the_teacher(data, runs, teacher_run):
    trainStudent.cli(["--data-dir", str(data), "--runs-dir", str(runs), "--run-name", "student",
                       "--epochs", "2", "--teacher", str(teacher_run / "best.pth"), *SMALL])
    results = _assert_complete_run(runs / "student", "student")
    assert set(results["history"][0]["train"]) == {"sim", "kdce", "hint", "seg", "total"}
    from util.engine.card import sha256_file

    teacher = json.loads((runs / "student" / "card.json").read_text())["teacher"]
    assert teacher["sha256"] == sha256_file(teacher_run / "best.pth")
    assert teacher["card_sha256"] == sha256_file(teacher_run / "card.json")


def test_student_accepts_the_release_format_teacher(data, runs, teacher_run):
    trainStudent.cli(["--data-dir", str(data), "--runs-dir", str(runs), "--run-name", "student-rel",
                       "--epochs", "1", "--max-steps-per-epoch", "2", "--eval-splits",
                       "--teacher", str(teacher_run / "final.pth"), *SMALL])
    assert (runs / "student-rel" / "results.json").is_file()
    # final.pth is in the release's key format, and the student sees exactly the teacher best.pth holds
    assert "encoder_thermal_conv1.weight" in torch.load(teacher_run / "final.pth", weights_only=True)
    cfg = SimpleNamespace(height=64, width=96, n_class=9)
    released = trainStudent.load_teacher(SimpleNamespace(**vars(cfg), teacher=teacher_run / "final.pth"), "cpu")
    ours = trainStudent.load_teacher(SimpleNamespace(**vars(cfg), teacher=teacher_run / "best.pth"), "cpu")
    ours = ours.state_dict()
    assert released.state_dict().keys() == ours.keys()
    assert all(torch.equal(v, ours[k]) for k, v in released.state_dict().items())


def test_student_refuses_a_student_checkpoint_as_teacher(data, runs, capsys):
    trainStudent.cli(["--data-dir", str(data), "--runs-dir", str(runs), "--run-name", "gt",
                       "--epochs", "1", "--max-steps-per-epoch", "1", "--eval-splits", "--no-distill", *SMALL])
    with pytest.raises(SystemExit):
        trainStudent.cli(["--data-dir", str(data), "--runs-dir", str(runs), "--run-name", "bad",
                           "--epochs", "1", "--teacher", str(runs / "gt" / "best.pth"), *SMALL])
    assert "holds EKNet (student) weights, but CENet (teacher) was asked for" in capsys.readouterr().err
    assert not (runs / "bad").exists()


def test_student_refuses_a_teacher_of_other_classes(data, runs, teacher_run, tmp_path, capsys):
    """Nine classes of other names (other ids) are not the teacher's nine: refused when the teacher file names
    its classes (our checkpoints); a release-format final.pth names none and is taken on trust."""
    import shutil

    from util.data.info import DatasetInfo, default_palette, write_dataset_info

    other = tmp_path / "other"
    shutil.copytree(data, other, ignore=shutil.ignore_patterns("*.json"))
    names = tuple(f"thing{i}" for i in range(9))
    write_dataset_info(DatasetInfo("things", names, default_palette(9)), other)
    with pytest.raises(SystemExit):
        trainStudent.cli(["--data-dir", str(other), "--runs-dir", str(runs), "--run-name", "bad-classes",
                           "--epochs", "1", "--teacher", str(teacher_run / "best.pth"), *SMALL])
    err = capsys.readouterr().err
    assert err.startswith(f"error: --teacher {teacher_run / 'best.pth'} does not fit this student: the classes of "
                          f"synthetic MFNet (unlabeled, car, ") and "vs those of things (thing0, thing1," in err
    assert not (runs / "bad-classes").exists()
    cfg = SimpleNamespace(height=64, width=96, n_class=9, teacher=teacher_run / "final.pth")
    things = DatasetInfo("things", names, default_palette(9))
    assert trainStudent.load_teacher(cfg, "cpu", things).n_class == 9  # release format: no names to compare


def test_a_broken_test_split_fails_before_training(data, runs, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(data, broken)
    (broken / "test_night.txt").write_text("99999N\n")
    with pytest.raises(SystemExit):
        trainTeacher.cli(["--data-dir", str(broken), "--runs-dir", str(runs), "--run-name", "broken",
                           "--epochs", "1", *SMALL])
    err = capsys.readouterr().err
    assert "dataset check failed" in err and "99999N" in err
    assert not (runs / "broken").exists()


def test_an_existing_run_folder_is_never_touched(data, runs, capsys):
    run_dir = runs / "mine"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("precious")
    with pytest.raises(SystemExit):
        trainTeacher.cli(["--data-dir", str(data), "--runs-dir", str(runs), "--run-name", "mine",
                           "--epochs", "1", *SMALL])
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in run_dir.iterdir()] == ["notes.txt"]
    assert (run_dir / "notes.txt").read_text() == "precious"


def test_kill_and_resume_gives_the_same_weights(data, runs):
    common = ["--data-dir", str(data), "--runs-dir", str(runs), "--epochs", "2", "--no-distill",
              "--eval-splits", *SMALL]
    trainStudent.cli([*common, "--run-name", "whole"])
    trainStudent.cli([*common, "--run-name", "split", "--stop-after-epochs", "1"])
    first = torch.load(runs / "split" / "last.pth", weights_only=True)
    assert first["epoch"] == 1 and not (runs / "split" / "results.json").exists()
    trainStudent.cli(["--resume", str(runs / "split"), "--no-progress", "--workers", "0"])
    a = torch.load(runs / "whole" / "last.pth", weights_only=True)
    b = torch.load(runs / "split" / "last.pth", weights_only=True)
    assert b["epoch"] == 2
    assert b["optimizer"]["param_groups"][0]["lr"] == pytest.approx(a["optimizer"]["param_groups"][0]["lr"])
    assert b["best"] == a["best"]
    for k in a["model"]:
        assert torch.allclose(a["model"][k].float(), b["model"][k].float(), atol=1e-6), k


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(data, runs, monkeypatch, capsys):
    real = teacher_script.teacher_loss
    calls = {"n": 0}

    def poisoned(*a, **kw):
        calls["n"] += 1
        losses = real(*a, **kw)
        if calls["n"] > 6:  # epoch 1 (6 steps) is fine, then the loss turns NaN
            losses["ce"] = losses["ce"] * float("nan")
        return losses

    monkeypatch.setattr(teacher_script, "teacher_loss", poisoned)
    with pytest.raises(SystemExit) as stop:
        trainTeacher.cli(["--data-dir", str(data), "--runs-dir", str(runs), "--run-name", "nan",
                          "--epochs", "2", "--eval-splits", *SMALL])
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "non-finite loss at epoch 2" in err and "ce=nan" in err
    assert f"the last good checkpoint is {runs / 'nan' / 'last.pth'} (epoch 1)" in err
    assert torch.load(runs / "nan" / "last.pth", weights_only=True)["epoch"] == 1


def test_amp_bf16_and_channels_last_on_the_cpu(data, runs, monkeypatch):
    seen = set()  # what the convolutions computed in, and in which memory format they were given their input
    forward = torch.nn.Conv2d.forward

    def spy(self, x):
        out = forward(self, x)
        seen.add((out.dtype, x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1))
        return out

    monkeypatch.setattr(torch.nn.Conv2d, "forward", spy)
    results = trainTeacher.cli(["--data-dir", str(data), "--runs-dir", str(runs), "--run-name", "amp",
                                 "--epochs", "1", "--max-steps-per-epoch", "2", "--amp", "bf16",
                                 "--channels-last", "--eval-splits", "test", *SMALL])
    assert torch.isfinite(torch.tensor(results["history"][0]["train"]["total"]))
    assert 0 <= results["splits"]["test"]["miou"] <= 1
    assert {dtype for dtype, _ in seen} == {torch.bfloat16}
    assert (torch.bfloat16, True) in seen


def test_torchrun_two_processes_with_gloo(data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29731",
           str(ROOT / "trainTeacher.py"), "--data-dir", str(data), "--runs-dir", str(tmp_path), "--run-name", "ddp",
           "--epochs", "1", "--eval-splits", "test", *SMALL]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]
    results = _results(tmp_path / "ddp")
    # the reduced confusion matrix covers every test pixel exactly once
    assert results["splits"]["test"]["images"] == len((data / "test.txt").read_text().split())
    assert 0 <= results["splits"]["test"]["miou"] <= 1


def test_fp16_autocast_is_refused_on_the_cpu(data, runs, capsys):
    with pytest.raises(SystemExit):
        trainTeacher.cli(["--data-dir", str(data), "--runs-dir", str(runs), "--run-name", "fp16",
                           "--epochs", "1", "--amp", "fp16", *SMALL])
    assert "--amp fp16 needs a CUDA device; use --amp bf16 on the CPU" in capsys.readouterr().err
    assert not (runs / "fp16").exists()

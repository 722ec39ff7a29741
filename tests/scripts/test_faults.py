"""Faults and hostile inputs end in one line and lose nothing: batches of the ignored class only, one
process per run folder, split-list names that leave the data folder, a full disk during a checkpoint write,
weights files that are not ours. Tiny runs: ResNet-18, 64x64, CPU."""
import os
import shutil
import socket
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

import trainStudent
import trainTeacher
from util.data.info import MFNET, write_dataset_info
from util.data.synthetic import generate_dataset

SMALL = ["--depth", "18", "--height", "64", "--width", "64", "--no-pretrained", "--workers", "0", "--no-progress",
         "--lr", "0.01", "--eval-splits", "--no-augment"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("data") / "syn", n_frames=10, height=64, width=64, seed=1)


def _finite(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


# ---------------------------------------------------------------- class 4: a batch of the ignored class only
@pytest.fixture(scope="module")
def ignored(data, tmp_path_factory):
    """The synthetic set with class 0 ignored; train = 2 frames, the first one all class 0."""
    out = tmp_path_factory.mktemp("ignored") / "set"
    shutil.copytree(data, out)
    write_dataset_info(MFNET.__class__(**{**MFNET.to_dict(), "ignore_index": 0}), out)
    names = (out / "train.txt").read_text().split()[:2]
    (out / "train.txt").write_text("\n".join(names) + "\n")
    label = out / "labels" / f"{names[0]}.png"
    cv2.imwrite(str(label), np.zeros_like(cv2.imread(str(label), cv2.IMREAD_UNCHANGED)))
    return out


@pytest.mark.parametrize("script, extra", [(trainTeacher, []), (trainStudent, ["--no-distill"])],
                         ids=["teacher CE + edge", "student on ground truth"])
def test_an_all_ignored_batch_adds_no_loss_and_is_counted(ignored, tmp_path, capsys, script, extra):
    script.cli(["--data-dir", str(ignored), "--runs-dir", str(tmp_path), "--run-name", "r", "--epochs", "1",
                "--batch-size", "1", *SMALL, *extra])
    out = capsys.readouterr().out
    assert "1 batch(es) held only the ignored class (no label loss from them)" in out
    assert _finite(tmp_path / "r" / "last.pth")
    history = torch.load(tmp_path / "r" / "last.pth", map_location="cpu", weights_only=True)["history"]
    assert history[0]["train"]["batches_without_labels"] == 1
    assert np.isfinite(history[0]["train"]["total"]) and np.isfinite(history[0]["val_loss"])


# ---------------------------------------------------------------- class 5: one process per run folder
def _interrupted(data, runs, monkeypatch, capsys):
    """A run folder whose trainer stopped in its first step: no checkpoint, so it may start again."""
    from util.engine import loop

    def stop(*a, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(loop, "train_step", stop)
    with pytest.raises(SystemExit):
        trainTeacher.cli(["--data-dir", str(data), "--runs-dir", str(runs), "--run-name", "x", "--epochs", "1",
                          "--batch-size", "2", "--max-steps-per-epoch", "1", *SMALL])
    monkeypatch.undo()
    capsys.readouterr()
    return runs / "x"


def test_a_run_folder_in_use_is_refused_and_a_dead_owners_is_started_again(data, tmp_path, monkeypatch, capsys):
    from util.engine.folders import claim_folder

    run = _interrupted(data, tmp_path, monkeypatch, capsys)
    args = ["--data-dir", str(data), "--runs-dir", str(tmp_path), "--run-name", "x", "--epochs", "1",
            "--batch-size", "2", "--max-steps-per-epoch", "1", *SMALL]
    before = sorted(p.name for p in run.rglob("*"))
    with claim_folder(run):  # another trainer, this moment, in this folder
        with pytest.raises(SystemExit) as stop:
            trainTeacher.cli(args)
        assert stop.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"error: run folder {run} is in use by pid {os.getpid()} on {socket.gethostname()}; "
                       f"wait until it ends or choose another --run-name")
        assert sorted(p.name for p in run.rglob("*")) == before and not (run / "last.pth").exists()
    # an owner that was killed: its lock went with it
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(run / "run.lock")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(SystemExit):
        trainTeacher.cli(args)
    assert "is in use by" in capsys.readouterr().err
    holder.kill()
    holder.wait(10)
    time.sleep(0.1)
    trainTeacher.cli(args)
    assert f"{run} holds no checkpoint yet: starting the run from scratch" in capsys.readouterr().out
    assert _finite(run / "last.pth")


# ---------------------------------------------------------------- class 8: a full disk during a checkpoint write
class _FullDisk:
    """A file that takes `room` bytes, then fails as a full disk does (ENOSPC)."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(28, "No space left on device")
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_a_full_disk_while_writing_last_pth_ends_in_one_line_and_keeps_the_last_good(data, tmp_path, monkeypatch,
                                                                                       capsys):
    real, opened = os.fdopen, []

    def fdopen(fd, mode="r", *a, **kw):
        f = real(fd, mode, *a, **kw)
        if mode == "wb" and ".last.pth." in os.readlink(f"/proc/self/fd/{fd}"):
            opened.append(fd)
            if len(opened) == 2:  # epoch 2's last.pth
                return _FullDisk(f, 4096)
        return f
    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(SystemExit) as stop:
        trainTeacher.cli(["--data-dir", str(data), "--runs-dir", str(tmp_path), "--run-name", "r", "--epochs", "3",
                          "--batch-size", "2", "--max-steps-per-epoch", "1", *SMALL])
    run = tmp_path / "r"
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 1 and len(err) == 1, err
    assert err[0].startswith(f"error: {run / 'last.pth'}: the disk is full (no space left on device)")
    assert f"the last good checkpoint is {run / 'last.pth'} (epoch 1)" in err[0]
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert torch.load(run / "last.pth", map_location="cpu", weights_only=True)["epoch"] == 1


def test_save_atomic_on_a_full_tmpfs(tmp_path):
    """The real thing where this machine lets us mount a 64 KiB tmpfs (root); torch's writer wraps ENOSPC."""
    from util.engine.checkpoint import save_atomic
    from util.files import DiskFullError

    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mount -t tmpfs is not permitted here (the ENOSPC injection test covers the mechanism)")
    try:
        save_atomic({"w": torch.zeros(4)}, mnt / "last.pth")
        with pytest.raises(DiskFullError, match=r"last.pth: the disk is full"):
            save_atomic({"w": torch.zeros(100_000)}, mnt / "last.pth")
        assert [p.name for p in mnt.iterdir()] == ["last.pth"]
        assert torch.equal(torch.load(mnt / "last.pth", weights_only=True)["w"], torch.zeros(4))
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# ---------------------------------------------------------------- class 7: split-list names that leave the data folder
def _copy(data, tmp_path):
    out = tmp_path / "set"
    shutil.copytree(data, out)
    return out


def _escape(data, tmp_path, split="train"):
    """A copy of the data whose `split` list also names ../secret/x, a real frame outside the folder."""
    out = _copy(data, tmp_path)
    first = (out / "train.txt").read_text().split()[0]
    secret = out.parent / "secret"
    secret.mkdir()
    for sub in ("images", "labels", "edge_4x"):
        shutil.copy(out / sub / f"{first}.png", secret / "x.png")
    text = (out / f"{split}.txt").read_text()
    (out / f"{split}.txt").write_text(text + "../../secret/x\n")
    return out


def test_the_trainers_refuse_a_name_that_leaves_the_folder_before_opening_it(data, tmp_path, capsys):
    out = _escape(data, tmp_path)
    with pytest.raises(SystemExit) as stop:
        trainTeacher.cli(["--data-dir", str(out), "--runs-dir", str(tmp_path / "runs"), "--epochs", "1", *SMALL])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert (f"{out / 'train.txt'}: frame name '../../secret/x' is not a plain file name (it would leave {out})"
            in err)
    assert "secret/x.png" not in err.replace("'../../secret/x'", "")  # never opened, so no format reported
    assert not (tmp_path / "runs").exists()


def test_a_linked_frame_file_outside_the_folder_is_refused_everywhere(data, tmp_path, capsys):
    from util.data import check as check_cmd
    from util.data.edges import main as edges_main

    out = _copy(data, tmp_path)
    first = (out / "train.txt").read_text().split()[0]
    elsewhere = tmp_path / "elsewhere.png"
    (out / "edge_4x" / f"{first}.png").rename(elsewhere)
    (out / "edge_4x" / f"{first}.png").symlink_to(elsewhere)
    expected = f"{out / 'edge_4x' / first}.png: a link to {elsewhere}, outside {out}"
    assert check_cmd.main(["--data-dir", str(out), "--no-progress", "--no-cache"]) == 1
    assert expected in capsys.readouterr().out
    before = elsewhere.read_bytes()
    assert edges_main(["--data-dir", str(out), "--overwrite"]) == 1  # would write through the link
    assert expected in capsys.readouterr().err and elsewhere.read_bytes() == before
    # a linked sub-folder is an ordinary layout and stays accepted
    (out / "edge_4x" / f"{first}.png").unlink()
    elsewhere.rename(out / "edge_4x" / f"{first}.png")
    (out / "images").rename(tmp_path / "images_elsewhere")
    (out / "images").symlink_to(tmp_path / "images_elsewhere")
    assert check_cmd.main(["--data-dir", str(out), "--no-progress", "--no-cache"]) == 0


def test_demo_check_and_convert_refuse_a_name_that_leaves_the_folder(data, tmp_path, capsys):
    import run_demo_teacher
    from util.data import check as check_cmd, convert

    out = _escape(data, tmp_path, split="test")
    assert check_cmd.main(["--data-dir", str(out), "--no-progress", "--no-cache", "--splits", "test"]) == 1
    assert f"{out / 'test.txt'}: frame name '../../secret/x' is not a plain" in capsys.readouterr().out
    weights = tmp_path / "t.pth"
    from model import CENet
    torch.save(CENet(depth=18, height=64, width=64).state_dict(), weights)
    with pytest.raises(SystemExit):
        run_demo_teacher.main(["--weights", str(weights), "--data-dir", str(out), "--splits", "test",
                               "--runs-dir", str(tmp_path / "runs"), "--no-progress", "--workers", "0"])
    assert f"{out / 'test.txt'}: frame name '../../secret/x'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    # the converter's folders format reads SRC/*.txt split lists
    src = tmp_path / "src"
    for sub in ("rgb", "thermal", "labels"):
        (src / sub).mkdir(parents=True)
    (src / "train.txt").write_text("a\n../../etc/passwd\n")
    code = convert.main(["folders", str(src), str(tmp_path / "dst"), "--classes", "a,b", "--no-progress"])
    assert code == 1 and f"{src / 'train.txt'}: frame name '../../etc/passwd' is not a plain" in capsys.readouterr().err


# ---------------------------------------------------------------- class 6: weights files that are not ours
@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """An ONNX model from elsewhere that takes one thermal-like channel and outputs 1000 'classes',
    a torchvision-style state dict, and a folder of thermal frames."""
    root = tmp_path_factory.mktemp("foreign")

    class Other(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.avg_pool2d(x, 1).repeat(1, 1000, 1, 1)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(Other(), (torch.rand(1, 1, 64, 64),), str(root / "other.onnx"), dynamo=False)
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 512)}, root / "other.pth")
    frames = root / "frames"
    frames.mkdir()
    for i in range(2):
        cv2.imwrite(str(frames / f"f{i}.png"), np.full((64, 64), 100 + i, np.uint8))
    return root


@pytest.mark.parametrize("command, weights, message", [
    ("demo", "other.onnx", "other.onnx: not a CEKD export (no CEKD metadata); it holds a model with input(s) "
                           "[(1, 1, 64, 64)] and output(s) [(1, 1000, 64, 64)]"),
    ("demo", "other.pth", "other.pth holds neither CENet (teacher) nor EKNet (student) weights"),
    ("export", "other.onnx", "other.onnx: holds an ONNX model; python -m util.export exports PyTorch weights"),
    ("export", "other.pth", "other.pth holds neither CENet (teacher) nor EKNet (student) weights"),
])
def test_a_weights_file_that_is_not_ours_is_named_with_what_it_holds(foreign, tmp_path, capsys, command, weights,
                                                                      message):
    import run_demo_student
    from util.deploy.export import main as export_main

    path = foreign / weights
    with pytest.raises(SystemExit) as stop:
        if command == "demo":
            run_demo_student.main(["--weights", str(path), "--input", str(foreign / "frames"), "--runs-dir",
                                   str(tmp_path / "runs"), "--no-progress", "--device", "cpu"])
        else:
            export_main(["--weights", str(path), "--out", str(tmp_path / "s.onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and str(path) in err[0], err
    assert message in err[0]
    assert list(tmp_path.iterdir()) == []


def test_the_validation_loss_of_an_all_ignored_set_is_zero_not_nan():
    from types import SimpleNamespace

    from util.engine.loop import evaluate

    class Net(torch.nn.Module):
        in_channels = 1

        def forward(self, x):
            return SimpleNamespace(logits=torch.cat([x, -x, x * 2], 1))
    batch = {"image": torch.rand(1, 4, 8, 8), "label": torch.zeros(1, 8, 8, dtype=torch.long), "name": ["a"]}
    ev = evaluate(Net(), [batch], torch.device("cpu"), 3, show=False, ignore_index=0)
    assert ev.loss == 0.0 and int(ev.confusion.mat.sum()) == 0

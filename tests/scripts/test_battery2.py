"""Issue 16 (reliability, second battery): batches of the ignored class only, one process per run
folder, split-list names that leave the data folder, a full disk during a checkpoint write.
Tiny runs: ResNet-18, 64x64, CPU."""
import json

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
    import shutil
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
    import subprocess
    import sys
    import time

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
        assert err == (f"error: run folder {run} is in use by pid {__import__('os').getpid()} on "
                       f"{__import__('socket').gethostname()}; wait until it ends or choose another --run-name")
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
    import os

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
    import subprocess

    from util.engine.checkpoint import save_atomic
    from util.engine.folders import DiskFullError

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

"""Distillation on unlabeled frames (issue 18): trainStudent.py --unlabeled reads the frames (the teacher
sees them), never their labels; the ground-truth term reads labelled frames only; the mixed batches
are deterministic and sharded; resume is bitwise; bad unlabeled folders get one line before anything
is written."""
import json
import shutil

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import trainStudent
from model import CENet
from model.losses import student_loss
from util.data.dataset import MFDataset
from util.data.mfnet import N_CLASS
from util.data.synthetic import generate_dataset
from util.data.unlabeled import Labelled, UnlabeledDataset
from util.engine.checkpoint import export_release
from util.engine.mixing import MixedBatchSampler

SMALL = ["--depth", "18", "--height", "64", "--width", "64", "--batch-size", "2", "--no-pretrained", "--workers", "0",
         "--no-progress", "--lr", "0.01", "--eval-splits"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("unlabeled")
    data = generate_dataset(root / "syn", n_frames=12, height=64, width=64, seed=5, unlabeled_frames=2)
    teacher = root / "teacher.pth"
    export_release(CENet(depth=18, height=64, width=64), teacher)
    return data, teacher, root / "runs"


def _common(data, teacher, runs, name, *extra):
    return ["--data-dir", str(data), "--runs-dir", str(runs), "--teacher", str(teacher), "--run-name", name,
            *SMALL, *extra]


def test_a_two_frame_unlabeled_set_is_seen_by_the_teacher(setup, monkeypatch):
    data, teacher, runs = setup
    seen = []
    forward = CENet.forward
    monkeypatch.setattr(CENet, "forward", lambda self, x: seen.append(x.shape[0]) or forward(self, x))
    trainStudent.cli(_common(data, teacher, runs, "only", "--unlabeled", str(data / "unlabeled"),
                             "--unlabeled-only", "--epochs", "2"))
    assert sum(seen) == 4  # 2 frames, 2 epochs: every forward of the teacher is on unlabeled frames
    last = torch.load(runs / "only" / "last.pth", weights_only=True)
    assert [h["frames"] for h in last["history"]] == [{"labelled": 0, "unlabeled": 2}] * 2
    run = json.loads((runs / "only" / "run.json").read_text())
    assert run["frames"]["labelled"] == 0 and run["frames"]["unlabeled"] == 2
    assert run["frames"]["per_epoch"] == {"labelled": 0, "unlabeled": 2}
    assert run["config"]["unlabeled"] == [str(data / "unlabeled")] and run["config"]["unlabeled_only"]


def test_labels_of_a_labelled_folder_used_as_unlabeled_are_never_opened(setup, tmp_path, monkeypatch):
    data, teacher, runs = setup
    pool = tmp_path / "pool"
    shutil.copytree(data, pool)
    for label in (pool / "labels").iterdir():
        label.write_bytes(b"not a png")  # any read of a label would fail
    for edge in (pool / "edge_4x").iterdir():
        edge.write_bytes(b"not a png")
    n_train = len((pool / "train.txt").read_text().split())
    trainStudent.cli(_common(data, teacher, runs, "labelled-pool", "--unlabeled", str(pool), "--epochs", "1",
                             "--gt-weight", "1"))
    hist = torch.load(runs / "labelled-pool" / "last.pth", weights_only=True)["history"]
    assert hist[0]["frames"] == {"labelled": n_train, "unlabeled": n_train}
    assert "gt" in hist[0]["train"]


def test_the_gt_term_reads_the_labelled_frames_only():
    g = torch.Generator().manual_seed(0)

    def outs():
        from types import SimpleNamespace
        return SimpleNamespace(features=torch.randn(3, 8, 2, 2, generator=g),
                               logits=torch.randn(3, 4, 5, 6, generator=g),
                               hint=torch.randn(3, 8, 3, 3, generator=g))

    s, t = outs(), outs()
    label = torch.randint(0, 4, (3, 5, 6), generator=g)
    w = {"gt": 1.0}
    mask = torch.tensor([True, False, True])
    mixed = student_loss(s, t, w, label=label, labelled=mask)
    expected = F.cross_entropy(s.logits[[0, 2]], label[[0, 2]])  # mean over the labelled frames' pixels
    assert torch.allclose(mixed["gt"], expected)
    other = label.clone()
    other[1] = (other[1] + 1) % 4  # the unlabeled frame's placeholder label changes nothing
    assert torch.equal(student_loss(s, t, w, label=other, labelled=mask)["gt"], mixed["gt"])
    none = student_loss(s, t, w, label=label, labelled=torch.zeros(3, dtype=torch.bool))
    assert none["gt"].item() == 0.0 and torch.equal(none["sim"], mixed["sim"])
    every = student_loss(s, t, w, label=label, labelled=torch.ones(3, dtype=torch.bool))
    assert torch.equal(every["gt"], student_loss(s, t, w, label=label)["gt"])  # the labelled-only path, unchanged


def test_mixed_batches_are_fixed_by_seed_and_epoch_and_sharded():
    def batches(epoch, rank=0, world=1, seed=3):
        s = MixedBatchSampler(7, 5, 4, 1, seed=seed, rank=rank, world_size=world)
        s.set_epoch(epoch)
        return list(s)

    one = batches(1)
    assert one == batches(1) and one != batches(2) and one != batches(1, seed=4)
    assert len(one) == 3 and all(sum(i >= 7 for i in b) == 1 for b in one)  # 1 unlabeled per batch
    assert sorted(i for b in one for i in b if i < 7) == list(range(7))  # every labelled frame once
    # the unlabeled frames come in turn from a stream of permutations: 15 draws over 5 epochs, each frame 3 times
    drawn = [i for e in range(5) for b in batches(e) for i in b if i >= 7]
    assert sorted(drawn) == sorted(list(range(7, 12)) * 3)
    # two processes: disjoint labelled shares (padded to 8 as DistributedSampler) covering every frame
    r0, r1 = batches(1, 0, 2), batches(1, 1, 2)
    lab = [i for b in r0 + r1 for i in b if i < 7]
    assert len(lab) == 8 and set(lab) == set(range(7)) and len(r0) == len(r1) == 2


def test_the_mixed_loader_does_not_depend_on_workers(setup):
    data, _, _ = setup
    lab = Labelled(MFDataset(data, "train", 64, 64, augment=True, seed=2, edges=False, check=False, n_class=N_CLASS))
    pool = UnlabeledDataset(data / "unlabeled", 64, 64, augment=True, seed=2)
    full = torch.utils.data.ConcatDataset([lab, pool])

    def run(workers):
        sampler = MixedBatchSampler(len(lab), len(pool), 2, 1, seed=2)
        sampler.set_epoch(3)
        lab.set_epoch(3)
        pool.set_epoch(3)
        loader = torch.utils.data.DataLoader(full, batch_sampler=sampler, num_workers=workers)
        return [(b["image"], b["labelled"].tolist(), b["name"]) for b in loader]

    a, b = run(0), run(1)
    assert len(a) == 6 and all(flags == [True, False] for _, flags, _ in a)
    for (ia, _, na), (ib, _, nb) in zip(a, b):
        assert na == nb and torch.equal(ia, ib)
    pool.set_epoch(4)  # another epoch, another augmentation draw
    assert not all(torch.equal(pool[i]["image"], UnlabeledDataset(data / "unlabeled", 64, 64)[i]["image"])
                   for i in range(2))


def test_resume_after_a_stop_is_bitwise(setup):
    data, teacher, runs = setup
    extra = ["--unlabeled", str(data / "unlabeled"), "--unlabeled-per-batch", "1", "--gt-weight", "1",
             "--epochs", "2", "--max-steps-per-epoch", "2"]
    whole, split = (_common(data, teacher, runs, name, *extra) for name in ("whole", "split"))
    trainStudent.cli(whole)
    trainStudent.cli([*split, "--stop-after-epochs", "1"])
    trainStudent.cli(["--resume", str(runs / "split"), "--no-progress"])
    a = torch.load(runs / "whole" / "last.pth", weights_only=True)
    b = torch.load(runs / "split" / "last.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    run = json.loads((runs / "whole" / "run.json").read_text())
    # 6 batches of 1 + 1 planned; 2 run (--max-steps-per-epoch)
    assert run["frames"]["per_epoch"] == {"labelled": 6, "unlabeled": 6}
    assert [h["frames"] for h in a["history"]] == [h["frames"] for h in b["history"]] == \
        [{"labelled": 2, "unlabeled": 2}] * 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def _refused(capsys, runs, name, argv):
    with pytest.raises(SystemExit):
        trainStudent.cli(argv)
    err = capsys.readouterr().err.strip()
    assert not (runs / name).exists()
    return err


def test_bad_unlabeled_folders_get_one_line_before_anything_is_written(setup, tmp_path, capsys):
    data, teacher, runs = setup
    empty = tmp_path / "empty"
    empty.mkdir()
    no_images = tmp_path / "no-images"
    no_images.mkdir()
    (no_images / "train.txt").write_text("a\n")
    other_size = tmp_path / "other-size"
    (other_size / "images").mkdir(parents=True)
    (other_size / "train.txt").write_text("a\nb\n")
    for name in "ab":
        cv2.imwrite(str(other_size / "images" / f"{name}.png"), np.zeros((64, 96, 4), np.uint8))
    layout = "(an unlabeled set holds images/NAME.png (4-channel R, G, B, thermal) and train.txt listing the NAMEs)"
    cases = {empty: f"{empty}: holds no frames {layout}",
             no_images: f"{no_images / 'images'}: folder not found {layout}",
             other_size: f"{other_size / 'images' / 'a.png'}: 2 frame(s) of {other_size} are not the size of the "
                         f"labelled frames of {data} train (64x64), e.g. this one is 64x96"}
    for folder, message in cases.items():
        err = _refused(capsys, runs, "bad", _common(data, teacher, runs, "bad", "--unlabeled", str(folder),
                                                    "--epochs", "1"))
        assert err == f"error: unlabeled set check failed for {folder}: {message}"


def test_an_unlabeled_set_as_data_dir_and_bad_options_are_refused(setup, capsys):
    data, teacher, runs = setup
    pool = data / "unlabeled"
    err = _refused(capsys, runs, "bad", _common(pool, teacher, runs, "bad", "--epochs", "1"))
    assert err.startswith(f"error: {pool / 'dataset.json'}: {pool} is an unlabeled set") and "\n" not in err
    for extra, message in (
            (["--unlabeled-per-batch", "2"], "--unlabeled-per-batch 2: must be 1..1"),
            (["--no-distill"], "--unlabeled with --no-distill"),
            (["--unlabeled-only", "--gt-weight", "1"], "--gt-weight 1.0 with --unlabeled-only")):
        err = _refused(capsys, runs, "bad", _common(data, teacher, runs, "bad", "--unlabeled", str(pool), *extra))
        assert err.startswith(f"error: {message}"), err
    err = _refused(capsys, runs, "bad", _common(data, teacher, runs, "bad", "--unlabeled-only"))
    assert err == "error: --unlabeled-only: needs --unlabeled DIR (the frames without labels)"
    with pytest.raises(SystemExit):
        trainStudent.cli(_common(data, teacher, runs, "bad", "--unlabeled", str(pool), "--unlabeled-per-batch", "x"))
    assert capsys.readouterr().err == ("error: argument --unlabeled-per-batch: must be an integer at least 0, got 'x' "
                                       "(see trainStudent.py --help)\n")


def test_run_cekd_adds_a_label_free_row_when_asked(tmp_path, capsys):
    from run_cekd import main

    data = tmp_path / "syn"
    main(["--data-dir", str(data), "--frames", "12", "--height", "64", "--width", "64", "--epochs", "1",
          "--batch-size", "2", "--workers", "0", "--runs-dir", str(tmp_path / "runs"), "--run-name", "job",
          "--no-progress", "--skip-baseline", "--unlabeled-frames", "2", "--unlabeled-per-batch", "1",
          "--extra", "--max-steps-per-epoch", "1",
          "--eval-splits", "test"])
    pool = tmp_path / "syn-unlabeled-2"
    assert len((pool / "train.txt").read_text().split()) == 2
    rows = (tmp_path / "runs" / "job" / "comparison.txt").read_text().strip().splitlines()[2:]
    assert [r.split("  ")[0] for r in rows] == ["CENet teacher (RGB + thermal)",
                                               "EKNet student, CEKD distillation (thermal)",
                                               "EKNet student, CEKD + unlabeled pool (thermal)"]
    run = json.loads((tmp_path / "runs" / "job" / "student-unlabeled" / "run.json").read_text())
    assert run["config"]["unlabeled"] == [str(pool)] and run["frames"]["unlabeled"] == 2
    assert run["config"]["unlabeled_per_batch"] == 1
    assert json.loads((tmp_path / "runs" / "job" / "student" / "run.json").read_text())["config"]["unlabeled"] == []
    # the next run reuses the pool only when it was made for this data folder
    from argparse import Namespace

    from run_cekd import ensure_pool
    from util.data.synthetic import META_FILE

    args = Namespace(data_dir=str(data), unlabeled_frames=2)
    assert ensure_pool(args) == pool
    manifest = json.loads((pool / META_FILE).read_text())
    (pool / META_FILE).write_text(json.dumps({**manifest, "seed": 5}))
    with pytest.raises(ValueError, match=r"syn-unlabeled-2 was not made for .*syn: seed 5 \(needed 0\); remove it"):
        ensure_pool(args)
    (pool / META_FILE).unlink()  # a pool of an earlier version had no manifest
    with pytest.raises(ValueError, match=r"syn-unlabeled-2 holds no readable synthetic.json \(made by an earlier"):
        ensure_pool(args)


def test_torchrun_two_processes_share_the_unlabeled_frames(setup, tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    data, teacher, _ = setup
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29747",
           str(ROOT / "trainStudent.py"),
           *_common(data, teacher, tmp_path, "ddp", "--unlabeled", str(data / "unlabeled"), "--unlabeled-per-batch", "1",
                    "--gt-weight", "1", "--epochs", "1")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    hist = torch.load(tmp_path / "ddp" / "last.pth", weights_only=True)["history"]
    # 6 labelled train frames: 3 per process, 1 labelled + 1 unlabeled per batch, so 3 unlabeled draws each
    assert hist[0]["frames"] == {"labelled": 6, "unlabeled": 6}


def test_a_different_thermal_scaling_is_noted(setup, tmp_path, capsys):
    data, teacher, runs = setup
    pool = tmp_path / "pool16"
    shutil.copytree(data / "unlabeled", pool)
    (pool / "dataset.json").write_text(json.dumps({"name": "rec", "unlabeled": True, "thermal_range": [100, 2000]}))
    trainStudent.cli(_common(data, teacher, runs, "note", "--unlabeled", str(pool), "--epochs", "1",
                             "--max-steps-per-epoch", "1"))
    out = capsys.readouterr().out
    assert (f"note: the thermal of {pool} is from the 16-bit range [100, 2000], that of {data} 8-bit as recorded"
            in out)
    trainStudent.cli(_common(data, teacher, runs, "no-note", "--unlabeled", str(data / "unlabeled"), "--epochs", "1",
                             "--max-steps-per-epoch", "1"))
    assert "note: the thermal" not in capsys.readouterr().out

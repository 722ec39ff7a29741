"""How a training run fails, stops and resumes: every bad input or fault ends in one line and an exit
code, never a dead end, and a diverged model is never kept. Tiny runs: ResNet-18, 64x64, 2 steps per epoch, CPU."""
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import run_demo_student
import trainStudent
import trainTeacher
from model import EKNet
from util.data.synthetic import generate_dataset
from util.engine.checkpoint import export_release

ROOT = Path(__file__).resolve().parents[2]
# --eval-splits without a value: no final test, the runs stay short
SMALL = ["--depth", "18", "--height", "64", "--width", "64", "--batch-size", "2", "--no-pretrained",
         "--workers", "0", "--no-progress", "--max-steps-per-epoch", "2", "--lr", "0.01", "--eval-splits"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("data") / "syn", n_frames=10, height=64, width=64, seed=1)


@pytest.fixture(scope="module")
def done(data, tmp_path_factory):
    """A finished 2-epoch teacher run."""
    runs = tmp_path_factory.mktemp("done")
    trainTeacher.cli(["--data-dir", str(data), "--runs-dir", str(runs), "--run-name", "t", "--epochs", "2", *SMALL])
    return runs / "t"


def _args(data, runs, name, *more):
    return ["--data-dir", str(data), "--runs-dir", str(runs), "--run-name", name, *SMALL, *more]


def _fail(cli, args, capsys):
    """Run a script that must stop: (exit code, its one stderr line)."""
    with pytest.raises(SystemExit) as stop:
        cli(args)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return stop.value.code, lines[0]


def _finite(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def _epoch(path):
    return torch.load(path, map_location="cpu", weights_only=True)["epoch"]


def _poison_step(monkeypatch, module, at_step):
    """After optimiser step number `at_step` (1-based), the first weight holds NaN."""
    real = module.make_optimizer
    steps = {"n": 0}

    def make(model, cfg, *a, **kw):
        optimizer, scheduler, scaler = real(model, cfg, *a, **kw)

        def hook(opt, args, kwargs):
            steps["n"] += 1
            if steps["n"] == at_step:
                with torch.no_grad():
                    opt.param_groups[0]["params"][0].fill_(float("nan"))
        optimizer.register_step_post_hook(hook)
        return optimizer, scheduler, scaler

    monkeypatch.setattr(module, "make_optimizer", make)


def _raise_in_step(monkeypatch, at_call, exc=KeyboardInterrupt):
    """trainTeacher's loss raises `exc` at its `at_call`-th call (1-based)."""
    real, calls = trainTeacher.teacher_loss, {"n": 0}

    def loss(*a, **kw):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise exc()
        return real(*a, **kw)

    monkeypatch.setattr(trainTeacher, "teacher_loss", loss)


# ---------------------------------------------------------------- 1. a diverged model is never kept
def test_lr_nan_is_refused_before_anything_is_written(data, tmp_path, capsys):
    code, line = _fail(trainTeacher.cli, _args(data, tmp_path / "runs", "x", "--epochs", "1", "--lr", "nan"), capsys)
    assert code == 2 and "argument --lr: must be a finite number greater than 0, got 'nan'" in line
    assert not (tmp_path / "runs").exists()


def test_a_huge_lr_stops_in_epoch_1_without_any_checkpoint(data, tmp_path, capsys):
    code, line = _fail(trainTeacher.cli, _args(data, tmp_path, "x", "--epochs", "2", "--lr", "1e20"), capsys)
    assert code == 1
    assert "non-finite loss at epoch 1" in line and line.endswith("no checkpoint was written yet")
    assert not list((tmp_path / "x").glob("*.pth"))


@pytest.mark.parametrize("at_step,cause", [(3, "non-finite loss at epoch 2 step 3"),  # mid-epoch: the next loss
                                           (4, "training diverged in epoch 2: the weight ")])  # last step: weights
def test_divergence_in_epoch_2_keeps_epoch_1(data, tmp_path, monkeypatch, capsys, at_step, cause):
    _poison_step(monkeypatch, trainTeacher, at_step)
    code, line = _fail(trainTeacher.cli, _args(data, tmp_path, "x", "--epochs", "2"), capsys)
    run = tmp_path / "x"
    assert code == 1 and cause in line
    assert f"the last good checkpoint is {run / 'last.pth'} (epoch 1)" in line
    assert f"--resume {run}" in line
    assert _epoch(run / "last.pth") == 1 and _epoch(run / "best.pth") == 1
    assert _finite(run / "last.pth") and _finite(run / "best.pth")
    assert not (run / "final.pth").exists() and not (run / "results.json").exists()


def test_a_one_epoch_run_that_diverges_writes_no_checkpoint(data, tmp_path, monkeypatch, capsys):
    _poison_step(monkeypatch, trainTeacher, 2)
    code, line = _fail(trainTeacher.cli, _args(data, tmp_path, "x", "--epochs", "1"), capsys)
    assert code == 1
    assert "training diverged in epoch 1: the weight " in line and "holds NaN or inf" in line
    assert line.endswith("no checkpoint was written yet") and "last good" not in line
    assert not list((tmp_path / "x").glob("*.pth")) and not (tmp_path / "x" / "results.json").exists()


LAUNCHER = """
import os, sys, time
import trainTeacher

real, calls = trainTeacher.teacher_loss, [0]

def poisoned(*a, **kw):
    losses = real(*a, **kw)
    calls[0] += 1
    if os.environ["RANK"] == "1" and calls[0] >= 2:  # rank 1 only, from its second step (epoch 2) on
        losses["ce"] = losses["ce"] * float("nan")
    return losses

trainTeacher.teacher_loss = poisoned
try:
    trainTeacher.cli(sys.argv[1:])
    code = 0
except SystemExit as stop:
    code = stop.code
with open(os.path.join(os.environ["MARKERS"], "rank" + os.environ["RANK"]), "w") as f:
    f.write(str(code))
time.sleep(3)  # let the other rank record how it ended before torchrun tears the job down
sys.exit(code)
"""


def test_a_non_finite_loss_on_one_ddp_process_stops_both(data, tmp_path):
    launcher = tmp_path / "launcher.py"
    launcher.write_text(LAUNCHER)
    markers = tmp_path / "markers"
    markers.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "MARKERS": str(markers)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(launcher), *_args(data, tmp_path / "runs", "ddp", "--epochs", "2")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert sorted(p.name for p in markers.iterdir()) == ["rank0", "rank1"], out[-3000:]  # both ended on their own
    assert (markers / "rank0").read_text() == "1" and (markers / "rank1").read_text() == "1"
    assert "non-finite loss at epoch 2" in out and "ce=nan" in out
    run = tmp_path / "runs" / "ddp"
    assert _epoch(run / "last.pth") == 1 and _finite(run / "last.pth")


# ---------------------------------------------------------------- 2. no dead ends
BAD_OPTIONS = [
    (trainTeacher, ["--height", "100"], "argument --height: must be an integer multiple of 32, at least 64, got '100'"),
    (trainTeacher, ["--width", "32"], "argument --width: must be an integer multiple of 32, at least 64, got '32'"),
    (trainTeacher, ["--epochs", "0"], "argument --epochs: must be an integer at least 1, got '0'"),
    (trainTeacher, ["--batch-size", "0"], "argument --batch-size: must be an integer at least 1"),
    (trainTeacher, ["--lr", "0"], "argument --lr: must be a finite number greater than 0, got '0'"),
    (trainTeacher, ["--lr", "-1"], "argument --lr: must be a finite number greater than 0, got '-1'"),
    (trainTeacher, ["--lr", "inf"], "argument --lr: must be a finite number greater than 0, got 'inf'"),
    (trainTeacher, ["--lr", "1e400"], "argument --lr: must be a finite number greater than 0, got '1e400'"),
    (trainTeacher, ["--seed", "-1"], "argument --seed: must be an integer from 0 to 4294967295"),
    (trainTeacher, ["--workers", "\u0663"], "argument --workers: must be an integer at least 0"),  # Arabic 3
    (trainTeacher, ["--eval-splits", "../x"], "argument --eval-splits: must be a split name"),
    (trainStudent, ["--tau", "0", "--no-distill"], "argument --tau: must be a finite number greater than 0"),
    (trainStudent, ["--loss-weights", "1", "1", "-1", "1"], "argument --loss-weights: must be a finite number at least 0"),
    (trainTeacher, ["--device", "gpu0"], "--device gpu0: not a device name"),
    (trainTeacher, ["--device", "cuda:7"], "--device cuda:7: CUDA is not available"),
]


@pytest.mark.parametrize("script,extra,message", BAD_OPTIONS, ids=[" ".join(extra) for _, extra, _ in BAD_OPTIONS])
def test_a_bad_option_is_refused_before_anything_is_written(data, tmp_path, capsys, script, extra, message):
    if extra == ["--device", "cuda:7"] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, line = _fail(script.cli, _args(data, tmp_path / "runs", "x", "--epochs", "1", *extra), capsys)
    assert code == 2 and message in line
    assert not (tmp_path / "runs").exists()


def test_runs_dir_that_is_a_file_is_refused(data, tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.write_text("mine")
    code, line = _fail(trainTeacher.cli, _args(data, runs, "x", "--epochs", "1"), capsys)
    assert code == 2 and f"--runs-dir {runs}: is a file" in line
    assert runs.read_text() == "mine"


def _interrupted_run(data, runs, monkeypatch, capsys):
    """A run folder Ctrl-C'd in its first step (no checkpoint), with leftovers of killed atomic writes."""
    _raise_in_step(monkeypatch, 1)
    code, line = _fail(trainTeacher.cli, _args(data, runs, "x", "--epochs", "1"), capsys)
    monkeypatch.undo()
    assert code == 130 and line == "error: interrupted (Ctrl-C); no checkpoint was written yet"
    run = runs / "x"
    assert sorted(p.name for p in run.iterdir()) == ["run.json", "run.lock", "tb"]
    for leftover in (".last.pth.a1b2c3.tmp", ".best.pth.x_9.tmp"):
        (run / leftover).write_bytes(b"half a checkpoint")
    return run


@pytest.mark.parametrize("how", ["same command", "--resume"])
def test_a_run_without_checkpoint_starts_again(data, tmp_path, monkeypatch, capsys, how):
    run = _interrupted_run(data, tmp_path, monkeypatch, capsys)
    if how == "--resume":
        trainTeacher.cli(["--resume", str(run)])
    else:
        trainTeacher.cli(_args(data, tmp_path, "x", "--epochs", "1"))
    assert f"{run} holds no checkpoint yet: starting the run from scratch" in capsys.readouterr().out
    assert _epoch(run / "last.pth") == 1 and (run / "final.pth").is_file()
    assert not list(run.glob(".*.tmp"))


# Kills the trainer (SIGKILL, as the system would) at the rename that puts run.json in place: its folder then
# holds run.lock and a complete .run.json.XXXX.tmp only.
_KILL_AT_RUN_JSON = """
import os, signal, sys
import trainTeacher
replace = os.replace
def killed(src, dst, *a, **kw):
    if str(dst).endswith("run.json"):
        os.kill(os.getpid(), signal.SIGKILL)
    return replace(src, dst, *a, **kw)
os.replace = killed
trainTeacher.cli(sys.argv[1:])
"""


@pytest.mark.parametrize("how", ["same command", "--resume"])
def test_a_run_killed_while_writing_run_json_starts_again(data, tmp_path, capsys, how):
    args = _args(data, tmp_path, "x", "--epochs", "1")
    killed = subprocess.run([sys.executable, "-c", _KILL_AT_RUN_JSON, *args], cwd=ROOT, capture_output=True,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert killed.returncode == -9, killed.stderr
    run = tmp_path / "x"
    left = sorted(p.name for p in run.iterdir())
    assert left[1:] == ["run.lock"] and left[0].startswith(".run.json.") and left[0].endswith(".tmp")
    trainTeacher.cli(args if how == "same command" else ["--resume", str(run), *args[:2], *SMALL, "--epochs", "1"])
    assert f"{run} holds no checkpoint yet: starting the run from scratch" in capsys.readouterr().out
    assert _epoch(run / "last.pth") == 1 and not list(run.glob(".*.tmp"))


def test_a_folder_with_anything_else_beside_the_lock_is_not_taken(data, tmp_path, capsys):
    run = tmp_path / "x"
    run.mkdir()
    (run / "run.lock").write_text("pid 1 on elsewhere\n")
    (run / ".run.json.ab12.tmp").write_text("{")
    (run / "mine.txt").write_text("a user's")
    code, line = _fail(trainTeacher.cli, _args(data, tmp_path, "x", "--epochs", "1"), capsys)
    assert code == 2 and "already exists" in line
    code, line = _fail(trainTeacher.cli, ["--resume", str(run), "--data-dir", str(data), *SMALL], capsys)
    assert code == 2 and "not a run folder of this trainer" in line
    assert sorted(p.name for p in run.iterdir()) == [".run.json.ab12.tmp", "mine.txt", "run.lock"]


def test_a_run_without_checkpoint_is_not_resumed_by_the_other_trainer(data, tmp_path, monkeypatch, capsys):
    run = _interrupted_run(data, tmp_path, monkeypatch, capsys)
    code, line = _fail(trainStudent.cli, ["--resume", str(run), "--no-distill"], capsys)
    assert code == 2 and str(run) in line and "CENet (teacher)" in line and "trainStudent.py" in line
    assert not (run / "last.pth").exists()


# ---------------------------------------------------------------- 3. --resume is checked
def _bad_files(done, tmp_path):
    truncated = tmp_path / "truncated" / "last.pth"
    truncated.parent.mkdir()
    blob = (done / "last.pth").read_bytes()
    truncated.write_bytes(blob[: len(blob) // 2])
    text = tmp_path / "text" / "last.pth"
    text.parent.mkdir()
    text.write_text("not a checkpoint\n")
    listed = tmp_path / "list.pth"
    torch.save([1, 2], listed)
    return [
        (trainTeacher, truncated.parent, truncated, "truncated or corrupt"),
        (trainTeacher, text, text, "not a PyTorch file"),
        (trainTeacher, listed, listed, "holds a list"),
        (trainTeacher, done / "best.pth", done / "best.pth", "holds the best CENet weights only (a best.pth)"),
        (trainTeacher, done / "final.pth", done / "final.pth", "holds plain CENet weights (a final.pth"),
        (trainStudent, done, done / "last.pth", "is a CENet (teacher) run, but trainStudent.py resumes EKNet"),
    ]


def test_resume_refuses_what_is_not_this_trainers_checkpoint(done, tmp_path, capsys):
    for script, target, named, what in _bad_files(done, tmp_path):
        code, line = _fail(script.cli, ["--resume", str(target), "--no-progress"], capsys)
        assert code == 2 and line.startswith("error: --resume") and str(named) in line and what in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.pth", "text", "truncated"]  # nothing written


def test_resume_extends_a_finished_run(done, tmp_path, capsys):
    run = shutil.copytree(done, tmp_path / "t")
    code, line = _fail(trainTeacher.cli, ["--resume", str(run)], capsys)
    assert code == 2 and line == (f"error: --resume {run}: the run has finished its 2 epochs; "
                                  "pass --epochs N with N > 2 to extend it")
    results = trainTeacher.cli(["--resume", str(run), "--epochs", "3"])
    out = capsys.readouterr().out
    assert f"resuming {run} after epoch 2 of 3, with its saved options:" in out and "--depth=18" in out
    assert [h["epoch"] for h in results["history"]] == [1, 2, 3] and _epoch(run / "last.pth") == 3


OTHER_RUN = [["--depth", "34"], ["--height", "96"], ["--data-dir", "elsewhere"], ["--edge-loss", "logit"]]


@pytest.mark.parametrize("extra", [*OTHER_RUN, sum(OTHER_RUN, [])], ids=" ".join)
def test_resume_refuses_options_of_another_run(done, capsys, extra):
    before = {p.name: p.stat().st_mtime_ns for p in done.iterdir()}
    code, line = _fail(trainTeacher.cli, ["--resume", str(done), "--epochs", "3", *extra], capsys)
    assert code == 2 and "--resume: these options cannot change in a run that has started" in line
    for flag in extra[::2]:
        assert flag + " " in line
    assert {p.name: p.stat().st_mtime_ns for p in done.iterdir()} == before


def test_a_run_interrupted_in_its_final_test_can_be_finished(data, tmp_path, monkeypatch, capsys):
    import util.engine.run as engine_run

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    real = engine_run.split_loader
    monkeypatch.setattr(engine_run, "split_loader", interrupted)
    code, line = _fail(trainTeacher.cli, _args(data, tmp_path, "x", "--epochs", "1", "--eval-splits", "test"), capsys)
    run = tmp_path / "x"
    assert code == 130 and f"--resume {run}" in line and not (run / "results.json").exists()
    monkeypatch.setattr(engine_run, "split_loader", real)
    results = trainTeacher.cli(["--resume", str(run)])
    assert results["best_epoch"] == 1 and "test" in results["splits"]
    assert (run / "results.json").is_file() and (run / "final.pth").is_file()


# ---------------------------------------------------------------- 6. one line
def test_ctrl_c_in_epoch_2_names_the_checkpoint_and_the_resume_command(data, tmp_path, monkeypatch, capsys):
    _raise_in_step(monkeypatch, 3)  # the first step of epoch 2
    code, line = _fail(trainTeacher.cli, _args(data, tmp_path, "x", "--epochs", "2"), capsys)
    run = tmp_path / "x"
    assert code == 130
    assert line == (f"error: interrupted (Ctrl-C); the last good checkpoint is {run / 'last.pth'} (epoch 1); "
                    f"continue with: python trainTeacher.py --resume {run}")
    assert _epoch(run / "last.pth") == 1


def test_ctrl_c_in_a_demo_says_what_was_interrupted(data, tmp_path, monkeypatch, capsys):
    weights = tmp_path / "final.pth"
    export_release(EKNet(n_class=9, depth=18, height=64, width=64), weights)
    import util.demo

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(util.demo, "evaluate_split", interrupted)
    code, line = _fail(run_demo_student.main, ["--weights", str(weights), "--data-dir", str(data), "--runs-dir",
                                               str(tmp_path / "runs"), "--workers", "0", "--no-progress"], capsys)
    assert code == 130 and line.startswith("error: interrupted (Ctrl-C)") and "training" not in line


def test_demo_blames_weights_of_another_class_count(data, tmp_path, capsys):
    weights = tmp_path / "final.pth"
    export_release(EKNet(n_class=5, depth=18, height=64, width=64), weights)
    code, line = _fail(run_demo_student.main, ["--weights", str(weights), "--data-dir", str(data), "--runs-dir",
                                               str(tmp_path / "runs"), "--workers", "0", "--no-progress"], capsys)
    assert code == 2
    assert f"--weights {weights}: holds a 5-class EKNet, but the data in {data} have 9 classes" in line
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- 8. the TensorBoard log is closed
def test_stop_after_epochs_closes_the_log_and_resume_clears_partial_writes(data, tmp_path, monkeypatch, capsys):
    from torch.utils.tensorboard import SummaryWriter

    real, closed = SummaryWriter.close, []

    def close(self):
        closed.append(self.log_dir)
        real(self)

    monkeypatch.setattr(SummaryWriter, "close", close)
    out = trainTeacher.cli(_args(data, tmp_path, "x", "--epochs", "2", "--stop-after-epochs", "1"))
    run = tmp_path / "x"
    assert out == {"run_dir": str(run), "stopped_at_epoch": 1}
    assert closed == [str(run / "tb")]
    assert f"continue with: python trainTeacher.py --resume {run}" in capsys.readouterr().out
    (run / ".last.pth.k1ll3d.tmp").write_bytes(b"half a checkpoint")
    results = trainTeacher.cli(["--resume", str(run)])
    assert [h["epoch"] for h in results["history"]] == [1, 2] and len(closed) == 2
    assert not list(run.glob(".*.tmp"))

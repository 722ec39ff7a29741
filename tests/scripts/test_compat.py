"""Results must not move by accident, and files written by earlier versions keep working.

The pinned hashes were recorded by the code before the engine refactor (issue 10): a
2-epoch teacher run and a 2-epoch student run distilled from it, ResNet-18 at 64x64 on the
synthetic data. The weights are hashed under the release's key names, which no renaming of
our modules changes. Bitwise equality holds for one CPU kind (floating-point kernels differ
between instruction sets); on a CPU kind without a recorded hash, every tensor's sum and
absolute sum must still agree to 1e-3.
"""
import hashlib
import json
import re
import shutil

import pytest
import torch

import trainStudent
import trainTeacher
from conftest import FIXTURES
from model.release import to_release
from util.engine.checkpoint import build_from_weights, save_atomic
from util.data.synthetic import generate_dataset

PINNED = json.loads((FIXTURES / "pinned_weights.json").read_text())
SMALL = ["--depth", "18", "--height", "64", "--width", "64", "--batch-size", "2", "--no-pretrained",
         "--workers", "0", "--no-progress", "--lr", "0.01", "--epochs", "2", "--eval-splits"]


def _release_state(run_dir):
    return to_release(torch.load(run_dir / "last.pth", weights_only=True)["model"])


def _sha(sd):
    m = hashlib.sha256()
    for k in sorted(sd):
        m.update(k.encode())
        m.update(sd[k].contiguous().numpy().tobytes())
    return m.hexdigest()


@pytest.fixture(scope="module")
def pinned_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pinned")
    data = generate_dataset(root / "syn", n_frames=16, height=64, width=64, seed=3)
    common = ["--data-dir", str(data), "--runs-dir", str(root / "runs"), *SMALL]
    torch.manual_seed(0)
    trainTeacher.cli(["--run-name", "t", *common])
    torch.manual_seed(0)
    trainStudent.cli(["--run-name", "s", "--teacher", str(root / "runs" / "t" / "best.pth"), *common])
    return root / "runs"


@pytest.mark.parametrize("network,run", [("teacher", "t"), ("student", "s")])
def test_a_fixed_seed_run_gives_the_pinned_weights(pinned_runs, network, run):
    sd = _release_state(pinned_runs / run)
    recorded = PINNED["cpu_capability"].get(torch.backends.cpu.get_cpu_capability())
    if recorded is not None:
        assert _sha(sd) == recorded[network]
    sums = PINNED["sums"][network]
    assert set(sums) == {k for k, v in sd.items() if v.is_floating_point()}
    for k, (total, absolute) in sums.items():
        v = sd[k].double()
        assert float(v.sum()) == pytest.approx(total, rel=1e-3, abs=1e-3), k
        assert float(v.abs().sum()) == pytest.approx(absolute, rel=1e-3, abs=1e-3), k


def _as_first_format(ckpt: dict) -> dict:
    """A checkpoint as our first version wrote it: BoT layers by Sequential index, argparse options."""
    index = {"conv_in": 0, "bn_in": 1, "mhsa": 3, "bn_mid": 5, "conv_out": 7, "bn_out": 8}
    pattern = re.compile(r"\.layer4\.blocks\.(\d+)\.(conv_in|bn_in|mhsa|bn_mid|conv_out|bn_out)\.")
    old = {k: v for k, v in ckpt.items() if k not in ("version", "extra")}
    old["model"] = {pattern.sub(lambda m: f".layer4.blocks.{m[1]}.body.{index[m[2]]}.", k): v
                    for k, v in ckpt["model"].items()}
    args = dict(ckpt["args"])
    for new, flag in (("pretrained", "no_pretrained"), ("augment", "no_augment"), ("progress", "no_progress"),
                      ("distill", "no_distill")):
        args[flag] = not args.pop(new)
    args["loss_weights"] = list(args["loss_weights"].values())
    args["eval_splits"] = list(args["eval_splits"])
    old["args"] = args
    return old


def test_checkpoints_of_the_first_format_load_and_resume(pinned_runs, tmp_path, capsys):
    run = tmp_path / "old"
    shutil.copytree(pinned_runs / "s", run)
    current = torch.load(run / "last.pth", weights_only=True)
    save_atomic(_as_first_format(current), run / "last.pth")
    best = torch.load(run / "best.pth", weights_only=True)
    save_atomic(_as_first_format({**best, "args": current["args"]}), run / "best.pth")
    assert any(".body.3." in k for k in torch.load(run / "last.pth", weights_only=True)["model"])

    built = build_from_weights(run / "best.pth", expect="EKNet")
    assert all(torch.equal(v, best["model"][k]) for k, v in built.state_dict().items())
    results = trainStudent.cli(["--resume", str(run), "--epochs", "3", "--workers", "0"])
    out = capsys.readouterr().out
    assert "with its saved options" in out and "--epochs=3" in out
    assert torch.load(run / "last.pth", weights_only=True)["epoch"] == 3
    assert [h["epoch"] for h in results["history"]] == [1, 2, 3]

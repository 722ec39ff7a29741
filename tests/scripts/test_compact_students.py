"""Compact students (issue 11): a ResNet-18 EKNet distilled from a ResNet-50 CENet through a hint
adapter, resumed exactly; the adapter never reaches the exported student; the optional ground-truth term."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import trainStudent
from model import CENet, EKNet
from model.hint_adapter import HintAdapter, hint_width
from model.losses import student_loss
from model.release import from_release
from util.data.synthetic import generate_dataset
from util.engine.checkpoint import export_release

SMALL = ["--depth", "18", "--height", "64", "--width", "64", "--batch-size", "2", "--no-pretrained", "--workers", "0",
         "--no-progress", "--lr", "0.01", "--max-steps-per-epoch", "2", "--eval-splits"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("compact")
    data = generate_dataset(root / "syn", n_frames=12, height=64, width=64, seed=5)
    teacher = root / "teacher50.pth"
    export_release(CENet(depth=50, height=64, width=64), teacher)  # like the released ResNet-50 final.pth
    return data, teacher, root / "runs"


def test_hint_widths():
    assert [hint_width(d) for d in (18, 34, 50, 101, 152)] == [64, 64, 256, 256, 256]
    assert HintAdapter(64, 256)(torch.rand(2, 64, 4, 4)).shape == (2, 256, 4, 4)


def test_resnet18_student_from_resnet50_teacher_resumes_exactly(setup, capsys):
    data, teacher, runs = setup
    common = ["--data-dir", str(data), "--runs-dir", str(runs), "--teacher", str(teacher), "--epochs", "2", *SMALL]
    trainStudent.cli([*common, "--run-name", "whole"])
    assert "hint adapter 64 -> 256 channels" in capsys.readouterr().out
    trainStudent.cli([*common, "--run-name", "split", "--stop-after-epochs", "1"])
    trainStudent.cli(["--resume", str(runs / "split"), "--no-progress"])
    a = torch.load(runs / "whole" / "last.pth", weights_only=True)
    b = torch.load(runs / "split" / "last.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    assert set(a["extra"]["adapter"]) == {"conv.weight", "bn.weight", "bn.bias", "bn.running_mean",
                                          "bn.running_var", "bn.num_batches_tracked"}
    for k in a["model"]:  # bitwise: resuming restores every tensor, the data order and the augmentation
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k, v in a["extra"]["adapter"].items():
        assert torch.equal(v, b["extra"]["adapter"][k]), k
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()


def test_the_adapter_is_not_part_of_the_exported_student(setup):
    _, _, runs = setup
    final = torch.load(runs / "whole" / "final.pth", weights_only=True)
    assert not any("adapter" in k for k in final)
    EKNet(depth=18, height=64, width=64).load_state_dict(from_release(final), strict=True)


def _outs(g):
    def t(*shape):
        return torch.randn(*shape, generator=g)
    return SimpleNamespace(features=t(2, 8, 2, 3), logits=t(2, 4, 5, 6), hint=t(2, 8, 3, 3))


def test_ground_truth_term_against_a_hand_computation():
    g = torch.Generator().manual_seed(1)
    s, t = _outs(g), _outs(g)
    label = torch.randint(0, 4, (2, 5, 6), generator=g)
    label[0, 0, :3] = 2
    base = student_loss(s, t)
    assert "gt" not in base, "weight 0 by default: the release's label-free student"
    out = student_loss(s, t, {"gt": 0.5}, label=label, ignore_index=2)
    logp = F.log_softmax(s.logits, dim=1)
    picked = [(-logp[b, label[b, i, j], i, j]).item() for b in range(2) for i in range(5) for j in range(6)
              if label[b, i, j] != 2]
    assert out["gt"].item() == pytest.approx(sum(picked) / len(picked), rel=1e-5)
    assert out["total"].item() == pytest.approx(base["total"].item() + 0.5 * out["gt"].item(), rel=1e-5)


def test_gt_weight_flag_adds_the_term_to_training(setup):
    data, teacher, runs = setup
    results = trainStudent.cli(["--data-dir", str(data), "--runs-dir", str(runs), "--teacher", str(teacher),
                                "--epochs", "1", "--gt-weight", "0.5", "--run-name", "gt", *SMALL])
    assert set(results["history"][0]["train"]) == {"sim", "kdce", "hint", "seg", "gt", "total"}

"""benchmarks/experiment_unlabeled.py at a tiny size: the data it prepares, the runs it makes, its
summary and table, and that a second call reuses every finished run (the figures are not checked)."""
import json
import sys

import pytest

import trainStudent
import trainTeacher
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import experiment_unlabeled as exp  # noqa: E402

TINY = ["--frames", "24", "--labelled", "4", "--unlabeled-counts", "0", "2", "--seeds", "0", "1", "--epochs", "1",
        "--teacher-epochs", "1", "--max-steps-per-epoch", "1", "--height", "64", "--width", "64", "--batch-size", "2",
        "--mix", "1", "--workers", "0"]


def test_spread_and_verdict():
    s = exp.spread([0.1, 0.2, 0.3])
    assert s["mean"] == pytest.approx(20.0) and s["std"] == pytest.approx(10.0) and s["n"] == 3
    base = {"mean": 10.0, "std": 1.0, "n": 3}
    assert exp._beats({"mean": 12.5, "std": 1.0, "n": 3}, base) == "yes"
    assert exp._beats({"mean": 11.5, "std": 1.0, "n": 3}, base) == "no (within spread)"
    assert exp._beats({"mean": 12.5, "std": 0.0, "n": 1}, base) == "one seed: no spread to judge by"


def test_tiny_experiment(tmp_path, monkeypatch, capsys):
    out = tmp_path / "exp"
    doc = exp.main(["--out", str(out), *TINY])
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert runs == ["a-s0", "a-s1", "b-s0", "b-s1", "c2-s0", "c2-s1", "d0-s0", "d0-s1", "d2-s0", "d2-s1", "data",
                    "teacher-s0"]  # one teacher for every seed
    data = out / "data"
    full_train = (data / "synthetic" / "train.txt").read_text().split()
    few_train = (data / "labelled-4" / "train.txt").read_text().split()
    assert len(few_train) == 4 and set(few_train) <= set(full_train)
    assert (data / "pool-2" / "train.txt").read_text().split() == \
        (data / "synthetic" / "unlabeled" / "train.txt").read_text().split()[:2]
    c2 = json.loads((out / "c2-s1" / "run.json").read_text())["config"]
    assert c2["unlabeled"] == [str(data / "pool-2")] and c2["unlabeled_per_batch"] == 1 and c2["seed"] == 1
    assert json.loads((out / "d0-s0" / "run.json").read_text())["config"]["unlabeled"] == []
    assert set(doc["summary"]) == {"teacher", "a", "b", "c2", "d0", "d2"}
    assert doc["summary"]["teacher"]["n"] == 1 and doc["summary"]["c2"]["n"] == 2
    assert doc["runs"]["c2-s0"]["frames_per_epoch"] == {"labelled": 1, "unlabeled": 1}  # one step of 1 + 1
    table = (out / "unlabeled.md").read_text()
    assert table == doc["table"] and "| (c) CEKD, labelled + unlabeled |" in table
    assert json.loads((out / "unlabeled.json").read_text())["summary"]["a"]["values"] == doc["summary"]["a"]["values"]

    def no_training(cfg):
        raise AssertionError(f"{cfg.run_name} trained again")

    monkeypatch.setattr(trainStudent, "main", no_training)  # what benchmarks/common.run_stage calls
    monkeypatch.setattr(trainTeacher, "main", no_training)
    assert exp.main(["--out", str(out), *TINY])["summary"] == doc["summary"]
    with pytest.raises(SystemExit, match="was generated with"):  # data of other settings are not reused
        exp.main(["--out", str(out), *TINY, "--width", "96"])

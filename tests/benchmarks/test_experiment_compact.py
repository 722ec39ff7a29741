"""benchmarks/experiment_compact.py without training: the stages it asks common.run_stage for."""
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import common  # noqa: E402
import experiment_compact  # noqa: E402
from util.engine import StudentConfig, TeacherConfig  # noqa: E402


def test_train_all_runs_the_teacher_then_every_student(tmp_path, monkeypatch):
    asked = []

    def fake_stage(name, cfg, out, seconds):
        asked.append((name, type(cfg), cfg.depth, cfg.gt_weight if isinstance(cfg, StudentConfig) else None))
        return {"name": name}

    monkeypatch.setattr(common, "run_stage", fake_stage)
    args = experiment_compact.parse_args(["--epochs", "1", "--out", str(tmp_path)])
    results = experiment_compact.train_all(args, tmp_path)
    assert asked == [("teacher", TeacherConfig, 50, None), ("student-18", StudentConfig, 18, 0.0),
                     ("student-34", StudentConfig, 34, 0.0), ("student-50", StudentConfig, 50, 0.0),
                     ("student-18-gt", StudentConfig, 18, 1.0)]
    assert results["student-34"] == {"name": "student-34"}

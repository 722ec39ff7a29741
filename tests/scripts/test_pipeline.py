"""The main job's code path (make demo) at a very small setting."""
import json

from run_cekd import main


def test_pipeline_end_to_end(tmp_path, capsys):
    data = tmp_path / "syn"
    summary = main(["--data-dir", str(data), "--frames", "16", "--height", "64", "--width", "96",
                    "--epochs", "1", "--batch-size", "2", "--workers", "0", "--runs-dir", str(tmp_path / "runs"),
                    "--run-name", "job", "--no-progress", "--extra", "--max-steps-per-epoch", "2"])
    out = tmp_path / "runs" / "job"
    printed = capsys.readouterr().out
    assert (data / "test_night.txt").is_file()  # generated because it was absent
    for stage in ("teacher", "student", "student-gt"):
        assert (out / stage / "results.json").is_file() and (out / stage / "final.pth").is_file()
    table = (out / "comparison.txt").read_text()
    assert table.strip() in printed
    rows = table.strip().splitlines()[2:]
    assert [r.split("  ")[0] for r in rows] == ["CENet teacher (RGB + thermal)",
                                               "EKNet student, CEKD distillation (thermal)",
                                               "EKNet student, ground truth only (thermal)"]
    saved = json.loads((out / "comparison.json").read_text())
    teacher_test = saved["results"]["teacher"]["splits"]["test"]["miou"]
    assert f"{100 * teacher_test:.2f}" in rows[0]
    assert set(saved["results"]["student"]["splits"]) == {"test", "test_day", "test_night"}
    assert summary["out_dir"] == str(out)

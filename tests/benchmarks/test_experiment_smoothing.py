"""benchmarks/experiment_smoothing.py at a tiny size (the figures themselves are not checked)."""
import json
import sys

import numpy as np

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import experiment_smoothing  # noqa: E402


def test_moving_video_pans_one_pixel_per_frame():
    args = experiment_smoothing.parse_args(["--height", "64", "--width", "64", "--videos", "1", "--frames", "3",
                                            "--noise", "0"])
    (frames, labels), = experiment_smoothing.moving_videos(args)
    assert [f.shape for f in frames] == [(64, 64)] * 3 and frames[0].dtype == np.float32
    np.testing.assert_array_equal(labels[1][:, :-21], labels[0][:, 21:])  # 64 // 3 = 21 pixels per frame
    np.testing.assert_array_equal(frames[2][:, :-21], frames[1][:, 21:])


def test_tiny_run_writes_the_table(tmp_path):
    out = tmp_path / "s.json"
    result = experiment_smoothing.main(["--height", "64", "--width", "64", "--videos", "1", "--frames", "3",
                                        "--train-steps", "1", "--batch-size", "2", "--alphas", "0.5",
                                        "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [r["alpha"] for r in rows] == [0.0, 0.5] and all(r["frames"] == 3 for r in rows)
    assert all(0 <= r["flicker"] <= 1 and 0 <= r["miou"] <= 1 for r in rows)
    assert result["table"].splitlines()[2].endswith("| +0.00 |")

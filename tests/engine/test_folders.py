"""Output folders and JSON files."""
import json
import math

import numpy as np
import pytest

from util.engine.folders import json_safe, new_run_dir, write_json


def test_new_run_dir_never_reuses_a_folder(tmp_path):
    path = new_run_dir(tmp_path, "a", "x")
    assert path == tmp_path / "a" and path.is_dir()
    with pytest.raises(FileExistsError, match=r"run folder .*a already exists; choose another --run-name or resume .*a$"):
        new_run_dir(tmp_path, "a", "x", " or resume {path}")
    auto = new_run_dir(tmp_path, None, "demo")
    assert auto.name.startswith("demo-")


def test_json_is_strict_with_nan_as_null(tmp_path):
    obj = {"iou": np.array([0.5, np.nan]), "miou": float("nan"), "n": 3, "nested": [{"x": np.float32(0.25)}]}
    assert json_safe(obj) == {"iou": [0.5, None], "miou": None, "n": 3, "nested": [{"x": 0.25}]}
    write_json(obj, tmp_path / "r.json")
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and json.loads(text)["iou"] == [0.5, None]
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
    assert not math.isnan(json.loads(text)["nested"][0]["x"])

"""The evaluation's pictures (util/engine/plots.py): the heat map's normalisation by hand, valid PNGs of a
sane size, numbers in the cells only for small class counts, and matplotlib loaded only by what draws."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from util.data.mfnet import CLASS_NAMES
from util.engine.plots import (
    CONFUSION_PNG,
    IOU_PNG,
    MAX_NUMBERED,
    confusion_figure,
    figure_rgb,
    row_normalised,
    write_evaluation_plots,
)


def test_row_normalised_by_hand():
    mat = np.array([[2, 2, 0], [0, 0, 0], [1, 3, 4]])
    out = row_normalised(mat)
    assert np.allclose(out[0], [0.5, 0.5, 0.0]) and np.allclose(out[2], [0.125, 0.375, 0.5])
    assert np.isnan(out[1]).all()  # a class without pixels: no fractions, not zeros
    with pytest.raises(ValueError, match="square"):
        row_normalised(np.zeros((2, 3)))


def _matrices(n: int, splits=("test", "test_day", "test_night")) -> dict:
    rng = np.random.default_rng(0)
    return {s: rng.integers(0, 1000, (n, n)) + np.diag(rng.integers(1000, 5000, n)) for s in splits}


def _check_png(path, min_side=200, max_side=6000):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        w, h = im.size
        pixels = np.asarray(im.convert("RGB"))
    assert min_side <= w <= max_side and min_side <= h <= max_side
    assert pixels.std() > 10  # something drawn, not a blank canvas
    return w, h


def test_plots_are_valid_pngs_beside_the_results(tmp_path):
    mats = _matrices(9)
    ious = {s: [0.5, None, 0.2, 0.9, 0.0, 0.3, 0.1, 0.7, 0.4] for s in mats}
    paths = write_evaluation_plots(tmp_path, mats, ious, CLASS_NAMES, "EKNet best.pth")
    assert paths == [tmp_path / CONFUSION_PNG, tmp_path / IOU_PNG]
    w, h = _check_png(tmp_path / CONFUSION_PNG)
    assert w > 2 * h  # three splits side by side
    _check_png(tmp_path / IOU_PNG)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFUSION_PNG, IOU_PNG]  # no temporary file left


def test_cells_are_numbered_up_to_twenty_classes():
    def texts(n):
        fig = confusion_figure(_matrices(n, ("val",)), [f"c{i}" for i in range(n)])
        return sum(len(ax.texts) for ax in fig.axes)

    assert texts(9) == 81
    assert texts(MAX_NUMBERED) == MAX_NUMBERED ** 2
    assert texts(MAX_NUMBERED + 5) == 0
    fig = confusion_figure({"val": np.array([[3, 1], [0, 0]])}, ["a", "b"])
    assert [t.get_text() for t in fig.axes[0].texts] == ["0.75", "0.25", "-", "-"]


def test_figure_rgb_for_tensorboard():
    rgb = figure_rgb(confusion_figure(_matrices(4, ("val",)), ["a", "b", "c", "d"]))
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and min(rgb.shape[:2]) >= 200


def test_matplotlib_is_loaded_only_by_what_draws():
    code = ("import sys, util.demo, util.engine.run, util.engine.plots, trainTeacher, trainStudent; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""Pictures of an evaluation a reader takes in at a glance: the confusion matrix as a row-normalised heat map
(confusion.png) and the per-class IoU as a bar chart, one bar per split (per_class_iou.png); the heat map
also goes to TensorBoard each epoch.

Drawn with matplotlib's object API on its Agg canvas (no pyplot, no display, no global state: headless and
safe in any process). matplotlib is imported inside the functions, so that a path that draws nothing does
not load it.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence, Union

import numpy as np

from ..files import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CONFUSION_PNG, IOU_PNG = "confusion.png", "per_class_iou.png"
MAX_NUMBERED = 20  # at most this many classes: each cell shows its value
DPI = 100


def row_normalised(mat: np.ndarray) -> np.ndarray:
    """Each row (a ground-truth class) divided by its sum: the fraction of that class's pixels predicted as each
    class (the diagonal is the class's recall). A class without pixels is a row of NaN."""
    mat = np.asarray(mat, dtype=np.float64)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise ValueError(f"confusion matrix must be square, got {mat.shape}")
    rows = mat.sum(axis=1, keepdims=True)
    out = np.full(mat.shape, np.nan)
    np.divide(mat, rows, out=out, where=rows > 0)
    return out


def _names(class_names: Sequence[str], n: int) -> list[str]:
    names = [str(c) for c in class_names][:n]
    return names + [str(i) for i in range(len(names), n)]


def confusion_figure(matrices: Mapping[str, np.ndarray], class_names: Sequence[str], title: str = "") -> "Figure":
    """One row-normalised heat map per split (side by side), ground truth down, prediction across."""
    from matplotlib.figure import Figure

    n = next(iter(matrices.values())).shape[0]
    names = _names(class_names, n)
    side = max(4.0, 0.45 * n + 2.0)
    fig = Figure(figsize=(side * len(matrices) + 0.8, side + 0.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    image = None
    for ax, (split, mat) in zip(axes, matrices.items()):
        norm = row_normalised(mat)
        image = ax.imshow(np.nan_to_num(norm), cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(n), names, rotation=90 if n > 6 else 45, ha="center" if n > 6 else "right")
        ax.set_yticks(range(n), names)
        ax.set_xlabel("prediction")
        ax.set_ylabel("ground truth")
        ax.set_title(f"{split} (rows sum to 1)")
        if n <= MAX_NUMBERED:
            size = max(5.0, 9.0 - n / 4)
            for i in range(n):
                for j in range(n):
                    v = norm[i, j]
                    ax.text(j, i, "-" if math.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=size,
                            color="white" if not math.isnan(v) and v > 0.5 else "black")
    fig.colorbar(image, ax=list(axes), shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig


def iou_figure(ious: Mapping[str, Sequence[float]], class_names: Sequence[str], title: str = "",
               ignore_index: int | None = None) -> "Figure":
    """Per-class IoU in percent, one bar per split in each class's group (e.g. test, test_day, test_night side
    by side); the legend gives each split's mIoU (NaN as 0, like the reports). A class the split does not
    score (no pixel, or the ignored class) has no bar."""
    from matplotlib.figure import Figure

    n = len(next(iter(ious.values())))
    names = _names(class_names, n)
    fig = Figure(figsize=(max(6.0, 0.35 * n * max(1, len(ious)) + 2.0), 4.5), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(ious)
    x = np.arange(n)
    for k, (split, values) in enumerate(ious.items()):
        v = np.array([np.nan if u is None else u for u in values], dtype=np.float64)
        scored = [i for i in range(n) if i != ignore_index]
        miou = float(np.mean(np.nan_to_num(v[scored]))) if scored else float("nan")
        ax.bar(x - 0.4 + width * (k + 0.5), 100 * np.nan_to_num(v), width, label=f"{split} (mIoU {100 * miou:.1f})")
    ax.set_xticks(x, names, rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center")
    ax.set_ylim(0, 100)
    ax.set_ylabel("IoU %")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def figure_rgb(fig: "Figure") -> np.ndarray:
    """The figure drawn on the Agg canvas, as an RGB uint8 array (H, W, 3) (for TensorBoard)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(fig: "Figure", path: Union[str, os.PathLike]) -> Path:
    """Write the figure as PNG, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        canvas.print_png(str(tmp))
    return Path(path)


def write_evaluation_plots(out_dir: Union[str, os.PathLike], matrices: Mapping[str, np.ndarray],
                           ious: Mapping[str, Sequence[float]], class_names: Sequence[str], title: str = "",
                           ignore_index: int | None = None) -> list[Path]:
    """confusion.png and per_class_iou.png of an evaluation's splits in `out_dir` (beside its results.json)."""
    out_dir = Path(out_dir)
    return [save_png(confusion_figure(matrices, class_names, title), out_dir / CONFUSION_PNG),
            save_png(iou_figure(ious, class_names, title, ignore_index), out_dir / IOU_PNG)]

"""Segmentation metrics: per-class Acc and IoU, mAcc and mIoU, as in the paper's tables.

One confusion matrix (rows ground truth, columns prediction) accumulated over every pixel
of a split. Per class: precision TP / column sum, recall ("Acc") TP / row sum, IoU
TP / (TP + FP + FN); a zero denominator gives NaN. mIoU / mAcc count NaN as 0, like the
released code; the NaN-skipping means are reported beside them.
"""
from __future__ import annotations

import csv
import io
import os
from typing import Any, Iterable, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..files import atomic_write


class ConfusionMatrix:
    """Confusion matrix accumulated on ``device`` with torch.bincount (no per-frame copy to the host)."""

    def __init__(self, n_class: int, device: str | torch.device = "cpu",
                 ignore_index: int | None = None) -> None:
        self.n_class, self.ignore_index = n_class, ignore_index
        self.mat = torch.zeros((n_class, n_class), dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch. ``pred`` and ``target`` are integer tensors of the same shape.

        Pixels whose target (or prediction) is outside [0, n_class) are ignored, as
        scikit-learn's confusion_matrix(labels=range(n_class)) does.
        """
        pred, target = torch.as_tensor(pred), torch.as_tensor(target)
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        n = self.n_class
        dev = self.mat.device
        # int64 before arithmetic: uint8 labels would overflow n * target
        p = pred.to(dev, torch.int64, non_blocking=True).reshape(-1)
        t = target.to(dev, torch.int64, non_blocking=True).reshape(-1)
        idx = t * n + p
        # invalid pixels go to an extra bin n*n that is dropped (no boolean-indexing sync)
        invalid = (t < 0) | (t >= n) | (p < 0) | (p >= n)
        if self.ignore_index is not None:  # a dataset's ignored label: its pixels are not scored
            invalid |= t == self.ignore_index
        idx.masked_fill_(invalid, n * n)
        self.mat += torch.bincount(idx, minlength=n * n + 1)[: n * n].view(n, n)

    def reset(self) -> None:
        self.mat.zero_()

    def reduce_from_all_processes(self) -> None:
        """Sum the matrices of all processes (no-op unless torch.distributed is initialised)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.all_reduce(self.mat)

    def compute(self) -> dict[str, Any]:
        return metrics_from_confusion(self.mat.cpu().numpy(), self.ignore_index)


def metrics_from_confusion(mat: np.ndarray, ignore_index: int | None = None) -> dict[str, Any]:
    """Per-class "iou", "recall", "precision" (lists, NaN where undefined) and the means
    "miou", "macc" (NaN as 0), "miou_nanmean", "macc_nanmean" (NaN skipped), "pixel_acc";
    all fractions in 0..1. An ignored class is NaN and left out of every mean."""
    mat = np.asarray(mat, dtype=np.float64)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise ValueError(f"confusion matrix must be square, got {mat.shape}")
    tp = np.diag(mat)
    rows, cols = mat.sum(axis=1), mat.sum(axis=0)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        out = np.full(num.shape, np.nan)
        np.divide(num, den, out=out, where=den > 0)
        return out

    iou, recall, precision = ratio(tp, rows + cols - tp), ratio(tp, rows), ratio(tp, cols)
    scored = np.ones(len(tp), dtype=bool)
    if ignore_index is not None:
        scored[ignore_index] = False
        iou[ignore_index] = recall[ignore_index] = precision[ignore_index] = np.nan
    total = mat.sum()

    def nanmean(x: np.ndarray) -> float:
        return float(np.mean(x[~np.isnan(x)])) if (~np.isnan(x)).any() else float("nan")

    return {
        "iou": iou.tolist(),
        "recall": recall.tolist(),
        "precision": precision.tolist(),
        "miou": float(np.mean(np.nan_to_num(iou[scored]))),
        "macc": float(np.mean(np.nan_to_num(recall[scored]))),
        "miou_nanmean": nanmean(iou[scored]),
        "macc_nanmean": nanmean(recall[scored]),
        "pixel_acc": float(tp.sum() / total) if total > 0 else float("nan"),
    }


def format_report(metrics: dict[str, Any], class_names: Sequence[str], title: str = "") -> str:
    """Text table: per-class IoU, recall (Acc) and precision in percent, then the means."""
    width = max(12, max(len(c) for c in class_names) + 2)
    lines = [title] if title else []
    lines.append(f"{'class':<{width}}{'IoU %':>9}{'Acc %':>9}{'Prec %':>9}")
    for name, iou, acc, prec in zip(class_names, metrics["iou"], metrics["recall"], metrics["precision"]):
        lines.append(f"{name:<{width}}{100 * iou:>9.2f}{100 * acc:>9.2f}{100 * prec:>9.2f}")
    lines.append(f"{'mIoU':<{width}}{100 * metrics['miou']:>9.2f}   (NaN as 0)")
    lines.append(f"{'mAcc':<{width}}{100 * metrics['macc']:>9.2f}   (NaN as 0)")
    lines.append(f"{'mIoU':<{width}}{100 * metrics['miou_nanmean']:>9.2f}   (NaN skipped)")
    lines.append(f"{'mAcc':<{width}}{100 * metrics['macc_nanmean']:>9.2f}   (NaN skipped)")
    if "pixel_acc" in metrics:
        lines.append(f"{'pixel acc':<{width}}{100 * metrics['pixel_acc']:>9.2f}")
    return "\n".join(lines)


def write_confusion_csv(path: Union[str, os.PathLike], mat: np.ndarray, class_names: Sequence[str]) -> None:
    """Write ``mat`` (rows ground truth, columns prediction) as CSV: a header ``gt\\pred,<names>``, then
    one row per ground-truth class starting with its name, so every line has the same number of fields.

    Classes beyond ``class_names`` are named by their index.
    """
    mat = np.asarray(mat)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise ValueError(f"confusion matrix must be square, got {mat.shape}")
    names = [str(n) for n in class_names][: mat.shape[0]]
    names += [str(i) for i in range(len(names), mat.shape[0])]
    text = io.StringIO()
    writer = csv.writer(text)  # CRLF line ends, as the csv module writes them
    writer.writerow(["gt\\pred", *names])
    for name, row in zip(names, mat.tolist()):
        writer.writerow([name, *row])
    atomic_write(path, lambda f: f.write(text.getvalue()))


def confusion_matrix_numpy_per_frame(
    pred: Iterable[np.ndarray | Tensor], target: Iterable[np.ndarray | Tensor], n_class: int
) -> np.ndarray:
    """Reference: the release's way, one frame at a time on the host (each frame converted
    to numpy), counted with np.add.at like scikit-learn's confusion_matrix(labels=range(n)).
    For tests and benchmarks only."""
    mat = np.zeros((n_class, n_class), dtype=np.int64)
    for p, t in zip(pred, target):
        if isinstance(p, Tensor):
            p = p.cpu().numpy()
        if isinstance(t, Tensor):
            t = t.cpu().numpy()
        p, t = np.asarray(p).ravel().astype(np.int64), np.asarray(t).ravel().astype(np.int64)
        keep = (t >= 0) & (t < n_class) & (p >= 0) & (p < n_class)
        np.add.at(mat, (t[keep], p[keep]), 1)
    return mat

"""Confusion matrix and metrics on hand-computed cases and against the per-frame reference."""
import csv
import math

import numpy as np
import pytest
import torch

from util.data.mfnet import CLASS_NAMES, N_CLASS
from util.engine.metrics import (
    ConfusionMatrix,
    confusion_matrix_numpy_per_frame,
    format_report,
    metrics_from_confusion,
    write_confusion_csv,
)

nan = float("nan")


def _eq(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y), (a, b)


def test_hand_matrix_with_absent_class():
    # rows ground truth, columns prediction; class 2 never appears anywhere
    mat = np.array([[5, 1, 0],
                    [2, 3, 0],
                    [0, 0, 0]])
    m = metrics_from_confusion(mat)
    _eq(m["recall"], [5 / 6, 3 / 5, nan])
    _eq(m["precision"], [5 / 7, 3 / 4, nan])
    _eq(m["iou"], [5 / 8, 3 / 6, nan])
    assert m["miou"] == pytest.approx((5 / 8 + 1 / 2) / 3)          # NaN counted as 0
    assert m["miou_nanmean"] == pytest.approx((5 / 8 + 1 / 2) / 2)  # NaN skipped
    assert m["macc"] == pytest.approx((5 / 6 + 3 / 5) / 3)
    assert m["macc_nanmean"] == pytest.approx((5 / 6 + 3 / 5) / 2)
    assert m["pixel_acc"] == pytest.approx(8 / 11)


def test_predicted_but_absent_class_has_nan_recall_zero_iou():
    m = metrics_from_confusion(np.array([[4, 2], [0, 0]]))
    _eq(m["recall"], [4 / 6, nan])
    _eq(m["precision"], [1.0, 0.0])
    _eq(m["iou"], [4 / 6, 0.0])
    assert m["miou"] == pytest.approx((4 / 6) / 2)
    assert m["miou_nanmean"] == pytest.approx((4 / 6) / 2)
    assert m["macc"] == pytest.approx((4 / 6) / 2)
    assert m["macc_nanmean"] == pytest.approx(4 / 6)


def test_empty_matrix_is_all_nan():
    m = metrics_from_confusion(np.zeros((3, 3), dtype=np.int64))
    assert all(math.isnan(v) for v in m["iou"] + m["recall"] + m["precision"])
    assert m["miou"] == 0.0 and math.isnan(m["miou_nanmean"]) and math.isnan(m["pixel_acc"])


def test_update_hand_example_and_ignored_targets():
    target = torch.tensor([[0, 0, 1], [1, 2, 9], [-1, 2, 2]])
    pred = torch.tensor([[0, 1, 1], [0, 2, 0], [2, 1, 2]])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    expect = np.array([[1, 1, 0],
                       [1, 1, 0],
                       [0, 1, 2]])
    np.testing.assert_array_equal(cm.mat.numpy(), expect)
    assert cm.mat.dtype == torch.int64
    # uint8 labels with 255 as "void" are ignored too, and accumulate across updates
    cm.update(torch.tensor([1, 1], dtype=torch.uint8), torch.tensor([255, 1], dtype=torch.uint8))
    expect[1, 1] += 1
    np.testing.assert_array_equal(cm.mat.numpy(), expect)
    m = cm.compute()
    assert m["iou"][2] == pytest.approx(2 / 3)
    cm.reduce_from_all_processes()  # no-op without torch.distributed
    np.testing.assert_array_equal(cm.mat.numpy(), expect)
    cm.reset()
    assert int(cm.mat.sum()) == 0
    with pytest.raises(ValueError):
        cm.update(pred, target[:2])


def test_bincount_equals_per_frame_reference():
    g = torch.Generator().manual_seed(1)
    frames = [(torch.randint(0, N_CLASS, (2, 12, 16), generator=g),
               torch.randint(-1, N_CLASS + 2, (2, 12, 16), generator=g)) for _ in range(5)]
    cm = ConfusionMatrix(N_CLASS)
    for p, t in frames:
        cm.update(p, t)
    ref = confusion_matrix_numpy_per_frame([p for p, _ in frames], [t for _, t in frames], N_CLASS)
    np.testing.assert_array_equal(cm.mat.numpy(), ref)
    valid = sum(int(((t >= 0) & (t < N_CLASS)).sum()) for _, t in frames)
    assert int(cm.mat.sum()) == valid
    # explicit python count for one small frame
    p, t = frames[0][0][0, :3, :4].numpy(), frames[0][1][0, :3, :4].numpy()
    hand = np.zeros((N_CLASS, N_CLASS), dtype=np.int64)
    for pi, ti in zip(p.ravel(), t.ravel()):
        if 0 <= ti < N_CLASS:
            hand[ti, pi] += 1
    np.testing.assert_array_equal(confusion_matrix_numpy_per_frame([p], [t], N_CLASS), hand)


def test_format_report():
    mat = np.diag(np.arange(1, N_CLASS + 1)).astype(np.int64)
    mat[0, 1] = 3          # unlabeled: IoU 1/4 = 25 %, recall 25 %
    mat[:, 8] = 0          # bump never occurs: NaN
    m = metrics_from_confusion(mat)
    text = format_report(m, CLASS_NAMES, title="test split")
    assert text.splitlines()[0] == "test split"
    for name in CLASS_NAMES:
        assert name in text
    assert "25.00" in text and "nan" in text
    assert f"{100 * m['miou']:.2f}" in text and f"{100 * m['miou_nanmean']:.2f}" in text
    assert "mAcc" in text and "mIoU" in text


def test_confusion_csv_rows_match_header(tmp_path):
    mat = np.arange(N_CLASS * N_CLASS, dtype=np.int64).reshape(N_CLASS, N_CLASS) * 1000
    write_confusion_csv(tmp_path / "c.csv", mat, CLASS_NAMES)
    with open(tmp_path / "c.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == ["gt\\pred", *CLASS_NAMES]
    assert len(rows) == N_CLASS and all(len(row) == len(header) for row in rows)
    assert [row[0] for row in rows] == list(CLASS_NAMES)
    np.testing.assert_array_equal(np.array([[int(v) for v in row[1:]] for row in rows]), mat)
    # more classes than names: the extra ones are named by their index
    write_confusion_csv(tmp_path / "d.csv", np.eye(3, dtype=np.int64), ["a"])
    with open(tmp_path / "d.csv", newline="") as f:
        assert list(csv.reader(f)) == [["gt\\pred", "a", "1", "2"], ["a", "1", "0", "0"],
                                       ["1", "0", "1", "0"], ["2", "0", "0", "1"]]

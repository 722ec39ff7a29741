"""16-bit thermal to the 8 bits of our layout: the scaling rule and its default range.

``t8 = clip(floor((raw - LOW) * 255 / (HIGH - LOW) + 0.5), 0, 255)`` with ``[LOW, HIGH]`` given
(``--raw-range``) or, by default, the 1st and 99th percentiles (nearest rank) of the non-zero thermal
pixels of the written train split (zero marks no data, e.g. PST900's projection holes); the range is
stored as ``thermal_range`` in dataset.json. 8-bit thermal is copied unchanged. Used by
util.data.convert and util.data.bag_convert.
"""
from __future__ import annotations

import numpy as np

from util.options import check_low_high

PERCENTILES = (1.0, 99.0)


def scale_raw_thermal(raw: np.ndarray, low: float, high: float) -> np.ndarray:
    """uint8 ``clip(floor((raw - low) * 255 / (high - low) + 0.5), 0, 255)`` of 16-bit thermal values."""
    check_low_high("--raw-range", low, high)
    scaled = np.floor((raw.astype(np.float64) - low) * (255.0 / (high - low)) + 0.5)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def percentile_range(hist: np.ndarray, low_pct: float = PERCENTILES[0],
                     high_pct: float = PERCENTILES[1]) -> tuple[int, int]:
    """Nearest-rank percentiles of the non-zero values counted in a 65536-bin histogram.

    The p-th percentile is the smallest value v whose cumulative count (zeros left out) reaches
    p% of all counted pixels. ValueError when no non-zero pixel is counted or the two coincide.
    """
    counts = np.asarray(hist, dtype=np.int64).copy()
    counts[0] = 0
    total = int(counts.sum())
    if total == 0:
        raise ValueError("no non-zero 16-bit thermal pixels in the train split")
    cum = np.cumsum(counts)
    low = int(np.searchsorted(cum, low_pct / 100 * total))
    high = int(np.searchsorted(cum, high_pct / 100 * total))
    if high <= low:
        raise ValueError(f"the train thermal pixels span only [{low}, {high}]; give --raw-range LOW HIGH")
    return low, high

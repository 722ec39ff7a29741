"""Segmenters side by side: logits differences, argmax (label) agreement, and speed timed interleaved."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import numpy as np


def compare(reference: Callable[[np.ndarray], np.ndarray], candidate: Callable[[np.ndarray], np.ndarray],
            inputs: np.ndarray, batch_size: int = 1) -> dict[str, float]:
    """Logits of two segmenters on `inputs` (N, 1, H, W) in batches: the largest absolute difference,
    that relative to the largest reference logit, and the argmax (label) agreement over all pixels."""
    max_abs, max_ref, agree, total = 0.0, 0.0, 0, 0
    for i in range(0, len(inputs), batch_size):
        a, b = reference(inputs[i:i + batch_size]), candidate(inputs[i:i + batch_size])
        max_abs = max(max_abs, float(np.abs(a - b).max()))
        max_ref = max(max_ref, float(np.abs(a).max()))
        agree += int((a.argmax(1) == b.argmax(1)).sum())
        total += a.shape[0] * a.shape[2] * a.shape[3]
    return {"frames": len(inputs), "batch_size": batch_size, "max_abs_diff": max_abs,
            "relative_diff": max_abs / max_ref if max_ref > 0 else max_abs, "agreement": agree / total}


def format_comparison(title: str, r: dict[str, float]) -> str:
    return (f"{title}: {r['frames']} frame(s), batch {r['batch_size']}: max|Δlogits| {r['max_abs_diff']:.3g} "
            f"(relative {r['relative_diff']:.3g}), argmax agreement {100 * r['agreement']:.2f}%")


def random_thermal(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, height, width), dtype=np.float32)


def agreement_percent(text: str) -> float:
    """argparse type of --min-agreement: a percentage above 0 and at most 100 (util.options), as a fraction."""
    from ..options import number

    return number(above=0, high=100)(text) / 100.0


def ms_per_frame(segmenters: Sequence[Callable[[np.ndarray], np.ndarray]], frames: np.ndarray,
                 reps: int = 5, warmup: int = 2) -> list[float]:
    """Median ms of a batch-1 pass of each segmenter, timed interleaved (pass i of every segmenter,
    then pass i + 1), so that a machine that slows down or speeds up meanwhile affects all alike."""
    times: list[list[float]] = [[] for _ in segmenters]
    for i in range(warmup + reps):
        x = frames[i % len(frames):i % len(frames) + 1]
        for seg, t in zip(segmenters, times):
            t0 = time.perf_counter()
            seg(x)
            if i >= warmup:
                t.append(1000.0 * (time.perf_counter() - t0))
    return [statistics.median(t) for t in times]

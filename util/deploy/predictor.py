"""Frames to class ids: the segmenter (any backend of backends.py) with its preprocessing, and optional
temporal smoothing and confidence.

Preprocessing: each frame resized bilinearly to the model size (`to_model_input`); the prediction is
resized back to the frame's own size (nearest).

Temporal smoothing (``--temporal-smoothing ALPHA``, off by default): an exponential moving
average of the class probabilities at the model size,
``s_t = ALPHA * s_(t-1) + (1 - ALPHA) * softmax(logits_t)``, ``s_0 = softmax(logits_0)``; the
labels are ``argmax s_t``. ALPHA is the weight of the past (0 <= ALPHA < 1; 0 = no smoothing),
so a class must win for about ``1 / (1 - ALPHA)`` frames before it replaces another on a pixel:
static pixels stop flickering, moving edges lag a little. Skipped frames leave the average as it is.

Confidence: the largest (smoothed) class probability of each pixel, as uint8 ``round(p * 255)``.
Without smoothing and confidence the segmenter's own argmax is used (`predict_batch`: the plain path).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .backends import Segmenter


def to_model_input(thermal: np.ndarray, height: int, width: int) -> np.ndarray:
    """(1, height, width) float32 in [0, 1]: the frame resized bilinearly (as the demo always did)."""
    t = torch.from_numpy(np.ascontiguousarray(thermal, dtype=np.float32))[None, None]
    if t.shape[-2:] != (height, width):
        t = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)
    return t[0].clamp(0, 1).numpy()


def predict_batch(segmenter: Segmenter, thermals: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Class ids (H, W) uint8 for each frame, at each frame's own size."""
    x = np.stack([to_model_input(t, segmenter.height, segmenter.width) for t in thermals])
    labels = torch.from_numpy(segmenter.labels(x))
    return [_at_size(lab, t.shape) for lab, t in zip(labels, thermals)]


def _at_size(x: torch.Tensor, shape: Sequence[int]) -> np.ndarray:
    """(h, w) -> `shape` by nearest neighbour (class ids, confidences), keeping the dtype."""
    if tuple(x.shape) != tuple(shape):
        x = F.interpolate(x[None, None], size=tuple(shape), mode="nearest")[0, 0]
    return x.numpy()


class ProbabilityPredictor:
    """Class ids (uint8, at each frame's size) per frame from softmax probabilities, or (class ids,
    confidence) pairs with `confidence=True`; smoothed over frames when alpha > 0."""

    def __init__(self, segmenter: Segmenter, alpha: float = 0.0, confidence: bool = False):
        self.segmenter, self.alpha, self.confidence = segmenter, float(alpha), confidence
        self.state: Optional[torch.Tensor] = None

    def smooth(self, probs: torch.Tensor) -> torch.Tensor:
        """The running average after one frame's (C, h, w) probabilities."""
        if self.alpha > 0:
            self.state = probs if self.state is None else self.alpha * self.state + (1 - self.alpha) * probs
            return self.state
        return probs

    def __call__(self, thermals: list[np.ndarray]) -> list:
        seg = self.segmenter
        x = np.stack([to_model_input(t, seg.height, seg.width) for t in thermals])
        probs = torch.softmax(torch.from_numpy(np.asarray(seg(x), dtype=np.float32)), dim=1)
        out = []
        for p, t in zip(probs, thermals):
            best, labels = self.smooth(p).max(0)
            labels = _at_size(labels.to(torch.uint8), t.shape)
            if self.confidence:
                conf = _at_size(torch.round(best * 255), t.shape).astype(np.uint8)
                out.append((labels, conf))
            else:
                out.append(labels)
        return out


@dataclass
class Prediction:
    """One frame's class ids (H, W) uint8 and, when asked for, its confidence (H, W) uint8."""
    labels: np.ndarray
    confidence: Optional[np.ndarray] = None


class Predictor:
    """The segmenter, its preprocessing, and optional temporal smoothing (`smoothing`: ALPHA, 0 = off) and
    confidence: `predictor(thermals)` gives a Prediction per frame, in order (state carries over calls)."""

    def __init__(self, segmenter: Segmenter, smoothing: float = 0.0, confidence: bool = False):
        self.segmenter, self.smoothing, self.confidence = segmenter, float(smoothing), confidence
        self.probabilities = ProbabilityPredictor(segmenter, smoothing, confidence) if smoothing or confidence \
            else None

    @property
    def name(self) -> str:
        return self.segmenter.name

    @property
    def n_class(self) -> int:
        return self.segmenter.n_class

    @property
    def palette(self) -> Sequence[Sequence[int]]:
        """The colours of the classes (the weights' dataset), for the pictures of the predictions."""
        return self.segmenter.info.palette

    def __call__(self, thermals: list[np.ndarray]) -> list[Prediction]:
        if self.probabilities is None:
            return [Prediction(labels) for labels in predict_batch(self.segmenter, thermals)]
        out = self.probabilities(thermals)
        return [Prediction(*o) if self.confidence else Prediction(o) for o in out]

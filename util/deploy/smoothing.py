"""Class ids from softmax probabilities, optionally smoothed over consecutive frames, and confidence.

Temporal smoothing (``--temporal-smoothing ALPHA``, off by default): an exponential moving
average of the class probabilities at the model size,
``s_t = ALPHA * s_(t-1) + (1 - ALPHA) * softmax(logits_t)``, ``s_0 = softmax(logits_0)``; the
labels are ``argmax s_t``. ALPHA is the weight of the past (0 <= ALPHA < 1; 0 = no smoothing),
so a class must win for about ``1 / (1 - ALPHA)`` frames before it replaces another on a pixel:
static pixels stop flickering, moving edges lag a little. Skipped frames leave the average as it is.

Confidence: the largest (smoothed) class probability of each pixel, as uint8 ``round(p * 255)``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .backends import Segmenter
from .inference import to_model_input


def _at_size(x: torch.Tensor, shape: Sequence[int]) -> np.ndarray:
    """(h, w) -> `shape` by nearest neighbour, as predict_batch resizes class ids."""
    if tuple(x.shape) != tuple(shape):
        x = F.interpolate(x[None, None].float(), size=tuple(shape), mode="nearest")[0, 0]
    return x.numpy()


class ProbabilityPredictor:
    """A `predict` for inference.segment_stream: class ids (uint8, at each frame's size) per frame,
    or (class ids, confidence) pairs with `confidence=True`; smoothed over frames when alpha > 0."""

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
            labels = _at_size(labels.to(torch.uint8), t.shape).astype(np.uint8)
            if self.confidence:
                conf = _at_size(torch.round(best * 255), t.shape).astype(np.uint8)
                out.append((labels, conf))
            else:
                out.append(labels)
        return out

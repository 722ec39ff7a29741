"""Test-time augmentation as the peers evaluate (CMX, Sigma, CRM_RGBTSeg): several scales and a horizontal
flip, class probabilities averaged at the label's size.

The CEKD networks read one fixed input size (the BoT layer's position embeddings and TEM's linear layer
are sized for it), so a scale s resizes the frame to s x that size and reads it in windows of that size,
as CMX's multi-scale evaluation does: a larger frame in windows sliding by 2/3 of a window (their logits
averaged where they overlap), a smaller one padded with zeros around it. Each view's logits (scale,
flipped or not) are resized to the label's size (bilinear), turned into probabilities (softmax) and
flipped back; the views' probabilities are averaged. `log_probs` returns the log of that average, which
the evaluation loop scores like logits (argmax, cross-entropy).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_SCALES = (0.75, 1.0, 1.25)  # the peers' MFNet protocol
STRIDE = 2 / 3  # a window's step as a fraction of its size (CMX's stride_rate)

Forward = Callable[[Tensor], Tensor]  # a batch at the network's input size -> its logits


@dataclass(frozen=True)
class TTA:
    """Which views the evaluation averages: each of `scales`, unflipped and (with `flip`) flipped."""
    scales: tuple[float, ...] = DEFAULT_SCALES
    flip: bool = True

    def __post_init__(self) -> None:
        if not self.scales or any(not (math.isfinite(s) and s > 0) for s in self.scales):
            raise ValueError(f"TTA scales must be positive numbers, got {list(self.scales)}")
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))

    @property
    def views(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)

    def describe(self) -> str:
        """e.g. 'TTA: scales 0.75 1 1.25 + horizontal flip (6 views)'."""
        return (f"TTA: scales {' '.join(f'{s:g}' for s in self.scales)}"
                + (" + horizontal flip" if self.flip else "") + f" ({self.views} views)")

    def to_dict(self) -> dict:
        return {"scales": list(self.scales), "flip": self.flip, "views": self.views,
                "averaged": "softmax probabilities at the label's size"}

    def log_probs(self, forward: Forward, x: Tensor, size: Sequence[int]) -> Tensor:
        """log of the views' mean class probabilities, (B, n_class, *size), float32."""
        total = None
        for scale in self.scales:
            for flipped in (False, True) if self.flip else (False,):
                logits = scaled_logits(forward, x.flip(-1) if flipped else x, scale)
                if tuple(logits.shape[-2:]) != tuple(size):
                    logits = F.interpolate(logits.float(), size=tuple(size), mode="bilinear", align_corners=False)
                probs = logits.float().softmax(1)
                if flipped:  # back after the resize: a mirror-symmetric frame gets a mirror-symmetric mean
                    probs = probs.flip(-1)
                total = probs if total is None else total + probs
        return (total / self.views).log()


def window_starts(length: int, window: int) -> list[int]:
    """Where windows of `window` pixels start to cover `length` (>= window) pixels, stepping by 2/3 of a
    window; the last one ends at the edge."""
    if length <= window:
        return [0]
    stride = math.ceil(window * STRIDE)
    n = math.ceil((length - window) / stride) + 1
    return [min(i * stride, length - window) for i in range(n)]


def scaled_logits(forward: Forward, x: Tensor, scale: float) -> Tensor:
    """The logits of `x` (B, C, H, W at the network's input size) resized by `scale`, at that scaled size:
    read in H x W windows (overlaps averaged); a scaled frame smaller than a window is padded with zeros
    around it and the padding's logits are cut off."""
    h, w = x.shape[-2:]
    sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
    xs = x if (sh, sw) == (h, w) else F.interpolate(x, size=(sh, sw), mode="bilinear", align_corners=False)
    top, left = max(h - sh, 0) // 2, max(w - sw, 0) // 2
    if sh < h or sw < w:
        ph, pw = max(h - sh, 0), max(w - sw, 0)
        xs = F.pad(xs, (left, pw - left, top, ph - top))
    rows, cols = window_starts(xs.shape[-2], h), window_starts(xs.shape[-1], w)
    if len(rows) == 1 and len(cols) == 1:
        logits = forward(xs)
    else:
        logits, count = None, torch.zeros(xs.shape[-2:], device=x.device)
        for r in rows:
            for c in cols:
                out = forward(xs[..., r:r + h, c:c + w]).float()
                if logits is None:
                    logits = out.new_zeros((*out.shape[:2], *xs.shape[-2:]))
                logits[..., r:r + h, c:c + w] += out
                count[r:r + h, c:c + w] += 1
        logits = logits / count
    return logits[..., top:top + sh, left:left + sw]

"""Joint training augmentation of an image, its label map and its 1/4-resolution edge map.

Random horizontal flip and random crop (each side independently loses a fraction
uniform in [0, max_crop] of the size), applied before the loader resizes back to
the network input size. Used for training only.

Alignment with the edge map is exact: the crop bounds are rounded down to
multiples of the edge stride (4) on the full-resolution arrays, so the crop cuts
whole 4x4 blocks and the edge map is cut at the same bounds divided by 4. The
cropped width is then a multiple of 4, so flipping maps whole blocks onto whole
blocks. Hence the result's edge map equals the original edge map's blocks for the
kept pixels (re-deriving edges from the cropped label would differ only within the
edge radius of the crop border, where neighbours were cut away). A remainder
strip of fewer than 4 px at the bottom/right (sizes not divisible by 4) is always
cut.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from util.data.mfnet import EDGE_STRIDE


class JointAugment:
    """Random flip (probability ``flip_p``) and random crop (up to ``max_crop`` of the size per side)."""

    def __init__(self, flip_p: float = 0.5, max_crop: float = 0.1, stride: int = EDGE_STRIDE):
        if not 0.0 <= flip_p <= 1.0 or not 0.0 <= max_crop < 0.5:
            raise ValueError(f"JointAugment: need 0 <= flip_p <= 1 and 0 <= max_crop < 0.5, got {flip_p}, {max_crop}")
        self.flip_p, self.max_crop, self.stride = flip_p, max_crop, stride

    def __repr__(self) -> str:
        return f"JointAugment(flip_p={self.flip_p}, max_crop={self.max_crop}, stride={self.stride})"

    def params(self, height: int, width: int, rng: np.random.Generator) -> tuple[bool, int, int, int, int]:
        """(flip, top, bottom, left, right) crop bounds in full-resolution pixels, all multiples of the stride."""
        s = self.stride
        flip = bool(rng.random() < self.flip_p)
        cut = rng.uniform(0.0, self.max_crop, size=4)  # fractions cut at top, bottom, left, right
        top = int(cut[0] * height) // s * s
        bottom = (height // s) * s - int(cut[1] * height) // s * s
        left = int(cut[2] * width) // s * s
        right = (width // s) * s - int(cut[3] * width) // s * s
        return flip, top, bottom, left, right

    def __call__(self, image: np.ndarray, label: np.ndarray, edge: Optional[np.ndarray],
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """Augment (H, W, C) image, (H, W) label and (ceil(H/4), ceil(W/4)) edge map (or None) identically."""
        h, w = label.shape
        s = self.stride
        if image.shape[:2] != (h, w):
            raise ValueError(f"JointAugment: image {image.shape[:2]} and label {(h, w)} sizes differ")
        if edge is not None and edge.shape != (-(-h // s), -(-w // s)):
            raise ValueError(f"JointAugment: edge map {edge.shape} is not label size {(h, w)} / {s} (rounded up)")
        if h < s or w < s:
            raise ValueError(f"JointAugment: frame {(h, w)} smaller than the edge stride {s}")
        flip, top, bottom, left, right = self.params(h, w, rng)
        image, label = image[top:bottom, left:right], label[top:bottom, left:right]
        if edge is not None:
            edge = edge[top // s:bottom // s, left // s:right // s]
        if flip:
            image, label = image[:, ::-1], label[:, ::-1]
            edge = None if edge is None else edge[:, ::-1]
        edge = None if edge is None else np.ascontiguousarray(edge)
        return np.ascontiguousarray(image), np.ascontiguousarray(label), edge

"""What CENet and EKNet share: the output structure and the input checks."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch


class SegOutput(NamedTuple):
    """Forward result of both networks.

    logits:   (B, n_class, H, W) class scores.
    features: (B, C, H/32, W/32) deepest encoder features (skip5), used by L_sim.
    hint:     (B, C/8, H/4, W/4) decoder feature used by the hint loss.
    edge:     teacher only: (B, 1, H/4, W/4) edge probability (sigmoid of edge_logit).
    edge_logit: teacher only: the edge head's pre-sigmoid output.
    """
    logits: torch.Tensor
    features: torch.Tensor
    hint: torch.Tensor
    edge: Optional[torch.Tensor] = None
    edge_logit: Optional[torch.Tensor] = None


def check_input(name: str, x: torch.Tensor, channels: int, height: int, width: int) -> None:
    """Raise a ValueError naming the expected and received shape when `x` does not fit."""
    if x.dim() != 4 or x.shape[1] != channels or x.shape[2] != height or x.shape[3] != width:
        raise ValueError(
            f"{name} expects input of shape (B, {channels}, {height}, {width}), got {tuple(x.shape)}")


def check_size(name: str, height: int, width: int) -> None:
    if height <= 0 or width <= 0 or height % 32 or width % 32:
        raise ValueError(f"{name} input height and width must be positive multiples of 32, got {height}x{width}")

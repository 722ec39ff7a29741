"""ED, the teacher's edge detection head, and its two parts from PiDiNet (Su et al., ICCV 2021):
CDCM (compact dilation convolution module) and CSAM (compact spatial attention module).

ED reads the 1/4-resolution decoder feature and predicts semantic edges; CENet adds the
edge probability back into that feature (the edge-privileged teacher, paper Sec. III-B).
"""
from __future__ import annotations

import torch
from torch import nn


class CDCM(nn.Module):
    """Compact dilation convolution module: ReLU, 1x1 conv, sum of four dilated 3x3 convs."""

    def __init__(self, channels: int, dilations: tuple[int, ...] = (5, 7, 9, 11)):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.conv1.bias)
        for i, d in enumerate(dilations, start=1):  # named conv2_1..conv2_4 as in the release
            self.add_module(f"conv2_{i}", nn.Conv2d(channels, channels, 3, padding=d, dilation=d, bias=False))
        self.n_branches = len(dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.relu(x))
        return sum(getattr(self, f"conv2_{i}")(x) for i in range(1, self.n_branches + 1))


class CSAM(nn.Module):
    """Compact spatial attention module: x * sigmoid(conv3x3(conv1x1(ReLU(x))))."""

    def __init__(self, channels: int, mid_channels: int = 4):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(channels, mid_channels, 1)
        nn.init.zeros_(self.conv1.bias)
        self.conv2 = nn.Conv2d(mid_channels, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv2(self.conv1(self.relu(x))))


class EdgeHead(nn.Module):
    """ED: conv_in (1x1) + bn_in + ReLU, CDCM, CSAM, conv_out (1x1 to one channel).
    Returns the pre-sigmoid edge logit (B, 1, h, w)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(channels, channels, 1)
        self.bn_in = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.cdcm = CDCM(channels)
        self.csam = CSAM(channels)
        self.conv_out = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn_in(self.conv_in(x)))
        return self.conv_out(self.csam(self.cdcm(x)))

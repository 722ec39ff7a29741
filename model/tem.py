"""TEM, the student's thermal enhancement module (paper Sec. III-A).

From the thermal image t in [0, 1] a tiny CNN + MLP predicts one exponent per image;
the enhanced map t ** (exponent + 2) is returned at 1/2 ... 1/32 scale and added to
EKNet's decoder at each of those resolutions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_len(n: int, kernel: int, stride: int, pad: int = 0) -> int:
    return (n + 2 * pad - kernel) // stride + 1


def tem_linear_width(height: int, width: int) -> int:
    """Input width of TEM's first Linear layer for a given image size (80 at 480x640)."""
    h, w = height, width
    h, w = _conv_len(h, 4, 4), _conv_len(w, 4, 4)            # maxpool 4
    h, w = _conv_len(h, 3, 2, 1), _conv_len(w, 3, 2, 1)      # conv s2
    h, w = _conv_len(h, 2, 2), _conv_len(w, 2, 2)            # maxpool 2
    h, w = _conv_len(h, 3, 2, 1), _conv_len(w, 3, 2, 1)      # conv s2
    h, w = _conv_len(h, 2, 2, 1), _conv_len(w, 2, 2, 0)      # maxpool 2, padding (1, 0)
    if h < 1 or w < 1:
        raise ValueError(f"TEM needs an input of at least 64x64 pixels, got {height}x{width}")
    return h * w


class TEM(nn.Module):
    """Thermal enhancement module: e = t ** (f(t) + enlightening), returned at 1/2 ... 1/32 scale.

    f is a tiny CNN + MLP that predicts one exponent per image from the thermal map t.
    """

    def __init__(self, height: int, width: int, hidden: int = 20, enlightening: float = 2.0,
                 scales: tuple[int, ...] = (2, 4, 8, 16, 32)):
        super().__init__()
        self.enlightening, self.scales = enlightening, scales
        self.conv1 = nn.Conv2d(1, 1, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(1)
        self.conv2 = nn.Conv2d(1, 1, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(1)
        self.fc1 = nn.Linear(tem_linear_width(height, width), hidden)
        self.bn3 = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def exponent(self, t: torch.Tensor) -> torch.Tensor:
        """Predicted exponent per image, shape (B, 1, 1, 1)."""
        x = F.max_pool2d(t, 4)
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2, padding=(1, 0))
        x = self.fc1(x.flatten(1))
        if self.training and x.shape[0] == 1:
            # BatchNorm1d cannot take batch statistics from one sample: use the running ones.
            x = F.batch_norm(x, self.bn3.running_mean, self.bn3.running_var,
                             self.bn3.weight, self.bn3.bias, False, 0.0, self.bn3.eps)
        else:
            x = self.bn3(x)
        x = self.fc2(F.relu(x))
        return (x + self.enlightening).view(-1, 1, 1, 1)

    def forward(self, t: torch.Tensor) -> list[torch.Tensor]:
        e = torch.pow(t, self.exponent(t))
        h, w = t.shape[-2:]
        return [F.interpolate(e, size=(h // s, w // s), mode="nearest") for s in self.scales]

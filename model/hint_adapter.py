"""The hint adapter of a student whose ResNet family differs from its teacher's (FitNets, Romero et al.,
ICLR 2015): the hint loss compares the student's edge-aware decoder feature with the teacher's, and when
their widths differ (64 channels for ResNet-18/34, 256 for ResNet-50/101/152) a learned 1x1 convolution
and BatchNorm bring the student's to the teacher's width. It is trained with the student and used only
by the loss: the exported or evaluated student is a plain EKNet."""
from __future__ import annotations

import torch
from torch import nn


class HintAdapter(nn.Module):
    def __init__(self, student_width: int, teacher_width: int):
        super().__init__()
        self.conv = nn.Conv2d(student_width, teacher_width, 1, bias=False)
        self.bn = nn.BatchNorm2d(teacher_width)

    def forward(self, hint: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(hint))


def hint_width(depth: int) -> int:
    """Channels of a CEKD network's hint feature (1/8 of its encoder's last width)."""
    from .encoder import resnet_widths

    return resnet_widths(depth)[1] // 8

"""The decoder shared by CENet and EKNet (RTFNet-style: from the encoder's 1/32 feature back to full size).

`deconv5` ... `deconv1` are decoder stages: each is a same-size `TransBottleneck`
followed by one that doubles the resolution with transposed convolutions. The widths
halve from the encoder's last width down to the class count.
"""
from __future__ import annotations

import torch
from torch import nn


class TransBottleneck(nn.Module):
    """Decoder residual block; upsamples x2 with transposed convs when `upsample` is given."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, upsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if upsample is not None and stride != 1:
            self.conv3 = nn.ConvTranspose2d(planes, planes, 2, stride=stride, bias=False)
        else:
            self.conv3 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.upsample = upsample
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_uniform_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.upsample is None else self.upsample(x)
        return self.relu(out + residual)


def decoder_stage(in_channels: int, out_channels: int) -> nn.Sequential:
    """One `deconvK` stage: a same-size block, then a block that doubles the resolution."""
    upsample = nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2, bias=False),
        nn.BatchNorm2d(out_channels),
    )
    return nn.Sequential(
        TransBottleneck(in_channels, in_channels),
        TransBottleneck(in_channels, out_channels, stride=2, upsample=upsample),
    )


def add_decoder(model: nn.Module, top_width: int, n_class: int) -> None:
    """Attach deconv5..deconv1 (widths halving from `top_width`) and skip_transform to `model`."""
    w = top_width
    for k in (5, 4, 3, 2):
        setattr(model, f"deconv{k}", decoder_stage(w, w // 2))
        w //= 2
    model.deconv1 = decoder_stage(w, n_class)
    model.skip_transform = nn.Conv2d(64, top_width // 16, 3, padding=1)

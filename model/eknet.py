"""EKNet: the thermal-only student, with TEM, the thermal enhancement module (paper Sec. III-A)."""
from __future__ import annotations

import torch
from torch import nn

from .common import SegOutput, check_input, check_size
from .decoder import add_decoder
from .encoder import ResNetEncoder, resnet_widths
from .tem import TEM


class EKNet(nn.Module):
    """Edge-privileged knowledge student: one thermal ResNet+BoTNet encoder, the decoder,
    and TEM, whose enhanced thermal maps (1/32 ... 1/2 scale) are added to the decoder.

    Input (B, 1, H, W): thermal in [0, 1]. H and W: multiples of 32, at least 64.
    """

    in_channels = 1

    def __init__(self, n_class: int = 9, depth: int = 50, height: int = 480, width: int = 640,
                 pretrained: bool = False):
        super().__init__()
        check_size("EKNet", height, width)
        self.n_class, self.depth, self.height, self.width = n_class, depth, height, width
        self.tem = TEM(height, width)
        self.encoder_thermal = ResNetEncoder(depth, 1, height, width, pretrained)
        add_decoder(self, resnet_widths(depth)[1], n_class)

    def forward(self, x: torch.Tensor) -> SegOutput:
        check_input("EKNet", x, 1, self.height, self.width)
        m2, m4, m8, m16, m32 = self.tem(x)
        enc = self.encoder_thermal
        skip1 = enc.stem(x)
        skip2 = enc.layer1(enc.maxpool(skip1))
        skip3 = enc.layer2(skip2)
        skip4 = enc.layer3(skip3)
        features = enc.layer4(skip4)

        d = self.deconv5(features + m32) + skip4 + m16
        d = self.deconv4(d) + skip3 + m8
        hint = self.deconv3(d) + skip2
        d = self.deconv2(hint + m4) + self.skip_transform(skip1) + m2
        logits = self.deconv1(d)
        return SegOutput(logits, features, hint)

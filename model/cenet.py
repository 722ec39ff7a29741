"""CENet: the RGB-thermal teacher with ED, the edge detection head (paper Sec. III-B)."""
from __future__ import annotations

import torch
from torch import nn

from .common import SegOutput, check_input, check_size
from .decoder import add_decoder
from .edge_head import EdgeHead
from .encoder import ResNetEncoder, resnet_widths


class CENet(nn.Module):
    """Cross-modal edge-privileged teacher.

    Two ResNet+BoTNet encoders (RGB, thermal); the thermal stream is added into the
    RGB stream after the stem and each stage (RTFNet-style fusion). The decoder adds
    the fused skips; at 1/4 resolution the ED head predicts semantic edges, whose
    probability is added back to the feature (this sum is the hint for the student).

    Input (B, 4, H, W): R, G, B, thermal in [0, 1]. H and W: multiples of 32.
    """

    in_channels = 4

    def __init__(self, n_class: int = 9, depth: int = 50, height: int = 480, width: int = 640,
                 pretrained: bool = False):
        super().__init__()
        check_size("CENet", height, width)
        self.n_class, self.depth, self.height, self.width = n_class, depth, height, width
        self.encoder_rgb = ResNetEncoder(depth, 3, height, width, pretrained)
        self.encoder_thermal = ResNetEncoder(depth, 1, height, width, pretrained)
        top = resnet_widths(depth)[1]
        self.ed = EdgeHead(top // 8)
        add_decoder(self, top, n_class)

    def forward(self, x: torch.Tensor) -> SegOutput:
        check_input("CENet", x, 4, self.height, self.width)
        rgb_enc, th_enc = self.encoder_rgb, self.encoder_thermal
        t = th_enc.stem(x[:, 3:])
        r = rgb_enc.stem(x[:, :3]) + t
        skips = [r]
        r, t = rgb_enc.maxpool(r), th_enc.maxpool(t)
        for name in ("layer1", "layer2", "layer3"):
            t = getattr(th_enc, name)(t)
            r = getattr(rgb_enc, name)(r) + t
            skips.append(r)
        skip1, skip2, skip3, skip4 = skips
        features = rgb_enc.layer4(r) + th_enc.layer4(t)

        d = self.deconv5(features) + skip4
        d = self.deconv4(d) + skip3
        d = self.deconv3(d) + skip2
        edge_logit = self.ed(d)
        edge = torch.sigmoid(edge_logit)
        hint = d + edge
        d = self.deconv2(hint) + self.skip_transform(skip1)
        logits = self.deconv1(d)
        return SegOutput(logits, features, hint, edge, edge_logit)

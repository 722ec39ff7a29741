"""ResNet encoders with a BoTNet stack in place of layer4: the backbone of CENet (two of them) and EKNet (one)."""
from __future__ import annotations

import torch
import torchvision
from torch import nn

from .botnet import BoTStack

RESNET_DEPTHS = (18, 34, 50, 101, 152)


def resnet_widths(depth: int) -> tuple[int, int]:
    """(layer3 width, layer4 width) of a torchvision ResNet: (256, 512) or (1024, 2048)."""
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"resnet depth must be one of {RESNET_DEPTHS}, got {depth}")
    return (256, 512) if depth in (18, 34) else (1024, 2048)


def load_torchvision_resnet(depth: int, pretrained: bool) -> torchvision.models.ResNet:
    """A torchvision ResNet, with ImageNet weights (IMAGENET1K_V1, as the release) when asked."""
    resnet_widths(depth)
    builder = getattr(torchvision.models, f"resnet{depth}")
    if not pretrained:
        return builder(weights=None)
    weights = torchvision.models.get_model_weights(f"resnet{depth}").IMAGENET1K_V1
    try:
        return builder(weights=weights)
    except Exception as exc:  # offline, proxy, corrupt cache: all end here
        hub = torch.hub.get_dir()
        raise RuntimeError(
            f"could not load ImageNet weights for resnet{depth} ({type(exc).__name__}: {exc}). "
            f"Download {weights.url} into {hub}/checkpoints/ on a machine with internet access, "
            f"or train without them (--no-pretrained)") from exc


class ResNetEncoder(nn.Module):
    """One modality's encoder: stem (conv1, bn1, ReLU), maxpool, layer1-3, BoTNet stack as layer4.

    A 1-channel (thermal) stem is initialised with the mean over RGB of the ResNet conv1 weights.
    `features(x)` returns the five skip features at strides 2, 4, 8, 16, 32.
    """

    def __init__(self, depth: int, in_channels: int, height: int, width: int, pretrained: bool = False):
        super().__init__()
        resnet = load_torchvision_resnet(depth, pretrained)
        if in_channels == 3:
            self.conv1 = resnet.conv1
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            with torch.no_grad():
                mean = resnet.conv1.weight.mean(dim=1, keepdim=True)
                self.conv1.weight.copy_(mean.expand(-1, in_channels, -1, -1))
        self.bn1, self.relu, self.maxpool = resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3 = resnet.layer1, resnet.layer2, resnet.layer3
        c3, c4 = resnet_widths(depth)
        self.layer4 = BoTStack(c3, c4, fmap_size=(height // 16, width // 16))

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(self.conv1(x)))

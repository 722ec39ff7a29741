"""Building blocks of CENet and EKNet (SPEC.md section 2).

- `TransBottleneck` / `decoder_stage`: the RTFNet-style upsampling decoder.
- `BoTStack`: BoTNet bottleneck blocks with multi-head self-attention, which
  replace ResNet's layer4 in every encoder.
- `EdgeHead` (ED, the edge detection head of the teacher) with its two parts,
  `CDCM` (compact dilation convolution module) and `CSAM` (compact spatial
  attention module).
- `TEM` (thermal enhancement module of the student): predicts one exponent per
  image and returns the enhanced thermal map at five scales.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# --------------------------------------------------------------------------- decoder
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


# --------------------------------------------------------------------------- BoTNet
class AbsPosEmb(nn.Module):
    """Absolute 2-D position embedding: emb(i, j) = height[i] + width[j]."""

    def __init__(self, fmap_size: tuple[int, int], dim_head: int):
        super().__init__()
        scale = dim_head ** -0.5
        self.height = nn.Parameter(torch.randn(fmap_size[0], dim_head) * scale)
        self.width = nn.Parameter(torch.randn(fmap_size[1], dim_head) * scale)

    def forward(self) -> torch.Tensor:
        """The (h*w, d) embedding of every position, row-major."""
        return (self.height[:, None, :] + self.width[None, :, :]).flatten(0, 1)


class MHSA(nn.Module):
    """Multi-head self-attention over all positions of a feature map, with absolute positions.

    logits = q k^T / sqrt(d) + q emb^T / sqrt(d) = q (k + emb)^T / sqrt(d), so the
    whole thing is one call to `scaled_dot_product_attention` (fused kernels on GPU).
    """

    def __init__(self, dim: int, fmap_size: tuple[int, int], heads: int, dim_head: int):
        super().__init__()
        self.heads, self.dim_head, self.fmap_size = heads, dim_head, tuple(fmap_size)
        self.to_qkv = nn.Conv2d(dim, 3 * heads * dim_head, 1, bias=False)
        self.pos_emb = AbsPosEmb(fmap_size, dim_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        if (h, w) != self.fmap_size:
            raise ValueError(f"MHSA built for a {self.fmap_size} feature map, got {(h, w)}")
        # (B, 3*heads*d, h, w) -> 3 x (B, heads, h*w, d)
        qkv = self.to_qkv(x).reshape(b, 3, self.heads, self.dim_head, h * w).transpose(-1, -2)
        q, k, v = qkv.unbind(1)
        out = F.scaled_dot_product_attention(q, k + self.pos_emb().to(k.dtype), v)
        return out.transpose(-1, -2).reshape(b, self.heads * self.dim_head, h, w)


class BoTBlock(nn.Module):
    """BoTNet bottleneck: 1x1 reduce, MHSA (then 2x2 average pool when downsampling), 1x1 expand."""

    def __init__(self, dim: int, dim_out: int, fmap_size: tuple[int, int], downsample: bool,
                 heads: int = 4, dim_head: int = 512, proj_factor: int = 4):
        super().__init__()
        if dim != dim_out or downsample:
            k, s, p = (3, 2, 1) if downsample else (1, 1, 0)
            self.shortcut = nn.Sequential(
                nn.Conv2d(dim, dim_out, k, stride=s, padding=p, bias=False),
                nn.BatchNorm2d(dim_out), nn.ReLU(inplace=True))
        else:
            self.shortcut = nn.Identity()
        attn_dim = dim_out // proj_factor
        inner = heads * dim_head
        self.body = nn.Sequential(
            nn.Conv2d(dim, attn_dim, 1, bias=False), nn.BatchNorm2d(attn_dim), nn.ReLU(inplace=True),
            MHSA(attn_dim, fmap_size, heads, dim_head),
            nn.AvgPool2d(2) if downsample else nn.Identity(),
            nn.BatchNorm2d(inner), nn.ReLU(inplace=True),
            nn.Conv2d(inner, dim_out, 1, bias=False), nn.BatchNorm2d(dim_out))
        nn.init.zeros_(self.body[-1].weight)  # each block starts as its shortcut
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class BoTStack(nn.Module):
    """`num_layers` BoT blocks; the first one downsamples x2 (it attends at the input size)."""

    def __init__(self, dim: int, dim_out: int, fmap_size: tuple[int, int], num_layers: int = 3,
                 heads: int = 4, dim_head: int | None = None, proj_factor: int = 4):
        super().__init__()
        dim_head = dim_head or dim_out // heads
        h, w = fmap_size
        self.blocks = nn.Sequential(*[
            BoTBlock(dim if i == 0 else dim_out, dim_out,
                     (h, w) if i == 0 else (h // 2, w // 2),
                     downsample=(i == 0), heads=heads, dim_head=dim_head, proj_factor=proj_factor)
            for i in range(num_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


# --------------------------------------------------------------------------- ED (teacher)
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
    """ED, the teacher's edge detection head. Returns the pre-sigmoid edge logit (B, 1, h, w)."""

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


# --------------------------------------------------------------------------- TEM (student)
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

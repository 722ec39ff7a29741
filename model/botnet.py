"""BoTNet (Srinivas et al., CVPR 2021): bottleneck blocks with multi-head self-attention,
which replace ResNet's layer4 in every CEKD encoder (teacher and student alike).

Each block: 1x1 reduce, MHSA over all positions with absolute 2-D position embeddings,
2x2 average pool when downsampling, 1x1 expand; plus a (projection) shortcut.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
    """BoTNet bottleneck: conv_in (1x1 reduce), mhsa (then a 2x2 average pool when downsampling),
    conv_out (1x1 expand), each followed by its BatchNorm; output ReLU(body + shortcut)."""

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
        self.conv_in = nn.Conv2d(dim, attn_dim, 1, bias=False)
        self.bn_in = nn.BatchNorm2d(attn_dim)
        self.mhsa = MHSA(attn_dim, fmap_size, heads, dim_head)
        self.pool = nn.AvgPool2d(2) if downsample else nn.Identity()
        self.bn_mid = nn.BatchNorm2d(inner)
        self.conv_out = nn.Conv2d(inner, dim_out, 1, bias=False)
        self.bn_out = nn.BatchNorm2d(dim_out)
        nn.init.zeros_(self.bn_out.weight)  # each block starts as its shortcut
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn_in(self.conv_in(x)))
        y = self.relu(self.bn_mid(self.pool(self.mhsa(y))))
        y = self.bn_out(self.conv_out(y))
        return self.relu(y + self.shortcut(x))


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

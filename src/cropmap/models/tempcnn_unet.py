"""The seed model (temporal CNN per pixel + U-Net) and its pixel-only baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register
from .temporal import TemporalCNN, embed_pixels
from .unet import UNet


class TempCNNUNet(nn.Module):
    """``x [B, C, T, H, W]`` -> ``[B·H·W, C, T]`` -> temporal CNN -> ``[B, D, H, W]`` -> U-Net -> ``[B, K, H, W]``.

    The classifier sees the U-Net's full-resolution features next to the embeddings themselves, so the
    spatial branch refines the per-pixel evidence instead of having to carry it through every level:
    on the demo scene this trained in half the steps of a plain U-Net head, to a better mIoU.
    """

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 64, kernel_size: int = 5,
                 temporal_layers: int = 3, embed_dim: int = 64, unet_base: int = 32, unet_depth: int = 2,
                 dropout: float = 0.1, time_stride: int = 1) -> None:
        super().__init__()
        self.temporal = TemporalCNN(in_channels, hidden, kernel_size, temporal_layers, embed_dim, dropout, time_stride)
        self.spatial = UNet(embed_dim, unet_base, unet_depth)
        self.head = nn.Conv2d(embed_dim + self.spatial.out_channels, num_classes, 1)

    def forward(self, x: torch.Tensor, doy: torch.Tensor, mask: torch.Tensor | None = None,
                reference: bool = False) -> torch.Tensor:
        """``x [B, C, T, H, W]``, ``doy [B, T]``, ``mask [B, T]`` -> logits ``[B, K, H, W]``."""
        z = embed_pixels(self.temporal, x, doy, mask, reference)  # [B, D, H, W]
        return self.head(torch.cat([z, F.relu(self.spatial(z))], dim=1))  # [B, K, H, W]


class TempCNNPixel(nn.Module):
    """The same temporal CNN with a 1x1 head: no spatial context, so the U-Net's value is measured."""

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 64, kernel_size: int = 5,
                 temporal_layers: int = 3, embed_dim: int = 64, dropout: float = 0.1,
                 unet_base: int | None = None, unet_depth: int | None = None, time_stride: int = 1) -> None:
        # unet_* are accepted (and unused) so that one model config serves both registry entries
        super().__init__()
        self.temporal = TemporalCNN(in_channels, hidden, kernel_size, temporal_layers, embed_dim, dropout, time_stride)
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(embed_dim, num_classes, 1))

    def forward(self, x: torch.Tensor, doy: torch.Tensor, mask: torch.Tensor | None = None,
                reference: bool = False) -> torch.Tensor:
        return self.head(embed_pixels(self.temporal, x, doy, mask, reference))


@register("tempcnn-unet")
def tempcnn_unet(**kwargs) -> nn.Module:
    return TempCNNUNet(**kwargs)


@register("tempcnn-unet-fast")
def tempcnn_unet_fast(time_stride: int = 2, **kwargs) -> nn.Module:
    """The seed model with its temporal convolutions after the first strided by 2 (T, T/2, T/4 steps):
    ~half the FLOPs per pixel at the same widths; see benchmarks/README.md for its speed and accuracy."""
    return TempCNNUNet(time_stride=time_stride, **kwargs)


@register("tempcnn-pixel")
def tempcnn_pixel(**kwargs) -> nn.Module:
    return TempCNNPixel(**kwargs)

"""The seed model (temporal CNN per pixel + U-Net) and its pixel-only baseline."""

from __future__ import annotations

import torch
from torch import nn

from .registry import register
from .temporal import TemporalCNN, embed_pixels
from .unet import UNet


def level_taps(coarse_heads: tuple[int, ...] | list[int], layers: int) -> tuple[tuple[int, int], ...]:
    """The temporal layer each coarser level's head reads (ms-convSTAR's placement, Turkoglu et al. 2021: the
    coarser the level, the earlier the layer; its code takes level 1 from layer 2 and level 2 from layer 4
    of 6): ``coarse_heads[l - 1]`` classes at layer ``layers - 1 - l``, the first layer at the least."""
    return tuple((max(0, layers - 1 - lv), int(k)) for lv, k in enumerate(coarse_heads, start=1))


class TempCNNUNet(nn.Module):
    """``x [B, C, T, H, W]`` -> ``[B·H·W, C, T]`` -> temporal CNN -> ``[B, D, H, W]`` -> U-Net -> ``[B, K, H, W]``.

    The classifier sees the U-Net's full-resolution features next to the embeddings themselves, so the
    spatial branch refines the per-pixel evidence instead of having to carry it through every level:
    on the demo scene this trained in half the steps of a plain U-Net head, to a better mIoU.

    ``coarse_heads`` (class counts of the hierarchy's coarser levels, next-coarser first) puts their heads
    on intermediate temporal layers (``level_taps``) instead of the top: the output stays
    ``[B, num_classes, H, W]`` with the finest level's ``num_classes - sum(coarse_heads)`` logits first,
    the layout :class:`cropmap.hierarchy.HierarchicalModel` splits.
    """

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 64, kernel_size: int = 5,
                 temporal_layers: int = 3, embed_dim: int = 64, unet_base: int = 32, unet_depth: int = 2,
                 dropout: float = 0.1, time_stride: int = 1, coarse_heads: tuple[int, ...] = ()) -> None:
        super().__init__()
        fine = _finest(num_classes, coarse_heads)
        self.temporal = TemporalCNN(in_channels, hidden, kernel_size, temporal_layers, embed_dim, dropout, time_stride,
                                    taps=level_taps(coarse_heads, temporal_layers))
        self.spatial = UNet(embed_dim, unet_base, unet_depth)
        self.head = nn.Conv2d(embed_dim + self.spatial.out_channels, fine, 1)

    def forward(self, x: torch.Tensor, doy: torch.Tensor, mask: torch.Tensor | None = None,
                reference: bool = False) -> torch.Tensor:
        """``x [B, C, T, H, W]``, ``doy [B, T]``, ``mask [B, T]`` -> logits ``[B, K, H, W]``."""
        out = embed_pixels(self.temporal, x, doy, mask, reference)  # [B, D (+ tap logits), H, W]
        z, taps = out[:, : self.temporal.embed_dim], out[:, self.temporal.embed_dim :]
        # the U-Net's features are already rectified (its last block ends in a ReLU)
        return torch.cat([self.head(torch.cat([z, self.spatial(z)], dim=1)), taps], dim=1)  # [B, K, H, W]


def _finest(num_classes: int, coarse_heads: tuple[int, ...] | list[int]) -> int:
    fine = num_classes - sum(coarse_heads)
    if coarse_heads and fine < 1:
        raise ValueError(f"coarse_heads {tuple(coarse_heads)}: leave no class of {num_classes} for the finest level")
    return fine


class TempCNNPixel(nn.Module):
    """The same temporal CNN with a 1x1 head: no spatial context, so the U-Net's value is measured.
    ``coarse_heads`` as in :class:`TempCNNUNet`."""

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 64, kernel_size: int = 5,
                 temporal_layers: int = 3, embed_dim: int = 64, dropout: float = 0.1,
                 unet_base: int | None = None, unet_depth: int | None = None, time_stride: int = 1,
                 coarse_heads: tuple[int, ...] = ()) -> None:
        # unet_* are accepted (and unused) so that one model config serves both registry entries
        super().__init__()
        fine = _finest(num_classes, coarse_heads)
        self.temporal = TemporalCNN(in_channels, hidden, kernel_size, temporal_layers, embed_dim, dropout, time_stride,
                                    taps=level_taps(coarse_heads, temporal_layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(embed_dim, fine, 1))

    def forward(self, x: torch.Tensor, doy: torch.Tensor, mask: torch.Tensor | None = None,
                reference: bool = False) -> torch.Tensor:
        out = embed_pixels(self.temporal, x, doy, mask, reference)
        z, taps = out[:, : self.temporal.embed_dim], out[:, self.temporal.embed_dim :]
        return torch.cat([self.head(z), taps], dim=1)


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

"""Per-pixel temporal CNN: a series ``[N, C, T]`` -> an embedding ``[N, D]``, for any T.

Time enters twice: convolutions see the local shape of the curve, and day-of-year features (sin, cos)
tell them *when* it happens, so pooling over time keeps the timing that separates winter from
summer crops without flattening over a fixed T.

Two formulations compute the same function with the same weights: ``forward`` is the reference
(``[B·H·W, C, T]`` through ``Conv1d``); ``forward_grid`` runs the same kernels as ``(k, 1)``
convolutions on ``[B, C, T, H·W]`` stored channels-last, which avoids the large permute copies and is
2-3x faster on CPU (see ``forward_grid`` for the layout's measured worth).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .kernels import conv_relu


def doy_features(doy: torch.Tensor) -> torch.Tensor:
    """``[..., T]`` day of year -> ``[..., 2, T]`` (sin, cos) on the annual cycle."""
    angle = doy.float() * (2 * math.pi / 365.25)
    return torch.stack([torch.sin(angle), torch.cos(angle)], dim=-2)


class TemporalCNN(nn.Module):
    """``time_stride`` > 1 strides every convolution after the first along time: the later (wider)
    layers then see T / stride, T / stride² ... steps, the cheaper configurations' lever.

    ``taps`` ``((layer, classes), ...)`` adds a classifier on the time-pooled output of convolution ``layer``
    (0-based) for each entry: the label hierarchy's coarser levels read from intermediate depths, as in
    ms-convSTAR (Turkoglu et al. 2021). Their logits follow the embedding on the output's channel axis,
    in the order given, so every formulation and the row-band chunking carry them unchanged.
    """

    def __init__(self, in_channels: int = 4, hidden: int = 64, kernel_size: int = 5, layers: int = 3,
                 embed_dim: int = 64, dropout: float = 0.1, time_stride: int = 1,
                 taps: tuple[tuple[int, int], ...] = ()) -> None:
        super().__init__()
        if any(not 0 <= layer < layers - 1 for layer, _ in taps):
            raise ValueError(f"taps {taps}: a tap reads a convolution before the last one (0 .. {layers - 2})")
        if time_stride > 1 and kernel_size % 2 == 0:
            raise ValueError(f"kernel_size {kernel_size}: must be odd, so that output steps stay centred on input steps")
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        c = in_channels + 2  # + day-of-year features
        for i in range(layers):
            stride = time_stride if i > 0 else 1
            self.convs.append(nn.Conv1d(c, hidden, kernel_size, stride, padding=kernel_size // 2, bias=False))
            self.norms.append(nn.BatchNorm1d(hidden))
            c = hidden
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(2 * hidden, embed_dim)
        self.embed_dim = embed_dim
        self.taps = tuple((int(layer), int(k)) for layer, k in taps)
        self.tap_heads = nn.ModuleList(nn.Linear(2 * hidden, k) for _, k in self.taps)

    @property
    def out_channels(self) -> int:
        """Embedding plus tap logits."""
        return self.embed_dim + sum(k for _, k in self.taps)

    def forward(self, x: torch.Tensor, doy: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Reference: ``x [N, C, T]``, ``doy [N, T]``, ``mask [N, T]`` (True = real step) -> ``[N, D]``."""
        h = torch.cat([x, doy_features(doy).to(x.dtype)], dim=1)  # [N, C+2, T]
        tapped: dict[int, torch.Tensor] = {}
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = F.relu(norm(conv(h)))  # [N, hidden, T / stride]
            mask = _stride_mask(mask, conv.stride[0])
            if any(layer == i for layer, _ in self.taps):
                tapped[i] = self.dropout(_pool_time(h, None if mask is None else mask[:, None, :], dim=2))
        emb = self.project(self.dropout(_pool_time(h, None if mask is None else mask[:, None, :], dim=2)))
        return torch.cat([emb, *(head(tapped[layer]) for (layer, _), head in zip(self.taps, self.tap_heads))], dim=1)

    def forward_grid(self, x: torch.Tensor, doy: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Every pixel at once: ``x [B, C, T, H, W]``, ``doy [B, T]``, ``mask [B, T]`` -> ``[B, D, H, W]``,
        channels-last (stored ``[B, H, W, D]``, the layout the U-Net's convolutions run fastest on).

        The activations are ``[B, C, T, H·W]`` tensors stored channels-last (``[B, T, H·W, C]`` in memory):
        oneDNN runs the ``(k, 1)`` convolutions on that layout at 84-93 % of the matmul peak against 43-74 %
        on ``[B, C, T, H·W]`` (2 Xeon cores, benchmarks/README.md), and pooling over time then reads whole
        contiguous ``[H·W, C]`` planes."""
        b, c, t, hh, ww = x.shape
        p = hh * ww
        feats = doy_features(doy).to(x.dtype).transpose(1, 2)[:, :, None, :].expand(b, t, p, 2)  # [B, T, H·W, 2]
        h = torch.cat([x.reshape(b, c, t, p).permute(0, 2, 3, 1), feats], dim=3)  # [B, T, H·W, C+2]
        h = h.permute(0, 3, 1, 2)  # [B, C+2, T, H·W], channels-last
        pooled: dict[int, torch.Tensor] = {}
        last = len(self.convs) - 1
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            # conv.bias is None unless fold_batchnorm moved the BatchNorm into it (norm is then Identity)
            weight = conv.weight.unsqueeze(-1).contiguous(memory_format=torch.channels_last)
            stride, padding = (conv.stride[0], 1), (conv.padding[0], 0)
            if isinstance(norm, nn.BatchNorm1d):  # the module itself refuses 4-D input
                h = F.conv2d(h, weight, conv.bias, stride=stride, padding=padding)
                h = F.relu_(F.batch_norm(h, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                                         self.training or not norm.track_running_stats, norm.momentum, norm.eps))
            else:  # folded (inference): one fused pass where the CPU allows it
                h = conv_relu(h, weight, conv.bias, stride, padding)  # [B, hidden, T / stride, H·W]
            mask = _stride_mask(mask, conv.stride[0])
            if i == last or any(layer == i for layer, _ in self.taps):
                m = None if mask is None else mask[:, :, None, None]  # [B, T, 1, 1] against [B, T, H·W, hidden]
                pooled[i] = _pool_time(h.permute(0, 2, 3, 1), m, dim=1, cat_dim=2)  # [B, H·W, 2·hidden]
        # dropout on the pooled features, not inside the convolutions: same regularisation, far cheaper
        emb = F.linear(self.dropout(pooled[last]), self.project.weight, self.project.bias)  # [B, H·W, D]
        outs = [emb] + [head(self.dropout(pooled[layer]))  # [B, H·W, K_tap]
                        for (layer, _), head in zip(self.taps, self.tap_heads)]
        return torch.cat(outs, dim=2).reshape(b, hh, ww, -1).permute(0, 3, 1, 2)  # [B, D, H, W] channels-last

    def fold_batchnorm_(self) -> None:
        """Eval only: move each BatchNorm into the convolution before it (see ``models.fold``)."""
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            if isinstance(norm, nn.BatchNorm1d) and norm.track_running_stats:
                self.convs[i] = fuse_conv_bn_eval(conv, norm)
                self.norms[i] = nn.Identity()


def _stride_mask(mask: torch.Tensor | None, stride: int) -> torch.Tensor | None:
    """``mask [N, T]`` -> the mask of a strided convolution's output: output step i is centred on input
    step i·stride (odd kernel, padding k // 2), so it is real when that step is."""
    return mask if mask is None or stride == 1 else mask[..., ::stride]


def _pool_time(h: torch.Tensor, mask: torch.Tensor | None, dim: int, cat_dim: int = 1) -> torch.Tensor:
    """Masked mean and max over the time axis ``dim``, concatenated on the channel axis ``cat_dim``."""
    if mask is None:
        return torch.cat([h.mean(dim=dim), h.amax(dim=dim)], dim=cat_dim)
    m = mask.to(h.dtype)
    mean = (h * m).sum(dim=dim) / m.sum(dim=dim).clamp_min(1)
    maxed = h.masked_fill(~mask, float("-inf")).amax(dim=dim)
    return torch.cat([mean, maxed], dim=cat_dim)


def per_pixel(encoder: TemporalCNN, x: torch.Tensor, doy: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Reference path: ``x [B, C, T, H, W]`` -> ``[B·H·W, C, T]`` -> encoder -> pseudo-image ``[B, D, H, W]``."""
    b, c, t, h, w = x.shape
    series = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, c, t)  # [B·H·W, C, T]
    doy_px = doy[:, None, :].expand(b, h * w, t).reshape(b * h * w, t)
    mask_px = None if mask is None else mask[:, None, :].expand(b, h * w, t).reshape(b * h * w, t)
    emb = encoder(series, doy_px, mask_px)  # [B·H·W, D]
    return emb.reshape(b, h, w, -1).permute(0, 3, 1, 2)  # [B, D, H, W]


# pixels per temporal-CNN call without autograd on a CPU: small enough for one band's activations to stay in
# cache (2048 px x 48 steps x 32 ch = 12.6 MB). Channels-last, T = 48, 128 px, 2 Xeon cores (benchmarks/README.md):
# 1024 px 206 k px/s, 2048 219 k, 4096 192 k (the earlier [B, C, T, H·W] layout was best at 4096: 128 k px/s).
INFERENCE_CHUNK_PIXELS = 1 << 11
# on a GPU the bands only bound memory (~9 KB a pixel at T = 48 in fp32): 2^18 px keeps a band near 2.4 GB,
# where CPU-sized bands would mean hundreds of small kernel launches per window (not yet timed on a GPU)
INFERENCE_CHUNK_PIXELS_GPU = 1 << 18


def embed_pixels(encoder: TemporalCNN, x: torch.Tensor, doy: torch.Tensor, mask: torch.Tensor | None,
                 reference: bool = False) -> torch.Tensor:
    """``[B, C, T, H, W]`` -> ``[B, D, H, W]`` by the fast path, or by the reference path if asked.

    Without autograd the pixels go through in bands of rows, so that predicting a large window costs
    memory for one band only (the embedding is per pixel, so the result is the same).
    """
    run = (lambda xx: per_pixel(encoder, xx, doy, mask)) if reference else (lambda xx: encoder.forward_grid(xx, doy, mask))
    b, _, _, h, w = x.shape
    chunk = INFERENCE_CHUNK_PIXELS if x.device.type == "cpu" else INFERENCE_CHUNK_PIXELS_GPU
    if torch.is_grad_enabled() or b * h * w <= chunk:
        return run(x)
    rows = max(1, chunk // (b * w))
    return torch.cat([run(x[..., r : r + rows, :]) for r in range(0, h, rows)], dim=2)

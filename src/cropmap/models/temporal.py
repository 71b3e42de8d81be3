"""Per-pixel temporal CNN: a series ``[N, C, T]`` -> an embedding ``[N, D]``, for any T.

Time enters twice: convolutions see the local shape of the curve, and day-of-year features (sin, cos)
tell them *when* it happens, so pooling over time keeps the timing that separates winter from
summer crops without flattening over a fixed T.

Two formulations compute the same function with the same weights: ``forward`` is the reference
(``[B·H·W, C, T]`` through ``Conv1d``); ``forward_grid`` runs the same kernels as ``(k, 1)``
convolutions on ``[B, C, T, H·W]``, which avoids the large permute copies and is 2-3x faster on CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


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
        """Every pixel at once: ``x [B, C, T, H, W]``, ``doy [B, T]``, ``mask [B, T]`` -> ``[B, D, H, W]``."""
        b, c, t, hh, ww = x.shape
        feats = doy_features(doy).to(x.dtype)[..., None].expand(b, 2, t, hh * ww)  # [B, 2, T, H·W]
        h = torch.cat([x.reshape(b, c, t, hh * ww), feats], dim=1)  # [B, C+2, T, H·W]
        tapped: dict[int, torch.Tensor] = {}
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            # conv.bias is None unless fold_batchnorm moved the BatchNorm into it (norm is then Identity)
            h = F.conv2d(h, conv.weight.unsqueeze(-1), conv.bias, stride=(conv.stride[0], 1),
                         padding=(conv.padding[0], 0))
            if isinstance(norm, nn.BatchNorm1d):  # the module itself refuses 4-D input
                h = F.batch_norm(h, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                                 self.training or not norm.track_running_stats, norm.momentum, norm.eps)
            h = F.relu_(h)  # [B, hidden, T / stride, H·W]; in place: one memory pass less
            mask = _stride_mask(mask, conv.stride[0])
            if any(layer == i for layer, _ in self.taps):
                tapped[i] = _pool_time(h, None if mask is None else mask[:, None, :, None], dim=2)
        pooled = _pool_time(h, None if mask is None else mask[:, None, :, None], dim=2)  # [B, 2·hidden, H·W]
        # dropout on the pooled features, not inside the convolutions: same regularisation, far cheaper
        pooled = self.dropout(pooled.transpose(1, 2))  # [B, H·W, 2·hidden]
        emb = F.linear(pooled, self.project.weight, self.project.bias)  # [B, H·W, D]
        outs = [emb] + [head(self.dropout(tapped[layer].transpose(1, 2)))  # [B, H·W, K_tap]
                        for (layer, _), head in zip(self.taps, self.tap_heads)]
        return torch.cat(outs, dim=2).transpose(1, 2).reshape(b, -1, hh, ww)

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


def _pool_time(h: torch.Tensor, mask: torch.Tensor | None, dim: int) -> torch.Tensor:
    """Masked mean and max over the time axis, concatenated on the channel axis (1)."""
    if mask is None:
        return torch.cat([h.mean(dim=dim), h.amax(dim=dim)], dim=1)
    m = mask.to(h.dtype)
    mean = (h * m).sum(dim=dim) / m.sum(dim=dim).clamp_min(1)
    maxed = h.masked_fill(~mask, float("-inf")).amax(dim=dim)
    return torch.cat([mean, maxed], dim=1)


def per_pixel(encoder: TemporalCNN, x: torch.Tensor, doy: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Reference path: ``x [B, C, T, H, W]`` -> ``[B·H·W, C, T]`` -> encoder -> pseudo-image ``[B, D, H, W]``."""
    b, c, t, h, w = x.shape
    series = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, c, t)  # [B·H·W, C, T]
    doy_px = doy[:, None, :].expand(b, h * w, t).reshape(b * h * w, t)
    mask_px = None if mask is None else mask[:, None, :].expand(b, h * w, t).reshape(b * h * w, t)
    emb = encoder(series, doy_px, mask_px)  # [B·H·W, D]
    return emb.reshape(b, h, w, -1).permute(0, 3, 1, 2)  # [B, D, H, W]


# pixels per temporal-CNN call without autograd (~25 MB per activation at 32 ch, T = 48): smaller chunks
# stay in cache; at 256 px, T = 48 on 2 Xeon cores 4096 gave 128 k px/s, 16384 109 k, 65536 94 k (make bench)
INFERENCE_CHUNK_PIXELS = 1 << 12


def embed_pixels(encoder: TemporalCNN, x: torch.Tensor, doy: torch.Tensor, mask: torch.Tensor | None,
                 reference: bool = False) -> torch.Tensor:
    """``[B, C, T, H, W]`` -> ``[B, D, H, W]`` by the fast path, or by the reference path if asked.

    Without autograd the pixels go through in bands of rows, so that predicting a large window costs
    memory for one band only (the embedding is per pixel, so the result is the same).
    """
    run = (lambda xx: per_pixel(encoder, xx, doy, mask)) if reference else (lambda xx: encoder.forward_grid(xx, doy, mask))
    b, _, _, h, w = x.shape
    if torch.is_grad_enabled() or b * h * w <= INFERENCE_CHUNK_PIXELS:
        return run(x)
    rows = max(1, INFERENCE_CHUNK_PIXELS // (b * w))
    return torch.cat([run(x[..., r : r + rows, :]) for r in range(0, h, rows)], dim=2)

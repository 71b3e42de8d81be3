"""U-TAE (Garnot & Landrieu, ICCV 2021): a shared 2D encoder per date, L-TAE temporal attention at the
lowest resolution, its attention masks reused to collapse every skip connection over time, a U-Net decoder.

Written from the paper and checked against the reference code (VSainteuf/utae-paps); the deviations are
marked "deviation" below. Time enters only through the day of year ``doy``, by sinusoidal encoding.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CropmapError
from .registry import register

ENCODER_GROUPS = 4  # GroupNorm groups in the encoder's conv blocks, as in the paper
PERIOD = 1000.0  # period T of the sinusoidal date encoding, as in the paper


def conv_layers(widths: Sequence[int], norm: str, *, k: int = 3, s: int = 1, p: int = 1) -> nn.Sequential:
    """Conv(k, s, reflect padding) -> GroupNorm (``norm="group"``) or BatchNorm -> ReLU for each consecutive
    pair of ``widths``; no conv bias, the norm has one."""
    layers: list[nn.Module] = []
    for cin, cout in itertools.pairwise(widths):
        layers.append(nn.Conv2d(cin, cout, k, s, p, padding_mode="reflect", bias=False))
        layers.append(nn.GroupNorm(ENCODER_GROUPS, cout) if norm == "group" else nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class DownBlock(nn.Module):
    """Strided 4x4 conv (halves H, W) then two 3x3 convs with a residual: ``[N, cin, H, W] -> [N, cout, H/2, W/2]``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.down = conv_layers([cin, cin], "group", k=4, s=2, p=1)
        self.conv1 = conv_layers([cin, cout], "group")
        self.conv2 = conv_layers([cout, cout], "group")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.down(x))
        return x + self.conv2(x)


class UpBlock(nn.Module):
    """Transposed 4x4 conv (doubles H, W), concatenated with the 1x1-projected skip, two 3x3 convs with a residual:
    ``[B, cin, h, w]``, skip ``[B, skip, 2h, 2w]`` -> ``[B, cout, 2h, 2w]``."""

    def __init__(self, cin: int, cout: int, skip: int) -> None:
        super().__init__()
        self.skip_conv = nn.Sequential(nn.Conv2d(skip, skip, 1, bias=False), nn.BatchNorm2d(skip), nn.ReLU(inplace=True))
        self.up = nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                                nn.ReLU(inplace=True))
        self.conv1 = conv_layers([cout + skip, cout], "batch")
        self.conv2 = conv_layers([cout, cout], "batch")

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.conv1(torch.cat([self.up(x), self.skip_conv(skip)], dim=1))
        return x + self.conv2(x)


def date_encoding(doy: torch.Tensor, d: int, repeat: int) -> torch.Tensor:
    """``[N, T]`` days -> ``[N, T, d·repeat]``: sin/cos at periods ``PERIOD^(2i/d)``, the same ``d`` values for
    every head (the paper's positional encoding with the day of year as position)."""
    i = torch.arange(d, device=doy.device)
    denom = PERIOD ** (2 * torch.div(i, 2, rounding_mode="floor").float() / d)  # [d]
    angle = doy.float()[..., None] / denom  # [N, T, d]
    enc = torch.where(i % 2 == 0, torch.sin(angle), torch.cos(angle))
    return enc.repeat(1, 1, repeat)


def masked_group_norm(x: torch.Tensor, mask: torch.Tensor | None, norm: nn.GroupNorm) -> torch.Tensor:
    """GroupNorm of per-pixel series ``x [N, T, C]`` over (channels of a group) x (real dates) -> ``[N, T, C]``.

    Deviation: the paper's L-TAE normalises over channels x all T, so padded dates would shift every real
    date's features; here statistics come from the dates where ``mask [N, T]`` is True only. With no padding
    this is exactly ``nn.GroupNorm`` on ``[N, C, T]``.
    """
    n, t, c = x.shape
    g = norm.num_groups
    xg = x.reshape(n, t, g, c // g)  # [N, T, G, C/G]
    if mask is None:
        mean = xg.mean(dim=(1, 3), keepdim=True)
        var = (xg - mean).square().mean(dim=(1, 3), keepdim=True)
    else:
        keep = mask[:, :, None, None]  # [N, T, 1, 1]
        m = keep.to(x.dtype)
        xg = torch.where(keep, xg, 0.0)  # padded dates may hold anything (inf, NaN): keep them out of the sums
        count = m.sum(dim=1, keepdim=True).clamp_min(1) * (c // g)
        mean = xg.sum(dim=(1, 3), keepdim=True) / count
        var = ((xg - mean).square() * m).sum(dim=(1, 3), keepdim=True) / count
    out = ((xg - mean) / torch.sqrt(var + norm.eps)).reshape(n, t, c)
    return out * norm.weight + norm.bias


class LTAE(nn.Module):
    """Lightweight temporal attention encoder, per pixel: ``[N, T, C]`` -> ``[N, out]`` and attention ``[heads, N, T]``.

    Each head has one learnt master query; keys come from a linear map of the (normalised, projected,
    date-encoded) series, values are the head's own slice of ``d_model`` channels.
    """

    def __init__(self, in_channels: int, out_channels: int, n_head: int = 16, d_model: int = 256, d_k: int = 4,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.n_head, self.d_model, self.d_k = n_head, d_model, d_k
        self.in_norm = nn.GroupNorm(n_head, in_channels)
        self.inconv = nn.Linear(in_channels, d_model)
        self.query = nn.Parameter(torch.randn(n_head, d_k) * math.sqrt(2.0 / d_k))
        self.key = nn.Linear(d_model, n_head * d_k)
        nn.init.normal_(self.key.weight, mean=0.0, std=math.sqrt(2.0 / d_k))
        self.mlp = nn.Sequential(nn.Linear(d_model, out_channels), nn.BatchNorm1d(out_channels), nn.ReLU())
        self.dropout = nn.Dropout(dropout)
        self.out_norm = nn.GroupNorm(n_head, out_channels)

    def forward(self, x: torch.Tensor, doy: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [N, T, C]``, ``doy [N, T]``, ``mask [N, T]`` (True = real date) -> ``[N, out]``, attention ``[heads, N, T]``."""
        n, t, _ = x.shape
        v = self.inconv(masked_group_norm(x, mask, self.in_norm))  # [N, T, d_model]
        v = v + date_encoding(doy, self.d_model // self.n_head, self.n_head).to(v.dtype)
        k = self.key(v).reshape(n, t, self.n_head, self.d_k)  # [N, T, heads, d_k]
        scores = torch.einsum("nthd,hd->hnt", k, self.query) / math.sqrt(self.d_k)  # [heads, N, T]
        if mask is not None:
            # the dtype's lowest value, not -inf: a series with no real date gets uniform weights, not NaN
            scores = scores.masked_fill(~mask[None], torch.finfo(scores.dtype).min)
        attn = scores.softmax(dim=-1)  # [heads, N, T]
        # deviation: no dropout on the attention weights, so that they sum to 1 in training too when reused
        # on the skip connections
        vh = v.reshape(n, t, self.n_head, self.d_model // self.n_head)  # [N, T, heads, d_model/heads]
        out = torch.einsum("hnt,nthc->nhc", attn, vh).reshape(n, self.d_model)  # heads concatenated
        return self.out_norm(self.dropout(self.mlp(out))), attn


class UTAE(nn.Module):
    """``x [B, C, T, H, W]``, ``doy [B, T]``, ``mask [B, T]`` -> logits ``[B, K, H, W]`` for any T, H, W.

    H, W are padded (replicate) to a multiple of ``2^(len(encoder_widths) - 1)`` — and to at least twice
    that, so that the coarsest maps are 2 px wide for the reflect-padded convolutions — then cropped back.
    """

    def __init__(self, in_channels: int, num_classes: int, encoder_widths: Sequence[int] = (64, 64, 64, 128),
                 decoder_widths: Sequence[int] = (32, 32, 64, 128), n_head: int = 16, d_model: int = 256,
                 d_k: int = 4, dropout: float = 0.2) -> None:
        super().__init__()
        enc, dec = [int(w) for w in encoder_widths], [int(w) for w in decoder_widths]  # YAML gives lists
        if len(enc) != len(dec) or len(enc) < 2:
            raise CropmapError(f"utae: encoder_widths {enc} and decoder_widths {dec} need the same length, at least 2")
        if d_model % n_head or any(w % n_head for w in enc + [dec[-1]]):
            raise CropmapError(f"utae: d_model {d_model}, encoder_widths {enc} and decoder_widths[-1] {dec[-1]} must "
                               f"be multiples of n_head {n_head}: each head weighs its own group of channels")
        if any(w % ENCODER_GROUPS for w in enc):
            raise CropmapError(f"utae: encoder_widths {enc} must be multiples of {ENCODER_GROUPS} (GroupNorm groups)")
        self.n_head = n_head
        self.multiple = 2 ** (len(enc) - 1)  # read by windowed prediction to align windows
        # the encoder's GroupNorm pools over H x W: every output pixel depends on the whole input, so no finite
        # receptive radius exists for windowed prediction to measure
        self.global_context = True
        self.in_conv = conv_layers([in_channels, enc[0], enc[0]], "group")
        self.down = nn.ModuleList(DownBlock(enc[i], enc[i + 1]) for i in range(len(enc) - 1))
        self.ltae = LTAE(enc[-1], dec[-1], n_head, d_model, d_k, dropout)
        self.up = nn.ModuleList(UpBlock(dec[i], dec[i - 1], enc[i - 1]) for i in range(len(enc) - 1, 0, -1))
        self.out_conv = conv_layers([dec[0], dec[0]], "batch")
        # deviation: the reference code puts BatchNorm + ReLU after the last conv too; logits get neither here
        self.head = nn.Conv2d(dec[0], num_classes, 3, padding=1, padding_mode="reflect")

    def encode(self, x: torch.Tensor, mask: torch.Tensor | None, every_date: bool) -> list[torch.Tensor]:
        """The shared encoder on each date: ``x [B·T, C, H, W]`` -> feature maps ``[B·T, C_i, H/2^i, W/2^i]``.

        Unless ``every_date``, padded dates are skipped (their maps are zeros, which attention ignores):
        the reference code runs the encoder on them, and on a batch of zeros, for nothing.
        """
        if every_date or mask is None or bool(mask.all()):
            maps = [self.in_conv(x)]
            for down in self.down:
                maps.append(down(maps[-1]))
            return maps
        real = mask.reshape(-1).nonzero().squeeze(1)
        maps = self.encode(x[real], None, True)
        full = [m.new_zeros((x.shape[0], *m.shape[1:])) for m in maps]
        return [f.index_copy(0, real, m) for f, m in zip(full, maps)]

    def forward(self, x: torch.Tensor, doy: torch.Tensor, mask: torch.Tensor | None = None,
                reference: bool = False) -> torch.Tensor:
        """``x [B, C, T, H, W]``, ``doy [B, T]``, ``mask [B, T]`` (True = real date) -> logits ``[B, K, H, W]``.

        ``reference`` runs the encoder on padded dates too (the paper's plain fold of T into the batch);
        the result is the same.
        """
        return self.run(x, doy, mask, reference)[0]

    def attention(self, x: torch.Tensor, doy: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The L-TAE attention masks at the lowest resolution: ``[heads, B, T, h, w]``."""
        return self.run(x, doy, mask)[1]

    def run(self, x: torch.Tensor, doy: torch.Tensor, mask: torch.Tensor | None = None, reference: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[B, K, H, W]`` and attention ``[heads, B, T, h, w]``."""
        b, c, t, h, w = x.shape
        # pad to the multiple, and to at least two of it; sym_max keeps exported graphs free of a branch on H, W
        hp = torch.sym_max((h + self.multiple - 1) // self.multiple * self.multiple, 2 * self.multiple)
        wp = torch.sym_max((w + self.multiple - 1) // self.multiple * self.multiple, 2 * self.multiple)
        folded = x.transpose(1, 2).reshape(b * t, c, h, w)  # [B·T, C, H, W]: one image per date
        folded = F.pad(folded, (0, wp - w, 0, hp - h), mode="replicate")
        maps = [m.reshape(b, t, *m.shape[1:]) for m in self.encode(folded, mask, reference)]  # [B, T, C_i, H_i, W_i]

        low = maps[-1]  # [B, T, C, h, w]
        _, _, cl, hl, wl = low.shape
        series = low.permute(0, 3, 4, 1, 2).reshape(b * hl * wl, t, cl)  # [B·h·w, T, C]: one series per pixel
        per_px = lambda a: a[:, None, None, :].expand(b, hl, wl, t).reshape(b * hl * wl, t)
        y, attn = self.ltae(series, per_px(doy), None if mask is None else per_px(mask))
        y = y.reshape(b, hl, wl, -1).permute(0, 3, 1, 2)  # [B, dec[-1], h, w]
        attn = attn.reshape(self.n_head, b, hl, wl, t).permute(0, 1, 4, 2, 3)  # [heads, B, T, h, w]

        for i, up in enumerate(self.up):  # coarse to fine: skip level n - 2 - i, 2^(i + 1) times the attention's size
            y = up(y, self.collapse(maps[-2 - i], attn, 2 ** (i + 1)))
        # narrow, not [:h]: an exported graph then knows the output is exactly H x W, not min(H, padded H)
        return self.head(self.out_conv(y)).narrow(-2, 0, h).narrow(-1, 0, w), attn

    def collapse(self, skip: torch.Tensor, attn: torch.Tensor, scale: int) -> torch.Tensor:
        """Skip maps ``[B, T, C, H, W]`` -> ``[B, C, H, W]``: channel group g summed over T with head g's attention
        ``[heads, B, T, h, w]``, upsampled bilinearly by ``scale`` (a convex mix of weights that sum to 1 stays so).

        A fixed scale factor rather than the skip's size: the same result, and far simpler symbolic shapes when
        torch.export traces the model for ONNX."""
        b, t, c, hh, ww = skip.shape
        a = F.interpolate(attn.flatten(0, 1), scale_factor=scale, mode="bilinear", align_corners=False)
        a = a.reshape(self.n_head, b, t, hh, ww).permute(1, 2, 0, 3, 4)  # [B, T, heads, H, W]
        groups = skip.reshape(b, t, self.n_head, c // self.n_head, hh, ww)
        return (groups * a[:, :, :, None]).sum(dim=1).reshape(b, c, hh, ww)


@register("utae")
def utae(in_channels: int, num_classes: int, encoder_widths: Sequence[int] = (64, 64, 64, 128),
         decoder_widths: Sequence[int] = (32, 32, 64, 128), n_head: int = 16, d_model: int = 256, d_k: int = 4,
         dropout: float = 0.2) -> nn.Module:
    return UTAE(in_channels, num_classes, encoder_widths, decoder_widths, n_head, d_model, d_k, dropout)

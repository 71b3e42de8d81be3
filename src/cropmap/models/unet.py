"""A simplified 2D U-Net that adds spatial context to a pseudo-image of temporal embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import conv_relu


class ConvBlock(nn.Sequential):
    """(3x3 convolution, BatchNorm, ReLU) x 2. Once ``fold_batchnorm`` has merged the norms (each is then an
    ``Identity``), each convolution and its ReLU run as one fused pass (``kernels.conv_relu``); the modules,
    and so the checkpoint keys, are those of the plain ``nn.Sequential`` this replaced."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(self)
        if any(isinstance(m, nn.BatchNorm2d) for m in layers):
            return super().forward(x)
        for conv in layers[0::3]:
            x = conv_relu(x, conv.weight, conv.bias, conv.stride, conv.padding)
        return x


class UNet(nn.Module):
    """``[B, D, H, W]`` -> features ``[B, base, H, W]`` for any H, W (padded to a multiple of 2^depth,
    cropped back); the classifier head is the caller's."""

    def __init__(self, in_channels: int, base: int = 32, depth: int = 2) -> None:
        super().__init__()
        widths = [base * 2**i for i in range(depth + 1)]
        self.inc = ConvBlock(in_channels, widths[0])
        self.down = nn.ModuleList(ConvBlock(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(ConvBlock(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth)))
        self.out_channels = widths[0]
        self.multiple = 2**depth

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h, w = z.shape[-2:]
        ph, pw = -h % self.multiple, -w % self.multiple
        if ph or pw:
            z = F.pad(z, (0, pw, 0, ph), mode="replicate")
        skips = [self.inc(z)]
        for down in self.down:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for up in self.up:
            skip = skips.pop()
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = up(torch.cat([y, skip], dim=1))
        return y[..., :h, :w]

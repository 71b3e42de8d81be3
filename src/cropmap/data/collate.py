"""Batching items whose series have different lengths: pad T with masked steps."""

from __future__ import annotations

import torch
from torch.utils.data import default_collate


def pad_collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Items ``x [C, T_i, H, W]``, ``doy [T_i]``, ``mask [T_i]`` (+ anything else) -> a batch padded to max T_i.

    Padded steps have ``x`` 0, ``doy`` 0 and ``mask`` False, so models that pool over ``mask`` ignore them;
    with equal lengths this is ``default_collate``.
    """
    t = max(int(it["doy"].shape[-1]) for it in items)
    if any(int(it["doy"].shape[-1]) != t for it in items):
        items = [_pad(it, t) for it in items]
    return default_collate(items)


def _pad(item: dict[str, torch.Tensor], t: int) -> dict[str, torch.Tensor]:
    n = t - int(item["doy"].shape[-1])
    if n == 0:
        return item
    out = dict(item)
    x = item["x"]  # [C, T_i, H, W]
    out["x"] = torch.cat([x, x.new_zeros((x.shape[0], n, *x.shape[2:]))], dim=1)
    out["doy"] = torch.cat([item["doy"], item["doy"].new_zeros(n)])
    mask = item.get("mask", torch.ones(t - n, dtype=torch.bool))
    out["mask"] = torch.cat([mask, mask.new_zeros(n)])
    return out

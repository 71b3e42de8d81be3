"""A torch Dataset over one split of a built dataset, with normalisation and augmentation in space and time."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..dataset.store import dataset_info, open_dataset
from ..errors import CropmapError


def normalise(dn: np.ndarray | torch.Tensor, mean: np.ndarray, std: np.ndarray):
    """``[..., C, T, H, W]`` DN -> standardised reflectance per band (stats from the train split)."""
    shape = (-1, 1, 1, 1)
    if isinstance(dn, torch.Tensor):
        m = torch.as_tensor(mean, dtype=torch.float32).reshape(shape)
        s = torch.as_tensor(std, dtype=torch.float32).reshape(shape)
        return (dn.float() / 10000.0 - m) / s
    return (dn.astype(np.float32) / 10000.0 - mean.reshape(shape)) / std.reshape(shape)


@dataclass(frozen=True)
class PatchSelection:
    """Patches of a dataset chosen by index rather than by their split (the folds of
    :mod:`cropmap.monitoring.folds`): ``patches [n]`` indexes along the patch axis, and ``keep_parcels
    [P + 1]`` (indexed by the ``parcel`` variable, 0 = no parcel) says whose labels are kept; the other
    parcels' pixels become ignore, so that no parcel is labelled in two selections."""

    name: str
    patches: np.ndarray
    keep_parcels: np.ndarray


def select_patches(ds, split: "str | PatchSelection") -> tuple[np.ndarray, np.ndarray | None]:
    """``(patch indexes, keep_parcels or None)`` of a split name or a selection."""
    if isinstance(split, PatchSelection):
        return np.asarray(split.patches, dtype=np.int64), np.asarray(split.keep_parcels, dtype=bool)
    return np.flatnonzero(ds["split"].values == split), None


def selected_labels(ds, sel: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """``[n, P, P]`` int64 labels of the selected patches, other parcels' pixels set to ignore (-1)."""
    y = ds["label"].isel(patch=sel).values.astype(np.int64) if len(sel) else \
        np.zeros((0,) + ds["label"].shape[1:], np.int64)
    if keep is not None and len(sel):
        y[~keep[ds["parcel"].isel(patch=sel).values]] = -1
    return y


class PatchDataset(Dataset):
    """Items: ``x [C, T, P, P]`` float32, ``doy [T]`` float32, ``mask [T]`` bool, ``y [P, P]`` int64.

    The split is loaded into memory (uint16, ~300 KB a 64 px patch at T = 37); ``crop`` takes a random
    ``crop x crop`` window per item when training, and ``augment`` random flips and 90-degree rotations.
    In time, ``temporal_crop`` keeps a random window of at least that fraction of the T steps and
    ``date_dropout`` drops each remaining step with that probability, always keeping one: a dropped step
    gets ``mask`` False and ``x`` 0 (the band mean), so items keep one T and no model sees the dropped
    values, even through a convolution. With probability ``cutoff`` an item is cut in season: the steps after
    a step drawn uniformly are masked, so that one model learns every cut-off date. In the spectrum, ``band_jitter`` scales each band's reflectance
    by a gain drawn from N(1, band_jitter) (clipped to [0.5, 1.5]) before standardisation. All draws come
    from torch's generator, which Lightning seeds and DataLoader workers re-seed each; none is made for
    an augmentation that is off.
    """

    def __init__(self, path: Path | str, split: "str | PatchSelection", *, augment: bool = False, crop: int | None = None,
                 date_dropout: float = 0.0, temporal_crop: float = 1.0, band_jitter: float = 0.0,
                 cutoff: float = 0.0) -> None:
        if not 0 <= date_dropout < 1:
            raise CropmapError(f"date_dropout {date_dropout}: must be in [0, 1)")
        if not 0 <= band_jitter < 1:
            raise CropmapError(f"band_jitter {band_jitter}: must be in [0, 1)")
        if not 0 <= cutoff <= 1:
            raise CropmapError(f"cutoff {cutoff}: must be in [0, 1]")
        self.cutoff = cutoff
        if not 0 < temporal_crop <= 1:
            raise CropmapError(f"temporal_crop {temporal_crop}: must be in (0, 1]")
        info = dataset_info(path)
        ds = open_dataset(path)
        sel, keep = select_patches(ds, split)
        self.split = split if isinstance(split, str) else split.name
        self.info = info
        # only this split is read (isel before values), not the whole array
        self.x = ds["x"].isel(patch=sel).values if len(sel) else np.zeros((0,) + ds["x"].shape[1:], np.uint16)
        self.y = selected_labels(ds, sel, keep)
        self.parcel = ds["parcel"].values[sel]
        self.doy = torch.as_tensor(ds["doy"].values.astype(np.float32))
        self.augment = augment
        self.crop = crop
        self.date_dropout = date_dropout
        self.temporal_crop = temporal_crop
        self.band_jitter = band_jitter

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x, y = self.x[i], self.y[i]  # [C, T, P, P] uint16, [P, P]
        if self.crop and self.crop < y.shape[-1]:
            r, c = torch.randint(0, y.shape[-1] - self.crop + 1, (2,)).tolist()
            x, y = x[..., r : r + self.crop, c : c + self.crop], y[r : r + self.crop, c : c + self.crop]
        if self.band_jitter > 0:  # a gain on reflectance, i.e. on DN, before standardisation
            gain = (1 + self.band_jitter * torch.randn(x.shape[0])).clamp(0.5, 1.5).numpy().astype(np.float32)
            x = x.astype(np.float32) * gain.reshape(-1, 1, 1, 1)
        x = normalise(x, self.info.norm_mean, self.info.norm_std)
        if self.augment:
            k = int(torch.randint(4, ()))
            x, y = np.rot90(x, k, axes=(-2, -1)), np.rot90(y, k, axes=(-2, -1))
            if torch.rand(()) < 0.5:
                x, y = x[..., ::-1], y[..., ::-1]
        x = torch.from_numpy(np.ascontiguousarray(x))
        mask = self.time_mask()
        if not mask.all():
            x[:, ~mask] = 0
        return {"x": x, "y": torch.from_numpy(np.ascontiguousarray(y)), "doy": self.doy, "mask": mask}

    def time_mask(self) -> torch.Tensor:
        """``[T]`` bool: the steps kept by the temporal crop and date dropout (all of them when both are off)."""
        t = len(self.doy)
        mask = torch.ones(t, dtype=torch.bool)
        if self.temporal_crop < 1:
            shortest = max(1, math.ceil(self.temporal_crop * t))
            length = int(torch.randint(shortest, t + 1, ()))
            start = int(torch.randint(0, t - length + 1, ()))
            mask[:] = False
            mask[start : start + length] = True
        if self.date_dropout > 0:
            kept = mask.nonzero().squeeze(1)
            drop = torch.rand(len(kept)) < self.date_dropout
            if drop.all():  # keep one date, drawn among the candidates
                drop[int(torch.randint(len(kept), ()))] = False
            mask[kept[drop]] = False
        if self.cutoff > 0 and float(torch.rand(())) < self.cutoff:
            last = int(torch.randint(0, t, ()))  # the last step before the cut-off
            kept = mask.nonzero().squeeze(1)
            mask[last + 1:] = False
            if not mask.any():  # the cut fell before every kept step: keep the first of them
                mask[kept[0]] = True
        return mask

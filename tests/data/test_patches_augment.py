"""Augmentation in time (date dropout, temporal crop) through the mask, in the spectrum (band jitter), and
padding of series of different T."""

import copy
import math

import pytest
import torch
from torch.utils.data import default_collate

from cropmap.data.collate import pad_collate
from cropmap.data.patches import PatchDataset
from cropmap.errors import CropmapError


@pytest.fixture(scope="module")
def train_patches(tiny_dataset):
    return PatchDataset(tiny_dataset, "train")


def _with(ds, **augment):
    """The same loaded patches with other augmentation settings (loading the split again takes seconds)."""
    ds = copy.copy(ds)
    for k, v in augment.items():
        setattr(ds, k, v)
    return ds


def _masks(ds, n=60):
    torch.manual_seed(0)
    items = [ds[i % len(ds)] for i in range(n)]
    return items, torch.stack([it["mask"] for it in items])


def test_date_dropout_masks_and_zeroes_dates_but_keeps_one(train_patches):
    ds = _with(train_patches, date_dropout=0.5)
    items, masks = _masks(ds)
    t = masks.shape[1]
    assert masks.any(1).all()  # at least one date per item
    share = 1 - masks.float().mean().item()
    assert 0.4 < share < 0.6  # about half of the dates dropped
    for it in items:
        assert (it["x"][:, ~it["mask"]] == 0).all()  # no model sees a dropped date's values
        assert it["x"].shape[1] == t and it["doy"].shape == (t,)  # one T for all items
    full = train_patches[0]
    kept = items[0]["mask"]
    torch.testing.assert_close(items[0]["x"][:, kept], full["x"][:, kept])  # kept dates untouched


def test_date_dropout_near_one_keeps_exactly_one_date(train_patches):
    _, masks = _masks(_with(train_patches, date_dropout=0.999))
    assert (masks.sum(1) == 1).all()
    assert len(set(masks.float().argmax(1).tolist())) > 1  # the kept date varies


def test_temporal_crop_keeps_one_window_of_at_least_the_fraction(train_patches):
    _, masks = _masks(_with(train_patches, temporal_crop=0.5))
    t = masks.shape[1]
    lengths = masks.sum(1)
    assert (lengths >= math.ceil(0.5 * t)).all() and (lengths < t).any()
    for m in masks:
        idx = m.nonzero().squeeze(1)
        assert (idx.diff() == 1).all()  # contiguous
    starts = masks.float().argmax(1)
    assert len(set(starts.tolist())) > 1


def test_both_together_keep_one_date_inside_the_window(train_patches):
    _, masks = _masks(_with(train_patches, temporal_crop=0.3, date_dropout=0.9))
    assert masks.any(1).all()


def test_no_random_draw_without_augmentation(train_patches):
    ds = train_patches  # as the val split is read: no augmentation
    state = torch.get_rng_state()
    a, b = ds[0], ds[0]
    assert torch.equal(torch.get_rng_state(), state)
    assert a["mask"].all() and torch.equal(a["x"], b["x"])


def test_band_jitter_is_one_gain_per_band_on_reflectance(train_patches):
    import numpy as np

    ds = _with(train_patches, band_jitter=0.1)
    torch.manual_seed(3)
    x = ds[0]["x"].numpy()  # [C, T, P, P] standardised
    m, s = ds.info.norm_mean.reshape(-1, 1, 1, 1), ds.info.norm_std.reshape(-1, 1, 1, 1)
    refl, plain = x * s + m, train_patches.x[0].astype(np.float32) / 10000.0
    seen = plain > 0.01
    ratio = [np.median(refl[c][seen[c]] / plain[c][seen[c]]) for c in range(len(x))]
    for c in range(len(x)):  # one gain for every pixel and date of a band
        np.testing.assert_allclose(refl[c][seen[c]] / plain[c][seen[c]], ratio[c], rtol=1e-3)
    assert np.ptp(ratio) > 1e-3 and all(0.5 <= r <= 1.5 for r in ratio)
    assert torch.equal(ds[0]["y"], train_patches[0]["y"])


def test_bad_augmentation_values(tiny_dataset):
    with pytest.raises(CropmapError, match="date_dropout 1"):
        PatchDataset(tiny_dataset, "train", date_dropout=1)
    with pytest.raises(CropmapError, match="temporal_crop 0"):
        PatchDataset(tiny_dataset, "train", temporal_crop=0)
    with pytest.raises(CropmapError, match="band_jitter 1"):
        PatchDataset(tiny_dataset, "train", band_jitter=1)


def _item(t, fill):
    return {"x": torch.full((2, t, 3, 3), fill), "doy": torch.arange(1.0, t + 1), "mask": torch.ones(t, dtype=torch.bool),
            "y": torch.zeros(3, 3, dtype=torch.long)}


def test_pad_collate_pads_time_with_masked_steps():
    b = pad_collate([_item(3, 1.0), _item(5, 2.0)])
    assert b["x"].shape == (2, 2, 5, 3, 3) and b["doy"].shape == (2, 5) and b["y"].shape == (2, 3, 3)
    assert b["mask"].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert (b["x"][0, :, 3:] == 0).all() and (b["x"][0, :, :3] == 1).all() and b["doy"][0].tolist() == [1, 2, 3, 0, 0]


def test_pad_collate_equals_default_collate_for_equal_lengths():
    items = [_item(4, 1.0), _item(4, 3.0)]
    a, b = pad_collate(items), default_collate(items)
    assert all(torch.equal(a[k], b[k]) for k in b)

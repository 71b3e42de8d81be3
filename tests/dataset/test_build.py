import json

import numpy as np
import pytest
import xarray as xr

from cropmap.config import BuildConfig
from cropmap.dataset.build import build_dataset
from cropmap.dataset.splits import assign_block_splits, parcel_splits, patch_origins
from cropmap.dataset.store import dataset_info
from cropmap.errors import CropmapError
from cropmap.nomenclature import IGNORE_INDEX


def test_dataset_opens_with_plain_xarray(tiny_dataset):
    ds = xr.open_zarr(tiny_dataset)
    n, c, t, p, _ = ds["x"].shape
    assert (c, p) == (4, 32) and t >= 10
    assert ds["x"].dtype == np.uint16 and ds["label"].dtype == np.int16
    assert list(ds["band"].values) == ["B2", "B3", "B4", "B8"]
    assert set(ds["split"].values) == {"train", "val", "test"}
    assert json.loads(ds.attrs["class_table"])["level"] == "group"
    info = dataset_info(tiny_dataset)
    assert info.time_grid.steps == t and (info.norm_std > 0).all()
    assert 0.01 < info.norm_mean[3] < 0.6  # NIR reflectance, not DN


def test_no_parcel_is_labelled_in_two_splits(tiny_dataset):
    ds = xr.open_zarr(tiny_dataset)
    label, parcel, split = ds["label"].values, ds["parcel"].values, ds["split"].values
    seen: dict[int, set] = {}
    for i in range(len(split)):
        for pid in np.unique(parcel[i][label[i] != IGNORE_INDEX]):
            if pid > 0:  # 0 is land outside the parcels
                seen.setdefault(int(pid), set()).add(split[i])
    assert seen and all(len(s) == 1 for s in seen.values())
    # and each labelled parcel's split is the one recorded in the parcel table
    for pid, s in seen.items():
        assert ds["parcel_split"].values[pid - 1] == s.pop()


def test_labels_match_parcel_codes(tiny_dataset):
    ds = xr.open_zarr(tiny_dataset)
    info = dataset_info(tiny_dataset)
    label, parcel = ds["label"].values, ds["parcel"].values
    codes = ds["parcel_code"].values
    sel = (label != IGNORE_INDEX) & (parcel > 0)
    for lab, pid in zip(label[sel][:500], parcel[sel][:500]):
        assert info.class_table.class_of(codes[pid - 1]) == lab
    # land outside the parcels is class 0, "background"
    assert info.class_table.background and info.class_table.codes[0] == ()
    outside = (parcel == 0) & (label != IGNORE_INDEX)
    assert outside.any() and (label[outside] == 0).all()


def test_splits_helpers():
    assert patch_origins(70, 130, 32).tolist() == [[0, 0], [0, 32], [0, 64], [0, 96], [32, 0], [32, 32],
                                                   [32, 64], [32, 96]]
    s = assign_block_splits(10, (0.6, 0.2, 0.2), seed=0)
    assert np.bincount(s, minlength=3).tolist() == [6, 2, 2]
    idx = np.zeros((4, 8), np.int32)
    idx[:, 2:7] = 1  # parcel 1: 2 px in block 0, 3 px in block 1 (per row)
    assert parcel_splits(idx, np.array([[0, 0], [0, 4]]), np.array([0, 2]), 4, 1).tolist() == [2]


def test_refuses_to_overwrite_and_reports_no_overlap(tiny_scene, tiny_dataset, tmp_path):
    with pytest.raises(CropmapError, match="already exists"):
        build_dataset(tiny_scene.imagery, tiny_scene.parcels, tiny_dataset, BuildConfig(patch_size=32))
    from conftest import parcels_frame

    far = parcels_frame([(0, 0, 10, 10)], ["BTH"], origin=(900000.0, 5000000.0))
    far.to_file(tmp_path / "far.gpkg")
    with pytest.raises(CropmapError, match="no parcel overlaps the imagery"):
        build_dataset(tiny_scene.imagery, tmp_path / "far.gpkg", tmp_path / "x.zarr", BuildConfig(patch_size=32))
    assert not (tmp_path / "x.zarr").exists()


def test_too_small_to_split(tiny_scene, tmp_path):
    with pytest.raises(CropmapError, match="too small to split"):
        build_dataset(tiny_scene.imagery, tiny_scene.parcels, tmp_path / "x.zarr", BuildConfig(patch_size=64))
    assert not any(tmp_path.iterdir())  # nothing half-written

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


def _code_pixels(parcels, imagery) -> dict[str, int]:
    """Pixels per code inside a parcel and off its 1-px border, the count --min-pixels compares."""
    from cropmap.dataset.rasterize import border_mask, rasterize_parcels
    from cropmap.sources.geotiff_folder import open_scene_folder

    stack = open_scene_folder(imagery)
    gdf = parcels.to_crs(stack.crs)
    pidx = rasterize_parcels(gdf, stack.transform, (stack.height, stack.width))
    per_parcel = np.bincount(pidx[(pidx > 0) & ~border_mask(pidx, 1)], minlength=len(gdf) + 1)[1:]
    out: dict[str, int] = {}
    for code, n in zip(gdf["CODE_CULTU"], per_parcel):
        out[code] = out.get(code, 0) + int(n)
    return out


def _pixel_codes(ds) -> np.ndarray:
    """``[N, P, P]`` the declared code of each pixel ('' outside the parcels)."""
    return np.concatenate([[""], ds["parcel_code"].values.astype(str)])[ds["parcel"].values]


def test_crop_level_folds_rare_codes_and_reports_unknown_ones(tiny_scene, tmp_path, caplog):
    import geopandas as gpd

    from cropmap.nomenclature import OTHER_NAME, coarser_levels

    gdf = gpd.read_file(tiny_scene.parcels)
    gdf.loc[gdf["CODE_CULTU"] == "SOJ", "CODE_CULTU"] = "QQQ"  # 2 parcels with a code no table knows
    gdf.to_file(tmp_path / "p.gpkg")
    pixels = _code_pixels(gdf, tiny_scene.imagery)
    known = sorted((n, c) for c, n in pixels.items() if c != "QQQ")
    threshold = known[3][0]  # the three rarest known codes fall below it
    folded = sorted(c for n, c in known[:3])
    with caplog.at_level("WARNING"):
        s = build_dataset(tiny_scene.imagery, tmp_path / "p.gpkg", tmp_path / "d.zarr",
                          BuildConfig(patch_size=32, seed=1, level="crop", min_pixels=threshold))
    assert s.unknown_codes == {"QQQ": 2} and s.unknown_pixels == {"QQQ": pixels["QQQ"]} and pixels["QQQ"] > 0
    assert f"QQQ (2, {pixels['QQQ']})" in caplog.text
    ds = xr.open_zarr(tmp_path / "d.zarr")
    assert json.loads(ds.attrs["unlabelled_codes"]) == {"QQQ": {"parcels": 2, "pixels": pixels["QQQ"]}}
    table = dataset_info(tmp_path / "d.zarr").class_table
    assert table.level == "crop" and table.names[-1] == OTHER_NAME and list(table.codes[-1]) == folded
    assert len(table.names) == 1 + len(known) - 3 + 1  # background, kept codes, other
    codes, label = _pixel_codes(ds), ds["label"].values
    assert (label[codes == "QQQ"] == IGNORE_INDEX).all()  # unknown: unlabelled, not a class
    rare = np.isin(codes, folded)
    assert set(np.unique(label[rare])) == {IGNORE_INDEX, table.num_classes - 1}
    assert list(coarser_levels(table)) == ["crop", "group", "coarse"]


def test_custom_classes(tiny_scene, tmp_path):
    classes = tmp_path / "classes.csv"
    classes.write_text("code,class,color\nPPH,Meadow,#00aa00\nPTR,Meadow,\nMIS,Corn,\nJAC,Fallow,\nFVL,Legumes,\n"
                       "TTH,Cereal,\nSOJ,Soybean,\nTRN,Sunflower,\nBTH,Wheat,\n")  # no ORH, ORP: unlabelled
    s = build_dataset(tiny_scene.imagery, tiny_scene.parcels, tmp_path / "d.zarr",
                      BuildConfig(patch_size=32, seed=1, classes=str(classes)))
    assert s.unknown_codes == {"ORH": 1, "ORP": 1}
    assert s.classes == ("Hors parcelles", "Meadow", "Corn", "Fallow", "Legumes", "Cereal", "Soybean", "Sunflower")
    ds = xr.open_zarr(tmp_path / "d.zarr")
    table = dataset_info(tmp_path / "d.zarr").class_table
    assert table.level == "custom" and table.colors[1] == (0, 170, 0)
    codes, label = _pixel_codes(ds), ds["label"].values
    meadow = np.isin(codes, ["PPH", "PTR"])
    assert set(np.unique(label[meadow])) == {IGNORE_INDEX, 1}
    assert (label[np.isin(codes, ["ORH", "ORP"])] == IGNORE_INDEX).all()


@pytest.mark.parametrize("config, message", [
    (dict(level="crop", classes="CLASSES"), "--classes replaces --level"),
    (dict(level="custom"), "needs a classes file"),
    (dict(level="group", min_pixels=10), "--min-pixels applies to --level crop"),
    (dict(classes="CLASSES"), "CLASSES: line 3: code BTH is already mapped on line 2"),
])
def test_label_scheme_errors_leave_no_output(tiny_scene, tmp_path, config, message):
    bad = tmp_path / "bad.csv"
    bad.write_text("code,class\nBTH,Wheat\nBTH,Barley\n")
    config = {k: str(bad) if v == "CLASSES" else v for k, v in config.items()}
    with pytest.raises(CropmapError, match=message.replace("CLASSES", str(bad))):
        build_dataset(tiny_scene.imagery, tiny_scene.parcels, tmp_path / "d.zarr", BuildConfig(patch_size=32, **config))
    assert not (tmp_path / "d.zarr").exists()


def test_cli_bad_classes_file_is_one_line(tiny_scene, tmp_path, capsys):
    from cropmap.cli import main

    bad = tmp_path / "bad.csv"
    bad.write_text("code;class\nBTH;Wheat\n")
    argv = ["build", "--imagery", str(tiny_scene.imagery), "--parcels", str(tiny_scene.parcels),
            "--out", str(tmp_path / "d.zarr"), "--classes", str(bad)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"cropmap: error: {bad}: expected a header") and "\n" not in err
    assert main(argv + ["--level", "crop"]) == 2 and "--classes replaces --level" in capsys.readouterr().err
    assert not (tmp_path / "d.zarr").exists()

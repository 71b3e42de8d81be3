"""The same pixels as a GeoTIFF folder, a Zarr cube and a CF NetCDF file give the same dataset and map."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.windows import Window

from conftest import write_date
from cropmap.config import BuildConfig
from cropmap.dataset.build import build_dataset
from cropmap.errors import CropmapError
from cropmap.prediction.scene import predict_map
from cropmap.sources.imagery import DatesUpTo, open_imagery
from cropmap.sources.zarr_cube import write_cube

REALDATA = Path(__file__).resolve().parents[3] / "shared/data/realdata/be-lpis-2018-patch"


def _cube(stack, path: Path, read=None) -> Path:
    return write_cube(path, stack.dates, read or stack.read, crs=stack.crs, transform=stack.transform,
                      width=stack.width, height=stack.height, chunk=40, block=40)


def _netcdf(stack, path: Path, *, south_up: bool = False) -> Path:
    """The layout of the WorldCereal/GEE patches: float reflectance stored as uint16 with scale_factor 1e-4,
    _FillValue 0, a 'timestamp' axis in seconds since a date, a spatial_ref grid mapping."""
    t = stack.transform
    dn = np.stack([stack.read(i)[0] for i in range(len(stack))])  # [T, 4, H, W]
    scl = np.stack([stack.read(i)[1] for i in range(len(stack))])  # [T, H, W]
    ys = t.f + t.e * (np.arange(stack.height) + 0.5)
    if south_up:
        dn, scl, ys = dn[:, :, ::-1], scl[:, ::-1], ys[::-1]
    refl = np.where(dn > 0, dn / 10000.0, np.nan)
    dims = ("timestamp", "y", "x")
    gm = {"grid_mapping": "spatial_ref"}
    ds = xr.Dataset(
        {**{b: (dims, refl[:, k], gm) for k, b in enumerate(["B02", "B03", "B04", "B08"])},
         "SCL": (dims, scl, gm)},
        coords={"timestamp": np.array([np.datetime64(d, "ns") + np.timedelta64(38_000, "s") for d in stack.dates]),
                "y": ys, "x": t.c + t.a * (np.arange(stack.width) + 0.5),
                "spatial_ref": ((), 0, {"crs_wkt": stack.crs.to_wkt()})},
    )
    enc = {b: {"dtype": "uint16", "scale_factor": 1e-4, "_FillValue": 0} for b in ["B02", "B03", "B04", "B08"]}
    enc["timestamp"] = {"units": "seconds since 2017-08-04 10:53:28", "dtype": "int64"}
    ds.to_netcdf(path, engine="h5netcdf", encoding=enc)
    return path


@pytest.fixture(scope="module")
def formats(tiny_scene, tmp_path_factory):
    folder = open_imagery(tiny_scene.imagery)
    root = tmp_path_factory.mktemp("formats")
    return {"folder": tiny_scene.imagery, "zarr": _cube(folder, root / "scene.zarr"),
            "netcdf": _netcdf(folder, root / "scene.nc")}


@pytest.mark.parametrize("kind", ["zarr", "netcdf"])
def test_reads_the_same_pixels_in_any_window(formats, kind):
    ref = open_imagery(formats["folder"])
    other = open_imagery(formats[kind])
    assert other.dates == ref.dates and other.crs == ref.crs and other.transform == ref.transform
    assert (other.width, other.height, other.bounds) == (ref.width, ref.height, ref.bounds)
    win = Window(13, 7, 50, 21)  # crosses the cube's 40 px chunks
    nodata = 0
    for i in range(len(ref)):
        (dn_a, scl_a), (dn_b, scl_b) = ref.read(i, win), other.read(i, win)
        assert dn_b.dtype == np.uint16 and dn_b.shape == (4, 21, 50)
        np.testing.assert_array_equal(dn_b, dn_a)
        np.testing.assert_array_equal(scl_b, scl_a)
        nodata += int((dn_a == 0).sum())
    assert nodata > 0  # the scene has nodata pixels, so the fill value paths are exercised
    full = other.read(1)[0]
    assert full.shape == (4, ref.height, ref.width)
    np.testing.assert_array_equal(full, ref.read(1)[0])


@pytest.mark.parametrize("kind", ["folder", "zarr", "netcdf", "south-up netcdf", "zarr up to a date"])
def test_several_dates_read_at_once_are_the_dates_read_one_by_one(formats, tmp_path, kind):
    ref = open_imagery(formats["folder"])
    if kind == "south-up netcdf":
        stack = open_imagery(_netcdf(ref, tmp_path / "flip.nc", south_up=True))
    elif kind == "zarr up to a date":
        stack = DatesUpTo(open_imagery(formats["zarr"]), ref.dates[-2])
    else:
        stack = open_imagery(formats[kind])
    win = Window(13, 7, 50, 21)
    for indices in ([0, 1, 2], [len(stack) - 1, 0, 2], [1]):  # a run of dates, a gather out of order, one date
        got = stack.read_steps(indices, win)
        assert len(got) == len(indices)
        for i, (dn, scl) in zip(indices, got):
            want_dn, want_scl = ref.read(i, win)
            assert dn.dtype == np.uint16 and dn.flags.c_contiguous and scl.flags.c_contiguous
            np.testing.assert_array_equal(dn, want_dn)
            np.testing.assert_array_equal(scl, want_scl)


def test_a_valid_mask_in_a_cube_zeroes_the_dates_read_at_once(tmp_path):
    dims = ("time", "y", "x")
    dn = np.arange(1, 3 * 4 * 5 * 6 + 1, dtype=np.uint16).reshape(3, 4, 5, 6)
    valid = np.ones((3, 5, 6), bool)
    valid[1, 2, 3] = valid[2, 0, :] = False
    ds = xr.Dataset({"dn": (("time", "band", "y", "x"), dn), "valid": (dims, valid)},
                    coords={"time": np.array(["2023-05-01", "2023-05-11", "2023-05-21"], dtype="datetime64[ns]"),
                            "band": ["B2", "B3", "B4", "B8"], "y": 5170005.0 - 10.0 * np.arange(5),
                            "x": 700005.0 + 10.0 * np.arange(6)},
                    attrs={"crs": "EPSG:32630"})
    ds.to_zarr(tmp_path / "valid.zarr", zarr_format=2, consolidated=True)
    stack = open_imagery(tmp_path / "valid.zarr")
    got = stack.read_steps([0, 1, 2])
    for i, (d, scl) in enumerate(got):
        want = np.where(valid[i], dn[i], 0)
        np.testing.assert_array_equal(d, want)
        np.testing.assert_array_equal(stack.read(i)[0], want)
        assert scl is None


def test_south_up_netcdf_is_read_north_up(formats, tmp_path):
    ref = open_imagery(formats["folder"])
    flipped = open_imagery(_netcdf(ref, tmp_path / "flip.nc", south_up=True))
    assert flipped.transform == ref.transform
    win = Window(4, 60, 30, 25)
    np.testing.assert_array_equal(flipped.read(2, win)[0], ref.read(2, win)[0])
    np.testing.assert_array_equal(flipped.read(2, win)[1], ref.read(2, win)[1])


def test_build_gives_the_same_dataset(formats, tiny_scene, tiny_dataset, tmp_path):
    ref = xr.open_zarr(tiny_dataset, chunks=None)
    for kind in ("zarr", "netcdf"):
        s = build_dataset(formats[kind], tiny_scene.parcels, tmp_path / f"{kind}.zarr", BuildConfig(patch_size=32, seed=1))
        ds = xr.open_zarr(s.path, chunks=None)
        for name in ("x", "observed", "label"):
            assert ds[name].shape == ref[name].shape
            np.testing.assert_array_equal(ds[name].values, ref[name].values, err_msg=f"{kind}: {name}")


def test_predict_on_the_cube_gives_the_same_map(formats, tiny_run, tmp_path):
    a = predict_map(tiny_run, formats["folder"], tmp_path / "folder.tif", window=64, overlap=30, quicklook=False)
    b = predict_map(tiny_run, formats["zarr"], tmp_path / "cube.tif", window=64, overlap=30, quicklook=False)
    with rasterio.open(a.map_path) as ma, rasterio.open(b.map_path) as mb:
        assert mb.crs == ma.crs and mb.transform == ma.transform
        np.testing.assert_array_equal(mb.read(1), ma.read(1))


def test_cube_write_resumes_and_refuses_an_incomplete_cube(formats, tmp_path):
    ref = open_imagery(formats["folder"])
    calls = []

    def failing(i, window):
        if i == 3 and (window.row_off, window.col_off) == (40, 40):  # half way through step 3
            raise KeyboardInterrupt
        return ref.read(i, window)

    path = tmp_path / "c.zarr"
    with pytest.raises(KeyboardInterrupt):
        _cube(ref, path, failing)
    with pytest.raises(CropmapError, match=r"incomplete cube \(3 of"):
        open_imagery(path)

    def counting(i, window):
        calls.append((i, window.row_off, window.col_off))
        return ref.read(i, window)

    _cube(ref, path, counting)
    per_step = len({(r, c) for _, r, c in calls})
    assert per_step == -(-ref.width // 40) * -(-ref.height // 40)
    # only the missing blocks: the rest of step 3 (its first blocks were written), then whole steps
    assert calls[0] == (3, 40, 40) and {i for i, _, _ in calls} == set(range(3, len(ref)))
    assert len(calls) == per_step - 4 + per_step * (len(ref) - 4)
    last = len(ref) - 1
    np.testing.assert_array_equal(open_imagery(path).read(last)[0], ref.read(last)[0])
    with pytest.raises(CropmapError, match="another time axis or grid"):
        write_cube(path, ref.dates[:-1], ref.read, crs=ref.crs, transform=ref.transform, width=ref.width,
                   height=ref.height)


def _small_nc(path: Path, change: str = "") -> Path:
    dims = ("time", "y", "x")
    data = np.full((2, 3, 4), 500, np.uint16)
    ds = xr.Dataset({b: (dims, data) for b in ["B02", "B03", "B04", "B08"]},
                    coords={"time": np.array(["2023-05-01", "2023-05-11"], dtype="datetime64[ns]"),
                            "y": [5170005.0, 5169995.0, 5169985.0], "x": [700005.0, 700015.0, 700025.0, 700035.0]},
                    attrs={"crs": "EPSG:32630"})
    if change == "no B08":
        ds = ds.drop_vars("B08")
    elif change == "no crs":
        del ds.attrs["crs"]
    elif change == "numeric time":
        ds = ds.assign_coords(time=[0, 1])
    elif change == "empty":
        ds = ds.isel(time=slice(0, 0))
    ds.to_netcdf(path, engine="h5netcdf")
    return path


@pytest.mark.parametrize("change, message", [
    ("no B08", r"missing band variable\(s\) B8"),
    ("no crs", "no CRS"),
    ("numeric time", "no time coordinate"),
    ("empty", "time series is empty"),
])
def test_bad_netcdf_gives_a_clear_error(tmp_path, change, message):
    path = _small_nc(tmp_path / "bad.nc", change)
    with pytest.raises(CropmapError, match=message) as e:
        open_imagery(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_small_netcdf_reads_dn_as_stored(tmp_path):
    s = open_imagery(_small_nc(tmp_path / "ok.nc"))
    assert s.dates == (dt.date(2023, 5, 1), dt.date(2023, 5, 11)) and s.transform.c == 700000.0
    dn, scl = s.read(1, Window(1, 1, 2, 2))
    assert dn.shape == (4, 2, 2) and dn.dtype == np.uint16 and (dn == 500).all() and scl is None


def test_paths_that_are_not_imagery(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CropmapError, match="not imagery cropmap reads"):
        open_imagery(tmp_path / "notes.txt")
    with pytest.raises(CropmapError, match="does not exist"):
        open_imagery(tmp_path / "missing.zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(CropmapError, match="not a readable Zarr store"):
        open_imagery(tmp_path / "empty.zarr")
    (tmp_path / "broken.nc").write_text("not netcdf")
    with pytest.raises(CropmapError, match="not a readable NetCDF4"):
        open_imagery(tmp_path / "broken.nc")
    write_date(tmp_path / "tifs", dt.date(2023, 5, 1), np.full((4, 3, 3), 100, np.uint16))
    assert len(open_imagery(tmp_path / "tifs")) == 1


@pytest.mark.skipif(not (REALDATA / "raw").is_dir(), reason="real WorldCereal patch not present")
def test_real_worldcereal_patch():
    nc = next((REALDATA / "raw").glob("S2_L2A_10m_*.nc"))
    s = open_imagery(nc)
    ref = np.load(REALDATA / "patch_00002806639B424A.npz")
    assert len(s) == 118 and s.crs.to_epsg() == 32631
    assert s.bounds == tuple(float(v) for v in ref["bounds"])
    for i in (0, 57, 117):
        dn, scl = s.read(i, Window(10, 20, 30, 40))
        assert scl is None  # SCL is in the 20 m file
        np.testing.assert_array_equal(dn, ref["X_TCHW"][i, :, 20:60, 10:40])

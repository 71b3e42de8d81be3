"""One test per bad input of the reliability checklist: through the CLI, the message is one line that
names the file and the problem, the exit status is 2, and the output folder holds nothing afterwards
(hidden temporaries included)."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import torch
import xarray as xr
from conftest import UTM, parcels_frame, write_date
from rasterio.transform import from_origin
from shapely.geometry import Polygon

from cropmap.cli import main
from cropmap.sources.imagery import open_imagery


def _files(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, hidden ones included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def _refused(argv: list[str], out: Path, capsys, *, names: Path | str, says: str) -> str:
    """Run the CLI, expect exit 2 with one line naming ``names`` and saying ``says``, and nothing in ``out``."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"cropmap: error: {names}"), lines[0]
    assert says in lines[0], lines[0]
    assert _files(out) == [], _files(out)
    return lines[0]


def _build(imagery: Path, parcels: Path, out: Path, *extra: str) -> list[str]:
    return ["build", "--imagery", str(imagery), "--parcels", str(parcels), "--out", str(out / "ds.zarr"), *extra]


def _predict(run: Path, imagery: Path, out: Path, *extra: str) -> list[str]:
    return ["predict", "--run", str(run), "--imagery", str(imagery), "--out", str(out / "map.tif"),
            "--window", "48", "--overlap", "24", *extra]


def _dn(value: int = 1000, size: int = 8) -> np.ndarray:
    return np.full((4, size, size), value, np.uint16)


@pytest.fixture
def parcels(tmp_path) -> Path:
    path = tmp_path / "parcels.gpkg"
    parcels_frame([(0, 0, 4, 4), (4, 4, 8, 8)], ["BTH", "MIS"]).to_file(path)
    return path


@pytest.fixture
def out(tmp_path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


# -- missing or unreadable files -------------------------------------------------------------------

@pytest.mark.parametrize("what", ["imagery", "parcels"])
def test_missing_file(what, tmp_path, parcels, out, capsys):
    write_date(tmp_path / "img", dt.date(2023, 5, 1), _dn())
    imagery = tmp_path / ("nope" if what == "imagery" else "img")
    vector = tmp_path / "nope.gpkg" if what == "parcels" else parcels
    missing = imagery if what == "imagery" else vector
    _refused(_build(imagery, vector, out), out, capsys, names=missing, says="does not exist")


def test_unreadable_geotiff(tmp_path, parcels, out, capsys):
    good = write_date(tmp_path / "img", dt.date(2023, 5, 1), _dn())
    bad = tmp_path / "img" / "S2_2023-05-11.tif"
    bad.write_bytes(good.read_bytes()[:300])  # truncated download
    _refused(_build(tmp_path / "img", parcels, out), out, capsys, names=bad, says="truncated")


def test_unreadable_parcels(tmp_path, out, capsys):
    write_date(tmp_path / "img", dt.date(2023, 5, 1), _dn())
    junk = tmp_path / "junk.gpkg"
    junk.write_bytes(b"SQLite format 3\x00" + bytes(200))
    _refused(_build(tmp_path / "img", junk, out), out, capsys, names=junk, says="not a readable vector file")


# -- imagery ------------------------------------------------------------------------------------

def test_imagery_without_the_needed_bands(tmp_path, parcels, out, capsys):
    path = tmp_path / "img" / "S2_2023-05-01.tif"
    path.parent.mkdir()
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=3, dtype="uint16", crs=UTM,
                       transform=from_origin(700000.0, 5170000.0, 10, 10)) as dst:
        for i, name in enumerate(["B2", "B3", "B4"], start=1):
            dst.write(np.full((8, 8), 1000, np.uint16), i)
            dst.set_band_description(i, name)
    _refused(_build(tmp_path / "img", parcels, out), out, capsys, names=path, says="missing band(s) B8")


def test_scenes_on_different_grids_are_refused_with_a_reason(tmp_path, parcels, out, capsys):
    write_date(tmp_path / "img", dt.date(2023, 5, 1), _dn())
    other = write_date(tmp_path / "img", dt.date(2023, 5, 11), _dn(), origin=(700005.0, 5170000.0))  # half a pixel off
    line = _refused(_build(tmp_path / "img", parcels, out), out, capsys, names=other, says="grid differs from")
    assert "resample all dates onto one grid" in line


def test_float_reflectance_geotiff_is_refused(tmp_path, parcels, out, capsys):
    path = tmp_path / "img" / "S2_2023-05-01.tif"
    path.parent.mkdir()
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=4, dtype="float32", crs=UTM,
                       transform=from_origin(700000.0, 5170000.0, 10, 10)) as dst:
        dst.write(np.full((4, 8, 8), np.nan, np.float32))
    _refused(_build(tmp_path / "img", parcels, out), out, capsys, names=path, says="bands are float32")


def _netcdf(path: Path, refl: np.ndarray, start: dt.date = dt.date(2023, 3, 1)) -> Path:
    """A CF NetCDF of float reflectance ``[T, 4, H, W]`` (NaN/Inf allowed) on the UTM test grid."""
    t, _, h, w = refl.shape
    dims = ("time", "y", "x")
    ds = xr.Dataset({b: (dims, refl[:, k]) for k, b in enumerate(["B02", "B03", "B04", "B08"])},
                    coords={"time": np.array([np.datetime64(start + dt.timedelta(10 * i), "ns") for i in range(t)]),
                            "y": 5170000.0 - 10 * (np.arange(h) + 0.5), "x": 700000.0 + 10 * (np.arange(w) + 0.5)},
                    attrs={"crs": UTM})
    ds.to_netcdf(path, engine="h5netcdf")
    return path


SIDE = 40  # px of the tiny scene's corner put in the NetCDF files below


def _scene_reflectance(tiny_scene) -> np.ndarray:
    """``[T, 4, SIDE, SIDE]`` float reflectance of the tiny scene's top-left corner (NaN where nodata)."""
    stack = open_imagery(tiny_scene.imagery)
    win = rasterio.windows.Window(0, 0, SIDE, SIDE)
    dn = np.stack([stack.read(i, win)[0] for i in range(len(stack))]).astype(np.float64)
    return np.where(dn > 0, dn / 1e4, np.nan)


def _scene_netcdf(tiny_scene, refl: np.ndarray, path: Path) -> Path:
    """``refl`` on the tiny scene's grid and dates as a CF NetCDF (no SCL: NaN marks what is not seen)."""
    stack = open_imagery(tiny_scene.imagery)
    t, dims = stack.transform, ("time", "y", "x")
    ds = xr.Dataset({b: (dims, refl[:, k]) for k, b in enumerate(["B02", "B03", "B04", "B08"])},
                    coords={"time": np.array([np.datetime64(d, "ns") for d in stack.dates]),
                            "y": t.f + t.e * (np.arange(SIDE) + 0.5), "x": t.c + t.a * (np.arange(SIDE) + 0.5)},
                    attrs={"crs": stack.crs.to_wkt()})
    ds.to_netcdf(path, engine="h5netcdf")
    return path


def test_nan_and_inf_reflectances_are_nodata_not_values(tmp_path):
    refl = np.full((2, 4, 3, 3), 0.12)
    refl[:, 0, 0, 0] = np.nan
    refl[:, 2, 1, 1] = np.inf
    refl[0, 3, 2, 2] = -np.inf
    dn, _ = open_imagery(_netcdf(tmp_path / "x.nc", refl)).read(0)
    assert dn.dtype == np.uint16
    # a pixel with any non-finite band is nodata (0) in that band; the others read as DN
    assert dn[0, 0, 0] == 0 and dn[2, 1, 1] == 0 and dn[3, 2, 2] == 0
    assert (dn[1] == 1200).all()


def test_out_of_range_reflectance_is_refused(tiny_run, tiny_scene, tmp_path, out, capsys):
    refl = _scene_reflectance(tiny_scene)
    refl[3, 0, 5, 5] = 3.0  # reflectance 3: a wrong scale, not a bright field
    nc = _scene_netcdf(tiny_scene, refl, tmp_path / "scene.nc")
    _refused(_predict(tiny_run, nc, out), out, capsys, names=nc, says="reflectance DN above 20000")


# -- parcels ------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:.crs. was not provided")
def test_crs_less_vector(tmp_path, out, capsys):
    write_date(tmp_path / "img", dt.date(2023, 5, 1), _dn())
    path = tmp_path / "nocrs.gpkg"
    pyogrio.write_dataframe(parcels_frame([(0, 0, 4, 4)], ["BTH"]).set_crs(None, allow_override=True), path)
    _refused(_build(tmp_path / "img", path, out), out, capsys, names=path, says="the parcels have no CRS")


def test_no_overlap_between_parcels_and_imagery(tmp_path, out, capsys):
    write_date(tmp_path / "img", dt.date(2023, 5, 1), _dn())
    far = tmp_path / "far.gpkg"
    parcels_frame([(0, 0, 4, 4)], ["BTH"], origin=(900000.0, 5000000.0)).to_file(far)
    _refused(_build(tmp_path / "img", far, out), out, capsys, names=far, says="no parcel overlaps the imagery")


@pytest.fixture(scope="module")
def flawed_build(tiny_scene, tmp_path_factory):
    """``cropmap build`` on the tiny scene's parcels plus a bow-tie, an empty, a zero-area and a point
    geometry, and two parcels with codes no table knows: (exit status, stdout, stderr)."""
    import geopandas as gpd

    root = tmp_path_factory.mktemp("flawed")
    gdf = gpd.read_file(tiny_scene.parcels)
    x0, y0, _, _ = gdf.total_bounds
    odd = gdf.iloc[:6].copy()
    odd["ID_PARCEL"] = [f"odd{i}" for i in range(6)]
    odd["geometry"] = [
        Polygon([(x0, y0), (x0 + 100, y0 + 100), (x0 + 100, y0), (x0, y0 + 100)]),  # bow-tie: repaired
        Polygon(),  # empty: dropped
        Polygon([(x0, y0), (x0 + 50, y0), (x0 + 100, y0)]),  # zero area: dropped
        gdf.geometry.iloc[0].centroid,  # a point: dropped
        gdf.geometry.iloc[1], gdf.geometry.iloc[2],
    ]
    odd["CODE_CULTU"] = ["BTH", "BTH", "BTH", "BTH", "ZZ1", "ZZ1"]
    path = root / "parcels.gpkg"
    layer = pyogrio.list_layers(tiny_scene.parcels)[0][0]
    pyogrio.write_dataframe(pd.concat([gdf, odd], ignore_index=True), path, layer=layer)
    # under pytest the root logger has handlers already, so main() adds none: catch cropmap's warnings here
    err, out = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    logging.getLogger("cropmap").addHandler(handler)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = main(["build", "--imagery", str(tiny_scene.imagery), "--parcels", str(path),
                       "--out", str(root / "ds.zarr"), "--patch-size", "32", "--seed", "1"])
    finally:
        logging.getLogger("cropmap").removeHandler(handler)
    return rc, out.getvalue(), err.getvalue(), path


def test_invalid_and_empty_geometries_are_repaired_or_dropped_and_counted(flawed_build):
    rc, _, err, path = flawed_build
    assert rc == 0, err
    assert f"{path}: repaired 1 invalid parcel geometries" in err
    assert f"{path}: dropped 1 parcel(s) with empty geometry" in err
    assert f"{path}: dropped 2 parcel(s) without area" in err


def test_unknown_crop_codes_are_reported_with_counts(flawed_build):
    rc, stdout, err, path = flawed_build
    assert rc == 0, err
    assert "2 left unlabelled (codes ZZ1)" in stdout
    assert f"{path}: 1 crop code(s) not in the RPG code table left unlabelled" in err and "ZZ1 (2," in err


def test_dataset_too_small_to_split(tiny_scene, out, capsys):
    _refused(_build(tiny_scene.imagery, tiny_scene.parcels, out, "--patch-size", "64"), out, capsys,
             names=tiny_scene.imagery, says="too small to split")


# -- prediction ---------------------------------------------------------------------------------

def test_pixels_without_a_valid_observation_are_nodata(tiny_run, tiny_scene, tmp_path, out, capsys):
    """NaN and Inf reflectances in a NetCDF source: pixels never validly observed map to 255, never a class."""
    refl = _scene_reflectance(tiny_scene)
    refl[:, :, :6, :6] = np.nan  # no observation at all
    refl[:, 1, 6:9, :6] = np.inf  # one band infinite on every date
    nc = _scene_netcdf(tiny_scene, refl, tmp_path / "nan.nc")
    assert main(_predict(tiny_run, nc, out, "--confidence", "--no-quicklook")) == 0
    with rasterio.open(out / "map.tif") as m, rasterio.open(out / "map.confidence.tif") as c:
        cls, conf = m.read(1), c.read(1)
    assert (cls[:9, :6] == 255).all() and (conf[:9, :6] == 255).all()
    cls[:9, :6] = 0
    assert (cls != 255).all()  # everything else was observed (through the scene's own clouds) and has a class
    assert f"{9 * 6:,} without observation" in capsys.readouterr().out
    assert not [f for f in _files(out) if f.startswith(".")]


def _foreign_checkpoint(run: Path, folder: Path, change: str) -> Path:
    d = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    if change == "bands":
        d["bands"] = [*d["bands"], "B11"]
        d["norm"] = {k: [*v, v[-1]] for k, v in d["norm"].items()}
    else:  # the weights of this model with the class table of another (one class fewer)
        t = d["class_table"]
        n = len(t["names"])
        for key, value in list(t.items()):
            if isinstance(value, list) and len(value) == n:
                t[key] = value[:-1]
    folder.mkdir()
    torch.save(d, folder / "model.pt")
    return folder / "model.pt"


@pytest.mark.parametrize("change, says", [("bands", "the model's bands B2, B3, B4, B8, B11 differ from the imagery's"),
                                          ("classes", "the weights do not fit")])
def test_checkpoint_from_another_band_set_or_class_table(tiny_run, tiny_scene, tmp_path, out, capsys, change, says):
    ckpt = _foreign_checkpoint(tiny_run, tmp_path / "foreign", change)
    _refused(_predict(tmp_path / "foreign", tiny_scene.imagery, out), out, capsys, names=ckpt, says=says)


def test_stale_temporaries_of_a_killed_predict_are_removed(tiny_run, tiny_scene, tmp_path, out, capsys):
    dead = os.getpid() + 2**22  # above pid_max on Linux by default: never a live process
    stale = [out / f".map.tif.{dead}.abcd1234.tmp", out / f".map.tif.{dead}.efgh5678.tmp.tif"]
    stale[0].mkdir()
    (stale[0] / "map.tif").write_bytes(b"half a map")
    stale[1].write_bytes(b"half a COG")
    mine = out / f".map.tif.{os.getpid()}.ijkl9012.tmp"  # a live writer's (this process): left alone
    mine.mkdir()
    nc = _scene_netcdf(tiny_scene, _scene_reflectance(tiny_scene), tmp_path / "corner.nc")
    assert main(_predict(tiny_run, nc, out, "--no-quicklook")) == 0
    assert _files(out) == sorted(["map.tif", "map.qml", "map.tif.aux.xml", mine.name])


# -- credentials ----------------------------------------------------------------------------------

def test_urls_inside_error_texts_are_redacted():
    """GDAL and HTTP errors quote the URL they failed on, signed-URL tokens and user:password included."""
    from affine import Affine
    from rasterio.crs import CRS

    from cropmap.errors import CropmapError
    from cropmap.sources.http import redact, redact_text
    from cropmap.sources.stac import _read_warped

    text = "HTTP 403 on https://u:pw@h.example/a.tif?sig=SECRET&se=2030 (retry /vsicurl/https://h/b.tif?token=SECRET)"
    assert "SECRET" not in redact_text(text) and "pw" not in redact_text(text)
    assert redact_text(text).startswith("HTTP 403 on https://h.example/a.tif")
    assert redact("/vsicurl/https://u:pw@h.example/a.tif?sig=SECRET") == "/vsicurl/https://h.example/a.tif"
    href = "/vsicurl/https://u:pw@127.0.0.1:9/a.tif?sig=SECRET"  # nothing listens on port 9: fails at once
    with pytest.raises(CropmapError) as e:
        _read_warped(href, CRS.from_epsg(32631), Affine(10, 0, 0, 0, -10, 0), 4, 4, 0)
    assert "SECRET" not in str(e.value) and "pw@" not in str(e.value) and "127.0.0.1" in str(e.value)

"""fetch-imagery offline: a static STAC catalog (collection-1 style items, tiled GeoTIFF assets with the +1000
BOA offset) served by a tiny STAC API on 127.0.0.1, assets over HTTP with Range (what GDAL's /vsicurl/ reads),
so the earth-search code path runs unchanged."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds

from conftest import ORIGIN, UTM, parcels_frame
from cropmap.cli import main
from cropmap.errors import CropmapError
from cropmap.sources import stac
from cropmap.sources.fetch import fetch_imagery
from cropmap.sources.grid import solar_day, target_grid
from cropmap.sources.stac import Harmonization, harmonization, harmonize
from cropmap.sources.zarr_cube import open_cube
from localserver import LocalServer

X0, Y0 = ORIGIN
# the area: 60 x 40 px of 10 m from the test origin, in UTM 30N
BBOX = (X0, Y0 - 400, X0 + 600, Y0)
BAND_OFFSET = {"raster:bands": [{"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": -0.1}]}
SCL_META = {"raster:bands": [{"nodata": 0, "data_type": "uint8"}]}


def _tif(path: Path, data: np.ndarray, res: float, origin: tuple[float, float]) -> None:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype, crs=UTM, transform=from_origin(*origin, res, res), nodata=0,
                       tiled=True, blockxsize=16, blockysize=16) as dst:
        dst.write(data, 1)


def _item(root: Path, item_id: str, when: str, cloud: float, raw: np.ndarray, scl: np.ndarray,
          origin: tuple[float, float]) -> dict:
    """One collection-1 item: four 10 m bands (``raw [4, H, W]``, stored DN with the +1000 offset) and a 20 m SCL."""
    folder = root / "data" / item_id
    folder.mkdir(parents=True)
    assets = {}
    for b, key in enumerate(stac.ASSETS):
        _tif(folder / f"{key}.tif", raw[b], 10, origin)
        assets[key] = {"href": f"{{base}}/data/{item_id}/{key}.tif", "type": "image/tiff; application=geotiff", **BAND_OFFSET}
    _tif(folder / "scl.tif", scl, 20, origin)
    assets["scl"] = {"href": f"{{base}}/data/{item_id}/scl.tif", "type": "image/tiff; application=geotiff", **SCL_META}
    h, w = raw.shape[1:]
    left, top = origin
    lon0, lat0, lon1, lat1 = transform_bounds(UTM, "EPSG:4326", left, top - h * 10, left + w * 10, top)
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": stac.COLLECTION,
            "bbox": [lon0, lat0, lon1, lat1],
            "geometry": {"type": "Polygon", "coordinates": [[[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1],
                                                              [lon0, lat0]]]},
            "properties": {"datetime": when, "eo:cloud_cover": cloud, "s2:processing_baseline": "05.09",
                           "proj:epsg": 32630},
            "links": [], "assets": assets}


def _raw(value: int) -> np.ndarray:
    """[4, 40, 40] stored DN: band b holds value + b."""
    return (np.full((4, 40, 40), value, np.uint16) + np.arange(4, dtype=np.uint16)[:, None, None])


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    """Tile A (40 x 40 px at the origin) and tile B (same size, 20 px east, overlapping A's east half) on
    2023-06-01, eleven seconds apart; A alone on 2023-06-06; a 95 % cloudy A on 2023-06-11."""
    root = tmp_path_factory.mktemp("stac")
    a1 = _raw(1500)
    a1[:, 0, 0] = 1000  # reflectance 0 -> kept valid as DN 1
    a1[:, 0, 1] = 900  # below the offset -> DN 1, not nodata
    a1[:, 5, 25] = 0  # nodata in A inside the overlap: B fills it
    scl_a = np.full((20, 20), 4, np.uint8)
    scl_a[1, 1] = 9  # covers 10 m rows 2-3, cols 2-3
    items = [
        _item(root, "S2B_30TXX_20230601_0_L2A", "2023-06-01T10:56:20Z", 10.0, a1, scl_a, (X0, Y0)),
        _item(root, "S2B_30TYY_20230601_0_L2A", "2023-06-01T10:56:31Z", 20.0, _raw(2500),
              np.full((20, 20), 5, np.uint8), (X0 + 200, Y0)),
        _item(root, "S2A_30TXX_20230606_0_L2A", "2023-06-06T11:06:00Z", 5.0, _raw(3000),
              np.full((20, 20), 8, np.uint8), (X0, Y0)),
        _item(root, "S2B_30TXX_20230611_0_L2A", "2023-06-11T10:56:00Z", 95.0, _raw(4000),
              np.full((20, 20), 9, np.uint8), (X0, Y0)),
    ]
    (root / "items").mkdir()
    for it in items:
        it["links"] = [{"rel": "collection", "href": "../collection.json"}, {"rel": "root", "href": "../catalog.json"}]
        (root / "items" / f"{it['id']}.json").write_text(json.dumps(it))
    (root / "collection.json").write_text(json.dumps({
        "type": "Collection", "stac_version": "1.0.0", "id": stac.COLLECTION, "description": "test", "license": "proprietary",
        "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
        "links": [{"rel": "item", "href": f"items/{it['id']}.json"} for it in items]}))
    (root / "catalog.json").write_text(json.dumps({
        "type": "Catalog", "stac_version": "1.0.0", "id": "test", "description": "test",
        "links": [{"rel": "child", "href": "collection.json"}]}))
    return root


def stac_api(root: Path):
    """The STAC API routes over the static catalog at ``root``: landing page and POST /search (bbox and
    datetime filtered here; the query, cloud cover, left to the client as some servers do)."""

    def route(handler, path, q):
        srv = handler.server
        base = srv.url
        if path == "/" and handler.command == "GET":
            body = {"type": "Catalog", "stac_version": "1.0.0", "id": "test-api", "description": "test",
                    "conformsTo": ["https://api.stacspec.org/v1.0.0/core",
                                   "https://api.stacspec.org/v1.0.0/item-search",
                                   "https://api.stacspec.org/v1.0.0/item-search#query"],
                    "links": [{"rel": "self", "href": base}, {"rel": "root", "href": base},
                              {"rel": "search", "href": f"{base}/search", "method": "POST",
                               "type": "application/geo+json"}]}
            return 200, "application/json", json.dumps(body).encode()
        if path != "/search" or handler.command != "POST":
            return None
        srv.searches += 1
        if srv.search_fail:
            srv.search_fail -= 1
            return srv.fail_status, "text/plain", b"failing"
        body = json.loads(handler.body)
        start, end = (np.datetime64(t.rstrip("Z")) for t in body["datetime"].split("/"))
        w, s, e, n = body["bbox"]
        feats = []
        for p in sorted((root / "items").glob("*.json")):  # a walk of the static catalog
            it = json.loads(p.read_text().replace("{base}", base))
            t = np.datetime64(it["properties"]["datetime"].rstrip("Z"))
            x0, y0, x1, y1 = it["bbox"]
            if (it["collection"] in body["collections"] and start <= t <= end
                    and x0 <= e and w <= x1 and y0 <= n and s <= y1):
                feats.append(it)
        return 200, "application/geo+json", json.dumps({"type": "FeatureCollection", "features": feats,
                                                        "links": []}).encode()

    return route


@pytest.fixture
def api(catalog):
    with LocalServer() as srv:
        srv.searches, srv.search_fail, srv.fail_status = 0, 0, 503
        srv.routes.append(stac_api(catalog))
        for f in (catalog / "data").rglob("*.tif"):
            srv.files["/" + f.relative_to(catalog).as_posix()] = f.read_bytes()
        yield srv


def _url(srv: LocalServer) -> str:
    return srv.url


def _fetch(srv, out, **kw):
    kw = {"bbox_crs": UTM, "crs": "utm", "start": "2023-06-01", "end": "2023-06-30", "stac_url": _url(srv),
          "backoff": 0.01, **kw}
    return fetch_imagery(BBOX, out, **kw)


def test_harmonized_mosaic_by_solar_day(api, tmp_path):
    s = _fetch(api, tmp_path / "cube.zarr")
    assert s.dates == [dt.date(2023, 6, 1), dt.date(2023, 6, 6)]  # the 95 % cloudy date is left out
    assert s.n_items == 3 and s.skipped == 0
    assert (s.crs, s.transform, s.width, s.height) == (CRS.from_epsg(32630), Affine(10, 0, X0, 0, -10, Y0), 60, 40)
    ds = xr.open_zarr(tmp_path / "cube.zarr", mask_and_scale=False)
    assert ds["dn"].dtype == np.uint16 and ds["dn"].shape == (2, 4, 40, 60)
    assert list(ds["time"].values) == [np.datetime64("2023-06-01T10:56:20"), np.datetime64("2023-06-06T11:06:00")]
    dn, scl = ds["dn"].values, ds["scl"].values
    b = np.arange(4)
    np.testing.assert_array_equal(dn[0, :, 10, 10], 500 + b)  # A only: stored 1500 + b, offset removed
    np.testing.assert_array_equal(dn[0, :, 5, 30], 500 + b)  # overlap: the less cloudy A wins
    np.testing.assert_array_equal(dn[0, :, 5, 25], 1500 + b)  # A has nodata there: B fills it
    np.testing.assert_array_equal(dn[0, :, 5, 50], 1500 + b)  # B only
    np.testing.assert_array_equal(dn[0, :, 0, 0], 1)  # reflectance 0 stays valid
    np.testing.assert_array_equal(dn[0, :, 0, 1], 1)  # below the offset: clipped to 1, not nodata
    np.testing.assert_array_equal(dn[1, :, 10, 10], 2000 + b)
    np.testing.assert_array_equal(dn[1, :, :, 40:], 0)  # no tile east of A on 06-06: nodata
    assert scl[0, 10, 10] == 4 and scl[0, 5, 25] == 5 and scl[0, 5, 50] == 5 and scl[0, 5, 30] == 4
    np.testing.assert_array_equal(scl[0, 2:4, 2:4], 9)  # one 20 m SCL pixel -> 2 x 2 at 10 m (nearest)
    assert scl[0, 1, 2] == 4 and scl[0, 4, 2] == 4
    assert scl[1, 10, 10] == 8 and (scl[1, :, 40:] == 0).all()
    stack = open_cube(tmp_path / "cube.zarr")  # the readers accept it
    assert stack.crs == CRS.from_epsg(32630)
    # the pixels came over HTTP, in ranges of the tiled GeoTIFFs, as from a cloud bucket
    ranged = [r for path, r in api.log if path.startswith("/data/") and r]
    assert ranged and all(r.startswith("bytes=") for r in ranged)


def test_lambert93_grid_and_build(api, tmp_path, capsys):
    out = tmp_path / "l93.zarr"
    rc = main(["fetch-imagery", "--bbox", *map(str, BBOX), "--bbox-crs", UTM, "--start", "2023-06-01",
               "--end", "2023-06-30", "--out", str(out), "--stac-url", _url(api)])
    assert rc == 0, capsys.readouterr().err
    assert "2 dates" in capsys.readouterr().out
    ds = xr.open_zarr(out, mask_and_scale=False)
    crs, t, w, h = target_grid(BBOX, UTM, "EPSG:2154")
    assert crs == CRS.from_epsg(2154) and CRS.from_user_input(ds.attrs["crs"]) == crs
    assert Affine(*ds.attrs["transform"]) == t and t.a == 10 and t.e == -10 and t.c % 10 == 0 and t.f % 10 == 0
    assert ds.sizes["x"] == w and ds.sizes["y"] == h
    x0, y0, x1, y1 = transform_bounds(UTM, crs, *BBOX)
    assert t.c <= x0 < t.c + 10 and t.f - 10 < y1 <= t.f and x1 <= t.c + 10 * w and y0 >= t.f - 10 * h
    # warped, not aligned: every valid pixel still holds one of the tiles' harmonized values
    vals = set(np.unique(ds["dn"].values[0, 0]).tolist())
    assert vals <= {0, 1, 500, 1500} and {500, 1500} <= vals
    parcels = tmp_path / "parcels.gpkg"
    parcels_frame([(5, 5, 15, 20), (20, 5, 35, 20), (5, 35, 15, 55), (20, 35, 35, 55)],
                  ["BTH", "MIS", "PPH", "BTH"]).to_file(parcels, layer="PARCELLES_GRAPHIQUES")
    rc = main(["build", "--imagery", str(out), "--parcels", str(parcels), "--out", str(tmp_path / "ds.zarr"),
               "--patch-size", "16"])
    assert rc == 0, capsys.readouterr().err
    assert "patches" in capsys.readouterr().out


def test_resume_after_interrupted_write(api, tmp_path, monkeypatch):
    out = tmp_path / "cube.zarr"
    real, calls = stac.read_day, []

    def flaky(items, *args):
        calls.append(items[0].id)
        if len(calls) == 2:
            raise CropmapError("connection lost")
        return real(items, *args)

    monkeypatch.setattr(stac, "read_day", flaky)
    with pytest.raises(CropmapError, match="connection lost"):
        _fetch(api, out)
    assert xr.open_zarr(out)["written"].values.all(axis=(1, 2)).tolist() == [True, False]
    with pytest.raises(CropmapError, match="incomplete cube"):
        open_cube(out)
    s = _fetch(api, out)
    assert s.skipped == 1 and calls == [calls[0], calls[1], calls[1]]  # only the missing date was read again
    ds = xr.open_zarr(out, mask_and_scale=False)
    assert ds["written"].values.all()
    np.testing.assert_array_equal(ds["dn"].values[1, :, 10, 10], 2000 + np.arange(4))
    with pytest.raises(CropmapError, match="already exists"):
        _fetch(api, out)
    assert _fetch(api, out, overwrite=True).skipped == 0


def test_retries_then_clear_errors(api, tmp_path, capsys):
    api.search_fail = 2
    assert _fetch(api, tmp_path / "a.zarr").n_items == 3  # two 503s, retried
    assert api.searches == 3
    api.search_fail, api.fail_status = 1, 404
    with pytest.raises(CropmapError, match="STAC search failed"):
        _fetch(api, tmp_path / "b.zarr", retries=1)
    rc = main(["fetch-imagery", "--bbox", *map(str, BBOX), "--bbox-crs", UTM, "--start", "2023-07-01",
               "--end", "2023-07-31", "--out", str(tmp_path / "c.zarr"), "--stac-url", _url(api)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("cropmap: error: no sentinel-2-c1-l2a item") and err.count("\n") == 1
    with pytest.raises(CropmapError, match="STAC search failed after"):
        _fetch(api, tmp_path / "d.zarr",
               stac_url="http://127.0.0.1:9", retries=0)


def test_solar_day_and_harmonization():
    assert solar_day(dt.datetime(2023, 6, 1, 23, 30, tzinfo=dt.timezone.utc), 30.0) == dt.date(2023, 6, 2)
    assert solar_day(dt.datetime(2023, 6, 2, 0, 30), -30.0) == dt.date(2023, 6, 1)
    h = Harmonization(1.0, -1000.0, 0)
    np.testing.assert_array_equal(harmonize(np.array([0, 1, 1000, 1001, 11000], np.uint16), h), [0, 1, 1, 1, 10000])

    class Item:  # the fields harmonization reads
        def __init__(self, props, meta):
            self.properties = props
            self.assets = {"red": type("A", (), {"extra_fields": meta})()}

    assert harmonization(Item({}, BAND_OFFSET), "red") == Harmonization(1.0, -1000.0, 0)
    assert harmonization(Item({"s2:processing_baseline": "05.10"}, {}), "red").shift == -1000.0
    assert harmonization(Item({"s2:processing_baseline": "03.01"}, {}), "red").shift == 0.0
    assert harmonization(Item({"earthsearch:boa_offset_applied": True}, BAND_OFFSET), "red").shift == 0.0


def test_dates_in_parallel_threads_and_cluster(api, tmp_path):
    from dask.distributed import LocalCluster

    _fetch(api, tmp_path / "seq.zarr")
    _fetch(api, tmp_path / "threads.zarr", workers=2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        _fetch(api, tmp_path / "dask.zarr", dask_address=cluster.scheduler_address)
    ref = xr.open_zarr(tmp_path / "seq.zarr", mask_and_scale=False)
    for name in ("threads.zarr", "dask.zarr"):
        ds = xr.open_zarr(tmp_path / name, mask_and_scale=False)
        for v in ("dn", "scl", "written", "time"):
            np.testing.assert_array_equal(ds[v].values, ref[v].values, err_msg=f"{name} {v}")


def test_departement_instead_of_bbox(api, tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    from cropmap.sources.departements import departement_bbox

    outline = tmp_path / "DEPARTEMENT.gpkg"  # an ADMIN-EXPRESS-like layer; the outline is the test area
    gpd.GeoDataFrame({"INSEE_DEP": ["29"]}, geometry=[box(*BBOX)], crs=UTM).to_file(outline)
    s = fetch_imagery(None, tmp_path / "d.zarr", departement="29", boundaries=outline, crs="utm",
                      start="2023-06-01", end="2023-06-30", stac_url=_url(api), backoff=0.01)
    l93 = departement_bbox("29", outline)
    assert (s.crs, s.transform, s.width, s.height) == target_grid(l93, "EPSG:2154", "utm")
    assert s.width > 60 + 2 * 100 - 2  # the 1 km margin on both sides


def test_unresolvable_stac_host_fails_fast(tmp_path, monkeypatch):
    import socket

    def no_dns(*a, **kw):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr("time.sleep", lambda s: None)
    with pytest.raises(CropmapError, match="cannot resolve the host"):
        fetch_imagery(BBOX, tmp_path / "c.zarr", bbox_crs=UTM, start="2023-06-01", end="2023-06-30",
                      stac_url="https://stac.example.invalid/v1")
    assert not (tmp_path / "c.zarr").exists()

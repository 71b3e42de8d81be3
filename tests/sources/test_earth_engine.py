"""fetch-imagery --source earth-engine without Earth Engine: everything after xee's read (masking, DN,
the resumable cube) runs on synthetic Datasets shaped like xee's output; the initialization errors are
the real ones of an uninstalled or unauthenticated ``ee``. The real earthengine-api runs against a fake
Earth Engine REST service on 127.0.0.1 that replays recorded answers (the algorithm list and discovery
document shipped with earthengine-api, acquisition times); the expression graphs it builds are asserted
node by node, and only xee's pixel read is replaced, by a recorded Dataset."""

from __future__ import annotations

import datetime as dt
import http.server
import inspect
import json
import os
import sys
import threading

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from affine import Affine
from rasterio.crs import CRS

from cropmap.cli import main
from cropmap.errors import CropmapError
from cropmap.sources import earth_engine
from cropmap.sources.earth_engine import initialize, step_arrays, write_ee_cube
from cropmap.sources.zarr_cube import open_cube

CRS_L93 = CRS.from_epsg(2154)
T = Affine(10, 0, 600000, 0, -10, 6800000)
W, H = 6, 4
TIMES = [dt.datetime(2023, 5, 2, 10, 56), dt.datetime(2023, 5, 7, 11, 6), dt.datetime(2023, 5, 12, 10, 56)]


def xee_like(n: int = 3, *, cs: bool = True, times=TIMES) -> xr.Dataset:
    """What xee 0.1 returns for the day mosaics: float bands on (time, y, x), NaN where Earth Engine masked,
    pixel-centre coordinates on the requested grid (y north to south)."""
    b = np.arange(4, dtype=np.float64)[:, None, None, None]
    t = np.arange(n, dtype=np.float64)[None, :, None, None]
    vals = 1000 + 100 * b + 10 * t + np.zeros((4, n, H, W))  # [band, time, y, x]
    vals[:, :, 0, 0] = np.nan  # outside every tile that day
    vals[2, 0, 0, 1] = np.nan  # one band masked: the pixel is nodata
    vals[:, 0, 1, 1] = 0.0  # a 0 DN counts as nodata too
    vals[0, 0, 1, 2] = 123.6  # rounded
    data = {name: (("time", "y", "x"), vals[i]) for i, name in enumerate(earth_engine.EE_BANDS)}
    if cs:
        score = np.full((n, H, W), 0.9)
        score[:, 2, 3] = 0.59  # just below the default threshold: cloud
        score[:, 2, 4] = 0.6  # at the threshold: clear
        score[:, 3, 5] = np.nan  # no score
        data["cs_cdf"] = (("time", "y", "x"), score)
    else:
        scl = np.full((n, H, W), 4.0)
        scl[:, 2, 3] = 9.0
        scl[:, 0, 0] = np.nan
        data["SCL"] = (("time", "y", "x"), scl)
    xs = T.c + 10 * (np.arange(W) + 0.5)
    ys = T.f - 10 * (np.arange(H) + 0.5)
    return xr.Dataset(data, coords={"time": pd.to_datetime(times[:n]), "y": ys, "x": xs})


def test_cloud_score_mask_and_dn():
    dn, scl = step_arrays(xee_like().isel(time=0), W, H)
    assert scl is None and dn.dtype == np.uint16 and dn.shape == (4, H, W)
    np.testing.assert_array_equal(dn[:, 3, 0], [1000, 1100, 1200, 1300])  # S2_SR_HARMONIZED: no offset to remove
    assert (dn[:, 0, 0] == 0).all() and (dn[:, 0, 1] == 0).all() and (dn[:, 1, 1] == 0).all()
    assert dn[0, 1, 2] == 124
    assert (dn[:, 2, 3] == 0).all() and (dn[:, 2, 4] > 0).all() and (dn[:, 3, 5] == 0).all()
    dn_strict, _ = step_arrays(xee_like().isel(time=0), W, H, cs_threshold=0.95)
    assert (dn_strict == 0).all()  # every score is below 0.95


def test_scl_mask_and_other_layouts():
    ds = xee_like(cs=False).isel(time=1)
    dn, scl = step_arrays(ds, W, H, mask="scl")
    assert scl.dtype == np.uint8 and scl[2, 3] == 9 and scl[0, 0] == 0 and (dn[:, 2, 3] > 0).all()
    # (X, Y) names, x before y, y south to north: the same arrays once put north up
    other = ds.rename({"x": "X", "y": "Y"}).transpose("X", "Y").isel(Y=slice(None, None, -1))
    dn2, scl2 = step_arrays(other, W, H, mask="scl")
    np.testing.assert_array_equal(dn2, dn)
    np.testing.assert_array_equal(scl2, scl)
    with pytest.raises(CropmapError, match="lacks band.*SCL"):
        step_arrays(xee_like(cs=True).isel(time=0), W, H, mask="scl")
    with pytest.raises(CropmapError, match="expected 5 x 6 px"):
        step_arrays(ds, W, H + 1, mask="scl")
    with pytest.raises(CropmapError, match="--mask bad"):
        step_arrays(ds, W, H, mask="bad")


def test_cube_written_and_resumed(tmp_path, monkeypatch):
    out = tmp_path / "ee.zarr"
    ds = xee_like()
    real, calls = earth_engine.step_arrays, []

    def flaky(step, *a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise CropmapError("Earth Engine: quota exceeded")
        return real(step, *a, **kw)

    monkeypatch.setattr(earth_engine, "step_arrays", flaky)
    with pytest.raises(CropmapError, match="quota"):
        write_ee_cube(out, ds, TIMES, crs=CRS_L93, transform=T, width=W, height=H)
    assert xr.open_zarr(out)["written"].values.all(axis=(1, 2)).tolist() == [True, False, False]
    write_ee_cube(out, ds, TIMES, crs=CRS_L93, transform=T, width=W, height=H, workers=2)
    assert len(calls) == 4  # the two missing days only
    stack = open_cube(out)
    assert stack.crs == CRS_L93 and stack.transform == T and (stack.height, stack.width) == (H, W)
    cube = xr.open_zarr(out, mask_and_scale=False)
    assert "scl" not in cube  # cs mask: the clouds are already nodata
    np.testing.assert_array_equal(cube["dn"].values[2, :, 3, 0], [1020, 1120, 1220, 1320])
    assert (cube["dn"].values[:, :, 2, 3] == 0).all()
    with pytest.raises(CropmapError, match="2 time steps; expected 3"):
        write_ee_cube(tmp_path / "x.zarr", xee_like(2), TIMES, crs=CRS_L93, transform=T, width=W, height=H)


def test_missing_extra_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ee", None)  # as when earthengine-api is not installed
    with pytest.raises(CropmapError, match=r"needs the gee extra: pip install 'cropmap\[gee\]'"):
        initialize("my-project")


def test_unauthenticated_earth_engine_is_one_line(tmp_path, capsys, monkeypatch):
    pytest.importorskip("ee")
    # no credentials anywhere: the real ee.Initialize fails as on a fresh machine
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("EE_SERVICE_ACCOUNT", raising=False)
    rc = main(["fetch-imagery", "--source", "earth-engine", "--ee-project", "my-project", "--bbox", "600000",
               "6799960", "600060", "6800000", "--bbox-crs", "EPSG:2154", "--start", "2023-05-01", "--end",
               "2023-05-31", "--out", str(tmp_path / "ee.zarr")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "Earth Engine is not authenticated: run `earthengine authenticate` and pass --ee-project" in err
    assert not (tmp_path / "ee.zarr").exists()
    rc = main(["fetch-imagery", "--source", "earth-engine", "--bbox", "600000", "6799960", "600060", "6800000",
               "--bbox-crs", "EPSG:2154", "--start", "2023-05-01", "--end", "2023-05-31", "--out",
               str(tmp_path / "ee.zarr"), "--dask-address", "tcp://127.0.0.1:9"])
    assert rc == 2 and "not on a Dask cluster" in capsys.readouterr().err


# --- the real earthengine-api against a fake Earth Engine on 127.0.0.1 ------------------------------------

# what value:compute answered for aggregate_array("system:time_start"), in collection order: two tiles of
# one pass on 2023-05-02 (10:56:19.024 and 10:56:33.511 UTC), then 2023-05-12 10:56:20, 2023-05-07 11:06:21
RECORDED_STAMPS = [1683024979024, 1683024993511, 1683888980000, 1683457581000]
EE_TIMES = [dt.datetime(2023, 5, 2, 10, 56, 19, 24000), dt.datetime(2023, 5, 7, 11, 6, 21),
            dt.datetime(2023, 5, 12, 10, 56, 20)]
CLI_BBOX = ["600000", "6799960", "600060", "6800000"]  # EPSG:2154: the 6 x 4 grid T above


class FakeEarthEngine:
    """An HTTP server on 127.0.0.1 answering as the Earth Engine REST API would; records every request."""

    def __init__(self, stamps: list[int]):
        import ee

        self.requests: list[tuple[str, str, dict, bytes]] = []
        recorded = os.path.join(os.path.dirname(ee.__file__), "tests")  # shipped with earthengine-api
        with open(os.path.join(recorded, "algorithms.json"), "rb") as f:
            algorithms = f.read()  # ListAlgorithms as recorded by the earthengine-api maintainers
        with open(os.path.join(recorded, "cloud_api_discovery_document.json")) as f:
            discovery = json.load(f)
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, method: str):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.requests.append((method, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                path = self.path.split("?")[0]
                if method == "GET" and path == "/$discovery/rest":
                    # the methods' URLs come from the document: point them here
                    data = json.dumps({**discovery, "rootUrl": fake.url + "/", "baseUrl": fake.url + "/"}).encode()
                elif method == "GET" and path.endswith("/projects/my-project/algorithms"):
                    data = algorithms
                elif method == "GET" and path == "/deprecated-assets.json":
                    data = b'{"links": []}'
                elif method == "POST" and path.endswith("/projects/my-project/value:compute"):
                    data = json.dumps({"result": stamps}).encode()
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.answer("GET")

            def do_POST(self):
                self.answer("POST")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def computed(self) -> list[dict]:
        """The expressions sent to value:compute, references inlined (see :func:`graph`)."""
        return [graph(json.loads(b)["expression"]) for m, p, _, b in self.requests if p.split("?")[0].endswith(
            "value:compute")]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_ee(monkeypatch, request):
    """The real ``ee`` initialized by cropmap's own :func:`initialize` against :class:`FakeEarthEngine`;
    ``request.param`` (default RECORDED_STAMPS) is what value:compute answers."""
    ee = pytest.importorskip("ee")
    pytest.importorskip("xee")
    import google.oauth2.credentials

    fake = FakeEarthEngine(getattr(request, "param", RECORDED_STAMPS))
    monkeypatch.setattr(earth_engine, "EE_HIGH_VOLUME", fake.url)
    monkeypatch.setattr(ee.deprecation, "_DEPRECATED_ASSETS_URL", fake.url + "/deprecated-assets.json")
    # as after `earthengine authenticate`: a token that needs no refresh from Google's OAuth server
    monkeypatch.setattr(ee.data, "get_persistent_credentials",
                        lambda: google.oauth2.credentials.Credentials(token="recorded-token"))
    ee.Reset()
    yield fake
    ee.Reset()
    fake.close()


def graph(encoded: dict):
    """An Earth Engine expression as the Cloud API receives it, with its references inlined: a call becomes
    ``{"fn": name, **arguments}``, a constant its value, a function ``{"args": [...], "body": ...}``."""
    values = encoded["values"]

    def node(v: dict):
        if "constantValue" in v:
            return v["constantValue"]
        if "valueReference" in v:
            return node(values[v["valueReference"]])
        if "arrayValue" in v:
            return [node(x) for x in v["arrayValue"]["values"]]
        if "dictionaryValue" in v:
            return {k: node(x) for k, x in v["dictionaryValue"]["values"].items()}
        if "argumentReference" in v:
            return {"arg": v["argumentReference"]}
        if "functionDefinitionValue" in v:
            f = v["functionDefinitionValue"]
            return {"args": f["argumentNames"], "body": node(values[f["body"]])}
        f = v["functionInvocationValue"]
        return {"fn": f["functionName"], **{k: node(x) for k, x in f.get("arguments", {}).items()}}

    return node(values[encoded["result"]])


def unwrap_filters(coll: dict) -> tuple[dict, list[dict]]:
    """``Collection.filter(...(Collection.filter(base, f1)...), fn)`` -> (base, [f1, ..., fn])."""
    filters = []
    while coll["fn"] == "Collection.filter":
        filters.append(coll["filter"])
        coll = coll["collection"]
    return coll, filters[::-1]


def mapped(coll: dict) -> tuple[dict, dict]:
    """``Collection.map(base, f)`` -> (base, the call f makes on each image)."""
    assert coll["fn"] == "Collection.map"
    fn = coll["baseAlgorithm"]
    assert len(fn["args"]) == 1 and fn["body"]["input"] == {"arg": fn["args"][0]}  # applied to each image
    return coll["collection"], fn["body"]


def date_filter(start, end) -> dict:
    """filterDate(start, end) as the server receives it: start inclusive, end exclusive."""
    return {"fn": "Filter.dateRangeContains", "leftValue": {"fn": "DateRange", "start": start, "end": end},
            "rightField": "system:time_start"}


@pytest.mark.parametrize("mask", ["cs", "scl"])
def test_fetch_through_earth_engine_api(fake_ee, tmp_path, monkeypatch, mask):
    import ee
    from rasterio.warp import transform_bounds
    from xee import EarthEngineBackendEntrypoint

    reads, open_dataset = [], xr.open_dataset

    def xee_read(source, *, engine=None, **grid):
        if engine != "ee":  # not Earth Engine: xarray's own
            return open_dataset(source, engine=engine, **grid)
        # the one boundary left: xee's pixel requests; the answer is a Dataset as xee 0.1 returns it
        reads.append((source, engine, grid))
        return xee_like(cs=mask == "cs", times=EE_TIMES)

    monkeypatch.setattr(xr, "open_dataset", xee_read)
    out = tmp_path / "ee.zarr"
    extra = ["--mask", "scl", "--max-cloud", "30"] if mask == "scl" else ["--cs-threshold", "0.6"]
    rc = main(["fetch-imagery", "--source", "earth-engine", "--ee-project", "my-project", "--bbox", *CLI_BBOX,
               "--bbox-crs", "EPSG:2154", "--start", "2023-05-01", "--end", "2023-05-31", "--out", str(out),
               *extra])
    assert rc == 0

    # every request went to the fake, authorized, for the project given; one computation: the acquisition times
    paths = [(m, p.split("?")[0].rsplit("/", 1)[-1]) for m, p, _, _ in fake_ee.requests]
    assert sorted(set(paths)) == [("GET", "algorithms"), ("GET", "deprecated-assets.json"), ("GET", "rest"),
                                  ("POST", "value:compute")]
    assert paths.count(("POST", "value:compute")) == 1
    compute = next(r for r in fake_ee.requests if "value:compute" in r[1])
    assert compute[1].split("?")[0].endswith("/projects/my-project/value:compute")
    assert compute[2]["authorization"] == "Bearer recorded-token"

    (query,) = fake_ee.computed()
    assert query["fn"] == "AggregateFeatureCollection.array" and query["property"] == "system:time_start"
    search = query["collection"]
    base = search
    if mask == "cs":  # Cloud Score+ joined to each image by system:index, its cs_cdf band only
        base, link = mapped(search)
        assert link["fn"] == "Image.linkCollection" and link["linkedBands"] == ["cs_cdf"]
        assert link["imageCollection"] == {"fn": "ImageCollection.load",
                                           "id": "GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED"}
    load, (bounds, dates, cloud) = unwrap_filters(base)
    assert load == {"fn": "ImageCollection.load", "id": "COPERNICUS/S2_SR_HARMONIZED"}
    rect = bounds["rightValue"]["geometry"]
    assert bounds["fn"] == "Filter.intersects" and rect["fn"] == "GeometryConstructors.Rectangle"
    lonlat = transform_bounds("EPSG:2154", "EPSG:4326", *map(float, CLI_BBOX), densify_pts=21)
    np.testing.assert_allclose(rect["coordinates"], lonlat, rtol=0, atol=1e-12)
    assert rect["crs"] == {"fn": "Projection", "crs": "EPSG:4326"} and rect["geodesic"] is False
    assert dates == date_filter("2023-05-01", "2023-06-01")  # --end 2023-05-31 is inclusive
    # Filter.lte is sent as not(greaterThan): images at exactly --max-cloud are kept
    assert cloud == {"fn": "Filter.not", "filter": {"fn": "Filter.greaterThan",
                                                    "leftField": "CLOUDY_PIXEL_PERCENTAGE",
                                                    "rightValue": 30.0 if mask == "scl" else 80.0}}

    # xee reads the day mosaics of that same collection on the cube's grid
    (ic, engine, grid), = reads
    assert engine == "ee" and isinstance(ic, ee.ImageCollection)
    assert grid == {"crs": "EPSG:2154", "crs_transform": (10.0, 0.0, 600000.0, 0.0, -10.0, 6800000.0),
                    "shape_2d": (W, H)}  # xee's shape_2d is (width, height)
    assert set(grid) <= set(inspect.signature(EarthEngineBackendEntrypoint.open_dataset).parameters)
    mosaics = graph(ee.serializer.encode(ic, for_cloud_api=True))
    assert mosaics["fn"] == "ImageCollection.fromImages"
    bands = ["B2", "B3", "B4", "B8", "cs_cdf" if mask == "cs" else "SCL"]
    days = [(1683024979024, 1683024993511), (1683457581000, 1683457581000), (1683888980000, 1683888980000)]
    assert len(mosaics["images"]) == len(days)
    for image, (first, last) in zip(mosaics["images"], days):
        assert image["fn"] == "Element.set" and image["key"] == "system:time_start" and image["value"] == first
        assert image["object"]["fn"] == "ImageCollection.mosaic"
        selected, select = mapped(image["object"]["collection"])
        assert select["fn"] == "Image.select" and select["bandSelectors"] == bands
        # the most cloudy tile first, so that mosaic() puts the least cloudy on top (sort() is sent as limit)
        assert selected["fn"] == "Collection.limit" and selected["key"] == "CLOUDY_PIXEL_PERCENTAGE"
        assert selected["ascending"] is False and "limit" not in selected
        day = selected["collection"]  # the searched collection, that day's acquisitions only
        assert day == {"fn": "Collection.filter", "collection": search, "filter": date_filter(first, last + 1)}

    # the cube: one step per solar day at its first acquisition, clouds (cs) or SCL kept (scl)
    stack = open_cube(out)
    assert stack.crs == CRS_L93 and stack.transform == T and (stack.height, stack.width) == (H, W)
    cube = xr.open_zarr(out, mask_and_scale=False)
    assert pd.to_datetime(cube["time"].values).to_pydatetime().tolist() == EE_TIMES
    assert cube["written"].values.all()
    np.testing.assert_array_equal(cube["dn"].values[1, :, 3, 0], [1010, 1110, 1210, 1310])
    assert (cube["dn"].values[:, :, 0, 0] == 0).all()
    if mask == "cs":
        assert "scl" not in cube
        assert (cube["dn"].values[:, :, 2, 3] == 0).all() and (cube["dn"].values[:, :, 2, 4] > 0).all()
    else:
        assert cube["scl"].values[0, 2, 3] == 9 and (cube["dn"].values[:, :, 2, 3] > 0).all()


@pytest.mark.parametrize("fake_ee", [[]], indirect=True)
def test_no_image_through_earth_engine_api(fake_ee, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(xr, "open_dataset", lambda *a, **kw: pytest.fail("xee read with no image"))
    rc = main(["fetch-imagery", "--source", "earth-engine", "--ee-project", "my-project", "--bbox", *CLI_BBOX,
               "--bbox-crs", "EPSG:2154", "--start", "2023-05-01", "--end", "2023-05-31", "--out",
               str(tmp_path / "ee.zarr"), "--max-cloud", "5"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "no COPERNICUS/S2_SR_HARMONIZED image over bbox" in err and "from 2023-05-01 to 2023-05-31 with at most 5 %" in err
    assert not (tmp_path / "ee.zarr").exists()
    assert len(fake_ee.computed()) == 1


def test_solar_days():
    from cropmap.sources.earth_engine import group_solar_days

    late = 1683071400000  # 2023-05-02 23:50 UTC: 2023-05-03 in solar time at 15 deg E (+1 h), not at 0 deg
    early = 1683024979024  # 2023-05-02 10:56:19.024 UTC
    assert group_solar_days([late, early], 0.0) == {dt.date(2023, 5, 2): [late, early]}
    assert group_solar_days([late, early], 15.0) == {dt.date(2023, 5, 2): [early], dt.date(2023, 5, 3): [late]}
    assert list(group_solar_days([late, early], 15.0)) == [dt.date(2023, 5, 2), dt.date(2023, 5, 3)]

"""fetch-imagery --source planetary-computer offline: one local server plays the STAC API (a PC-like
``sentinel-2-l2a`` collection), the SAS token endpoint and the blob storage (GeoTIFFs over HTTP with range
requests, refused without a valid token), so signing, token refresh and harmonization run unchanged."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds

from conftest import ORIGIN, UTM
from cropmap.cli import main
from cropmap.errors import CropmapError
from cropmap.sources import stac
from cropmap.sources.pc_sign import KEY_ENV, KEY_HEADER, SasSigner
from cropmap.sources import planetary_computer
from cropmap.sources.fetch import fetch_imagery
from cropmap.sources.stac import baseline_shifted

X0, Y0 = ORIGIN
BBOX = (X0, Y0 - 200, X0 + 200, Y0)  # 20 x 20 px of 10 m
REFLECTANCE = np.array([500, 800, 1200, 3000], np.uint16)  # harmonized DN per band, the same on both dates
KEY = "secret-subscription-key"


def _tif(path: Path, data: np.ndarray, res: float) -> None:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype, crs=UTM, transform=from_origin(X0, Y0, res, res), nodata=0,
                       tiled=True, blockxsize=16, blockysize=16) as dst:
        dst.write(data, 1)


def _item(root: Path, item_id: str, when: str, baseline: str) -> dict:
    """A PC-style item (assets B02..B08 at 10 m, SCL at 20 m; no raster:bands offset): stored DN are the
    harmonized ones, plus 1000 from baseline 04.00 on, as ESA writes them; pixel (0, 0) is nodata."""
    folder = root / "blob" / item_id
    folder.mkdir(parents=True)
    shift = 1000 if baseline_shifted(baseline) else 0
    assets = {}
    for b, key in enumerate(planetary_computer.ASSETS):
        raw = np.full((20, 20), REFLECTANCE[b] + shift, np.uint16)
        raw[0, 0] = 0
        _tif(folder / f"{key}.tif", raw, 10)
        assets[key] = {"href": f"blob/{item_id}/{key}.tif", "type": "image/tiff; application=geotiff"}
    _tif(folder / "SCL.tif", np.full((10, 10), 4, np.uint8), 20)
    assets["SCL"] = {"href": f"blob/{item_id}/SCL.tif", "type": "image/tiff; application=geotiff"}
    lon0, lat0, lon1, lat1 = transform_bounds(UTM, "EPSG:4326", X0, Y0 - 200, X0 + 200, Y0)
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": planetary_computer.COLLECTION,
            "bbox": [lon0, lat0, lon1, lat1],
            "geometry": {"type": "Polygon", "coordinates": [[[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1],
                                                              [lon0, lat0]]]},
            "properties": {"datetime": when, "eo:cloud_cover": 5.0, "s2:processing_baseline": baseline},
            "links": [], "assets": assets}


class Server(http.server.ThreadingHTTPServer):
    root: Path
    items: list[dict]
    valid: set[str]  # signatures the storage accepts
    issued: int = 0
    lifetime = dt.timedelta(hours=1)
    token_status: int = 200
    keys_seen: list
    blob_requests: list  # (path, query) of every storage request


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server

    def log_message(self, *args):
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json", extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        srv, u = self.server, urllib.parse.urlsplit(self.path)
        if u.path.startswith("/token/"):
            srv.keys_seen.append(self.headers.get(KEY_HEADER))
            if srv.token_status != 200:
                return self._send(srv.token_status, b'{"message": "nope"}')
            srv.issued += 1
            sig = f"sig{srv.issued}"
            srv.valid.add(sig)
            expiry = dt.datetime.now(dt.timezone.utc) + srv.lifetime
            body = {"token": f"st=2023-01-01&se=x&sp=rl&sig={sig}",
                    "msft:expiry": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")}
            return self._send(200, json.dumps(body).encode())
        if u.path.startswith("/blob/"):
            srv.blob_requests.append((u.path, u.query))
            sig = urllib.parse.parse_qs(u.query).get("sig", [""])[0]
            if sig not in srv.valid:
                return self._send(403, b"AuthenticationFailed", "text/plain")
            data = (srv.root / u.path.lstrip("/")).read_bytes()
            rng = self.headers.get("Range")
            if rng:  # GDAL reads cloud-optimized GeoTIFFs by byte ranges
                a, b = rng.removeprefix("bytes=").split("-")
                a, b = int(a), min(int(b or len(data) - 1), len(data) - 1)
                return self._send(206, data[a : b + 1], "image/tiff",
                                  {"Content-Range": f"bytes {a}-{b}/{len(data)}", "Accept-Ranges": "bytes"})
            return self._send(200, data, "image/tiff", {"Accept-Ranges": "bytes"})
        base = self._base()
        self._send(200, json.dumps({
            "type": "Catalog", "stac_version": "1.0.0", "id": "pc-test", "description": "test",
            "conformsTo": ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search"],
            "links": [{"rel": "self", "href": base}, {"rel": "root", "href": base},
                      {"rel": "search", "href": f"{base}/search", "method": "POST",
                       "type": "application/geo+json"}]}).encode())

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        base = self._base()
        feats = []
        for it in self.server.items:
            if it["collection"] in body["collections"]:
                it = json.loads(json.dumps(it))
                for a in it["assets"].values():  # absolute hrefs, as PC gives (unsigned)
                    a["href"] = f"{base}/{a['href']}"
                feats.append(it)
        self._send(200, json.dumps({"type": "FeatureCollection", "features": feats, "links": []}).encode())


@pytest.fixture
def pc(tmp_path_factory):
    root = tmp_path_factory.mktemp("pc")
    srv = Server(("127.0.0.1", 0), Handler)
    srv.root, srv.valid, srv.keys_seen, srv.blob_requests = root, set(), [], []
    srv.items = [_item(root, "S2A_MSIL2A_20210610_R051_T30TXX", "2021-06-10T10:56:00Z", "03.01"),
                 _item(root, "S2B_MSIL2A_20230615_R051_T30TXX", "2023-06-15T10:56:00Z", "04.00")]
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}"


def _fetch(srv, out, **kw):
    kw = {"bbox_crs": UTM, "crs": "utm", "start": "2021-01-01", "end": "2023-12-31", "stac_url": _url(srv),
          "token_url": f"{_url(srv)}/token", "source": "planetary-computer", "backoff": 0.01, **kw}
    return fetch_imagery(BBOX, out, **kw)


def test_signed_reads_and_baseline_harmonization(pc, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, KEY)
    caplog.set_level("DEBUG")
    s = _fetch(pc, tmp_path / "cube.zarr")
    assert s.dates == [dt.date(2021, 6, 10), dt.date(2023, 6, 15)]
    dn = xr.open_zarr(tmp_path / "cube.zarr", mask_and_scale=False)["dn"].values  # [2, 4, 20, 20]
    # 03.01 stores the reflectance DN, 04.00 adds 1000: harmonized they are the same
    np.testing.assert_array_equal(dn[0, :, 5, 5], REFLECTANCE)
    np.testing.assert_array_equal(dn[0], dn[1])
    assert (dn[:, :, 0, 0] == 0).all()  # nodata stays 0 on both baselines
    # every storage read was signed with the one cached token; the key went only into the token request
    assert pc.blob_requests and all("sig=sig1" in q for _, q in pc.blob_requests)
    assert pc.issued == 1 and pc.keys_seen == [KEY]
    # our own logs carry neither (rasterio's DEBUG lines do show the signed URLs it opens)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("cropmap"))
    assert KEY not in caplog.text and "sig1" not in ours


def test_expired_token_is_refreshed(pc):
    clock = [dt.datetime.now(dt.timezone.utc)]
    signer = SasSigner("sentinel-2-l2a", f"{_url(pc)}/token", now=lambda: clock[0])
    a = signer.sign("https://example.org/b/x.tif")
    assert a == "https://example.org/b/x.tif?st=2023-01-01&se=x&sp=rl&sig=sig1"
    assert signer.sign("https://example.org/b/y.tif?v=1").endswith("?v=1&st=2023-01-01&se=x&sp=rl&sig=sig1")
    assert signer.sign("/local/file.tif") == "/local/file.tif"
    assert signer.fetches == 1
    clock[0] += dt.timedelta(minutes=59, seconds=30)  # within a minute of the expiry: renewed
    assert signer.sign("https://example.org/b/x.tif").endswith("sig=sig2") and signer.fetches == 2


def test_refused_asset_and_token_explained(pc, tmp_path, capsys):
    pc.lifetime = dt.timedelta(hours=1)
    real = SasSigner.token

    def revoked(self):  # the storage no longer accepts the token it was given
        tok = real(self)
        pc.valid.clear()
        return tok

    SasSigner.token = revoked
    try:
        with pytest.raises(CropmapError) as e:
            _fetch(pc, tmp_path / "a.zarr")
    finally:
        SasSigner.token = real
    msg = str(e.value)
    assert "HTTP 403 Forbidden" in msg and "/blob/" in msg and "sig" not in msg and "\n" not in msg
    pc.token_status = 401
    rc = main(["fetch-imagery", "--source", "planetary-computer", "--bbox", *map(str, BBOX), "--bbox-crs", UTM,
               "--start", "2021-01-01", "--end", "2023-12-31", "--out", str(tmp_path / "b.zarr"),
               "--stac-url", _url(pc), "--token-url", f"{_url(pc)}/token"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no SAS token (HTTP 401" in err and "token/sentinel-2-l2a" in err


def test_baseline_versions():
    assert baseline_shifted("04.00") and baseline_shifted("4") and baseline_shifted("05.10")
    assert baseline_shifted("10.00") and baseline_shifted("04.00.1")
    assert not baseline_shifted("03.01") and not baseline_shifted("3.9") and not baseline_shifted("n/a")
    item = type("I", (), {"id": "x", "properties": {}})()
    with pytest.raises(CropmapError, match="no s2:processing_baseline"):
        stac.baseline_harmonization(item, "B02")

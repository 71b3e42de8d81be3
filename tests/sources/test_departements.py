"""fetch-parcels --departement offline with a --boundaries file (the WFS outline is in test_rpg_fetch): a france-geojson-like boundaries file (synthetic outlines, real
layout: WGS84 GeoJSON with ``code``/``nom``) served from 127.0.0.1, or an ADMIN-EXPRESS-like GeoPackage."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import geopandas as gpd
import py7zr
import pyogrio
import pytest
from shapely.geometry import box

from conftest import parcels_frame
from cropmap.cli import main
from cropmap.errors import CropmapError
from cropmap.sources.departements import departement_bbox, departement_code, departement_outline
from cropmap.sources.rpg import fetch_parcels

# parcels on a 10 m grid (pixel boxes): two in "29", one 1 km away in "2A"
BOXES = [(0, 0, 10, 10), (0, 20, 10, 30), (100, 100, 110, 110)]
CODES = ["BTH", "MIS", "PPH"]


def outlines() -> gpd.GeoDataFrame:
    """Two made-up départements in Lambert-93: "29" around the first two parcels, "2A" around the third."""
    p = parcels_frame(BOXES, CODES)
    a = box(*p.iloc[:2].total_bounds).buffer(50)
    b = box(*p.iloc[2:].total_bounds).buffer(50)
    return gpd.GeoDataFrame({"code": ["29", "2A"], "nom": ["Finistère", "Corse-du-Sud"]}, geometry=[a, b],
                            crs=p.crs)


class Server(http.server.ThreadingHTTPServer):
    files: dict[str, bytes]
    hits: int = 0


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.hits += 1
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server(tmp_path):
    geojson = tmp_path / "departements.geojson"
    outlines().to_crs("EPSG:4326").to_file(geojson, driver="GeoJSON")  # as france-geojson: WGS84
    srv = Server(("127.0.0.1", 0), Handler)
    srv.files = {"/departements.geojson": geojson.read_bytes()}
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def archive(tmp_path) -> Path:
    gpkg = tmp_path / "PARCELLES_GRAPHIQUES.gpkg"
    pyogrio.write_dataframe(parcels_frame(BOXES, CODES), gpkg, layer="parcelles_graphiques")
    path = tmp_path / "RPG_TEST_2023.7z"
    with py7zr.SevenZipFile(path, "w") as z:
        z.write(gpkg, "RPG_TEST/PARCELLES_GRAPHIQUES.gpkg")
    return path


def _url(srv) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/departements.geojson"


def test_departement_box_from_downloaded_outlines(server, archive, tmp_path):
    cache = tmp_path / "cache"
    s = fetch_parcels(2023, None, tmp_path / "p29.gpkg", departement="29", boundaries=_url(server), cache=cache,
                      archive=archive, allow_http=True)
    assert s.n_parcels == 2
    got = gpd.read_file(s.path)
    assert sorted(got["CODE_CULTU"]) == ["BTH", "MIS"] and got.crs.to_epsg() == 2154
    assert (cache / "boundaries" / "departements.geojson").exists() and server.hits == 1
    # the box is the outline's, in Lambert-93, widened by the margin; the outlines are read from the cache now
    want = outlines().iloc[0].geometry.bounds
    got_box = departement_bbox("2a", _url(server), cache=cache, margin=0, allow_http=True)
    assert server.hits == 1
    assert got_box == pytest.approx(outlines().iloc[1].geometry.bounds, abs=0.01)
    wide = departement_bbox("29", _url(server), cache=cache, margin=1000, allow_http=True)
    assert wide == pytest.approx((want[0] - 1000, want[1] - 1000, want[2] + 1000, want[3] + 1000), abs=0.01)


def test_admin_express_like_file_and_cli(archive, tmp_path, capsys):
    admin = tmp_path / "DEPARTEMENT.gpkg"
    o = outlines().rename(columns={"code": "INSEE_DEP"})
    o["INSEE_REG"] = ["53", "94"]
    o.to_file(admin, layer="departement")  # ADMIN EXPRESS fields
    assert departement_outline("2A", admin).region == "94"
    out = tmp_path / "p2a.gpkg"
    rc = main(["fetch-parcels", "--year", "2023", "--departement", "2A", "--boundaries", str(admin), "--archive", str(archive), "--cache", str(tmp_path / "c"), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert "1 parcels" in capsys.readouterr().out
    assert gpd.read_file(out)["CODE_CULTU"].tolist() == ["PPH"]
    rc = main(["fetch-parcels", "--year", "2023", "--departement", "56", "--boundaries", str(admin),
               "--archive", str(archive), "--out", str(tmp_path / "p56.gpkg")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no département 56 (field INSEE_DEP)" in err
    rc = main(["fetch-parcels", "--year", "2023", "--departement", "29", "--bbox", "0", "0", "1", "1",
               "--out", str(tmp_path / "x.gpkg")])
    assert rc == 2 and "either --bbox or --departement" in capsys.readouterr().err


def test_codes():
    assert departement_code("1") == "01" and departement_code(" 2b") == "2B" and departement_code("95") == "95"
    for bad, match in (("20", "2A.*2B"), ("974", "overseas"), ("96", "not a metropolitan"), ("00", "not a"),
                       ("2C", "not a")):
        with pytest.raises(CropmapError, match=match):
            departement_code(bad)
    with pytest.raises(CropmapError, match="http:// URL|https"):
        departement_bbox("29", "http://127.0.0.1:9/departements.geojson")
    with pytest.raises(CropmapError, match="does not exist"):
        departement_bbox("29", "/nonexistent/departements.geojson")

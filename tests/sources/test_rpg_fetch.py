"""fetch-parcels for any edition, offline: a WFS 2.0 (paged GeoJSON, lowercase properties, a 429 and a 503 on
the way), an Atom feed of RPG resources, and an RPG 3.0-like archive split into volumes, all served from
127.0.0.1; the WFS and archive paths must write the same GeoPackage for the same area."""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import py7zr
import pyogrio
import pytest
from shapely.geometry import box

from conftest import parcels_frame
from cropmap.cli import main
from cropmap.errors import CropmapError
from cropmap.sources import rpg_archive
from cropmap.sources.rpg import choose_source, fetch_parcels
from cropmap.sources.rpg_editions import NATIONAL, find_edition, region_of
from localserver import LocalServer

RESOURCE = "RPG_3-0__GPKG_LAMB93_FXX_2024-01-01"
# parcels as pixel boxes of the 10 m test grid: four near the origin, one far east, one in the notch of "29"
BOXES = [(0, 0, 10, 10), (0, 20, 10, 30), (20, 0, 30, 10), (20, 20, 30, 30), (0, 300, 10, 310), (40, 40, 45, 45)]
CODES = ["BTH", "MIS", "PPH", "ORP", "TRN", "SOG"]
PAGE_MAX = 2  # the test WFS sends at most this many features per page, whatever COUNT asks


def rpg3_parcels() -> gpd.GeoDataFrame:
    """The parcels as RPG 3.0 / the WFS write them: lowercase fields, integer ids, a ``geom`` column."""
    g = parcels_frame(BOXES, CODES)
    g = g.rename(columns={"ID_PARCEL": "id_parcel", "CODE_CULTU": "code_cultu", "CODE_GROUP": "code_group",
                          "SURF_PARC": "surf_parc"})
    g["id_parcel"] = g["id_parcel"].astype(int)
    g["code_group"] = ["1", "2", "18", "5", "25", "6"]
    g["culture_d1"] = [None, "MIE", None, None, None, None]
    return g


def area_box() -> tuple[float, float, float, float]:
    """A Lambert-93 box around the first four parcels (and the sixth)."""
    b = parcels_frame(BOXES[:4] + BOXES[5:], CODES[:4] + CODES[5:]).total_bounds
    return (b[0] - 5, b[1] - 5, b[2] + 100, b[3] + 5)


def outline_29():
    """Département "29": the box minus a notch holding the sixth parcel."""
    x0, y0, x1, y1 = area_box()
    notch = parcels_frame([BOXES[5]], ["SOG"]).geometry.iloc[0].buffer(20)
    return box(x0, y0, x1, y1).difference(notch)


def _feature_collection(gdf: gpd.GeoDataFrame, start: int, count: int) -> bytes:
    page = gdf.iloc[start: start + count]
    body = json.loads(page.to_json(drop_id=True)) if len(page) else {"type": "FeatureCollection", "features": []}
    body.update(numberMatched=len(gdf), numberReturned=len(page), timeStamp="2026-12-01T00:00:00Z")
    return json.dumps(body).encode()


class Wfs:
    """GetFeature of RPG.2024:parcelles_graphiques (bbox) and ADMINEXPRESS-COG.LATEST:departement (FES filter)."""

    def __init__(self):
        self.requests = 0
        self.fail_on = {2: 429, 3: 503}  # the 2nd and 3rd GetFeature fail once each
        parcels = rpg3_parcels()
        self.layers = {"RPG.2024:parcelles_graphiques": parcels,
                       "ADMINEXPRESS-COG.LATEST:departement": gpd.GeoDataFrame(
                           {"code_insee": ["29", "56"], "code_insee_de_la_region": ["53", "53"]},
                           geometry=[outline_29(), box(0, 0, 10, 10)], crs="EPSG:2154")}

    def __call__(self, handler, path, q):
        if path != "/wfs":
            return None
        self.requests += 1
        if self.requests in self.fail_on:
            return self.fail_on.pop(self.requests), "text/plain", b"slow down"
        assert q["SERVICE"] == "WFS" and q["VERSION"] == "2.0.0" and q["REQUEST"] == "GetFeature"
        assert q["SRSNAME"] == "EPSG:2154" and q["OUTPUTFORMAT"] == "application/json"
        gdf = self.layers.get(q["TYPENAMES"])
        if gdf is None:
            return 400, "application/xml", b"<ows:ExceptionReport>unknown type</ows:ExceptionReport>"
        if "BBOX" in q:
            *xy, crs = q["BBOX"].split(",")
            assert crs == "urn:ogc:def:crs:EPSG::2154"
            gdf = gdf[gdf.intersects(box(*map(float, xy)))]
        if "FILTER" in q:
            field, value = re.search(r"<fes:ValueReference>(\w+)</fes:ValueReference><fes:Literal>(\w+)<",
                                     q["FILTER"]).groups()
            gdf = gdf[gdf[field] == value]
        count = min(int(q.get("COUNT", 1000)), PAGE_MAX)
        return 200, "application/json", _feature_collection(gdf, int(q.get("STARTINDEX", 0)), count)


def make_archive(folder: Path, n_volumes: int = 3) -> list[Path]:
    """An RPG 3.0-like archive: eight-ish GeoPackages in the delivery layout, the parcels in RPG_Parcelles.gpkg
    (not the largest), the whole 7z cut into ``n_volumes`` pieces as 7-Zip's -v does."""
    src = folder / "src"
    src.mkdir(parents=True)
    parcels = src / "RPG_Parcelles.gpkg"
    pyogrio.write_dataframe(rpg3_parcels(), parcels, layer="RPG_Parcelles", layer_options={"GEOMETRY_NAME": "geom"})
    big = parcels_frame([(i, i, i + 1, i + 1) for i in range(200)], ["BTH"] * 200)
    pyogrio.write_dataframe(big, src / "RPG_Ilots.gpkg", layer="RPG_Ilots")
    pyogrio.write_dataframe(big.iloc[:3], src / "RPG_Haies.gpkg", layer="RPG_Haies")
    inner = f"{RESOURCE}/RPG/1_DONNEES_LIVRAISON_2024/{RESOURCE}"
    whole = folder / f"{RESOURCE}.7z"
    with py7zr.SevenZipFile(whole, "w") as z:
        for f in ("RPG_Ilots.gpkg", "RPG_Parcelles.gpkg", "RPG_Haies.gpkg"):
            z.write(src / f, f"{inner}/{f}")
        z.writestr(b"lisez-moi", f"{RESOURCE}/LISEZ-MOI.txt")
    data = whole.read_bytes()
    whole.unlink()
    cut = np.linspace(0, len(data), n_volumes + 1).astype(int)
    vols = []
    for i in range(n_volumes):
        v = folder / f"{RESOURCE}.7z.{i + 1:03d}"
        v.write_bytes(data[cut[i]: cut[i + 1]])
        vols.append(v)
    return vols


def atom(entries: list[str]) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?><feed xmlns="http://www.w3.org/2005/Atom" '
            'xmlns:gpf="https://data.geopf.fr/annexes/ressources/xsd/gpf_dl.xsd"><title>RPG</title>'
            + "".join(entries) + "</feed>").encode()


def feed_entry(title: str, zone: str) -> str:
    return (f"<entry><title>{title}</title><gpf:zone term=\"{zone}\"/><gpf:format term=\"GPKG\"/>"
            f"<gpf:editionDate>2024-01-01</gpf:editionDate></entry>")


@pytest.fixture
def server(tmp_path):
    vols = make_archive(tmp_path / "archive")
    with LocalServer() as srv:
        wfs = Wfs()
        srv.routes.append(wfs)
        srv.wfs = wfs
        srv.volumes = vols
        for v in vols:
            srv.files[f"/download/RPG/{RESOURCE}/{v.name}"] = v.read_bytes()
        srv.files[f"/download/RPG/{RESOURCE}/{RESOURCE}.md5"] = b"0" * 32
        pages = {"1": atom([feed_entry("RPG_2-2__GPKG_LAMB93_FXX_2023-01-01", "FXX"), feed_entry(RESOURCE, "FXX"),
                            feed_entry("RPG_3-0__GPKG_RGAF09UTM20_R01_2024-01-01", "R01")]),
                 "2": atom([feed_entry("RPG_2-0__SHP_LAMB93_R53-2016_2016-01-01", "R53")]),
                 "3": atom([])}

        def feed(handler, path, q):
            if path == "/feed":
                return 200, "application/atom+xml", pages[q.get("PAGE", "1")]
            if path == f"/feed/{RESOURCE}":
                links = "".join(f'<link href="{srv.url}/download/RPG/{RESOURCE}/{name}" rel="alternate"/>'
                                for name in [f"{RESOURCE}.md5"] + [v.name for v in reversed(vols)])
                return 200, "application/atom+xml", atom([f"<entry><title>{RESOURCE}</title>{links}</entry>"])
            if path.startswith("/feed/"):  # any other resource: one archive
                title = path.rsplit("/", 1)[1]
                link = f'<link href="{srv.url}/download/RPG/{title}/{title}.7z"/>'
                return 200, "application/atom+xml", atom([f"<entry><title>{title}</title>{link}</entry>"])
            return None

        srv.routes.append(feed)
        yield srv


def _kw(srv, tmp_path, **kw):
    return {"wfs_url": f"{srv.url}/wfs", "feed_url": f"{srv.url}/feed", "cache": tmp_path / "cache",
            "allow_http": True, "backoff": 0.01, **kw}


def _read(path: Path) -> pd.DataFrame:
    g = pyogrio.read_dataframe(path, layer="PARCELLES_GRAPHIQUES")
    return g.sort_values("ID_PARCEL").reset_index(drop=True)


def test_wfs_pages_retries_and_archive_give_the_same_file(server, tmp_path):
    a = fetch_parcels(2024, area_box(), tmp_path / "wfs.gpkg", source="wfs", **_kw(server, tmp_path))
    assert a.source == "wfs" and a.origin == "RPG.2024:parcelles_graphiques" and a.n_parcels == 5
    # 5 features at 2 a page = 3 pages, plus the 429 and the 503 that were retried
    assert a.requests == 3 and server.wfs.requests == 5 and not server.wfs.fail_on
    b = fetch_parcels(2024, area_box(), tmp_path / "archive.gpkg", source="archive", **_kw(server, tmp_path))
    assert b.source == "archive" and b.origin == f"{RESOURCE} (feed)" and b.layer == "RPG_Parcelles"
    assert b.downloaded_bytes == sum(v.stat().st_size for v in server.volumes)
    # only the three volumes the feed lists were fetched, never the .md5 beside them
    got = sorted(p for p, _ in server.log if p.startswith("/download"))
    assert got == sorted(f"/download/RPG/{RESOURCE}/{v.name}" for v in server.volumes)
    wfs, arc = _read(tmp_path / "wfs.gpkg"), _read(tmp_path / "archive.gpkg")
    assert list(wfs.columns) == list(arc.columns)
    assert {"ID_PARCEL", "SURF_PARC", "CODE_CULTU", "CODE_GROUP", "CULTURE_D1", "RPG_YEAR"} <= set(wfs.columns)
    pd.testing.assert_frame_equal(wfs.drop(columns="geometry"), arc.drop(columns="geometry"))
    assert wfs.geometry.geom_equals_exact(arc.geometry, tolerance=0).all()
    assert wfs["ID_PARCEL"].tolist() == ["1000", "1001", "1002", "1003", "1005"]  # strings, as the schema says
    assert (wfs["RPG_YEAR"] == 2024).all() and wfs.crs.to_epsg() == 2154
    assert wfs["CODE_GROUP"].tolist() == ["1", "2", "18", "5", "6"]
    # the other GeoPackages of the edition are not extracted
    extracted = list((tmp_path / "cache" / "rpg").rglob("*.gpkg"))
    assert [p.name for p in extracted] == ["RPG_Parcelles.gpkg"]


def test_wfs_resumes_page_by_page(server, tmp_path):
    server.wfs.fail_on = {}
    fetch_parcels(2024, area_box(), tmp_path / "a.gpkg", source="wfs", **_kw(server, tmp_path))
    assert server.wfs.requests == 3
    pages = sorted((tmp_path / "cache" / "wfs").rglob("*.json"))
    assert len(pages) == 3
    pages[1].unlink()  # as if the run had stopped after the first page
    fetch_parcels(2024, area_box(), tmp_path / "b.gpkg", source="wfs", **_kw(server, tmp_path))
    assert server.wfs.requests == 4  # only the missing page
    pd.testing.assert_frame_equal(_read(tmp_path / "a.gpkg"), _read(tmp_path / "b.gpkg"))


def test_departement_outline_from_wfs_clips_the_parcels(server, tmp_path, capsys):
    server.wfs.fail_on = {}
    out = tmp_path / "p29.gpkg"
    rc = main(["fetch-parcels", "--year", "2024", "--departement", "29", "--out", str(out), "--wfs-url",
               f"{server.url}/wfs", "--feed-url", f"{server.url}/feed", "--cache", str(tmp_path / "c"),
               "--allow-http"])
    assert rc == 0, capsys.readouterr().err
    assert "4 parcels of RPG 2024" in capsys.readouterr().out
    # the sixth parcel is inside the box but in the outline's notch: left out
    assert _read(out)["CODE_CULTU"].tolist() == ["BTH", "MIS", "PPH", "ORP"]
    rc = main(["fetch-parcels", "--year", "2024", "--departement", "22", "--out", str(tmp_path / "x.gpkg"),
               "--wfs-url", f"{server.url}/wfs", "--cache", str(tmp_path / "c"), "--allow-http"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no département 22" in err


def test_regional_archive_falls_back_to_national_and_years(server, tmp_path):
    s = fetch_parcels(2024, None, tmp_path / "r.gpkg", departement="29", source="archive", **_kw(server, tmp_path))
    assert s.origin == f"{RESOURCE} (feed)" and s.n_parcels == 4  # no R53 archive for 2024 in the feed
    with pytest.raises(CropmapError, match="WFS serves 2015-2024"):
        fetch_parcels(2025, area_box(), tmp_path / "y.gpkg", source="wfs", **_kw(server, tmp_path))
    with pytest.raises(CropmapError, match="RPG 2014: no such edition"):
        fetch_parcels(2014, area_box(), tmp_path / "y.gpkg", **_kw(server, tmp_path))
    with pytest.raises(CropmapError, match="RPG 2025: the feed .* lists no national archive for 2025; use --archive"):
        find_edition(2025, feed_url=f"{server.url}/feed", allow_http=True)
    with pytest.raises(CropmapError, match="RPG 2025: the national archive .* reported .* volumes"):
        find_edition(2025, feed_url="http://127.0.0.1:9/feed", allow_http=True, retries=0)
    e = find_edition(2016, region="53", feed_url=f"{server.url}/feed", allow_http=True)
    assert e.resource == "RPG_2-0__SHP_LAMB93_R53-2016_2016-01-01" and e.shapefile and e.known == "feed"
    assert e.urls == [f"{server.url}/download/RPG/{e.resource}/{e.resource}.7z"]


def test_table_when_the_feed_is_unreachable():
    e = find_edition(2024, feed_url="http://127.0.0.1:9/feed", allow_http=True, retries=0)
    assert e.known.startswith("published") and e.files == tuple(f"{RESOURCE}.7z.{i:03d}" for i in range(1, 6))
    assert e.urls[0] == f"https://data.geopf.fr/telechargement/download/RPG/{RESOURCE}/{RESOURCE}.7z.001"
    assert NATIONAL[2022].files == ("RPG_2-0__GPKG_LAMB93_FXX_2022-01-01.7z.001",)
    assert find_edition(2023, region="24", feed_url=None).resource == "RPG_2-2__SHP_LAMB93_R24_2023-01-01"
    assert region_of("29") == "53" and region_of("2A") == "94" and region_of("75") == "11"


def test_local_volumes_by_bbox_and_missing_volume(server, tmp_path):
    vols = server.volumes
    s = fetch_parcels(2024, area_box(), tmp_path / "p.gpkg", archive=vols[0], cache=tmp_path / "c")
    assert s.source == "archive" and s.n_parcels == 5
    (vols[0].parent / f"{RESOURCE}.7z.004.part").write_bytes(b"stray")  # never taken for a volume
    missing = tmp_path / "m"
    missing.mkdir()
    for v in vols[:1] + vols[2:]:
        (missing / v.name).write_bytes(v.read_bytes())
    with pytest.raises(CropmapError, match=rf"volume {RESOURCE}\.7z\.002 is missing"):
        fetch_parcels(2024, area_box(), tmp_path / "q.gpkg", archive=missing / vols[0].name, cache=tmp_path / "c2")
    assert not (tmp_path / "q.gpkg").exists()


def test_missing_volume_on_the_server(server, tmp_path, capsys):
    del server.files[f"/download/RPG/{RESOURCE}/{server.volumes[1].name}"]
    rc = main(["fetch-parcels", "--year", "2024", "--bbox", *map(str, area_box()), "--source", "archive",
               "--out", str(tmp_path / "p.gpkg"), "--feed-url", f"{server.url}/feed", "--cache", str(tmp_path / "c"),
               "--allow-http"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and f"volume {RESOURCE}.7z.002 of 3" in err and "404" in err


def test_volumes_stream_reads_across_boundaries(tmp_path):
    parts = []
    data = bytes(range(256)) * 5
    for i, (a, b) in enumerate([(0, 100), (100, 101), (101, 1280)]):
        p = tmp_path / f"x.7z.{i + 1:03d}"
        p.write_bytes(data[a:b])
        parts.append(p)
    with rpg_archive.Volumes(parts) as v:
        v.seek(95)
        assert v.read(10) == data[95:105]
        v.seek(-5, 2)
        assert v.read() == data[-5:]


def test_source_choice():
    assert choose_source("auto", 2024, 6_000, None) == "wfs"
    assert choose_source("auto", 2024, 90_000, None) == "archive"
    assert choose_source("auto", 2025, 100, None) == "archive"  # no WFS layer for 2025
    assert choose_source("auto", 2024, 100, "x.7z") == "archive"
    with pytest.raises(CropmapError, match="--source ftp"):
        choose_source("ftp", 2024, 1, None)


def test_query_string_of_a_real_request(server, tmp_path):
    server.wfs.fail_on = {}
    fetch_parcels(2024, area_box(), tmp_path / "a.gpkg", source="wfs", **_kw(server, tmp_path))
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(server.log[-1][0]).query))
    assert q["TYPENAMES"] == "RPG.2024:parcelles_graphiques" and q["COUNT"] == "5000" and q["STARTINDEX"] == "4"


def test_unresolvable_host_fails_fast(monkeypatch):
    import socket

    from cropmap.sources.http import get_json

    calls = []

    def no_dns(*a, **kw):
        calls.append(a[0])
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(CropmapError, match="cannot resolve the host"):
        get_json("https://data.example.invalid/wfs", {"REQUEST": "GetFeature"}, retries=5, backoff=0.01)
    assert len(calls) == 2  # once more, not five times with back-off

"""fetch-parcels from an archive, offline: a tiny RPG-like GeoPackage packed in a 7z, served from 127.0.0.1 with
Range support; the download and extraction safety checks."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import geopandas as gpd
import pandas as pd
import py7zr
import pyogrio
import pytest
from shapely.geometry import box

from conftest import parcels_frame
from cropmap.cli import main
from cropmap.errors import CropmapError
from cropmap.sources.http import download, redact
from cropmap.sources.rpg import fetch_parcels

# parcels on a 10 m grid: two near the origin, one 1 km away (pixel boxes row0, col0, row1, col1)
BOXES = [(0, 0, 10, 10), (0, 20, 10, 30), (100, 100, 110, 110)]
CODES = ["BTH", "MIS", "PPH"]


class Server(http.server.ThreadingHTTPServer):
    files: dict[str, bytes]
    drop_after: int | None = None  # first GET is cut after this many body bytes
    fail_503: int = 0  # answer 503 this many times first
    requests: list[str | None]


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append(self.headers.get("Range"))
        if srv.fail_503:
            srv.fail_503 -= 1
            self.send_error(503)
            return
        data = srv.files.get(self.path.split("?")[0])
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.drop_after is not None:
            n, srv.drop_after = srv.drop_after, None
            self.wfile.write(body[:n])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = Server(("127.0.0.1", 0), Handler)
    srv.files, srv.requests = {}, []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def url(srv: Server, name: str) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/{name}"


@pytest.fixture(scope="module")
def rpg_archive(tmp_path_factory) -> Path:
    """A national-archive look-alike: a GeoPackage with the RPG layer name, in a folder, in a 7z."""
    d = tmp_path_factory.mktemp("rpg")
    gdf = parcels_frame(BOXES, CODES)
    # an L-shaped parcel wrapped around the test area: its envelope covers the area, its shape does not
    xmin, ymin, xmax, ymax = bbox_first_two()
    hook = box(xmin, ymax + 30, xmax + 40, ymax + 40).union(box(xmax + 30, ymin, xmax + 40, ymax + 40))
    gdf = pd.concat([gdf, gpd.GeoDataFrame({"ID_PARCEL": ["9"], "CODE_CULTU": ["SOJ"], "CODE_GROUP": ["0"],
                                            "SURF_PARC": [hook.area / 1e4]}, geometry=[hook], crs=gdf.crs)])
    gpkg = d / "PARCELLES_GRAPHIQUES.gpkg"
    pyogrio.write_dataframe(gdf, gpkg, layer="parcelles_graphiques")
    archive = d / "RPG_TEST_2023.7z"
    with py7zr.SevenZipFile(archive, "w") as z:
        z.write(gpkg, "RPG_TEST/1_DONNEES_LIVRAISON/PARCELLES_GRAPHIQUES.gpkg")
        z.writestr(b"read me", "RPG_TEST/LISEZ-MOI.txt")
    return archive


def bbox_first_two() -> tuple[float, float, float, float]:
    """A Lambert-93 box around the first two parcels only."""
    b = parcels_frame(BOXES[:2], CODES[:2]).total_bounds
    return (b[0] - 5, b[1] - 5, b[2] + 5, b[3] + 5)


def files_under(p: Path) -> list[Path]:
    return [f for f in p.rglob("*") if f.is_file()] if p.exists() else []


def test_download_extract_and_bbox_read(server, rpg_archive, tmp_path):
    server.files["/RPG_TEST_2023.7z"] = rpg_archive.read_bytes()
    s = fetch_parcels(2023, bbox_first_two(), tmp_path / "p.gpkg", archive=url(server, "RPG_TEST_2023.7z"),
                      cache=tmp_path / "cache", allow_http=True)
    got = pyogrio.read_dataframe(tmp_path / "p.gpkg", layer="PARCELLES_GRAPHIQUES")
    assert sorted(got["CODE_CULTU"]) == ["BTH", "MIS"]
    assert got.crs.to_epsg() == 2154 and s.n_parcels == 2 and s.layer == "parcelles_graphiques"
    assert s.downloaded_bytes == rpg_archive.stat().st_size
    # a second area comes from the cache, without a request
    n = len(server.requests)
    s2 = fetch_parcels(2023, (0, 0, 2e6, 8e6), tmp_path / "all.gpkg", archive=url(server, "RPG_TEST_2023.7z"),
                       cache=tmp_path / "cache", allow_http=True)
    assert s2.n_parcels == 4 and s2.downloaded_bytes == 0 and len(server.requests) == n


def test_bbox_in_another_crs(rpg_archive, tmp_path):
    from pyproj import Transformer

    b = bbox_first_two()
    lonlat = Transformer.from_crs("EPSG:2154", "EPSG:4326", always_xy=True).transform_bounds(*b)
    s = fetch_parcels(2023, lonlat, tmp_path / "p.gpkg", bbox_crs="EPSG:4326", archive=rpg_archive,
                      cache=tmp_path / "cache")
    assert s.n_parcels == 2


def test_interrupted_download_resumes_with_range(server, rpg_archive, tmp_path):
    data = rpg_archive.read_bytes()
    server.files["/a.7z"] = data
    server.drop_after = len(data) // 3
    dest = tmp_path / "a.7z"
    download(url(server, "a.7z"), dest, allow_http=True, backoff=0.01)
    assert dest.read_bytes() == data
    assert not dest.with_name("a.7z.part").exists()
    assert server.requests == [None, f"bytes={len(data) // 3}-"]


def test_retries_503_then_succeeds(server, tmp_path):
    server.files["/b.bin"] = b"x" * 1000
    server.fail_503 = 2
    download(url(server, "b.bin"), tmp_path / "b.bin", allow_http=True, backoff=0.01)
    assert (tmp_path / "b.bin").read_bytes() == b"x" * 1000 and len(server.requests) == 3


def test_gives_up_after_retries(server, tmp_path):
    server.fail_503 = 10
    with pytest.raises(CropmapError, match="after 3 tries"):
        download(url(server, "b.bin"), tmp_path / "b.bin", allow_http=True, retries=2, backoff=0.01)


def test_http_refused_without_flag(tmp_path):
    with pytest.raises(CropmapError, match="only https"):
        fetch_parcels(2023, (0, 0, 1, 1), tmp_path / "p.gpkg", archive="http://127.0.0.1:9/x.7z",
                      cache=tmp_path / "cache")
    assert files_under(tmp_path) == []


def test_urls_logged_without_credentials_or_query():
    assert redact("https://user:secret@h.example:8443/a/b.7z?token=abc") == "https://h.example:8443/a/b.7z"


def _refused(archive: Path, tmp_path: Path, match: str, **kw) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(CropmapError, match=match):
        fetch_parcels(2023, (0, 0, 1e7, 1e7), tmp_path / "p.gpkg", archive=archive, cache=cache, **kw)
    assert files_under(cache) == [] and not (tmp_path / "p.gpkg").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_corrupt_archive_refused(rpg_archive, tmp_path):
    bad = tmp_path / "src" / "bad.7z"
    bad.parent.mkdir()
    data = bytearray(rpg_archive.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\0" * 64  # damage the packed stream, keep the header
    bad.write_bytes(bytes(data))
    _refused(bad, tmp_path, "corrupt or unreadable")


def test_truncated_download_is_removed_from_cache(server, rpg_archive, tmp_path):
    server.files["/t.7z"] = rpg_archive.read_bytes()[:-200]
    cache = tmp_path / "cache"
    with pytest.raises(CropmapError, match="the file is truncated"):  # found from the 7z header, before reading
        fetch_parcels(2023, (0, 0, 1e7, 1e7), tmp_path / "p.gpkg", archive=url(server, "t.7z"), cache=cache,
                      allow_http=True)
    assert files_under(cache) == []  # the next run downloads it again


def test_path_escaping_member_refused(tmp_path, monkeypatch):
    evil = tmp_path / "src" / "evil.7z"
    evil.parent.mkdir()
    monkeypatch.setattr(py7zr.py7zr, "check_archive_path", lambda name: True)  # py7zr will not write one itself
    with py7zr.SevenZipFile(evil, "w") as z:
        z.writestr(b"gotcha", "../evil.txt")
        z.writestr(b"not really", "x.gpkg")
    _refused(evil, tmp_path, "outside the cache")


def test_announced_size_over_limit_refused(rpg_archive, tmp_path):
    _refused(rpg_archive, tmp_path, "decompression bomb", max_extract_bytes=1000)


def test_size_checked_again_while_extracting(rpg_archive, tmp_path, monkeypatch):
    import cropmap.sources.rpg_archive as rd

    monkeypatch.setattr(rd, "_check_members", lambda *a: None)  # as if the archive lied about its sizes
    _refused(rpg_archive, tmp_path, "decompresses to more than", max_extract_bytes=1000)


def test_symlink_member_refused(tmp_path):
    link = tmp_path / "src" / "link.gpkg"
    link.parent.mkdir()
    link.symlink_to("/etc/passwd")
    archive = tmp_path / "src" / "link.7z"
    with py7zr.SevenZipFile(archive, "w") as z:
        z.write(link, "link.gpkg")
    _refused(archive, tmp_path, "symbolic link")


def test_cli_end_to_end_url_and_local_path(server, rpg_archive, tmp_path, capsys):
    server.files["/RPG_TEST_2023.7z"] = rpg_archive.read_bytes()
    bbox = [str(v) for v in bbox_first_two()]
    common = ["fetch-parcels", "--year", "2023", "--bbox", *bbox, "--cache", str(tmp_path / "cache")]
    assert main([*common, "--out", str(tmp_path / "a.gpkg"), "--archive", url(server, "RPG_TEST_2023.7z"),
                 "--allow-http"]) == 0
    assert "2 parcels of RPG 2023" in capsys.readouterr().out
    assert main([*common, "--out", str(tmp_path / "b.gpkg"), "--archive", str(rpg_archive)]) == 0
    assert len(pyogrio.read_dataframe(tmp_path / "b.gpkg")) == 2
    # existing output refused, one line, no traceback
    assert main([*common, "--out", str(tmp_path / "b.gpkg"), "--archive", str(rpg_archive)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and err.count("\n") == 1
    assert main([*common, "--out", str(tmp_path / "c.gpkg"), "--archive", url(server, "RPG_TEST_2023.7z")]) == 2
    assert "--allow-http" in capsys.readouterr().err

"""Fetch the national RPG archive (resumable HTTPS download into a cache, safe 7z extraction)
and cut the parcels of one area out of it into a GeoPackage in the pipeline's schema."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..atomic import atomic_path
from ..errors import CropmapError

log = logging.getLogger(__name__)

# Only 2023 is confirmed; other years follow the same geopf naming as a best guess (``--archive`` overrides).
RPG_ARCHIVES = {
    2023: "https://data.geopf.fr/telechargement/download/RPG/RPG_2-2__GPKG_LAMB93_FXX_2023-01-01/"
          "RPG_2-2__GPKG_LAMB93_FXX_2023-01-01.7z",
}
RPG_URL_PATTERN = ("https://data.geopf.fr/telechargement/download/RPG/RPG_2-2__GPKG_LAMB93_FXX_{year}-01-01/"
                   "RPG_2-2__GPKG_LAMB93_FXX_{year}-01-01.7z")
# The national GeoPackage is ~10 GB; anything announcing much more is treated as a decompression bomb.
MAX_EXTRACT_BYTES = 40 * 2**30
OUT_LAYER = "PARCELLES_GRAPHIQUES"
OUT_CRS = "EPSG:2154"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FetchSummary:
    path: Path
    n_parcels: int
    archive: Path
    gpkg: Path
    layer: str
    downloaded_bytes: int


def default_cache() -> Path:
    return Path(os.environ.get("CROPMAP_CACHE") or Path.home() / ".cache" / "cropmap")


def archive_url(year: int) -> str:
    return RPG_ARCHIVES.get(year) or RPG_URL_PATTERN.format(year=year)


def redact(url: str) -> str:
    """``url`` without user:password and query string, safe to log (signed URLs carry tokens there)."""
    u = urllib.parse.urlsplit(url)
    if not u.scheme or not u.netloc:  # a path, or a GDAL path holding a URL: /vsicurl/https://…
        return redact_text(url)
    host = u.hostname or ""
    if u.port:
        host += f":{u.port}"
    return urllib.parse.urlunsplit((u.scheme, host, u.path, "", ""))


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()]+")


def redact_text(text: str) -> str:
    """``text`` (e.g. a GDAL or HTTP error message) with every URL in it redacted."""
    return _URL_IN_TEXT.sub(lambda m: redact(m.group(0)), text)


def _is_url(s: str) -> bool:
    return urllib.parse.urlsplit(s).scheme.lower() in ("http", "https")


def _check_scheme(url: str, allow_http: bool) -> None:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "https" or (scheme == "http" and allow_http):
        return
    raise CropmapError(f"{redact(url)}: only https:// downloads are allowed"
                       + (" (pass --allow-http to accept plain http)" if scheme == "http" else ""))


class _Retryable(Exception):
    """A transient failure: the server or the connection may do better on the next try."""


def _opener(allow_http: bool) -> urllib.request.OpenerDirector:
    class NoDowngrade(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            _check_scheme(newurl, allow_http)  # an https -> http redirect must not slip through
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return urllib.request.build_opener(NoDowngrade)


def download(url: str, dest: Path, *, allow_http: bool = False, retries: int = 5, backoff: float = 2.0,
             timeout: float = 60.0) -> int:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming it with HTTP Range; return bytes received.

    Connection errors, truncated bodies, HTTP 429 and 5xx are retried ``retries`` times, waiting
    ``backoff * 2**attempt`` seconds; other HTTP errors fail at once.
    """
    _check_scheme(url, allow_http)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    opener = _opener(allow_http)
    received = 0
    for attempt in range(retries + 1):
        try:
            received += _transfer(opener, url, part, timeout)
            os.replace(part, dest)
            return received
        except _Retryable as e:
            if attempt == retries:
                raise CropmapError(f"{redact(url)}: download failed after {retries + 1} tries ({redact_text(str(e))}); "
                                   f"run again to resume from {part}") from None
            wait = backoff * 2**attempt
            log.warning("%s: %s; retrying in %.1f s", redact(url), redact_text(str(e)), wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def _transfer(opener: urllib.request.OpenerDirector, url: str, part: Path, timeout: float) -> int:
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "cropmap", **({"Range": f"bytes={have}-"} if have else {})}
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = opener.open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left past our offset: the .part is already whole
            return 0
        if e.code == 429 or e.code >= 500:
            raise _Retryable(f"HTTP {e.code}") from None
        raise CropmapError(f"{redact(url)}: HTTP {e.code} {e.reason}"
                           + (" (no archive for this year? pass --archive)" if e.code == 404 else "")) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise _Retryable(f"{getattr(e, 'reason', e)}") from None
    with resp:
        if resp.status == 206:
            start = int(resp.headers.get("Content-Range", "bytes 0-").split()[1].split("-")[0])
            if start != have:
                raise _Retryable(f"server resumed at byte {start}, expected {have}")
            mode = "ab"
        else:  # the server ignored the Range header: start over
            have, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        got = 0
        with open(part, mode) as f:
            try:
                while chunk := resp.read(_CHUNK):
                    f.write(chunk)
                    got += len(chunk)
            except (OSError, http.client.HTTPException) as e:  # IncompleteRead is not an OSError
                raise _Retryable(f"connection lost after {have + got} bytes ({type(e).__name__})") from None
    if expected is not None and got < expected:
        raise _Retryable(f"connection lost after {have + got} bytes")
    return got


def check_sha256(path: Path, sha256: str) -> None:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    if h.hexdigest().lower() != sha256.strip().lower():
        raise CropmapError(f"{path}: SHA-256 {h.hexdigest()} does not match the expected {sha256.strip()}")


def _check_members(archive: Path, infos, max_bytes: int) -> None:
    total = 0
    for i in infos:
        name = i.filename.replace("\\", "/")
        p = PurePosixPath(name)
        if p.is_absolute() or (len(name) > 1 and name[1] == ":") or ".." in p.parts:
            raise CropmapError(f"{archive}: refused, member {i.filename!r} would be written outside the cache")
        if i.is_symlink:
            # a symlink's target is only known after extraction; RPG archives have none, so refuse them all
            raise CropmapError(f"{archive}: refused, member {i.filename!r} is a symbolic link")
        total += i.uncompressed or 0
    if total > max_bytes:
        raise CropmapError(f"{archive}: refused, it announces {total:,} bytes uncompressed "
                           f"(limit {max_bytes:,}; a decompression bomb or not an RPG archive)")


def extract_gpkg(archive: Path, into: Path, *, max_bytes: int = MAX_EXTRACT_BYTES) -> Path:
    """Extract the ``.gpkg`` member(s) of the 7z ``archive`` into the folder ``into``; return the GeoPackage.

    The folder appears only once extraction is complete (a corrupt archive leaves nothing behind); an
    existing one is reused. Member names, symlinks and the announced size are checked first, and the
    size again while decompressing, since an archive may lie about it.
    """
    import py7zr

    if into.is_dir():
        return _find_gpkg(into, archive)
    tmp = into.with_name(f".{into.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with py7zr.SevenZipFile(archive, "r", max_extract_size=max_bytes) as z:
            infos = z.list()
            _check_members(archive, infos, max_bytes)
            targets = [i.filename for i in infos if i.filename.lower().endswith(".gpkg") and not i.is_directory]
            if not targets:
                raise CropmapError(f"{archive}: no .gpkg in the archive (is it an RPG GPKG archive?)")
            z.extract(path=tmp, targets=targets)
        os.replace(tmp, into)
    except CropmapError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except py7zr.exceptions.DecompressionBombError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CropmapError(f"{archive}: refused, it decompresses to more than {max_bytes:,} bytes "
                           f"(a decompression bomb, or the limit is too small)") from None
    except Exception as e:  # py7zr raises Bad7zFile, CrcError, DecompressionBombError, LZMAError, EOFError...
        shutil.rmtree(tmp, ignore_errors=True)
        raise CropmapError(f"{archive}: corrupt or unreadable 7z archive ({type(e).__name__}: {e})") from None
    return _find_gpkg(into, archive)


def _find_gpkg(folder: Path, archive: Path) -> Path:
    found = sorted(folder.rglob("*.gpkg"))
    if not found:
        raise CropmapError(f"{archive}: no .gpkg found after extraction")
    # national archives hold one GeoPackage; if several, the largest is the parcels
    return max(found, key=lambda p: p.stat().st_size)


def parcel_layer(gpkg: Path) -> str:
    """The polygon layer of an RPG GeoPackage (its name changes between years)."""
    import pyogrio

    layers = [(str(n), str(g)) for n, g in pyogrio.list_layers(gpkg)]
    polygons = [n for n, g in layers if g and "POLYGON" in g.upper()] or [n for n, _ in layers]
    if not polygons:
        raise CropmapError(f"{gpkg}: no layer")
    named = [n for n in polygons if "PARCELLE" in n.upper()]
    return (named or polygons)[0]


def fetch_parcels(year: int, bbox: tuple[float, float, float, float], out: Path | str, *,
                  bbox_crs: str = OUT_CRS, archive: str | Path | None = None, cache: Path | str | None = None,
                  sha256: str | None = None, allow_http: bool = False, overwrite: bool = False,
                  max_extract_bytes: int = MAX_EXTRACT_BYTES, retries: int = 5, backoff: float = 2.0) -> FetchSummary:
    """Parcels of ``year`` intersecting ``bbox`` (in ``bbox_crs``) written to ``out`` (GeoPackage, Lambert-93).

    ``archive`` is a URL or a local 7z (default: the geopf archive of ``year``), cached under ``cache``
    (default ``$CROPMAP_CACHE`` or ``~/.cache/cropmap``). geopf publishes no checksum for the RPG
    archives that we know of: pass ``sha256`` to check one; the 7z CRC of each member is always checked.
    """
    import geopandas as gpd
    import pyogrio
    from shapely.geometry import box

    from .parcels import read_parcels

    out = Path(out)
    if out.exists() and not overwrite:  # fail before a multi-GB download
        raise CropmapError(f"{out}: already exists (pass --overwrite to replace it)")
    xmin, ymin, xmax, ymax = bbox
    if not (xmin < xmax and ymin < ymax):
        raise CropmapError(f"bbox {bbox}: expected xmin ymin xmax ymax with xmin < xmax and ymin < ymax")
    root = Path(cache) if cache is not None else default_cache()
    src = str(archive) if archive is not None else archive_url(year)
    downloaded = 0
    if _is_url(src) or "://" in src:
        _check_scheme(src, allow_http)
        name = PurePosixPath(urllib.parse.urlsplit(src).path).name or f"RPG_{year}.7z"
        local = root / "rpg" / name
        if not local.exists():
            log.info("downloading %s to %s", redact(src), local)
            downloaded = download(src, local, allow_http=allow_http, retries=retries, backoff=backoff)
        owned = True  # ours to delete if it turns out corrupt, so the next run downloads it again
    else:
        local, owned = Path(src), False
        if not local.is_file():
            raise CropmapError(f"{local}: archive does not exist")
    if sha256:
        try:
            check_sha256(local, sha256)
        except CropmapError:
            if owned:
                local.unlink(missing_ok=True)
            raise
    into = root / "rpg" / local.name.removesuffix(".7z")
    try:
        gpkg = extract_gpkg(local, into, max_bytes=max_extract_bytes)
    except CropmapError:
        if owned:
            local.unlink(missing_ok=True)
        raise
    layer = parcel_layer(gpkg)
    gdf = read_parcels(gpkg, bbox=bbox, bbox_crs=bbox_crs, layer=layer)
    # in another CRS the box read is the envelope of the reprojected area, larger than it: keep only the
    # parcels that touch the area itself
    area = gpd.GeoSeries([box(*bbox).segmentize(max(xmax - xmin, ymax - ymin) / 64)], crs=bbox_crs).to_crs(gdf.crs)
    gdf = gdf[gdf.intersects(area.iloc[0])].to_crs(OUT_CRS)
    if gdf.empty:
        raise CropmapError(f"no {year} parcel in bbox {bbox} ({bbox_crs}); check the order xmin ymin xmax ymax "
                           f"and --bbox-crs")
    with atomic_path(out, overwrite=overwrite) as tmp:
        pyogrio.write_dataframe(gdf, tmp, layer=OUT_LAYER, driver="GPKG")
    return FetchSummary(out, len(gdf), local, gpkg, layer, downloaded)

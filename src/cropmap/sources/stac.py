"""Sentinel-2 L2A from a STAC API (earth-search by default, no account; or Microsoft's Planetary Computer,
signed URLs) into the Zarr cube of :mod:`cropmap.sources.zarr_cube`: search, group by solar day, harmonize
the DN and warp onto a 10 m grid.

Search goes through pystac-client (retries with back-off on 429/5xx and timeouts); pixels are read
with rasterio, each asset warped by a ``WarpedVRT`` straight onto the target grid, so only the
windows covering the area are fetched from the cloud-optimized GeoTIFFs.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from ..errors import CropmapError
from .http import redact, redact_text

log = logging.getLogger(__name__)

EARTH_SEARCH = "https://earth-search.aws.element84.com/v1"
COLLECTION = "sentinel-2-c1-l2a"
ASSETS = ("blue", "green", "red", "nir")  # in the cube's band order B2, B3, B4, B8
SCL_ASSET = "scl"
PLANETARY_COMPUTER = "https://planetarycomputer.microsoft.com/api/stac/v1"
PC_COLLECTION = "sentinel-2-l2a"
PC_ASSETS = ("B02", "B03", "B04", "B08")
SOURCES = ("earth-search", "planetary-computer", "earth-engine")
RESOLUTION = 10.0
# GDAL's own HTTP retries for the pixel reads (it retries 429/502/503/504 and connection resets)
GDAL_ENV = dict(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", GDAL_HTTP_MAX_RETRY="5", GDAL_HTTP_RETRY_DELAY="2",
                CPL_VSIL_CURL_ALLOWED_EXTENSIONS=".tif,.tiff,.TIF,.TIFF", AWS_NO_SIGN_REQUEST="YES",
                GDAL_HTTP_TIMEOUT="60")


@dataclass(frozen=True)
class FetchImagerySummary:
    path: Path
    dates: list[dt.date]  # one per time step, the solar day of its acquisitions
    n_items: int  # items (tiles x dates) mosaicked into the cube
    crs: CRS
    transform: Affine
    width: int
    height: int
    skipped: int  # time steps already written by an earlier, interrupted run


@dataclass(frozen=True)
class Harmonization:
    """How one asset's stored DN become harmonized DN (reflectance x 10000): ``raw * factor + shift``."""

    factor: float = 1.0
    shift: float = 0.0
    nodata: float = 0.0


def baseline_shifted(baseline: str) -> bool:
    """Whether processing baseline ``baseline`` ("NN.NN") stores DN with the +1000 BOA offset (>= 04.00),
    compared as a version (``"4.0"``, ``"04.00"`` and ``"04.00.1"`` alike); unknown forms count as not shifted."""
    try:
        parts = [int(p) for p in str(baseline).strip().split(".")]
    except ValueError:
        return False
    return tuple(parts + [0] * (2 - len(parts))) >= (4, 0)


def baseline_harmonization(item, key: str) -> Harmonization:
    """Harmonization from the item's ``s2:processing_baseline`` only: subtract 1000 from 04.00 on; 0 is nodata."""
    baseline = item.properties.get("s2:processing_baseline")
    if baseline is None:
        raise CropmapError(f"STAC item {item.id}: no s2:processing_baseline, cannot tell whether its DN carry "
                           "the +1000 offset")
    return Harmonization(1.0, -1000.0 if baseline_shifted(baseline) else 0.0, 0)


def harmonization(item, key: str) -> Harmonization:
    """Read the asset's ``raster:bands`` scale/offset/nodata; fall back on the item's processing baseline.

    Collection 1 keeps the +1000 BOA offset (baseline >= 04.00) in the pixels and says so with
    ``offset: -0.1, scale: 0.0001``; an item flagged ``earthsearch:boa_offset_applied`` is already harmonized.
    """
    props = item.properties
    asset = item.assets[key].extra_fields
    bands = asset.get("raster:bands") or []
    nodata = bands[0].get("nodata", 0) if bands else 0
    if props.get("earthsearch:boa_offset_applied") is True:
        return Harmonization(1.0, 0.0, nodata)
    if bands and ("scale" in bands[0] or "offset" in bands[0]):
        scale, offset = float(bands[0].get("scale", 1e-4)), float(bands[0].get("offset", 0.0))
        return Harmonization(scale * 10000, offset * 10000, nodata)
    shifted = baseline_shifted(str(props.get("s2:processing_baseline", "00.00")))
    return Harmonization(1.0, -1000.0 if shifted else 0.0, nodata)


def harmonize(raw: np.ndarray, h: Harmonization) -> np.ndarray:
    """Harmonized uint16 DN of ``raw``: nodata stays 0, valid pixels are clipped to [1, 65535] so that a
    dark pixel at or below the offset does not turn into nodata."""
    valid = raw != h.nodata
    dn = np.rint(raw.astype(np.float64) * h.factor + h.shift)
    return np.where(valid, np.clip(dn, 1, 65535), 0).astype(np.uint16)


def _unsigned(href: str) -> str:
    return href


@dataclass(frozen=True)
class Source:
    """Where a STAC source keeps what the cube needs: its API, collection, the four band assets (in the
    cube's order B2, B3, B4, B8) and the SCL asset; how its DN are harmonized; how hrefs are signed."""

    name: str
    stac_url: str
    collection: str
    assets: tuple[str, str, str, str] = ASSETS
    scl_asset: str = SCL_ASSET
    harmonization: Callable[[object, str], Harmonization] = harmonization
    sign: Callable[[str], str] = _unsigned


def make_source(name: str, *, stac_url: str | None = None, collection: str | None = None,
                token_url: str | None = None) -> Source:
    """The :class:`Source` called ``name``; ``stac_url``/``collection``/``token_url`` override its defaults."""
    if name == "earth-search":
        return Source(name, stac_url or EARTH_SEARCH, collection or COLLECTION)
    if name == "planetary-computer":
        from .pc_sign import PC_TOKEN_URL, SasSigner

        coll = collection or PC_COLLECTION
        signer = SasSigner(coll, token_url or PC_TOKEN_URL)
        # PC serves ESA's own files: the offset is known from the processing baseline alone
        return Source(name, stac_url or PLANETARY_COMPUTER, coll, PC_ASSETS, "SCL", baseline_harmonization,
                      signer.sign)
    raise CropmapError(f"{name!r} is not a STAC imagery source; expected earth-search or planetary-computer")


def solar_day(when: dt.datetime, lon: float) -> dt.date:
    """Local solar date of a UTC acquisition at longitude ``lon`` (UTC + lon / 15 h)."""
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return (when + dt.timedelta(hours=lon / 15.0)).date()


def utm_crs(lon: float, lat: float) -> CRS:
    zone = min(int((lon + 180) // 6) + 1, 60)
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def target_grid(bbox: Sequence[float], bbox_crs: str, crs: str) -> tuple[CRS, Affine, int, int]:
    """The 10 m grid covering ``bbox`` in ``crs`` (``"utm"``: the UTM zone of the bbox centre), snapped
    outwards to multiples of 10 m so that it lines up with the Sentinel-2 tiles' own UTM grids."""
    from rasterio.warp import transform_bounds

    xmin, ymin, xmax, ymax = bbox
    if not (xmin < xmax and ymin < ymax):
        raise CropmapError(f"bbox {tuple(bbox)}: expected xmin ymin xmax ymax with xmin < xmax and ymin < ymax")
    src = _crs(bbox_crs, "--bbox-crs")
    if str(crs).lower() == "utm":
        w, s, e, n = transform_bounds(src, "EPSG:4326", *bbox, densify_pts=21)
        dst = utm_crs((w + e) / 2, (s + n) / 2)
    else:
        dst = _crs(crs, "--crs")
    if not dst.is_projected:
        raise CropmapError(f"--crs {crs}: a projected CRS in metres is needed for a 10 m grid")
    x0, y0, x1, y1 = transform_bounds(src, dst, *bbox, densify_pts=21)
    r = RESOLUTION
    left, top = math.floor(x0 / r) * r, math.ceil(y1 / r) * r
    width, height = math.ceil((x1 - left) / r), math.ceil((top - y0) / r)
    return dst, Affine(r, 0.0, left, 0.0, -r, top), int(width), int(height)


def _crs(value: str, what: str) -> CRS:
    try:
        return CRS.from_user_input(value)
    except Exception as e:
        raise CropmapError(f"{what} {value}: not a CRS rasterio understands ({e})") from None


def search_items(stac_url: str, collection: str, bbox_wgs84: Sequence[float], start: str, end: str, *,
                 max_cloud: float | None = 80.0, retries: int = 5, backoff: float = 2.0,
                 timeout: float = 60.0) -> list:
    """Items of ``collection`` over ``bbox_wgs84`` acquired from ``start`` to ``end`` (dates, inclusive) with at
    most ``max_cloud`` % cloud cover. 429/5xx and timeouts are retried ``retries`` times with back-off."""
    import requests
    from pystac_client import Client
    from pystac_client.exceptions import APIError
    from pystac_client.stac_api_io import StacApiIO
    from urllib3.util.retry import Retry

    retry = Retry(total=retries, backoff_factor=backoff, status_forcelist=(429, 500, 502, 503, 504),
                  allowed_methods=None, raise_on_status=False)
    where = redact(stac_url)
    query = {"eo:cloud_cover": {"lte": max_cloud}} if max_cloud is not None else None
    try:
        client = Client.open(stac_url, stac_io=StacApiIO(max_retries=retry, timeout=timeout))
        search = client.search(collections=[collection], bbox=list(bbox_wgs84), datetime=f"{start}/{end}",
                               query=query, limit=100)
        items = list(search.items())
    except APIError as e:
        status = getattr(e, "status_code", None)
        if status is None:  # pystac-client wraps connection errors and exhausted retries the same way
            raise CropmapError(f"{where}: STAC search failed after {retries + 1} tries (no answer from the "
                               "server: network down, wrong --stac-url or timeout)") from None
        raise CropmapError(f"{where}: STAC search failed (HTTP {status}: {_one_line(str(e))})") from None
    except requests.RequestException as e:
        raise CropmapError(f"{where}: STAC search failed after {retries + 1} tries ({type(e).__name__})") from None
    except CropmapError:
        raise
    except Exception as e:  # pystac(-client) raises several kinds for "not a STAC API"
        raise CropmapError(f"{where}: not a usable STAC API ({type(e).__name__}: {_one_line(str(e))})") from None
    # a server may ignore the query extension: check the cloud cover here as well
    if max_cloud is not None:
        items = [i for i in items if i.properties.get("eo:cloud_cover", 0.0) <= max_cloud]
    return items


def _one_line(s: str, n: int = 200) -> str:
    s = " ".join(redact_text(s).split())  # GDAL and HTTP errors quote signed URLs, tokens included
    return s if len(s) <= n else s[: n - 1] + "…"


def group_by_solar_day(items: Sequence) -> dict[dt.date, list]:
    """Items per solar day, days ascending; within a day the least cloudy tile first (it wins overlaps)."""
    days: dict[dt.date, list] = defaultdict(list)
    for item in items:
        if item.datetime is None:
            raise CropmapError(f"STAC item {item.id}: no datetime")
        lon = (item.bbox[0] + item.bbox[2]) / 2 if item.bbox else 0.0
        days[solar_day(item.datetime, lon)].append(item)
    return {d: sorted(days[d], key=lambda i: (i.properties.get("eo:cloud_cover", 0.0), i.id)) for d in sorted(days)}


def _href(item, key: str) -> str:
    if key not in item.assets:
        raise CropmapError(f"STAC item {item.id}: no asset {key!r} (has {', '.join(sorted(item.assets))})")
    href = item.assets[key].get_absolute_href() or item.assets[key].href
    if href.startswith("s3://"):
        return "/vsis3/" + href.removeprefix("s3://")
    return href.removeprefix("file://")


def _read_warped(href: str, crs: CRS, transform: Affine, width: int, height: int, nodata: float) -> np.ndarray:
    """Band 1 of ``href`` resampled (nearest) onto the grid; pixels it does not cover read as ``nodata``.
    ``href`` may be signed: only its redacted form (no query string) goes into messages."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioIOError
    from rasterio.vrt import WarpedVRT

    try:
        with rasterio.open(href) as src, WarpedVRT(src, crs=crs, transform=transform, width=width, height=height,
                                                   resampling=Resampling.nearest, src_nodata=nodata,
                                                   nodata=nodata) as vrt:
            return vrt.read(1)
    except RasterioIOError as e:
        msg = str(e)
        if "403" in msg:  # GDAL says "HTTP response code: 403"; the message may echo the signed URL
            raise CropmapError(f"{redact(href)}: HTTP 403 Forbidden (the storage refused the URL: token missing, "
                               "expired or not valid for it); run again to resume with a fresh token") from None
        raise CropmapError(f"{redact(href)}: read failed ({_one_line(msg)}); run again to resume") from None


def read_day(items: Sequence, crs: CRS, transform: Affine, width: int, height: int,
             source: Source | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mosaic of one day's tiles: ``dn [4, H, W]`` uint16 harmonized (0 = nodata), ``scl [H, W]`` uint8.

    Each pixel comes whole (4 bands and SCL) from the first tile, in the given order, that has all four
    bands there; SCL (20 m) is resampled nearest to 10 m.
    """
    src = source or make_source("earth-search")
    dn = np.zeros((len(src.assets), height, width), np.uint16)
    scl = np.zeros((height, width), np.uint8)
    filled = np.zeros((height, width), bool)
    for item in items:
        bands = []
        for key in src.assets:
            h = src.harmonization(item, key)
            href = src.sign(_href(item, key))
            bands.append(harmonize(_read_warped(href, crs, transform, width, height, h.nodata), h))
        take = ~filled & np.all([b > 0 for b in bands], axis=0)
        if not take.any():
            continue
        s = _read_warped(src.sign(_href(item, src.scl_asset)), crs, transform, width, height, 0)
        for i, b in enumerate(bands):
            dn[i][take] = b[take]
        scl[take] = s[take]
        filled |= take
        if filled.all():
            break
    return dn, scl


def fetch_imagery(bbox: Sequence[float] | None, out: Path | str, *, start: str, end: str, bbox_crs: str = "EPSG:4326",
                  departement: str | None = None, boundaries: str | Path | None = None,
                  source: str = "earth-search", crs: str = "EPSG:2154", max_cloud: float | None = 80.0,
                  stac_url: str | None = None, collection: str | None = None, token_url: str | None = None,
                  overwrite: bool = False, retries: int = 5, backoff: float = 2.0, timeout: float = 60.0,
                  workers: int = 1, dask_address: str | None = None, ee_project: str | None = None,
                  mask: str = "cs", cs_threshold: float = 0.6) -> FetchImagerySummary:
    """Sentinel-2 L2A over ``bbox`` (in ``bbox_crs``) from ``start`` to ``end`` (YYYY-MM-DD, inclusive) as a
    Zarr cube at ``out``: one time step per solar day, a 10 m grid in ``crs`` (or ``"utm"``).

    The cube is written one date at a time; an interrupted fetch resumes where it stopped when run
    again. A complete cube at ``out`` is refused unless ``overwrite``. Dates are fetched ``workers`` at a
    time in threads, or as tasks on the Dask scheduler at ``dask_address`` (its workers write to ``out``:
    a path they must share).

    ``departement`` (an INSEE code) replaces ``bbox``: its box in Lambert-93 from ``boundaries`` (see
    :func:`cropmap.sources.departements.departement_bbox`).

    ``source="earth-engine"`` reads COPERNICUS/S2_SR_HARMONIZED through xee instead (project ``ee_project``),
    masking clouds by Cloud Score+ (``mask="cs"``: ``cs_cdf < cs_threshold`` becomes nodata) or by SCL.
    """
    import rasterio
    from rasterio.warp import transform_bounds

    from .zarr_cube import is_zarr, write_cube

    if source not in SOURCES:
        raise CropmapError(f"unknown imagery source {source!r}; expected one of {', '.join(SOURCES)}")
    out = Path(out)
    for name, value in (("--start", start), ("--end", end)):
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            raise CropmapError(f"{name} {value}: expected a date YYYY-MM-DD") from None
    if start > end:
        raise CropmapError(f"--start {start} is after --end {end}")
    if out.exists():
        if not is_zarr(out):
            raise CropmapError(f"{out}: exists and is not a Zarr cube; remove it or write elsewhere")
        if overwrite:
            shutil.rmtree(out)
        else:
            flags = _written(out)
            if flags is None or flags.all():  # complete, or a store that cannot be resumed
                raise CropmapError(f"{out}: already exists (pass --overwrite to replace it)")
            log.info("%s: incomplete cube (%d of %d steps), resuming", out, flags.sum(), flags.size)
    if departement is not None:
        from .departements import LAMBERT93, departement_bbox

        bbox, bbox_crs = departement_bbox(departement, boundaries), LAMBERT93
    elif bbox is None:
        raise CropmapError("fetch-imagery: give a bbox or a département")
    dst_crs, transform, width, height = target_grid(bbox, bbox_crs, crs)
    w, s, e, n = transform_bounds(CRS.from_user_input(bbox_crs), "EPSG:4326", *bbox, densify_pts=21)
    done_before = int(_written(out).sum()) if out.exists() else 0

    from ..progress import progress_bar

    if source == "earth-engine":
        from .earth_engine import fetch_earth_engine

        if dask_address:
            raise CropmapError("--source earth-engine runs its dates in threads here (--workers), not on a Dask "
                               "cluster: drop --dask-address")
        dates, _ = fetch_earth_engine(out, (w, s, e, n), start, end, crs=dst_crs, transform=transform, width=width,
                                      height=height, project=ee_project, mask=mask, cs_threshold=cs_threshold,
                                      max_cloud=max_cloud, workers=workers)
        return FetchImagerySummary(out, dates, len(dates), dst_crs, transform, width, height, done_before)
    src = make_source(source, stac_url=stac_url, collection=collection, token_url=token_url)
    collection = src.collection
    items = search_items(src.stac_url, collection, (w, s, e, n), f"{start}T00:00:00Z",
                         f"{end}T23:59:59Z", max_cloud=max_cloud, retries=retries, backoff=backoff, timeout=timeout)
    if not items:
        cloud = f" with at most {max_cloud:g} % cloud" if max_cloud is not None else ""
        raise CropmapError(f"no {collection} item over bbox {tuple(bbox)} ({bbox_crs}) from {start} to {end}{cloud}")
    days = group_by_solar_day(items)
    dates = list(days)
    # the time stamp of a step is its first acquisition (UTC, naive as in the rest of the cube readers)
    times = [min(i.datetime for i in days[d]).astimezone(dt.timezone.utc).replace(tzinfo=None) for d in dates]

    def read_step(i: int) -> tuple[np.ndarray, np.ndarray]:
        # GDAL options are per thread in rasterio: set them where the read runs (a thread or a Dask worker)
        with rasterio.Env(**GDAL_ENV):
            return read_day(days[dates[i]], dst_crs, transform, width, height, src)

    with progress_bar("fetch imagery", len(dates) - done_before) as advance:
        write_cube(out, times, read_step, crs=dst_crs, transform=transform, width=width, height=height, scl=True,
                   workers=workers, dask_address=dask_address, progress=advance)
    return FetchImagerySummary(out, dates, len(items), dst_crs, transform, width, height, done_before)


def _written(path: Path) -> np.ndarray | None:
    """The ``written`` flags of the cube at ``path``; None when it has none (not one write_cube started)."""
    from .zarr_cube import _open

    ds = _open(path)
    return ds["written"].values.astype(bool) if "written" in ds else None

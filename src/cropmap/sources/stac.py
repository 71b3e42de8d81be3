"""What the STAC providers (:mod:`.earth_search`, :mod:`.planetary_computer`) share: search, group by solar
day, harmonize the DN and warp onto the cube's 10 m grid, one block of the grid at a time.

Search goes through pystac-client (retries with back-off on 429/5xx and timeouts); pixels are read
with rasterio, each asset warped by a ``WarpedVRT`` straight onto the block, so only the parts of the
cloud-optimized GeoTIFFs covering it are fetched, and memory follows the block, not the area.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from ..errors import CropmapError
from .grid import solar_day
from .http import check_resolves, redact, redact_text

log = logging.getLogger(__name__)

EARTH_SEARCH = "https://earth-search.aws.element84.com/v1"
COLLECTION = "sentinel-2-c1-l2a"
ASSETS = ("blue", "green", "red", "nir")  # in the cube's band order B2, B3, B4, B8
SCL_ASSET = "scl"
# GDAL's own HTTP retries for the pixel reads (it retries 429/502/503/504 and connection resets)
GDAL_ENV = dict(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", GDAL_HTTP_MAX_RETRY="5", GDAL_HTTP_RETRY_DELAY="2",
                CPL_VSIL_CURL_ALLOWED_EXTENSIONS=".tif,.tiff,.TIF,.TIFF", AWS_NO_SIGN_REQUEST="YES",
                GDAL_HTTP_TIMEOUT="60")


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
    dark pixel at or below the offset does not turn into nodata.

    The usual case (factor 1, a whole shift: every Sentinel-2 L2A source) is integer arithmetic in place on
    one int32 copy (6 bytes per pixel in all); other scales go through float32.
    """
    valid = raw != h.nodata
    if h.factor == 1.0 and float(h.shift).is_integer():
        dn = raw.astype(np.int32)
        dn += int(h.shift)
    else:
        dn = np.rint(raw.astype(np.float32) * np.float32(h.factor) + np.float32(h.shift))
    np.clip(dn, 1, 65535, out=dn)
    out = dn.astype(np.uint16)
    out[~valid] = 0
    return out


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
    check_resolves(stac_url)
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
    src = source or Source("earth-search", "", "")
    dn = np.zeros((len(src.assets), height, width), np.uint16)
    scl = np.zeros((height, width), np.uint8)
    filled = np.zeros((height, width), bool)
    box = _lonlat_box(crs, transform, width, height)
    for item in items:
        if item.bbox and not _overlaps(item.bbox, box):
            continue  # a tile that does not reach this block: no file is opened
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




def _lonlat_box(crs: CRS, transform: Affine, width: int, height: int) -> tuple[float, float, float, float]:
    from rasterio.warp import transform_bounds

    x0, y1 = transform.c, transform.f  # a north-up grid
    x1, y0 = transform.c + transform.a * width, transform.f + transform.e * height
    return transform_bounds(crs, "EPSG:4326", x0, y0, x1, y1, densify_pts=21)


def _overlaps(a: Sequence[float], b: Sequence[float], margin: float = 0.01) -> bool:
    """Whether two lon/lat boxes overlap (with a margin of ~1 km: item footprints are approximate)."""
    return a[0] - margin <= b[2] and b[0] - margin <= a[2] and a[1] - margin <= b[3] and b[1] - margin <= a[3]


def plan_stac(src: Source, request):
    """Search ``src`` for ``request`` (a :class:`~cropmap.sources.providers.FetchRequest`) and return the
    plan: one time step per solar day, each block read by :func:`read_day`."""
    import rasterio
    from rasterio.windows import transform as window_transform

    from .providers import FetchPlan

    r = request
    items = search_items(src.stac_url, src.collection, r.bbox_wgs84, f"{r.start}T00:00:00Z", f"{r.end}T23:59:59Z",
                         max_cloud=r.max_cloud, retries=r.retries, backoff=r.backoff, timeout=r.timeout)
    if not items:
        cloud = f" with at most {r.max_cloud:g} % cloud" if r.max_cloud is not None else ""
        raise CropmapError(f"no {src.collection} item over {r.area} from {r.start} to {r.end}{cloud}")
    days = group_by_solar_day(items)
    dates = list(days)
    # the time stamp of a step is its first acquisition (UTC, naive as in the rest of the cube readers)
    times = [min(i.datetime for i in days[d]).astimezone(dt.timezone.utc).replace(tzinfo=None) for d in dates]
    crs, transform = r.crs, r.transform

    def read_block(i: int, window) -> tuple[np.ndarray, np.ndarray]:
        # GDAL options are per thread in rasterio: set them where the read runs (a thread or a Dask worker)
        with rasterio.Env(**GDAL_ENV):
            return read_day(days[dates[i]], crs, window_transform(window, transform), int(window.width),
                            int(window.height), src)

    return FetchPlan(dates, times, len(items), read_block, scl=True)

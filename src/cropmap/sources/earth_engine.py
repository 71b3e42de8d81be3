"""Sentinel-2 L2A from Google Earth Engine (``COPERNICUS/S2_SR_HARMONIZED``) into the Zarr cube of
:mod:`cropmap.sources.zarr_cube`, read through xee on the cube's own grid, one solar day at a time.

Earth Engine needs an account and the ``gee`` extra (earthengine-api, xee). Everything after the xarray
read (cloud masking by Cloud Score+ or SCL, DN checks, writing the resumable cube) is plain numpy here,
in :func:`step_arrays`, and runs without Earth Engine; the requests (:func:`s2_collection`, :func:`mosaic_days`,
:func:`xee_grid`) are built client-side with no network call.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import xarray as xr
from affine import Affine
from rasterio.crs import CRS

from ..errors import CropmapError
from .zarr_cube import write_cube

log = logging.getLogger(__name__)

EE_COLLECTION = "COPERNICUS/S2_SR_HARMONIZED"  # offset already removed: DN = reflectance x 10000
CS_COLLECTION = "GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED"
EE_BANDS = ("B2", "B3", "B4", "B8")  # the cube's band order
CS_BAND = "cs_cdf"
# the endpoint Google recommends for many small pixel requests, which is what xee makes
EE_HIGH_VOLUME = "https://earthengine-highvolume.googleapis.com"
MASKS = ("cs", "scl")
DEFAULT_CS_THRESHOLD = 0.6  # Google's suggested clear threshold for cs_cdf
_X_NAMES = ("x", "X", "lon", "longitude")
_Y_NAMES = ("y", "Y", "lat", "latitude")


def initialize(project: str | None):
    """Import and initialize the Earth Engine API; every way this fails becomes one line saying what to do."""
    try:
        import ee
    except ImportError:
        raise CropmapError("--source earth-engine needs the gee extra: pip install 'cropmap[gee]' "
                           "(earthengine-api and xee)") from None
    try:
        ee.Initialize(project=project, opt_url=EE_HIGH_VOLUME)
    except Exception as e:  # ee raises EEException, google.auth errors or HTTP errors depending on the cause
        msg = " ".join(str(e).split())
        low = msg.lower()
        if "authenticate" in low or "authoriz" in low or "credentials" in low:
            raise CropmapError("Earth Engine is not authenticated: run `earthengine authenticate` and pass "
                               "--ee-project") from None
        if "project" in low:
            raise CropmapError(f"Earth Engine refused project {project!r}: pass --ee-project with a Google Cloud "
                               f"project registered for Earth Engine ({msg[:160]})") from None
        raise CropmapError(f"Earth Engine initialization failed ({type(e).__name__}: {msg[:200]})") from None
    return ee


def step_arrays(step: xr.Dataset, width: int, height: int, *, mask: str = "cs",
                cs_threshold: float = DEFAULT_CS_THRESHOLD) -> tuple[np.ndarray, np.ndarray | None]:
    """One day of xee's output -> the cube's ``dn [4, H, W]`` uint16 (0 = nodata) and ``scl [H, W]`` uint8
    (``mask="scl"``; None with ``mask="cs"``, where cloudy pixels, ``cs_cdf < cs_threshold``, become nodata).

    ``step`` holds ``B2, B3, B4, B8`` (+ ``SCL`` or ``cs_cdf``) on dims (y, x) in any order and under any of
    the usual names (xee: ``y``/``x``, float with NaN where Earth Engine masked the pixel); y is put north
    to south and x west to east. The DN are those of S2_SR_HARMONIZED: the +1000 offset is already gone.
    """
    if mask not in MASKS:
        raise CropmapError(f"--mask {mask}: expected one of {', '.join(MASKS)}")
    need = list(EE_BANDS) + (["SCL"] if mask == "scl" else [CS_BAND])
    missing = [b for b in need if b not in step.data_vars]
    if missing:
        raise CropmapError(f"Earth Engine answer lacks band(s) {', '.join(missing)} (has {', '.join(step.data_vars)})")
    step = _north_up(step)
    if (step.sizes[step[EE_BANDS[0]].dims[0]], step.sizes[step[EE_BANDS[0]].dims[1]]) != (height, width):
        raise CropmapError(f"Earth Engine answer is {dict(step.sizes)}; expected {height} x {width} px")
    raw = np.stack([np.asarray(step[b].values, dtype=np.float64) for b in EE_BANDS])  # [4, H, W]
    valid = np.isfinite(raw).all(axis=0) & (np.nan_to_num(raw) > 0).all(axis=0)
    if mask == "cs":
        cs = np.asarray(step[CS_BAND].values, dtype=np.float64)
        valid &= np.isfinite(cs) & (cs >= cs_threshold)  # no score: not known to be clear
    dn = np.where(valid, np.clip(np.rint(np.nan_to_num(raw)), 1, 65535), 0).astype(np.uint16)
    if mask == "cs":
        return dn, None
    scl = np.nan_to_num(np.asarray(step["SCL"].values, dtype=np.float64), nan=0.0)
    return dn, np.where(valid, scl, 0).astype(np.uint8)


def _north_up(step: xr.Dataset) -> xr.Dataset:
    """``step`` with dims renamed to (y, x), transposed so, y descending and x ascending."""
    dims = set(step.dims)
    xd = next((d for d in _X_NAMES if d in dims), None)
    yd = next((d for d in _Y_NAMES if d in dims), None)
    if xd is None or yd is None:
        raise CropmapError(f"Earth Engine answer has dims {tuple(step.dims)}; expected an x and a y dimension")
    step = step.rename({xd: "_x", yd: "_y"}).rename({"_x": "x", "_y": "y"})
    extra = [d for d in step.dims if d not in ("y", "x") and step.sizes[d] == 1]
    step = step.isel({d: 0 for d in extra}).transpose("y", "x")
    if "y" in step.coords and step.sizes["y"] > 1 and step["y"].values[0] < step["y"].values[-1]:
        step = step.isel(y=slice(None, None, -1))
    if "x" in step.coords and step.sizes["x"] > 1 and step["x"].values[0] > step["x"].values[-1]:
        step = step.isel(x=slice(None, None, -1))
    return step


def s2_collection(ee, bbox_wgs84: Sequence[float], start: str, end: str, *, mask: str,
                  max_cloud: float | None):
    """Server side, built offline: S2_SR_HARMONIZED over the bbox from ``start`` to ``end`` (YYYY-MM-DD, both
    inclusive as on the command line), Cloud Score+ linked in with ``mask="cs"``; returns (collection, the
    bands :func:`step_arrays` needs)."""
    region = ee.Geometry.Rectangle(list(bbox_wgs84), "EPSG:4326", False)
    # filterDate's end is exclusive: the day after --end
    ic = ee.ImageCollection(EE_COLLECTION).filterBounds(region).filterDate(start, (
        dt.date.fromisoformat(end) + dt.timedelta(days=1)).isoformat())
    if max_cloud is not None:
        ic = ic.filter(ee.Filter.lte("CLOUDY_PIXEL_PERCENTAGE", max_cloud))
    if mask == "cs":
        return ic.linkCollection(ee.ImageCollection(CS_COLLECTION), [CS_BAND]), list(EE_BANDS) + [CS_BAND]
    return ic, list(EE_BANDS) + ["SCL"]


def group_solar_days(stamps: Sequence[int], lon: float) -> dict[dt.date, list[int]]:
    """Acquisition times (``system:time_start``, ms since 1970 UTC) grouped by local solar day at ``lon``,
    days in order."""
    from .grid import solar_day

    days: dict[dt.date, list[int]] = {}
    for ms in stamps:
        when = dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)
        days.setdefault(solar_day(when, lon), []).append(int(ms))
    return {d: days[d] for d in sorted(days)}


def mosaic_days(ee, ic, bands: Sequence[str], days: dict[dt.date, list[int]]):
    """Server side, built offline: one mosaic of ``ic`` per solar day of ``days`` (least cloudy tile on top,
    ``system:time_start`` = the day's first acquisition); returns (collection, dates, times in naive UTC)."""
    images, times = [], []
    # mosaic() picks each band's top unmasked pixel on its own: tiles of one day share their footprints,
    # so bands and SCL/cs_cdf come from the same tile except along footprint edges
    for day in sorted(days):
        first, last = min(days[day]), max(days[day])
        # mosaic() puts the last image on top: sort the most cloudy first
        one = ic.filterDate(first, last + 1).sort("CLOUDY_PIXEL_PERCENTAGE", False).select(list(bands))
        images.append(one.mosaic().set("system:time_start", first))
        times.append(dt.datetime.fromtimestamp(first / 1000, dt.timezone.utc).replace(tzinfo=None))
    return ee.ImageCollection.fromImages(images), sorted(days), times


def day_mosaics(ee, bbox_wgs84: Sequence[float], start: str, end: str, *, mask: str, max_cloud: float | None):
    """The day mosaics of S2_SR_HARMONIZED over the bbox with the bands ``step_arrays`` needs, and their
    client-side times (first acquisition of each solar day, UTC). One request: the acquisition times."""
    ic, bands = s2_collection(ee, bbox_wgs84, start, end, mask=mask, max_cloud=max_cloud)
    stamps = ic.aggregate_array("system:time_start").getInfo() or []
    days = group_solar_days(stamps, (bbox_wgs84[0] + bbox_wgs84[2]) / 2)
    return mosaic_days(ee, ic, bands, days)


def xee_grid(crs: CRS, transform: Affine, width: int, height: int) -> dict:
    """xee's grid arguments for the cube's grid (xee's ``shape_2d`` is width first)."""
    return {"crs": crs.to_string(), "crs_transform": tuple(transform)[:6], "shape_2d": (width, height)}


def open_grid(ic, crs: CRS, transform: Affine, width: int, height: int) -> xr.Dataset:
    """The collection as a lazy xarray Dataset on exactly the cube's grid (xee fetches pixels on access)."""
    try:
        return xr.open_dataset(ic, engine="ee", **xee_grid(crs, transform, width, height))
    except ImportError:
        raise CropmapError("--source earth-engine needs xee: pip install 'cropmap[gee]'") from None


def plan(request):
    """Provider ``earth-engine``: the day mosaics over the request's area, each block read from xee's lazy
    Dataset on the cube's grid (xee splits a block into requests under Earth Engine's request-size limit)."""
    from .providers import FetchPlan

    r, o = request, request.options
    mask, cs_threshold = o.get("mask", "cs"), o.get("cs_threshold", DEFAULT_CS_THRESHOLD)
    if mask not in MASKS:
        raise CropmapError(f"--mask {mask}: expected one of {', '.join(MASKS)}")
    if not 0.0 <= cs_threshold <= 1.0:
        raise CropmapError(f"--cs-threshold {cs_threshold}: expected a value from 0 to 1")
    ee = initialize(o.get("ee_project"))
    ic, dates, times = day_mosaics(ee, r.bbox_wgs84, r.start, r.end, mask=mask, max_cloud=r.max_cloud)
    if not dates:
        cloud = f" with at most {r.max_cloud:g} % cloud" if r.max_cloud is not None else ""
        raise CropmapError(f"no {EE_COLLECTION} image over {r.area} from {r.start} to {r.end}{cloud}")
    ds = open_grid(ic, r.crs, r.transform, r.width, r.height)
    # xee keeps its Earth Engine session in this process: blocks run in threads here, not on a Dask cluster
    return FetchPlan(dates, times, len(dates), block_reader(ds, len(times), r.width, r.height, mask=mask,
                                                            cs_threshold=cs_threshold),
                     scl=mask == "scl", cluster=False)


def block_reader(ds: xr.Dataset, n_times: int, width: int, height: int, *, mask: str = "cs",
                 cs_threshold: float = DEFAULT_CS_THRESHOLD):
    """``read(i, window)`` over xee's Dataset ``ds`` (one step per solar day along its first dim): only the
    window's pixels are loaded, whatever the orientation of ``ds``'s axes."""
    time_dim = ds[EE_BANDS[0]].dims[0] if EE_BANDS[0] in ds else "time"
    if ds.sizes.get(time_dim) != n_times:
        raise CropmapError(f"Earth Engine answer has {ds.sizes.get(time_dim)} time steps; expected {n_times}")
    dims = set(ds.dims)
    xd = next((d for d in _X_NAMES if d in dims), None)
    yd = next((d for d in _Y_NAMES if d in dims), None)
    if xd is None or yd is None:
        raise CropmapError(f"Earth Engine answer has dims {tuple(ds.dims)}; expected an x and a y dimension")
    y_up = yd in ds.coords and ds.sizes[yd] > 1 and ds[yd].values[0] < ds[yd].values[-1]  # south first
    x_back = xd in ds.coords and ds.sizes[xd] > 1 and ds[xd].values[0] > ds[xd].values[-1]  # east first

    def span(off: int, n: int, size: int, flipped: bool) -> slice:
        return slice(size - off - n, size - off) if flipped else slice(off, off + n)

    def read(i: int, window) -> tuple[np.ndarray, np.ndarray | None]:
        r0, c0, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
        sub = ds.isel({time_dim: i, yd: span(r0, h, ds.sizes[yd], y_up), xd: span(c0, w, ds.sizes[xd], x_back)})
        return step_arrays(sub.load(), w, h, mask=mask, cs_threshold=cs_threshold)

    return read


def write_ee_cube(out: Path, ds: xr.Dataset, times: Sequence[dt.datetime], *, crs: CRS, transform: Affine,
                  width: int, height: int, mask: str = "cs", cs_threshold: float = DEFAULT_CS_THRESHOLD,
                  workers: int = 1, progress=None, block: int | None = None) -> Path:
    """Write xee's Dataset ``ds`` (one step per entry of ``times`` along its first dim) into the cube at ``out``,
    block by block through :func:`step_arrays`; a cube left incomplete is resumed."""
    from .zarr_cube import BLOCK

    read = block_reader(ds, len(times), width, height, mask=mask, cs_threshold=cs_threshold)
    return write_cube(out, times, read, crs=crs, transform=transform, width=width, height=height,
                      scl=mask == "scl", workers=workers, progress=progress, block=block or BLOCK)

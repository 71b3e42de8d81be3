"""The 10 m grid a fetch writes on, and the solar day an acquisition belongs to: shared by every imagery
provider."""

from __future__ import annotations

import datetime as dt
import math
from typing import Sequence

from affine import Affine
from rasterio.crs import CRS

from ..errors import CropmapError

RESOLUTION = 10.0


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

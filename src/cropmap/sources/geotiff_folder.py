"""A folder of per-date Sentinel-2 GeoTIFFs (``S2_2023-05-14.tif``, bands B2 B3 B4 B8 [SCL]) as one stack.

Each file holds one acquisition: uint16 DN (reflectance = DN / 10000, 0 = nodata), bands found by
their descriptions, else taken in the order B2, B3, B4, B8[, SCL]. The date is the first
``YYYY-MM-DD`` or ``YYYYMMDD`` in the file name. Reads are windowed, so callers can stream.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from ..errors import CropmapError

BANDS = ("B2", "B3", "B4", "B8")
_ALIASES = {
    "B2": {"b2", "b02", "blue"},
    "B3": {"b3", "b03", "green"},
    "B4": {"b4", "b04", "red"},
    "B8": {"b8", "b08", "nir"},
    "SCL": {"scl"},
}
_DATE = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")


def date_from_name(name: str) -> dt.date | None:
    """First ``YYYY-MM-DD`` or ``YYYYMMDD`` in ``name`` that is a real calendar date."""
    for m in _DATE.finditer(name):
        # reject mixed forms such as 2023-0514
        text = m.group(0)
        if len(text) not in (8, 10) or (len(text) == 10 and text[4] != "-"):
            continue
        try:
            return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            continue
    return None


class GridStack:
    """What every imagery stack derives from its ``dates`` and grid (``height``, ``width``, ``transform``)."""

    dates: tuple[dt.date, ...]
    height: int
    width: int
    transform: Affine

    def __len__(self) -> int:
        return len(self.dates)

    def read_steps(self, indices: Sequence[int], window: Window | None = None
                   ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """``read(i, window)`` for each of ``indices``; stores that read several dates at once for less (a Zarr cube)
        override it."""
        return [self.read(i, window) for i in indices]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in the imagery CRS."""
        return rasterio.transform.array_bounds(self.height, self.width, self.transform)


@dataclass(frozen=True)
class SceneStack(GridStack):
    """Per-date GeoTIFFs on one grid; ``read`` returns ``([4, h, w] uint16 DN, [h, w] SCL or None)``."""

    files: tuple[Path, ...]
    dates: tuple[dt.date, ...]
    crs: CRS
    transform: Affine
    width: int
    height: int
    band_indexes: tuple[tuple[int, ...], ...]  # per file: 1-based indexes of B2, B3, B4, B8
    scl_indexes: tuple[int | None, ...]  # per file: 1-based index of SCL, or None

    @property
    def has_scl(self) -> bool:
        return any(i is not None for i in self.scl_indexes)

    def read(self, i: int, window: Window | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        path = self.files[i]
        try:
            with rasterio.open(path) as src:
                dn = src.read(list(self.band_indexes[i]), window=window)
                scl = src.read(self.scl_indexes[i], window=window) if self.scl_indexes[i] else None
        except (rasterio.errors.RasterioIOError, UnicodeDecodeError) as e:  # damaged metadata text is not UTF-8
            raise CropmapError(f"{path}: cannot read ({e})") from e
        if dn.dtype != np.uint16:
            raise CropmapError(f"{path}: bands are {dn.dtype}, expected uint16 DN (reflectance x 10000)")
        return dn, scl


def open_scene_folder(path: Path | str) -> SceneStack:
    """Index a folder of per-date GeoTIFFs; every file must share one grid and carry B2, B3, B4, B8."""
    folder = Path(path)
    if not folder.exists():
        raise CropmapError(f"{folder}: imagery folder does not exist")
    if not folder.is_dir():
        raise CropmapError(f"{folder}: expected a folder of per-date GeoTIFFs, got a file")
    candidates = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff") and not p.name.startswith("."))
    if not candidates:
        raise CropmapError(f"{folder}: no GeoTIFF (.tif) files found; the time series is empty")
    entries = []
    for p in candidates:
        d = date_from_name(p.name)
        if d is None:
            raise CropmapError(f"{p}: no date (YYYY-MM-DD or YYYYMMDD) in the file name")
        entries.append((d, p))
    entries.sort()
    dates = [d for d, _ in entries]
    dupes = sorted({d for d in dates if dates.count(d) > 1})
    if dupes:
        raise CropmapError(f"{folder}: several files for the date(s) {', '.join(map(str, dupes))}; keep one per date")

    ref = None
    band_indexes, scl_indexes = [], []
    for d, p in entries:
        try:
            with rasterio.open(p) as src:
                grid = (src.crs, src.transform, src.width, src.height)
                descriptions = src.descriptions
                count = src.count
                dtypes = src.dtypes
                _check_complete(p, src)
        except (rasterio.errors.RasterioIOError, UnicodeDecodeError) as e:  # damaged metadata text is not UTF-8
            raise CropmapError(f"{p}: not a readable GeoTIFF ({e})") from e
        if grid[0] is None:
            raise CropmapError(f"{p}: the GeoTIFF has no CRS")
        if ref is None:
            ref = (p, grid)
        elif grid != ref[1]:
            raise CropmapError(
                f"{p}: grid differs from {ref[0].name} (CRS, transform or size); resample all dates onto one grid"
            )
        bands, scl = _find_bands(p, descriptions, count)
        wrong = sorted({dtypes[i - 1] for i in bands} - {"uint16"})
        if wrong:  # checked here too, so that a build fails before its first read rather than in it
            raise CropmapError(f"{p}: bands are {', '.join(wrong)}, expected uint16 DN (reflectance x 10000)")
        band_indexes.append(bands)
        scl_indexes.append(scl)
    assert ref is not None
    crs, transform, width, height = ref[1]
    return SceneStack(
        files=tuple(p for _, p in entries),
        dates=tuple(dates),
        crs=crs,
        transform=transform,
        width=width,
        height=height,
        band_indexes=tuple(band_indexes),
        scl_indexes=tuple(scl_indexes),
    )


def _check_complete(path: Path, src) -> None:
    """Refuse a truncated download up front: GDAL opens it, then reads missing tags as "no CRS" and
    missing blocks as errors half-way through a build. The last block of each band must lie in the file."""
    size = path.stat().st_size
    for b in range(1, src.count + 1):
        bh, bw = src.block_shapes[b - 1]
        key = f"{-(-src.width // bw) - 1}_{-(-src.height // bh) - 1}"  # BLOCK_OFFSET_<x block>_<y block>
        offset, length = (src.get_tag_item(f"BLOCK_{k}_{key}", "TIFF", bidx=b) for k in ("OFFSET", "SIZE"))
        if offset and length and int(offset) > 0 and int(offset) + int(length) > size:
            raise CropmapError(f"{path}: truncated (band {b} ends at byte {int(offset) + int(length):,}, "
                               f"the file has {size:,}); download it again")


def _find_bands(path: Path, descriptions: tuple[str | None, ...], count: int) -> tuple[tuple[int, ...], int | None]:
    names = [(d or "").strip().lower() for d in descriptions]
    if any(names):
        found: dict[str, int] = {}
        for i, n in enumerate(names, start=1):
            for band, aliases in _ALIASES.items():
                if n in aliases and band not in found:
                    found[band] = i
        missing = [b for b in BANDS if b not in found]
        if missing:
            raise CropmapError(
                f"{path}: missing band(s) {', '.join(missing)} (band descriptions: {', '.join(repr(d) for d in descriptions)})"
            )
        return tuple(found[b] for b in BANDS), found.get("SCL")
    if count < 4:
        raise CropmapError(f"{path}: {count} band(s) without descriptions; expected B2, B3, B4, B8[, SCL] in that order")
    return (1, 2, 3, 4), (5 if count >= 5 else None)

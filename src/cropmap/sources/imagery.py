"""One entry point for imagery: a per-date GeoTIFF folder, a Zarr cube or a CF NetCDF file, all read
through the same small stack interface (dates, grid, windowed ``read``).

``open_imagery`` looks at what the path is; the Zarr cube and NetCDF readers share the xarray-backed
stack of :mod:`.xarray_stack`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from ..errors import CropmapError
from .geotiff_folder import open_scene_folder
from .netcdf import open_netcdf
from .xarray_stack import XarrayStack  # noqa: F401  (re-exported: the stack type of cubes and NetCDF files)
from .zarr_cube import is_zarr, open_cube

NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf")


class ImageryStack(Protocol):
    """What the pipeline needs from imagery: acquisitions on one grid, read one date and window at a time.

    ``files`` holds one path per date, used in messages (``files[0].parent`` names the source).
    """

    files: tuple[Path, ...]
    dates: tuple[dt.date, ...]
    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def bounds(self) -> tuple[float, float, float, float]: ...

    def __len__(self) -> int: ...

    def read(self, i: int, window: Window | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """``([4, h, w] uint16 DN = reflectance x 10000, 0 = nodata; [h, w] SCL or None)``."""
        ...

    def read_steps(self, indices: Sequence[int], window: Window | None = None
                   ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """``read(i, window)`` for each of ``indices``, in as few reads of the store as it can."""
        ...


def open_imagery(path: Path | str) -> ImageryStack:
    """Open ``path`` as a folder of per-date GeoTIFFs, a ``.zarr`` cube or a ``.nc`` NetCDF file."""
    p = Path(path)
    if not p.exists() and p.suffix.lower() in (".zarr", *NETCDF_SUFFIXES):
        raise CropmapError(f"{p}: imagery does not exist")
    if not p.exists():
        return open_scene_folder(p)  # says "imagery folder does not exist"
    if p.is_dir():
        if p.suffix.lower() == ".zarr" or is_zarr(p):
            return open_cube(p)
        return open_scene_folder(p)
    if p.suffix.lower() in NETCDF_SUFFIXES:
        return open_netcdf(p)
    raise CropmapError(
        f"{p}: not imagery cropmap reads; expected a folder of per-date GeoTIFFs, a .zarr cube or a .nc NetCDF file"
    )


class DatesUpTo:
    """``stack`` without its acquisitions after ``until``: an in-season view (``predict --until``), the same
    as imagery that simply ends on that date."""

    def __init__(self, stack: ImageryStack, until: dt.date) -> None:
        keep = [i for i, d in enumerate(stack.dates) if d <= until]
        if not keep:
            first = stack.dates[0] if len(stack.dates) else "none"
            raise CropmapError(f"{stack.files[0].parent}: no acquisition on or before {until} (first {first})")
        self._stack, self._keep, self.until = stack, keep, until
        self.files = tuple(stack.files[i] for i in keep)
        self.dates = tuple(stack.dates[i] for i in keep)

    def __getattr__(self, name: str):  # crs, transform, width, height, bounds, has_scl, attrs: the stack's own
        return getattr(self._stack, name)

    def __len__(self) -> int:
        return len(self._keep)

    def read(self, i: int, window: Window | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        return self._stack.read(self._keep[i], window)

    def read_steps(self, indices: Sequence[int], window: Window | None = None
                   ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        return self._stack.read_steps([self._keep[i] for i in indices], window)


def parse_date(text: str | dt.date | None, what: str = "--until") -> dt.date | None:
    """``YYYY-MM-DD`` (or a date) -> date; a bad one is a one-line error."""
    if text is None or isinstance(text, dt.date):
        return text
    try:
        return dt.date.fromisoformat(str(text))
    except ValueError:
        raise CropmapError(f"{what} {text!r}: expected a date YYYY-MM-DD") from None

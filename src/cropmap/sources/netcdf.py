"""A CF NetCDF file of Sentinel-2 bands over (time, y, x), e.g. a WorldCereal/openEO patch export.

Variables B02, B03, B04, B08 (or B2..B8) [and SCL] on one grid; the time dimension may have any name
(``t``, ``time``, ``timestamp``) as long as its coordinate decodes to dates (CF ``units``). Stored
values are taken with their CF ``scale_factor``/``add_offset``/``_FillValue`` (uint16 with
scale_factor 1e-4 is DN as is); the CRS comes from the grid mapping variable (``crs_wkt``) or a
``crs``/``epsg`` attribute. Read lazily with h5netcdf, one date and window at a time.
"""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from ..errors import CropmapError
from .xarray_stack import XarrayStack


def open_netcdf(path: Path | str) -> XarrayStack:
    """Open a NetCDF4 imagery file lazily."""
    path = Path(path)
    try:
        # mask_and_scale=False: keep the stored integers; XarrayStack applies the CF scaling itself
        ds = xr.open_dataset(path, engine="h5netcdf", mask_and_scale=False, chunks=None)
    except ImportError as e:
        raise CropmapError(f"{path}: reading NetCDF needs h5netcdf (pip install h5netcdf)") from e
    except (OSError, ValueError) as e:
        raise CropmapError(f"{path}: not a readable NetCDF4 file ({e})") from e
    return XarrayStack(path, ds, stacked="dn" if "dn" in ds.data_vars else None)

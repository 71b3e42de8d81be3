"""The imagery providers behind ``cropmap fetch-imagery``: one small protocol and a table.

A provider is a module with ``plan(request: FetchRequest) -> FetchPlan``: it finds the acquisitions of the
area and season and returns how to read any block of any time step onto the cube's grid. Everything
else (the grid, resuming, blocks, threads or Dask, the cube) is :func:`cropmap.sources.fetch.fetch_imagery`'s.
Adding a provider is one module and one line in :data:`PROVIDERS`.
"""

from __future__ import annotations

import datetime as dt
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..errors import CropmapError

if TYPE_CHECKING:  # the table is read by the command line at start-up: no rasterio or xarray import here
    from affine import Affine
    from rasterio.crs import CRS

    from .zarr_cube import ReadStep

# name -> module under cropmap.sources
PROVIDERS = {
    "earth-search": "earth_search",  # Element 84's STAC API, sentinel-2-c1-l2a, no account
    "planetary-computer": "planetary_computer",  # Microsoft's STAC API, sentinel-2-l2a, signed URLs
    "earth-engine": "earth_engine",  # COPERNICUS/S2_SR_HARMONIZED through xee, an account and cropmap[gee]
}


@dataclass(frozen=True)
class FetchRequest:
    """What to fetch: the area (as lon/lat box and as the cube's grid), the season, and provider options."""

    bbox_wgs84: tuple[float, float, float, float]
    start: str  # YYYY-MM-DD, inclusive
    end: str  # YYYY-MM-DD, inclusive
    crs: CRS
    transform: Affine
    width: int
    height: int
    area: str  # the area as the user gave it, for messages
    max_cloud: float | None = 80.0
    retries: int = 5
    backoff: float = 2.0
    timeout: float = 60.0
    options: dict = field(default_factory=dict)  # provider-specific: stac_url, collection, token_url, ee_project...


@dataclass
class FetchPlan:
    """The time steps found and how to read them: ``read(i, window)`` -> ``(dn [4, h, w] uint16, scl [h, w] or
    None)``; ``cluster`` says whether ``read`` may run on other machines (Dask workers) or only here."""

    dates: list[dt.date]
    times: list[dt.datetime]
    n_items: int
    read: ReadStep
    scl: bool = True
    cluster: bool = True


class Provider(Protocol):
    def plan(self, request: FetchRequest) -> FetchPlan: ...


def provider(name: str) -> Provider:
    """The provider module called ``name``."""
    if name not in PROVIDERS:
        raise CropmapError(f"unknown imagery source {name!r}; expected one of {', '.join(PROVIDERS)}")
    return importlib.import_module(f"{__package__}.{PROVIDERS[name]}")


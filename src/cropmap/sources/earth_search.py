"""Provider ``earth-search``: Element 84's STAC API, collection ``sentinel-2-c1-l2a`` (Sentinel-2 Collection 1,
no account). Its COGs keep the +1000 BOA offset for baseline >= 04.00 and say so in ``raster:bands``."""

from __future__ import annotations

from .providers import FetchPlan, FetchRequest
from .stac import ASSETS, COLLECTION, EARTH_SEARCH, Source, plan_stac


def source(options: dict) -> Source:
    return Source("earth-search", options.get("stac_url") or EARTH_SEARCH, options.get("collection") or COLLECTION,
                  ASSETS)


def plan(request: FetchRequest) -> FetchPlan:
    return plan_stac(source(request.options), request)

"""RPG parcels of an area from a WFS 2.0 service (the IGN Géoplateforme's by default): paged GetFeature in
Lambert-93, retried with back-off on 429/5xx, under the service's request rate, resumable page by page.

Each page is cached as its GeoJSON answer under ``cache/wfs/<query key>/``: a run that stopped half way
fetches only the missing pages, and the same area twice costs no request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import geopandas as gpd
import pandas as pd

from ..errors import CropmapError
from .http import RateLimit, get_json, redact
from .rpg_editions import WFS_URL

log = logging.getLogger(__name__)

PAGE_SIZE = 5000  # the Géoplateforme's most features per answer
RATE_PER_S = 20.0  # the service allows ~30 requests/s; stay well under it


def _query_key(wfs_url: str, typename: str, bbox, page_size: int, extra: dict) -> str:
    text = json.dumps([redact(wfs_url), typename, [round(float(v), 3) for v in bbox], page_size, extra],
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def get_features(typename: str, *, bbox: tuple[float, float, float, float] | None = None, wfs_url: str = WFS_URL,
                 cache: Path, filter_xml: str | None = None, page_size: int = PAGE_SIZE,
                 allow_http: bool = False, retries: int = 5, backoff: float = 2.0,
                 rate: RateLimit | None = None, progress=None) -> tuple[gpd.GeoDataFrame, int]:
    """Every feature of ``typename`` in ``bbox`` (Lambert-93) and/or matching the FES ``filter_xml``, as a
    GeoDataFrame in EPSG:2154 with the service's own property names; returns it and the pages fetched now.

    Pages of ``page_size`` are asked with ``COUNT`` and ``STARTINDEX`` until ``numberMatched`` features are in
    hand (or, where the server announces no count, until a short page).
    """
    rate = rate or RateLimit(RATE_PER_S)
    params = {"SERVICE": "WFS", "VERSION": "2.0.0", "REQUEST": "GetFeature", "TYPENAMES": typename,
              "SRSNAME": "EPSG:2154", "OUTPUTFORMAT": "application/json", "COUNT": str(page_size)}
    if bbox is not None:
        # EPSG:2154 is easting-northing in the EPSG register too, so the URN order is x, y: no axis question
        params["BBOX"] = ",".join(f"{v:.3f}" for v in bbox) + ",urn:ogc:def:crs:EPSG::2154"
    if filter_xml is not None:
        params["FILTER"] = filter_xml
    folder = cache / "wfs" / _query_key(wfs_url, typename, bbox or (), page_size, {"filter": filter_xml})
    folder.mkdir(parents=True, exist_ok=True)
    frames, start, fetched, matched = [], 0, 0, None
    while True:
        page = folder / f"{start:09d}.json"
        if page.exists():
            body = json.loads(page.read_text())
        else:
            body = get_json(wfs_url, {**params, "STARTINDEX": str(start)}, allow_http=allow_http, retries=retries,
                            backoff=backoff, rate=rate)
            if body.get("type") != "FeatureCollection" or not isinstance(body.get("features"), list):
                raise CropmapError(f"{redact(wfs_url)}: {typename}: the answer is not a GeoJSON FeatureCollection "
                                   f"({str(body)[:160]})")
            tmp = page.with_name(f".{page.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(body))
            os.replace(tmp, page)  # a page on disk is whole
            fetched += 1
        feats = body["features"]
        if matched is None and isinstance(body.get("numberMatched"), int):
            matched = body["numberMatched"]
        if feats:
            frames.append(gpd.GeoDataFrame.from_features(feats, crs="EPSG:2154"))
        start += len(feats)
        if progress:
            progress(start, matched)
        # a server may cap COUNT below ours: a short page ends the walk only when nothing was announced
        if not feats or (matched is not None and start >= matched) or (matched is None and len(feats) < page_size):
            break
    if matched is not None and start < matched:
        raise CropmapError(f"{redact(wfs_url)}: {typename}: {start} features received, {matched} announced; "
                           "run again to resume")
    if not frames:
        return gpd.GeoDataFrame(geometry=[], crs="EPSG:2154"), fetched
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs="EPSG:2154"), fetched


def equal_filter(field: str, value: str) -> str:
    """An FES 2.0 filter ``field = value`` (plain WFS 2.0; no vendor CQL)."""
    from xml.sax.saxutils import escape

    return ('<fes:Filter xmlns:fes="http://www.opengis.net/fes/2.0"><fes:PropertyIsEqualTo>'
            f"<fes:ValueReference>{escape(field)}</fes:ValueReference><fes:Literal>{escape(value)}</fes:Literal>"
            "</fes:PropertyIsEqualTo></fes:Filter>")

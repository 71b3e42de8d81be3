"""``cropmap fetch-parcels``: the RPG parcels of an area (a box or a département) for any edition 2015-2025,
from the WFS (small areas) or an archive (large ones), written in one schema (:mod:`.rpg_schema`).

Why a size switch: the WFS sends GeoJSON, about 1.5 kB per parcel, but only for the area asked; an archive
costs a whole region (regional 7z: 0.3-2 GB) or France (10-42 GB) whatever the area, at about 0.3 kB per
parcel. A département box (at most ~25,000 km², ~50-150 thousand parcels, 10-30 pages) is cheaper over the
WFS; past :data:`WFS_MAX_KM2` (a third of a large region) the regional archive wins.
"""

from __future__ import annotations

import logging
import urllib.parse
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import CropmapError
from .http import check_scheme, check_sha256, default_cache, is_url, redact
from .rpg_archive import (MAX_EXTRACT_BYTES, download_volumes, extract_parcels, local_volumes)
from .rpg_editions import FEED_URL, WFS_URL, WFS_YEARS, YEARS, find_edition, wfs_typename
from .rpg_schema import OUT_CRS, OUT_LAYER, normalise, parcels_layer

log = logging.getLogger(__name__)

SOURCES = ("auto", "wfs", "archive")
WFS_MAX_KM2 = 40_000.0


@dataclass(frozen=True)
class FetchSummary:
    path: Path
    n_parcels: int
    year: int
    source: str  # "wfs" or "archive"
    origin: str  # the WFS feature type, or the archive's resource / local file
    layer: str  # the layer read (archive) or the feature type (WFS)
    downloaded_bytes: int  # archive bytes received now
    requests: int  # WFS pages fetched now (the rest came from the cache)


def _area(bbox, bbox_crs: str):
    """The box as a Lambert-93 polygon (densified, so a lon/lat box stays its true shape)."""
    import geopandas as gpd
    from shapely.geometry import box

    xmin, ymin, xmax, ymax = bbox
    if not (xmin < xmax and ymin < ymax):
        raise CropmapError(f"bbox {tuple(bbox)}: expected xmin ymin xmax ymax with xmin < xmax and ymin < ymax")
    poly = box(*bbox).segmentize(max(xmax - xmin, ymax - ymin) / 64)
    return gpd.GeoSeries([poly], crs=bbox_crs).to_crs(OUT_CRS).iloc[0]


def choose_source(source: str, year: int, area_km2: float, archive) -> str:
    if source not in SOURCES:
        raise CropmapError(f"--source {source}: expected one of {', '.join(SOURCES)}")
    if source == "wfs" and year not in WFS_YEARS:
        raise CropmapError(f"RPG {year}: the WFS serves {WFS_YEARS.start}-{WFS_YEARS.stop - 1} only; "
                           "use --source archive")
    if source != "auto":
        return source
    if archive is not None or year not in WFS_YEARS:
        return "archive"
    return "wfs" if area_km2 <= WFS_MAX_KM2 else "archive"


def fetch_parcels(year: int, bbox: tuple[float, float, float, float] | None, out: Path | str, *,
                  bbox_crs: str = OUT_CRS, departement: str | None = None, boundaries: str | Path | None = None,
                  source: str = "auto", archive: str | Path | None = None, wfs_url: str = WFS_URL,
                  feed_url: str | None = FEED_URL, national: bool = False, cache: Path | str | None = None,
                  sha256: str | None = None, allow_http: bool = False, overwrite: bool = False,
                  max_extract_bytes: int = MAX_EXTRACT_BYTES, retries: int = 5,
                  backoff: float = 2.0) -> FetchSummary:
    """Parcels of RPG ``year`` in ``bbox`` (in ``bbox_crs``) or in département ``departement`` (clipped to its
    outline, see :func:`~cropmap.sources.departements.departement_outline`), written to ``out`` (GeoPackage,
    layer ``PARCELLES_GRAPHIQUES``, Lambert-93, upper-case RPG fields, ``RPG_YEAR``).

    ``source``: ``wfs`` (paged GetFeature at ``wfs_url``, resumable, cached), ``archive`` (``archive``: a URL
    or a local 7z or first volume ``.7z.001``; default the edition found in the feed at ``feed_url`` or in
    the table, regional for a département unless ``national``) or ``auto`` (see the module). Downloads
    and pages go under ``cache`` (default ``$CROPMAP_CACHE`` or ``~/.cache/cropmap``).
    """
    import pyogrio

    from ..atomic import atomic_path, refuse_existing

    out = Path(out)
    refuse_existing(out, overwrite=overwrite)  # before the work; atomic_path checks again
    if year not in YEARS:
        raise CropmapError(f"RPG {year}: no such edition (the RPG is published for {YEARS.start}-{YEARS.stop - 1})")
    root = Path(cache) if cache is not None else default_cache()
    region = None
    if departement is not None:
        from .departements import departement_outline

        if bbox is not None:
            raise CropmapError("fetch-parcels: give either --bbox or --departement")
        outline = departement_outline(departement, boundaries, wfs_url=wfs_url, cache=root, allow_http=allow_http,
                                      retries=retries, backoff=backoff)
        area, region, what = outline.geometry, outline.region, f"département {outline.code}"
    elif bbox is not None:
        area, what = _area(bbox, bbox_crs), f"bbox {tuple(bbox)} ({bbox_crs})"
    else:
        raise CropmapError("fetch-parcels: give either --bbox or --departement")
    xmin, ymin, xmax, ymax = area.bounds
    chosen = choose_source(source, year, (xmax - xmin) * (ymax - ymin) / 1e6, archive)
    if chosen == "wfs":
        from .rpg_wfs import get_features

        typename = wfs_typename(year)
        gdf, requests = get_features(typename, bbox=(xmin, ymin, xmax, ymax), wfs_url=wfs_url, cache=root,
                                     allow_http=allow_http, retries=retries, backoff=backoff)
        if gdf.empty:
            raise CropmapError(f"no {year} parcel in {what} on {redact(wfs_url)} ({typename})")
        gdf = normalise(gdf, year, f"{redact(wfs_url)} {typename}")
        origin, layer, downloaded = typename, typename, 0
    else:
        path, origin, downloaded = _archive_file(year, archive, region if not national else None, root, feed_url,
                                                sha256=sha256, allow_http=allow_http, retries=retries,
                                                backoff=backoff, max_extract_bytes=max_extract_bytes)
        layer = parcels_layer(path)
        try:
            raw = pyogrio.read_dataframe(path, layer=layer, bbox=(xmin, ymin, xmax, ymax))
        except Exception as e:
            raise CropmapError(f"{path}: not a readable vector file ({type(e).__name__}: {e})") from None
        gdf = normalise(raw, year, str(path))
        requests = 0
    # the box read is the area's envelope: keep only the parcels that touch the area itself
    gdf = gdf[gdf.intersects(area)].reset_index(drop=True)
    if gdf.empty:
        raise CropmapError(f"no {year} parcel in {what}; check the order xmin ymin xmax ymax and --bbox-crs")
    with atomic_path(out, overwrite=overwrite) as tmp:
        pyogrio.write_dataframe(gdf, tmp, layer=OUT_LAYER, driver="GPKG")
    return FetchSummary(out, len(gdf), year, chosen, origin, layer, downloaded, requests)


def _archive_file(year: int, archive, region: str | None, root: Path, feed_url: str | None, *, sha256, allow_http,
                  retries, backoff, max_extract_bytes) -> tuple[Path, str, int]:
    """The extracted parcels file of the archive (given, or the edition's) and where it came from."""
    downloaded = 0
    if archive is not None and not (is_url(str(archive)) or "://" in str(archive)):
        volumes, owned, origin = local_volumes(Path(archive)), False, str(archive)
    else:
        if archive is not None:
            check_scheme(str(archive), allow_http)
            urls, origin = [str(archive)], redact(str(archive))
        else:
            edition = None
            if region is not None:
                try:
                    edition = find_edition(year, region=region, feed_url=feed_url, allow_http=allow_http)
                except CropmapError as e:
                    log.warning("RPG %s: no regional archive for R%s (%s); using the national one", year, region, e)
            edition = edition or find_edition(year, feed_url=feed_url, allow_http=allow_http)
            urls, origin = edition.urls, f"{edition.resource} ({edition.known})"
        name = PurePosixPath(urllib.parse.urlsplit(urls[0]).path).name
        folder = root / "rpg" / name.split(".7z")[0]
        volumes, downloaded = download_volumes(urls, folder, allow_http=allow_http, retries=retries, backoff=backoff)
        owned = True  # ours to delete if it turns out corrupt, so the next run downloads it again
    if sha256:
        if len(volumes) > 1:
            raise CropmapError("--sha256 checks a single-file archive; this one has several volumes")
        try:
            check_sha256(volumes[0], sha256)
        except CropmapError:
            if owned:
                volumes[0].unlink(missing_ok=True)
            raise
    into = root / "rpg" / (volumes[0].name.split(".7z")[0] + ".extracted")
    try:
        path = extract_parcels(volumes, into, max_bytes=max_extract_bytes)
    except CropmapError:
        if owned:
            for v in volumes:
                v.unlink(missing_ok=True)
        raise
    return path, origin, downloaded

"""Read RPG parcels (GeoPackage or any OGR vector) and check what the pipeline relies on."""

from __future__ import annotations

import logging
from pathlib import Path

import geopandas as gpd
import pyogrio
from shapely.geometry import Polygon
from shapely.ops import unary_union

from ..errors import CropmapError

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("ID_PARCEL", "CODE_CULTU")


def read_parcels(path: Path | str, *, bbox: tuple[float, float, float, float] | None = None,
                 bbox_crs=None, layer: str | None = None, with_fid: bool = False) -> gpd.GeoDataFrame:
    """Parcels with ``ID_PARCEL`` (str), ``CODE_CULTU`` (str) and valid, non-empty geometries.

    ``bbox`` (in ``bbox_crs``, default the file's CRS) reads only the parcels that intersect it.
    ``with_fid`` keeps each feature's id in the file as a ``fid`` column (a stable key across reads).
    Invalid geometries are repaired with ``make_valid``; empty ones are dropped, with a count in the log.
    """
    path = Path(path)
    if not path.exists():
        raise CropmapError(f"{path}: parcels file does not exist")
    try:
        info = pyogrio.read_info(path, layer=layer)
    except Exception as e:  # pyogrio raises DataSourceError, DataLayerError, ...
        raise CropmapError(f"{path}: not a readable vector file ({e})") from e
    if not info.get("crs"):
        raise CropmapError(f"{path}: the parcels have no CRS (RPG files are in EPSG:2154, Lambert-93)")
    missing = [c for c in REQUIRED_COLUMNS if c not in list(info["fields"])]
    if missing:
        raise CropmapError(f"{path}: missing column(s) {', '.join(missing)} (expected the RPG schema)")
    if bbox is not None and bbox_crs is not None:
        bbox = _bbox_in_crs(bbox, bbox_crs, info["crs"])
    try:
        gdf = pyogrio.read_dataframe(path, layer=layer, bbox=bbox, fid_as_index=with_fid)
    except Exception as e:  # a file whose header reads but whose features do not (truncated, corrupt)
        raise CropmapError(f"{path}: not a readable vector file ({e})") from e
    if with_fid:
        gdf = gdf.rename_axis("fid").reset_index()
    gdf["ID_PARCEL"] = gdf["ID_PARCEL"].astype(str)
    gdf["CODE_CULTU"] = gdf["CODE_CULTU"].astype(str).str.strip()
    if "CODE_GROUP" in gdf:
        gdf["CODE_GROUP"] = gdf["CODE_GROUP"].astype(str)
    empty = gdf.geometry.isna() | gdf.geometry.is_empty
    if empty.any():
        log.warning("%s: dropped %d parcel(s) with empty geometry", path, int(empty.sum()))
        gdf = gdf[~empty]
    invalid = ~gdf.geometry.is_valid
    if invalid.any():
        gdf.loc[invalid, "geometry"] = gdf.geometry[invalid].make_valid().apply(_polygonal)
    # a zero-area ring repairs to a line or point, and a line would be burnt as a stray row of labels
    flat = ~gdf.geometry.geom_type.isin(("Polygon", "MultiPolygon")) | gdf.geometry.is_empty
    if (invalid & ~flat).any():
        log.warning("%s: repaired %d invalid parcel geometries", path, int((invalid & ~flat).sum()))
    if flat.any():
        log.warning("%s: dropped %d parcel(s) without area (points, lines or zero-area polygons)", path,
                    int(flat.sum()))
        gdf = gdf[~flat]
    return gdf.reset_index(drop=True)


def _polygonal(geom):
    """The polygons of a repaired geometry (``make_valid`` may add lines or points beside them)."""
    if geom.geom_type != "GeometryCollection":
        return geom
    polys = [g for g in geom.geoms if g.geom_type in ("Polygon", "MultiPolygon")]
    return unary_union(polys) if polys else Polygon()


def _bbox_in_crs(bbox, src_crs, dst_crs) -> tuple[float, float, float, float]:
    from pyproj import Transformer

    t = Transformer.from_crs(src_crs, dst_crs, always_xy=True)
    return t.transform_bounds(*bbox)

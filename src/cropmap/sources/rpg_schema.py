"""One schema for every RPG edition and source: layer ``PARCELLES_GRAPHIQUES`` in Lambert-93 with upper-case
fields (``ID_PARCEL`` as a string, ``SURF_PARC``, ``CODE_CULTU``, ``CODE_GROUP``, ``CULTURE_D1``, ``CULTURE_D2``,
and whatever else the edition has) and the edition's year in ``RPG_YEAR``.

Editions differ in case (2022 and the WFS: ``id_parcel``; 2023: ``ID_PARCEL``), geometry column (``geom``,
``the_geom``) and layer (``PARCELLES_GRAPHIQUES``, ``parcelles_graphiques``, ``RPG_Parcelles``): all are
discovered from the file, never assumed.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd

from ..errors import CropmapError

OUT_LAYER = "PARCELLES_GRAPHIQUES"
OUT_CRS = "EPSG:2154"
YEAR_FIELD = "RPG_YEAR"
REQUIRED = ("ID_PARCEL", "CODE_CULTU")
# the parcels layer among an edition's GeoPackages (RPG 3.0 ships eight: parcels, islands, hedges, ...)
PARCEL_FILE_NAMES = ("RPG_PARCELLES", "PARCELLES_GRAPHIQUES")


def normalise(gdf: gpd.GeoDataFrame, year: int | None, where: str) -> gpd.GeoDataFrame:
    """``gdf`` in the common schema (see the module); ``where`` names the source in error messages."""
    if gdf.crs is None:
        raise CropmapError(f"{where}: the parcels have no CRS (RPG files are in EPSG:2154, Lambert-93)")
    geom = gdf.geometry.name
    renamed = {c: c.upper() for c in gdf.columns if c != geom}
    upper = list(renamed.values())
    dupes = sorted({c for c in upper if upper.count(c) > 1})
    if dupes:
        raise CropmapError(f"{where}: fields differing only in case ({', '.join(dupes)})")
    out = gdf.rename(columns=renamed)
    if geom != "geometry":
        out = out.rename_geometry("geometry")
    missing = [c for c in REQUIRED if c not in out.columns]
    if missing:
        raise CropmapError(f"{where}: missing field(s) {', '.join(missing)} (has {', '.join(upper)}); "
                           "not an RPG parcels layer?")
    out["ID_PARCEL"] = out["ID_PARCEL"].astype(str).str.strip()
    out["CODE_CULTU"] = out["CODE_CULTU"].astype(str).str.strip()
    for c in ("CODE_GROUP", "CULTURE_D1", "CULTURE_D2"):
        if c in out:
            out[c] = out[c].where(out[c].isna(), out[c].astype(str).str.strip())
    if "SURF_PARC" in out:
        out["SURF_PARC"] = out["SURF_PARC"].astype(float)
    if year is not None:
        out[YEAR_FIELD] = int(year)
    out = out.to_crs(OUT_CRS) if out.crs.to_epsg() != 2154 else out
    return out.drop(columns=[c for c in ("GML_ID", "BBOX") if c in out.columns])


def parcels_layer(path: Path) -> str:
    """The polygon layer of an RPG file that holds the parcels (its name changes between editions)."""
    import pyogrio

    try:
        layers = [(str(n), str(g)) for n, g in pyogrio.list_layers(path)]
    except Exception as e:
        raise CropmapError(f"{path}: not a readable vector file ({type(e).__name__}: {e})") from None
    polygons = [n for n, g in layers if g and "POLYGON" in g.upper()] or [n for n, _ in layers]
    if not polygons:
        raise CropmapError(f"{path}: no layer")
    named = [n for n in polygons if any(k in n.upper() for k in PARCEL_FILE_NAMES + ("PARCELLE",))]
    return (named or polygons)[0]


def is_parcels_member(name: str) -> bool:
    """Whether an archive member is the parcels file (``RPG_Parcelles.gpkg``, ``PARCELLES_GRAPHIQUES.gpkg`` or
    ``.shp``), not one of the other layers an edition ships (islands, hedges, organic parcels...)."""
    stem = Path(name.replace("\\", "/")).name.upper()
    return any(stem == f"{k}.GPKG" or stem == f"{k}.SHP" for k in PARCEL_FILE_NAMES)


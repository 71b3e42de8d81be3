"""The extent of a metropolitan département, for ``fetch-parcels --departement``: the RPG GeoPackage has no
département field, so the parcels are read over the département's outline's bounding box.

The outlines are not bundled: they are read at run time from a boundaries file, by default the
départements of gregoiredavid/france-geojson (INSEE codes, IGN GEOFLA 2.2 outlines simplified with
mapshaper, Licence Ouverte; downloaded once into the cache), or any file the user gives, e.g. IGN
ADMIN EXPRESS's DEPARTEMENT layer (field INSEE_DEP).
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from pathlib import Path, PurePosixPath

from ..errors import CropmapError
from .rpg_download import _check_scheme, _is_url, default_cache, download, redact

log = logging.getLogger(__name__)

DEPARTEMENTS_URL = "https://raw.githubusercontent.com/gregoiredavid/france-geojson/master/departements.geojson"
CODE_FIELDS = ("code", "INSEE_DEP", "insee_dep", "code_insee", "CODE_DEPT", "CODE_DEP")
# the outlines are simplified (mapshaper, Visvalingam 25 %): widen the box so that border parcels stay in
DEFAULT_MARGIN_M = 1000.0
LAMBERT93 = "EPSG:2154"
_METROPOLITAN = re.compile(r"(0[1-9]|1[0-9]|2[1-9]|2[AB]|[3-8][0-9]|9[0-5])")


def departement_code(code: str) -> str:
    """``code`` as INSEE writes it ("1" -> "01", "2a" -> "2A"); only the metropolitan départements that the
    national RPG archive covers are accepted."""
    c = str(code).strip().upper()
    if c.isdigit() and len(c) == 1:
        c = "0" + c
    if c == "20":
        raise CropmapError("--departement 20: Corsica is 2A (Corse-du-Sud) and 2B (Haute-Corse)")
    if re.fullmatch(r"97\d", c):
        raise CropmapError(f"--departement {c}: overseas départements are not in the metropolitan RPG archive")
    if not _METROPOLITAN.fullmatch(c):
        raise CropmapError(f"--departement {code}: not a metropolitan département code (01-95, 2A, 2B)")
    return c


def departement_bbox(code: str, boundaries: str | Path | None = None, *, cache: Path | str | None = None,
                     margin: float = DEFAULT_MARGIN_M, allow_http: bool = False,
                     retries: int = 5, backoff: float = 2.0) -> tuple[float, float, float, float]:
    """Lambert-93 (xmin, ymin, xmax, ymax) of département ``code``'s outline in ``boundaries`` (a URL or a
    vector file with a code field, default :data:`DEPARTEMENTS_URL`), widened by ``margin`` metres."""
    import pyogrio

    code = departement_code(code)
    if margin < 0:
        raise CropmapError(f"--margin {margin}: expected metres >= 0")
    src = str(boundaries) if boundaries is not None else DEPARTEMENTS_URL
    if _is_url(src) or "://" in src:
        _check_scheme(src, allow_http)
        root = Path(cache) if cache is not None else default_cache()
        local = root / "boundaries" / (PurePosixPath(urllib.parse.urlsplit(src).path).name or "departements.geojson")
        if not local.exists():
            log.info("downloading %s to %s", redact(src), local)
            download(src, local, allow_http=allow_http, retries=retries, backoff=backoff)
        where = redact(src)
    else:
        local = Path(src)
        if not local.is_file():
            raise CropmapError(f"{local}: boundaries file does not exist")
        where = str(local)
    try:
        fields = [f for f in pyogrio.read_info(local)["fields"]]
    except Exception as e:
        raise CropmapError(f"{where}: not a readable vector file ({type(e).__name__}: {e})") from None
    field = next((f for f in CODE_FIELDS if f in fields), None)
    if field is None:
        raise CropmapError(f"{where}: no département code field (looked for {', '.join(CODE_FIELDS)}; "
                           f"has {', '.join(fields)})")
    gdf = pyogrio.read_dataframe(local, columns=[field])
    if gdf.crs is None:
        raise CropmapError(f"{where}: no CRS")
    hit = gdf[gdf[field].astype(str).str.strip().str.upper().str.zfill(2) == code]
    if hit.empty:
        raise CropmapError(f"{where}: no département {code} (field {field})")
    xmin, ymin, xmax, ymax = hit.to_crs(LAMBERT93).total_bounds
    return (float(xmin - margin), float(ymin - margin), float(xmax + margin), float(ymax + margin))


def fetch_departement_parcels(year: int, code: str, out: Path | str, *, boundaries: str | Path | None = None,
                              margin: float = DEFAULT_MARGIN_M, cache: Path | str | None = None,
                              allow_http: bool = False, **kw):
    """:func:`~cropmap.sources.rpg_download.fetch_parcels` over département ``code``'s box (see
    :func:`departement_bbox`); parcels of neighbouring départements inside the box come along."""
    from .rpg_download import fetch_parcels

    out = Path(out)
    if out.exists() and not kw.get("overwrite"):  # before any download
        raise CropmapError(f"{out}: already exists (pass --overwrite to replace it)")
    bbox = departement_bbox(code, boundaries, cache=cache, margin=margin, allow_http=allow_http)
    log.info("département %s: Lambert-93 box %s", departement_code(code), bbox)
    return fetch_parcels(year, bbox, out, bbox_crs=LAMBERT93, cache=cache, allow_http=allow_http, **kw)

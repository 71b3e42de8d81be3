"""The outline of a metropolitan département, for ``--departement``: parcels are clipped to the outline
itself, imagery covers its box.

By default the outline is IGN's ADMIN EXPRESS COG, read from the Géoplateforme WFS
(``ADMINEXPRESS-COG.LATEST:departement``: ``code_insee``, ``code_insee_de_la_region``) and cached; any
vector file or URL of départements with a code field can replace it (``--boundaries``: ADMIN EXPRESS's
DEPARTEMENT layer with ``INSEE_DEP``, or france-geojson's ``code``).
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import CropmapError
from .http import check_scheme, download, is_url, redact
from .rpg_editions import REGION_OF, WFS_URL

log = logging.getLogger(__name__)

WFS_TYPENAME = "ADMINEXPRESS-COG.LATEST:departement"
CODE_FIELDS = ("code_insee", "INSEE_DEP", "insee_dep", "code", "CODE_DEPT", "CODE_DEP")
REGION_FIELDS = ("code_insee_de_la_region", "INSEE_REG", "insee_reg", "code_region")
# imagery around the box: parcels on the border keep their neighbourhood for the model's spatial context
DEFAULT_MARGIN_M = 1000.0
LAMBERT93 = "EPSG:2154"
_METROPOLITAN = re.compile(r"(0[1-9]|1[0-9]|2[1-9]|2[AB]|[3-8][0-9]|9[0-5])")


@dataclass(frozen=True)
class Outline:
    code: str
    geometry: object  # shapely (multi)polygon in Lambert-93
    region: str | None  # INSEE region code
    where: str  # where it was read, for messages


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


def departement_outline(code: str, boundaries: str | Path | None = None, *, wfs_url: str = WFS_URL,
                        cache: Path | str | None = None, allow_http: bool = False, retries: int = 5,
                        backoff: float = 2.0) -> Outline:
    """Département ``code``'s outline in Lambert-93, from the WFS (default) or from ``boundaries``."""
    import geopandas as gpd
    import pyogrio

    from .http import default_cache

    code = departement_code(code)
    root = Path(cache) if cache is not None else default_cache()
    if boundaries is None:
        from .rpg_wfs import equal_filter, get_features

        gdf, _ = get_features(WFS_TYPENAME, wfs_url=wfs_url, cache=root, filter_xml=equal_filter("code_insee", code),
                              allow_http=allow_http, retries=retries, backoff=backoff)
        where = f"{redact(wfs_url)} {WFS_TYPENAME}"
        if gdf.empty:
            raise CropmapError(f"{where}: no département {code} (field code_insee)")
    else:
        src = str(boundaries)
        if is_url(src) or "://" in src:
            check_scheme(src, allow_http)
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
            fields = list(pyogrio.read_info(local)["fields"])
        except Exception as e:
            raise CropmapError(f"{where}: not a readable vector file ({type(e).__name__}: {e})") from None
        field = next((f for f in CODE_FIELDS if f in fields), None)
        if field is None:
            raise CropmapError(f"{where}: no département code field (looked for {', '.join(CODE_FIELDS)}; "
                               f"has {', '.join(fields)})")
        all_ = pyogrio.read_dataframe(local, columns=[field] + [f for f in REGION_FIELDS if f in fields])
        if all_.crs is None:
            raise CropmapError(f"{where}: no CRS")
        gdf = all_[all_[field].astype(str).str.strip().str.upper().str.zfill(2) == code]
        if gdf.empty:
            raise CropmapError(f"{where}: no département {code} (field {field})")
    gdf = gpd.GeoDataFrame(gdf).to_crs(LAMBERT93)
    region_field = next((f for f in REGION_FIELDS if f in gdf.columns), None)
    region = str(gdf[region_field].iloc[0]).strip() if region_field else REGION_OF.get(code)
    return Outline(code, gdf.geometry.union_all(), region, where)


def departement_bbox(code: str, boundaries: str | Path | None = None, *, margin: float = DEFAULT_MARGIN_M,
                     **kw) -> tuple[float, float, float, float]:
    """Lambert-93 (xmin, ymin, xmax, ymax) of département ``code``'s outline (see :func:`departement_outline`),
    widened by ``margin`` metres."""
    if margin < 0:
        raise CropmapError(f"--margin {margin}: expected metres >= 0")
    xmin, ymin, xmax, ymax = departement_outline(code, boundaries, **kw).geometry.bounds
    return (float(xmin - margin), float(ymin - margin), float(xmax + margin), float(ymax + margin))

"""``cropmap audit``: a marker for every declared parcel (green confirmed, orange unsure, red another crop
confidently predicted; :mod:`cropmap.monitoring.markers`), as a CSV a controller works through red first,
a JSON summary beside it (thresholds, marker counts per declared class, alpha/beta error estimates), and the
same table as a GeoPackage with a QGIS style colouring the parcels by marker.

The answers should be out of fold (``cropmap train --folds``): a model graded on the declarations it was
trained on can learn a wrong declaration and confirm it. A run without folds is audited all the same, with a
one-line warning that its answers are in-sample.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio

from .atomic import atomic_path, refuse_existing
from .errors import CropmapError
from .monitoring.markers import (MARKERS, MIN_CLEAR_PIXELS, TARGET_PRECISION, assign_markers, error_estimates,
                                 inspection_sample)
from .prediction.parcels import read_parcel_table
from .styles import marker_qml

log = logging.getLogger(__name__)

AUDIT_COLUMNS = ("rank", "marker", "ID_PARCEL", "CODE_CULTU", "SURF_PARC", "declared", "predicted", "p_declared",
                 "p_predicted", "fold", "n_pixels", "confidence", "agreement", "lon", "lat")
MARKER_ORDER = {"red": 0, "orange": 1, "green": 2}
IN_SAMPLE_WARNING = ("the answers are in-sample: the model was trained on these declarations (train with "
                     "--folds K for out-of-fold answers)")


@dataclass(frozen=True)
class AuditSummary:
    path: Path
    level: str
    compared: int
    disagreeing: int
    listed: int
    markers: dict[str, int] = field(default_factory=dict)
    out_of_fold: bool = False
    summary_path: Path | None = None
    thresholds: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    layer_path: Path | None = None  # GeoPackage of the same table (layer audit), styled by <name>.qml


def audit_parcels(parcels: Path | str, out: Path | str, *, level: str | None = None, min_confidence: float = 0.0,
                  target_precision: float = TARGET_PRECISION, min_pixels: int = MIN_CLEAR_PIXELS,
                  inspect: int = 0, overwrite: bool = False) -> AuditSummary:
    """Write ``out`` (CSV, columns ``AUDIT_COLUMNS``, red first, least likely declarations first) and
    ``out``'s ``.json`` summary, for the parcels with a declared class at ``level`` (default the model's
    own). ``min_confidence`` drops disagreeing parcels predicted less confidently than that from the list.
    ``inspect`` N > 0 also writes ``<out>.inspect.csv``: the N parcels whose field check teaches the model most
    (least confident prediction first, in turn over the declared classes so rare classes are not starved)."""
    out = Path(out)
    summary_path, layer_path, style_path = (out.with_suffix(s) for s in (".json", ".gpkg", ".qml"))
    inspect_path = out.with_suffix(".inspect.csv") if inspect > 0 else None
    refuse_existing(out, summary_path, layer_path, style_path, inspect_path, overwrite=overwrite)
    if not 0 < target_precision < 1:
        raise CropmapError(f"target precision {target_precision}: expected a share between 0 and 1")
    gdf = read_parcel_table(Path(parcels))
    if "level" not in gdf or "agrees" not in gdf:
        raise CropmapError(f"{parcels}: no prediction columns (write it with `cropmap predict --parcels-out`)")
    own = str(gdf["level"].iloc[0]) if len(gdf) else "group"
    level = level or own
    suffix = "" if level == own else f"_{level}"
    if f"agrees{suffix}" not in gdf:
        levels = [own] + [c[len("agrees_"):] for c in gdf.columns if c.startswith("agrees_")]
        raise CropmapError(f"{parcels}: no level {level!r}; levels here: {', '.join(levels)}")
    if f"p_declared{suffix}" not in gdf:
        raise CropmapError(f"{parcels}: no p_declared column (written by an older cropmap; predict again)")
    fold = gdf["fold"].to_numpy() if "fold" in gdf else np.full(len(gdf), -1)
    out_of_fold = bool((fold >= 0).any())
    if not out_of_fold:
        log.warning("%s: %s", parcels, IN_SAMPLE_WARNING)
    agrees = gdf[f"agrees{suffix}"].astype("boolean")
    compared_mask = agrees.notna().to_numpy()
    p_declared = gdf[f"p_declared{suffix}"].to_numpy(dtype=np.float64)
    p_declared = np.where(compared_mask, p_declared, np.nan)
    marker, thresholds = assign_markers(p_declared, agrees.fillna(False).to_numpy(dtype=bool),
                                        gdf["n_pixels"].to_numpy(), target_precision, min_pixels)
    errors = error_estimates(p_declared, marker)
    confidence = gdf[f"confidence{suffix}"].to_numpy(dtype=np.float64)
    disagree = compared_mask & ~agrees.fillna(True).to_numpy(dtype=bool)
    listed = compared_mask & ~(disagree & (confidence < min_confidence))
    sel = gdf[listed]
    centroids = sel.geometry.representative_point().to_crs("EPSG:4326") if len(sel) else None
    declared_col = f"declared{suffix or '_class'}"
    table = pd.DataFrame({
        "_row": np.arange(len(sel)),
        "marker": marker[listed],
        "ID_PARCEL": sel["ID_PARCEL"].to_numpy(),
        "CODE_CULTU": sel["CODE_CULTU"].to_numpy(),
        "SURF_PARC": sel["SURF_PARC"].to_numpy() if "SURF_PARC" in sel else np.nan,
        "declared": sel[declared_col].to_numpy(),
        "predicted": sel[f"pred{suffix or '_class'}"].to_numpy(),
        "p_declared": p_declared[listed].round(4),
        "p_predicted": confidence[listed].round(4),
        "fold": fold[listed],
        "n_pixels": sel["n_pixels"].to_numpy(),
        "confidence": confidence[listed].round(4),
        "agreement": sel[f"agreement{suffix}"].to_numpy().round(4),
        "lon": centroids.x.to_numpy().round(6) if centroids is not None else [],
        "lat": centroids.y.to_numpy().round(6) if centroids is not None else [],
    })
    table["_order"] = table["marker"].map(MARKER_ORDER)
    table = table.sort_values(["_order", "p_declared", "confidence"], ascending=[True, True, False],
                              kind="stable").drop(columns="_order").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    layer = gpd.GeoDataFrame(table.drop(columns=["_row", "lon", "lat"]),
                             geometry=sel.geometry.to_numpy()[table["_row"].to_numpy()], crs=sel.crs)
    table = table.drop(columns="_row")
    counts = {m: int((marker == m).sum()) for m in MARKERS}
    per_class = {}
    declared = gdf[declared_col].to_numpy()
    for name in sorted({d for d, c in zip(declared, compared_mask) if c}):
        here = compared_mask & (declared == name)
        per_class[name] = {m: int((marker[here] == m).sum()) for m in MARKERS}
    summary = {"parcels": str(parcels), "level": level, "out_of_fold": out_of_fold,
               "note": None if out_of_fold else IN_SAMPLE_WARNING, "compared": int(compared_mask.sum()),
               "disagreeing": int(disagree.sum()), "markers": counts, "thresholds": thresholds,
               "parcel_temperature": float(gdf["temperature"].iloc[0]) if "temperature" in gdf and len(gdf) else None,
               "errors": errors, "markers_per_declared_class": per_class}
    with atomic_path(out, overwrite=overwrite) as tmp:
        table.to_csv(tmp, index=False)
    if inspect_path is not None:
        enough = compared_mask & (gdf["n_pixels"].to_numpy() >= min_pixels)
        pick = inspection_sample(np.where(enough, 1 - confidence, np.nan), gdf[declared_col].to_numpy(dtype=object),
                                 inspect)
        ins = pd.DataFrame({"order": np.arange(1, len(pick) + 1), "ID_PARCEL": gdf["ID_PARCEL"].to_numpy()[pick],
                            "declared": gdf[declared_col].to_numpy()[pick],
                            "predicted": gdf[f"pred{suffix or '_class'}"].to_numpy()[pick],
                            "p_predicted": confidence[pick].round(4), "marker": marker[pick],
                            "n_pixels": gdf["n_pixels"].to_numpy()[pick]})
        with atomic_path(inspect_path, overwrite=overwrite) as tmp:
            ins.to_csv(tmp, index=False)
    with atomic_path(summary_path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    # the same table as parcels on a map, coloured by marker when opened in QGIS (audit.qml beside audit.gpkg)
    with atomic_path(layer_path, overwrite=overwrite) as tmp:
        pyogrio.write_dataframe(layer, tmp, layer="audit", driver="GPKG")
    with atomic_path(style_path, overwrite=overwrite) as tmp:
        tmp.write_text(marker_qml(), encoding="utf-8")
    return AuditSummary(out, level, int(compared_mask.sum()), int(disagree.sum()), len(table), counts, out_of_fold,
                        summary_path, thresholds, errors, layer_path)

"""``cropmap audit``: the parcels whose predicted crop disagrees with the declared one, most confident
first, as a CSV a controller can work through (the CAP area-monitoring use)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path, refuse_existing
from .errors import CropmapError
from .prediction.parcels import read_parcel_table

AUDIT_COLUMNS = ("rank", "ID_PARCEL", "CODE_CULTU", "SURF_PARC", "declared", "predicted", "confidence",
                 "agreement", "n_pixels", "lon", "lat")


@dataclass(frozen=True)
class AuditSummary:
    path: Path
    level: str
    compared: int
    disagreeing: int
    listed: int


def audit_parcels(parcels: Path | str, out: Path | str, *, level: str | None = None, min_confidence: float = 0.0,
                  overwrite: bool = False) -> AuditSummary:
    """Write ``out`` (CSV, columns ``AUDIT_COLUMNS``): parcels whose declaration disagrees with the
    prediction at ``level`` (default the model's own), ranked by confidence, then by agreement."""
    out = Path(out)
    refuse_existing(out, overwrite=overwrite)  # before the work; atomic_path checks again
    gdf = read_parcel_table(Path(parcels))
    if "level" not in gdf or "agrees" not in gdf:
        raise CropmapError(f"{parcels}: no prediction columns (write it with `cropmap predict --parcels-out`)")
    own = str(gdf["level"].iloc[0]) if len(gdf) else "group"
    level = level or own
    suffix = "" if level == own else f"_{level}"
    if f"agrees{suffix}" not in gdf:
        levels = [own] + [c[len("agrees_"):] for c in gdf.columns if c.startswith("agrees_")]
        raise CropmapError(f"{parcels}: no level {level!r}; levels here: {', '.join(levels)}")
    agrees = gdf[f"agrees{suffix}"].astype("boolean")
    compared = int(agrees.notna().sum())
    bad = gdf[(agrees == False).fillna(False).to_numpy(dtype=bool)]  # noqa: E712 (nullable boolean)
    disagreeing = len(bad)
    bad = bad[bad[f"confidence{suffix}"].to_numpy() >= min_confidence]
    centroids = bad.geometry.representative_point().to_crs("EPSG:4326") if len(bad) else None
    table = pd.DataFrame({
        "ID_PARCEL": bad["ID_PARCEL"].to_numpy(),
        "CODE_CULTU": bad["CODE_CULTU"].to_numpy(),
        "SURF_PARC": bad["SURF_PARC"].to_numpy() if "SURF_PARC" in bad else np.nan,
        "declared": bad[f"declared{suffix or '_class'}"].to_numpy(),
        "predicted": bad[f"pred{suffix or '_class'}"].to_numpy(),
        "confidence": bad[f"confidence{suffix}"].to_numpy().round(4),
        "agreement": bad[f"agreement{suffix}"].to_numpy().round(4),
        "n_pixels": bad["n_pixels"].to_numpy(),
        "lon": centroids.x.to_numpy().round(6) if centroids is not None else [],
        "lat": centroids.y.to_numpy().round(6) if centroids is not None else [],
    })
    table = table.sort_values(["confidence", "agreement"], ascending=False, kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    with atomic_path(out, overwrite=overwrite) as tmp:
        table.to_csv(tmp, index=False)
    return AuditSummary(out, level, compared, disagreeing, len(table))

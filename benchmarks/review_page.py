"""Page weight and load time of `cropmap review` for département-sized parcel tables.

Generates N parcels in the real parcel-table format (irregular quadrilaterals of 0.5-10 ha with 12 to 40
vertices, as RPG outlines have, in Lambert-93; declared and predicted classes, probabilities, markers),
writes the review page and loads it in headless Chromium (Debian's `chromium`) with a scripted click on one
parcel, timing the load until the panel is in the DOM.

    .venv/bin/python benchmarks/review_page.py --parcels 20000 100000
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry import Polygon

CLASSES = ["Blé tendre", "Maïs grain et ensilage", "Orge", "Colza", "Tournesol", "Prairies permanentes",
           "Prairies temporaires", "Vignes"]


def parcels(n: int, seed: int = 0) -> gpd.GeoDataFrame:
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    cell = 250.0  # metres: ~6 ha a cell
    geoms = []
    for i in range(n):
        r, c = divmod(i, side)
        k = int(rng.integers(12, 41))  # vertices
        t = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = cell * 0.45 * (1 + 0.08 * rng.standard_normal(k))
        geoms.append(Polygon(np.c_[700000 + c * cell + cell / 2 + rad * np.cos(t),
                                   6600000 + r * cell + cell / 2 + rad * np.sin(t)]))
    declared = rng.choice(CLASSES, n)
    wrong = rng.random(n) < 0.05
    predicted = np.where(wrong, rng.choice(CLASSES, n), declared)
    p_decl = np.where(wrong, rng.uniform(0, 0.3, n), rng.uniform(0.6, 1, n))
    p_pred = np.maximum(p_decl, rng.uniform(0.5, 1, n))
    return gpd.GeoDataFrame({
        "ID_PARCEL": [str(10_000_000 + i) for i in range(n)], "CODE_CULTU": ["BTH"] * n,
        "SURF_PARC": np.round(rng.uniform(0.5, 10, n), 2), "declared_class": declared, "pred_class": predicted,
        "p_declared": p_decl, "p_predicted": p_pred, "confidence": p_pred, "agreement": p_pred,
        "agrees": pd.array(predicted == declared, dtype="boolean"), "n_pixels": rng.integers(20, 1000, n),
        "level": "group", "fold": rng.integers(0, 5, n)}, geometry=geoms, crs="EPSG:2154")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parcels", type=int, nargs="+", default=[20_000, 100_000])
    a = p.parse_args(argv)
    from cropmap.auditing import audit_parcels
    from cropmap.monitoring.review import write_review
    from cropmap.prediction.parcels import write_parcel_table

    chromium = shutil.which("chromium")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n in a.parcels:
            table = write_parcel_table(parcels(n), tmp / f"p{n}.gpkg", overwrite=True)
            audit_parcels(table, tmp / f"a{n}.csv", overwrite=True)
            t0 = time.perf_counter()
            info = write_review(table, tmp / f"r{n}.html", audit=tmp / f"a{n}.csv", overwrite=True)
            t_write = time.perf_counter() - t0
            line = f"{n:>7} parcels: page {info['bytes'] / 1e6:.1f} MB, written in {t_write:.1f} s"
            if chromium:
                url = (tmp / f"r{n}.html").as_uri() + "#click=10000007"
                t0 = time.perf_counter()
                dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                                      f"--user-data-dir={tmp / 'profile'}", "--dump-dom", url],
                                     capture_output=True, text=True, timeout=600).stdout
                ok = 'id="panel-title">Parcel 10000007<' in dom
                line += f"; headless Chromium: loaded and clicked in {time.perf_counter() - t0:.1f} s (panel {'shown' if ok else 'MISSING'})"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

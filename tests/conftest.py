"""Shared fixtures: tiny GeoTIFF stacks and parcel files written in the real formats, in seconds."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box

os.environ.setdefault("CROPMAP_PROGRESS", "0")

UTM = "EPSG:32630"
ORIGIN = (700000.0, 5170000.0)  # top-left corner of the test grids, metres in UTM 30N


def write_date(folder: Path, date: dt.date, dn: np.ndarray, scl: np.ndarray | None = None, *,
               crs: str | None = UTM, origin: tuple[float, float] = ORIGIN, descriptions: bool = True,
               name: str | None = None) -> Path:
    """One per-date GeoTIFF: ``dn [4, H, W]`` uint16 (+ SCL ``[H, W]``)."""
    folder.mkdir(parents=True, exist_ok=True)
    bands = [dn[i] for i in range(dn.shape[0])] + ([scl] if scl is not None else [])
    path = folder / (name or f"S2_{date.isoformat()}.tif")
    with rasterio.open(path, "w", driver="GTiff", width=dn.shape[2], height=dn.shape[1], count=len(bands),
                       dtype="uint16", crs=crs, transform=from_origin(*origin, 10, 10), nodata=0) as dst:
        for i, b in enumerate(bands, start=1):
            dst.write(b.astype(np.uint16), i)
        if descriptions:
            for i, n in enumerate(["B2", "B3", "B4", "B8", "SCL"][: len(bands)], start=1):
                dst.set_band_description(i, n)
    return path


def parcels_frame(boxes_px: list[tuple[int, int, int, int]], codes: list[str], *, crs: str = "EPSG:2154",
                  origin: tuple[float, float] = ORIGIN) -> gpd.GeoDataFrame:
    """Parcels given as pixel boxes (row0, col0, row1, col1) of a 10 m UTM grid, returned in ``crs``."""
    x0, y0 = origin
    geoms = [box(x0 + c0 * 10, y0 - r1 * 10, x0 + c1 * 10, y0 - r0 * 10) for r0, c0, r1, c1 in boxes_px]
    gdf = gpd.GeoDataFrame({"ID_PARCEL": [str(1000 + i) for i in range(len(codes))], "CODE_CULTU": codes,
                            "CODE_GROUP": ["0"] * len(codes)}, geometry=geoms, crs=UTM)
    gdf["SURF_PARC"] = gdf.geometry.area / 1e4
    return gdf.to_crs(crs)


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory):
    """A small demo scene (96 x 96 px, 15-day revisit) made by the real generator."""
    from cropmap.demo.scene import generate_scene

    return generate_scene(tmp_path_factory.mktemp("scene"), seed=3, size=96, revisit_days=15)


@pytest.fixture(scope="session")
def tiny_dataset(tiny_scene, tmp_path_factory):
    from cropmap.config import BuildConfig
    from cropmap.dataset.build import build_dataset

    out = tmp_path_factory.mktemp("ds") / "dataset.zarr"
    build_dataset(tiny_scene.imagery, tiny_scene.parcels, out, BuildConfig(patch_size=32, seed=1))
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_dataset, tmp_path_factory):
    """A tempcnn-unet run trained for a few steps on ``tiny_dataset``, evaluated on its test split."""
    from cropmap.config import ModelConfig, TrainConfig
    from cropmap.evaluation import evaluate_run
    from cropmap.training import train_model

    run = tmp_path_factory.mktemp("run") / "run"
    model = ModelConfig(hidden=8, embed_dim=8, unet_base=8, temporal_layers=2)
    train_model(tiny_dataset, run, TrainConfig(model=model, epochs=2, max_steps=4, batch_size=2))
    evaluate_run(run, tiny_dataset, split="test")
    return run

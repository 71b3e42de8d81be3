"""``cropmap predict``: a trained run + a per-date GeoTIFF folder -> a Cloud-Optimized GeoTIFF crop map,
and optionally each parcel's predicted class and confidence.

The scene is processed in tiles with a margin (composited, predicted, margin cropped), so memory is
set by the tile size, not the scene; per-parcel votes are accumulated tile by tile.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
import torch
from rasterio.windows import Window
from shapely.geometry import box

from .atomic import atomic_path
from .checkpoint import Checkpoint, load_checkpoint
from .data.patches import normalise
from .dataset.composite import DEFAULT_KEEP_SCL, composite_stack
from .dataset.rasterize import rasterize_parcels, to_grid_crs
from .dataset.timegrid import TimeGrid
from .errors import CropmapError
from .progress import progress_bar
from .sources.geotiff_folder import SceneStack, open_scene_folder
from .sources.parcels import read_parcels

log = logging.getLogger(__name__)

NODATA = 255  # map value where a pixel had no valid observation


@dataclass(frozen=True)
class PredictSummary:
    map_path: Path
    parcels_path: Path | None
    pixels: int
    nodata_pixels: int
    class_pixels: dict[str, int]
    seconds: float


def predict_map(run: Path | str, imagery: Path | str, out: Path | str, *, parcels: Path | str | None = None,
                parcels_out: Path | str | None = None, tile: int = 448, margin: int = 32,
                keep_scl: tuple[int, ...] = DEFAULT_KEEP_SCL, overwrite: bool = False) -> PredictSummary:
    import time

    start = time.perf_counter()
    out = Path(out)
    if parcels_out is not None and parcels is None:
        raise CropmapError("--parcels-out needs --parcels")
    for p in (out, parcels_out):
        if p is not None and Path(p).exists() and not overwrite:
            raise CropmapError(f"{p}: already exists (pass --overwrite to replace it)")
    ckpt = load_checkpoint(run)
    if ckpt.class_table.num_classes >= NODATA:
        raise CropmapError(f"{run}: {ckpt.class_table.num_classes} classes do not fit a uint8 map")
    model = ckpt.build()
    stack = open_scene_folder(imagery)
    grid = _grid_for(ckpt.time_grid, stack)

    gdf = None
    if parcels is not None:
        gdf = to_grid_crs(read_parcels(parcels), stack.crs, str(parcels))
        if not gdf.intersects(box(*stack.bounds)).any():
            raise CropmapError(f"{parcels}: no parcel overlaps the imagery in {imagery}")
    k = ckpt.class_table.num_classes
    votes = np.zeros((len(gdf) + 1 if gdf is not None else 1, k), dtype=np.int64)
    conf_sum = np.zeros(len(votes), dtype=np.float64)

    windows = list(_tiles(stack.height, stack.width, tile))
    class_pixels = np.zeros(k, dtype=np.int64)
    nodata_pixels = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmpdir, \
            progress_bar("predicting tiles", len(windows)) as advance:
        stream = Path(tmpdir) / "stream.tif"  # tiled GeoTIFF written tile by tile, then copied to a COG
        with rasterio.open(stream, "w", **_map_profile(stack)) as dst:
            for core in windows:
                cls, conf = _predict_window(model, ckpt, stack, grid, core, margin, keep_scl)
                dst.write(cls[None], window=core)
                valid = cls != NODATA
                nodata_pixels += int((~valid).sum())
                class_pixels += np.bincount(cls[valid], minlength=k)
                if gdf is not None:
                    pid = rasterize_parcels(gdf, rasterio.windows.transform(core, stack.transform), cls.shape)
                    sel = valid & (pid > 0)
                    np.add.at(votes, (pid[sel], cls[sel]), 1)
                    np.add.at(conf_sum, pid[sel], conf[sel])
                advance(1)
            _describe_map(dst, ckpt)
        with atomic_path(out) as cog:
            rasterio.shutil.copy(stream, cog, driver="COG", compress="DEFLATE", overview_resampling="mode")
    parcels_path = None
    if gdf is not None and parcels_out is not None:
        parcels_path = Path(parcels_out)
        write_parcel_predictions(parcels, gdf, votes[1:], conf_sum[1:], ckpt, parcels_path)
    names = ckpt.class_table.names
    return PredictSummary(out, parcels_path, stack.height * stack.width, nodata_pixels,
                          {names[i]: int(n) for i, n in enumerate(class_pixels)}, time.perf_counter() - start)


def _grid_for(trained: TimeGrid, stack: SceneStack) -> TimeGrid:
    """The training grid, moved to the imagery's year when the imagery is from another season."""
    inside = [d for d in stack.dates if 0 <= trained.step_of(d) < trained.steps]
    grid = trained if inside else trained.in_year(stack.dates[0].year)
    if not any(0 <= grid.step_of(d) < grid.steps for d in stack.dates):
        raise CropmapError(f"{stack.files[0].parent}: no acquisition in the model's season "
                           f"({grid.start} + {grid.steps} x {grid.period_days} days)")
    return grid


def _tiles(height: int, width: int, tile: int):
    for r in range(0, height, tile):
        for c in range(0, width, tile):
            yield Window(c, r, min(tile, width - c), min(tile, height - r))


def _predict_window(model: torch.nn.Module, ckpt: Checkpoint, stack: SceneStack, grid: TimeGrid, core: Window,
                    margin: int, keep_scl) -> tuple[np.ndarray, np.ndarray]:
    """Classes ``[h, w]`` uint8 (NODATA where never observed) and max probability ``[h, w]`` for ``core``."""
    r0, c0 = max(int(core.row_off) - margin, 0), max(int(core.col_off) - margin, 0)
    r1 = min(int(core.row_off + core.height) + margin, stack.height)
    c1 = min(int(core.col_off + core.width) + margin, stack.width)
    comp = composite_stack(stack, grid, window=Window(c0, r0, c1 - c0, r1 - r0), keep_scl=keep_scl)
    x = normalise(comp.values.transpose(1, 0, 2, 3), ckpt.norm_mean, ckpt.norm_std)  # [C, T, h, w]
    x = np.nan_to_num(x, nan=0.0)
    doy = torch.as_tensor(grid.day_of_year.astype(np.float32))[None]
    with torch.inference_mode():
        prob = torch.softmax(model(torch.from_numpy(x)[None], doy), dim=1)[0]  # [K, h, w]
    conf, cls = prob.max(dim=0)
    sl = (slice(int(core.row_off) - r0, int(core.row_off) - r0 + int(core.height)),
          slice(int(core.col_off) - c0, int(core.col_off) - c0 + int(core.width)))
    cls = cls.numpy().astype(np.uint8)[sl]
    conf = conf.numpy()[sl]
    no_obs = ~comp.has_data[sl]
    cls[no_obs] = NODATA
    conf[no_obs] = 0.0
    return cls, conf


def _map_profile(stack: SceneStack) -> dict:
    return dict(driver="GTiff", width=stack.width, height=stack.height, count=1, dtype="uint8", crs=stack.crs,
                transform=stack.transform, nodata=NODATA, tiled=True, blockxsize=256, blockysize=256,
                compress="deflate")


def _describe_map(dst, ckpt: Checkpoint) -> None:
    table = ckpt.class_table
    cmap = {i: (*rgb, 255) for i, rgb in enumerate(table.colors)}
    cmap[NODATA] = (0, 0, 0, 0)
    dst.write_colormap(1, cmap)
    dst.set_band_description(1, f"crop class ({table.level})")
    dst.update_tags(CLASS_NAMES=json.dumps(list(table.names), ensure_ascii=False),
                    CLASS_CODES=json.dumps([list(c) for c in table.codes]),
                    CLASS_LEVEL=table.level, NODATA_MEANING="no valid observation", MODEL=ckpt.model_name)


def write_parcel_predictions(source: Path | str, gdf, votes: np.ndarray, conf_sum: np.ndarray, ckpt: Checkpoint,
                             out: Path) -> None:
    """One row per parcel: majority class of its pixels, its share, mean confidence and the declared class."""
    import pyogrio

    names = ckpt.class_table.names
    n_px = votes.sum(axis=1)
    top = votes.argmax(axis=1)
    has = n_px > 0
    declared = np.array([ckpt.class_table.class_of(c) for c in gdf["CODE_CULTU"]])
    res = gdf[[c for c in ("ID_PARCEL", "SURF_PARC", "CODE_CULTU", "CODE_GROUP") if c in gdf]].copy()
    res["declared_class"] = [names[d] if d >= 0 else None for d in declared]
    res["pred_class"] = [names[t] if h else None for t, h in zip(top, has)]
    res["pred_index"] = np.where(has, top, -1)
    res["confidence"] = np.where(has, conf_sum / np.maximum(n_px, 1), np.nan)
    res["agreement"] = np.where(has, votes[np.arange(len(top)), top] / np.maximum(n_px, 1), np.nan)
    res["n_pixels"] = n_px
    res["agrees"] = [bool(d == t) if (h and d >= 0) else None for d, t, h in zip(declared, top, has)]
    res = res.set_geometry(gdf.geometry.values, crs=gdf.crs)
    src_crs = pyogrio.read_info(source)["crs"]
    res = res.to_crs(src_crs)  # back to the parcels' own CRS (Lambert-93 for the RPG)
    if not has.all():
        log.warning("%d parcel(s) have no valid pixel in the imagery; their prediction is empty", int((~has).sum()))
    with atomic_path(out) as tmp:
        pyogrio.write_dataframe(res, tmp, layer="predictions", driver="GPKG")

"""``cropmap predict`` over many scenes (tiles): one task per tile (:func:`~cropmap.cluster.run_tasks`: in
turn, on threads or on a Dask distributed cluster), each tile's map written atomically and skipped when
already done; then a VRT mosaic of the tiles and one parcel table for the whole area (a parcel crossing tiles counts the
pixels of all of them).

On a cluster every worker must see the run, the imagery and the output folder at the same paths
(a shared file system).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio

from ..atomic import atomic_path
from ..cluster import run_tasks
from ..errors import CropmapError
from ..sources.parcels import read_parcels
from .parcels import ParcelStats, bounds_in_crs, write_parcel_table
from .rasters import NODATA
from .scene import (answer_parcels, check_outputs, parcel_outputs, predict_scene,
                    run_checkpoint, side_path)

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class TileResult:
    imagery: Path
    map_path: Path
    skipped: bool
    seconds: float


@dataclass(frozen=True)
class TilesSummary:
    tiles: tuple[TileResult, ...]
    mosaics: tuple[Path, ...]
    parcels_paths: tuple[Path, ...]
    seconds: float


def predict_tiles(run: Path | str, imageries: list[Path | str], out_dir: Path | str, *,
                  parcels: Path | str | None = None, parcels_out=None, confidence: bool = False,
                  probabilities: bool = False, quicklook: bool = True, window: int | None = None,
                  overlap: int | None = None, keep_scl=None, dask_address: str | None = None,
                  workers: int = 1, overwrite: bool = False, uncertainty: bool = False,
                  until: str | None = None, device: str = "auto") -> TilesSummary:
    """Map every scene folder in ``imageries`` into ``out_dir/<folder name>.tif`` (+ ``.confidence.tif``,
    ``.probabilities.tif``), then ``out_dir/mosaic.vrt``; tiles already mapped are skipped unless
    ``overwrite``."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    imageries = [Path(p) for p in imageries]
    names = [p.name for p in imageries]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise CropmapError(f"several imagery folders are named {', '.join(dupes)}; tile outputs are named after them")
    outs = parcel_outputs(parcels_out)
    if outs and parcels is None:
        raise CropmapError("--parcels-out needs --parcels")
    check_outputs(list(outs), overwrite)
    run_checkpoint(run)  # fail here, once, rather than in every task
    out_dir.mkdir(parents=True, exist_ok=True)

    opts = dict(parcels=parcels if outs else None, confidence=confidence, probabilities=probabilities,
                uncertainty=uncertainty, until=until, device=device,
                quicklook=quicklook, window=window, overlap=overlap,
                keep_scl=tuple(keep_scl) if keep_scl is not None else None, overwrite=overwrite,
                show_progress=dask_address is None and workers == 1)
    tasks = [partial(predict_tile, Path(run), img, out_dir / f"{img.name}.tif", **opts) for img in imageries]
    results = run_tasks(tasks, workers=workers, dask_address=dask_address)
    tiles = tuple(r for r, _ in results)
    for t in tiles:
        log.info("%s: %s in %.0f s", t.map_path, "skipped (done before)" if t.skipped else "mapped", t.seconds)

    mosaics = write_mosaics([t.map_path for t in tiles], out_dir, "mosaic")
    written: tuple[Path, ...] = ()
    if outs:
        stats = merge_stats([s for _, s in results])
        gdf = read_parcels(parcels, with_fid=True, bbox=bounds_in_crs([t.map_path for t in tiles], parcels))
        gdf = gdf[np.isin(gdf["fid"], stats.fids)].reset_index(drop=True)
        res = answer_parcels(gdf, stats, run_checkpoint(run).class_table, run)
        written = tuple(write_parcel_table(res, p, overwrite=overwrite) for p in outs)
    return TilesSummary(tiles, mosaics, written, time.perf_counter() - start)


def predict_tile(run: Path, imagery: Path, out: Path, *, parcels, confidence: bool, probabilities: bool,
                 quicklook: bool, window: int | None, overlap: int | None, keep_scl, overwrite: bool,
                 show_progress: bool, uncertainty: bool = False, until: str | None = None,
                 device: str = "auto") -> tuple[TileResult, ParcelStats | None]:
    """One tile; a finished tile (its map, and its parcel stats when asked) is read back, not redone."""
    start = time.perf_counter()
    stats_path = side_path(out, "parcel_stats")
    done = out.exists() and (parcels is None or stats_path.exists())
    if done and not overwrite:
        stats = ParcelStats.load(stats_path) if parcels is not None else None
        return TileResult(imagery, out, True, time.perf_counter() - start), stats
    _, stats = predict_scene(
        run, imagery, out, parcels=parcels,
        confidence_out=side_path(out, "confidence") if confidence else None,
        probabilities_out=side_path(out, "probabilities") if probabilities else None,
        uncertainty_out=side_path(out, "uncertainty") if uncertainty else None, until=until,
        quicklook=quicklook, window=window, overlap=overlap, keep_scl=keep_scl,
        overwrite=True,  # an unfinished tile's outputs are replaced (its finished blocks still resume)
        restart=overwrite, show_progress=show_progress, device=device)
    if stats is not None:
        stats.save(stats_path)
    return TileResult(imagery, out, False, time.perf_counter() - start), stats


def merge_stats(parts: list[ParcelStats | None]) -> ParcelStats:
    parts = [p for p in parts if p is not None]
    fids = np.unique(np.concatenate([p.fids for p in parts])) if parts else np.zeros(0, np.int64)
    total = ParcelStats.zeros(fids, parts[0].votes.shape[1] if parts else 0)
    for p in parts:
        total.merge(p)
    return total


def write_mosaics(maps: list[Path], out_dir: Path, stem: str) -> tuple[Path, ...]:
    """A VRT mosaic of the tile maps per CRS (``stem.vrt``, or ``stem_EPSG<code>.vrt`` when the tiles
    span several UTM zones); tiles must share the pixel size and lie on one pixel grid."""
    by_crs: dict[str, list[Path]] = {}
    for m in maps:
        with rasterio.open(m) as src:
            by_crs.setdefault(src.crs.to_string(), []).append(m)
    written = []
    for crs, group in by_crs.items():
        name = f"{stem}.vrt" if len(by_crs) == 1 else f"{stem}_{crs.replace(':', '')}.vrt"
        path = out_dir / name
        xml = build_vrt_xml(group, path.parent)
        with atomic_path(path) as tmp:
            tmp.write_text(xml, encoding="utf-8")
        written.append(path)
    return tuple(written)


def build_vrt_xml(maps: list[Path], vrt_dir: Path) -> str:
    infos = []
    for m in maps:
        with rasterio.open(m) as src:
            infos.append((m, src.transform, src.width, src.height, src.crs, src.colormap(1), src.tags()))
    t0 = infos[0][1]
    res_x, res_y = t0.a, t0.e
    for m, t, *_ in infos:
        if not (np.isclose(t.a, res_x) and np.isclose(t.e, res_y)) or t.b or t.d:
            raise CropmapError(f"{m}: pixel size or rotation differs from {infos[0][0]}; cannot mosaic")
    x0 = min(t.c for _, t, *_ in infos)
    y0 = max(t.f for _, t, *_ in infos)
    x1 = max(t.c + w * res_x for _, t, w, *_ in infos)
    y1 = min(t.f + h * res_y for _, t, _, h, *_ in infos)
    width, height = round((x1 - x0) / res_x), round((y1 - y0) / res_y)
    crs, cmap, tags = infos[0][4], infos[0][5], infos[0][6]
    meta = "".join(f'<MDI key="{escape(k)}">{escape(v)}</MDI>' for k, v in tags.items() if k.isupper())
    entries = "".join(f'<Entry c1="{r}" c2="{g}" c3="{b}" c4="{a}"/>'
                      for _, (r, g, b, a) in sorted(cmap.items()))
    sources = []
    for m, t, w, h, *_ in infos:
        col, row = (t.c - x0) / res_x, (t.f - y0) / res_y
        if not (np.isclose(col, round(col), atol=1e-6) and np.isclose(row, round(row), atol=1e-6)):
            raise CropmapError(f"{m}: not on the pixel grid of {infos[0][0]}; cannot mosaic")
        rel = Path(m).resolve().relative_to(vrt_dir.resolve()) if _inside(m, vrt_dir) else Path(m).resolve()
        sources.append(
            f'<ComplexSource><SourceFilename relativeToVRT="{int(not rel.is_absolute())}">{escape(str(rel))}'
            f'</SourceFilename><SourceBand>1</SourceBand>'
            f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
            f'<DstRect xOff="{round(col)}" yOff="{round(row)}" xSize="{w}" ySize="{h}"/>'
            f'<NODATA>{NODATA}</NODATA></ComplexSource>')
    return (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">'
            f'<SRS>{escape(crs.to_wkt())}</SRS>'
            f'<GeoTransform>{x0!r}, {res_x!r}, 0, {y0!r}, 0, {res_y!r}</GeoTransform>'
            f'<Metadata>{meta}</Metadata>'
            f'<VRTRasterBand dataType="Byte" band="1"><NoDataValue>{NODATA}</NoDataValue>'
            f'<ColorInterp>Palette</ColorInterp><ColorTable>{entries}</ColorTable>'
            f'{"".join(sources)}</VRTRasterBand></VRTDataset>\n')


def _inside(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


"""``cropmap predict`` on one scene: a trained run + imagery -> a Cloud-Optimized GeoTIFF crop map,
optional confidence and per-class probability COGs, a quick-look PNG, and each parcel's answer.

The scene is predicted in overlapping windows blended without seams (see ``windows``); results are
written block by block, so memory is set by the window size and the strip width (4096 px), not the area.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
import torch
from rasterio.windows import Window
from shapely.geometry import box

from ..atomic import atomic_path, refuse_existing, temp_prefix
from ..checkpoint import Checkpoint, load_checkpoint
from ..dataset.composite import DEFAULT_KEEP_SCL, composite_stack
from ..dataset.rasterize import rasterize_parcels, to_grid_crs
from ..dataset.timegrid import TimeGrid
from ..errors import CropmapError
from ..models.fold import fold_batchnorm
from ..models.protocol import model_traits
from ..monitoring.folds import read_fold_index, read_fold_run
from ..progress import progress_bar
from ..runtime import heap_tuned, trim_heap
from ..sources.geotiff_folder import BANDS, SceneStack
from ..sources.imagery import DatesUpTo, open_imagery, parse_date
from ..sources.parcels import read_parcels
from ..styles import category_names_aux, class_map_qml, style_paths
from .parcels import PARCEL_FORMATS, ParcelStats, parcel_table, write_parcel_table
from .resume import ResumeState, file_facts, fingerprint
from .rasters import (NODATA, StreamedRaster, describe_class_map, describe_percent_raster, to_percent)
from .device import inference_device
from .windows import plan_context, plan_geometry, receptive_radius, stream_probabilities

log = logging.getLogger(__name__)

GDAL_CACHE_BYTES = 128 * 2**20


@dataclass(frozen=True)
class PredictSummary:
    map_path: Path
    confidence_path: Path | None
    probabilities_path: Path | None
    quicklook_path: Path | None
    parcels_paths: tuple[Path, ...]
    pixels: int
    nodata_pixels: int
    class_pixels: dict[str, int]
    windows_px: tuple[int, int, int]  # window, overlap, context
    seconds: float
    uncertainty_path: Path | None = None

    @property
    def parcels_path(self) -> Path | None:
        return self.parcels_paths[0] if self.parcels_paths else None


def normalised_input(values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``values [T, C, h, w]`` float32 DN -> ``[C, T, h, w]`` float32 (reflectance - mean) / std, NaN -> 0
    (the values hold no infinity: compositing refuses DN above 20000 and masks those not above 0).

    Plane by plane (one ``[h, w]`` band of one step: it stays in cache through its four passes) and straight into
    the model's layout; the same float32 operations in the same order as normalising the whole array, so the
    values are bit-identical (tested), at a fraction of the memory traffic."""
    t_len, c_len = values.shape[:2]
    mean32, std32 = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    out = np.empty((c_len, t_len, *values.shape[2:]), np.float32)
    for c in range(c_len):
        for t in range(t_len):
            plane = out[c, t]
            np.divide(values[t, c], np.float32(10000.0), out=plane)
            plane -= mean32[c]
            plane /= std32[c]
            np.copyto(plane, np.float32(0.0), where=np.isnan(plane))
    return out


class ScenePredictor:
    """The model of a checkpoint applied to windows of one scene: ``Window`` -> (probabilities
    ``[K, h, w]``, has_data ``[h, w]``)."""

    def __init__(self, ckpt: Checkpoint, stack: SceneStack, keep_scl=DEFAULT_KEEP_SCL,
                 device: torch.device | str = "cpu") -> None:
        self.ckpt, self.stack, self.keep_scl = ckpt, stack, tuple(keep_scl)
        self.device = torch.device(device)
        # eval copy, BatchNorms merged into the convolutions, on the device
        self.model = fold_batchnorm(ckpt.build()).to(self.device)
        self.grid = grid_for(ckpt.time_grid, stack)
        self.doy = torch.as_tensor(self.grid.day_of_year.astype(np.float32))[None]
        # windows start on the model's pooling grid, so they see what a whole-scene pass sees
        self.multiple = model_traits(self.model).multiple
        self.temperature = ckpt.temperature
        # steps after the stack's last acquisition (an in-season cut-off, or imagery that ends early) are
        # masked, as training masks dropped dates, not filled with the last observation carried forward
        last = self.grid.step_of(max(stack.dates))
        kept = torch.arange(self.grid.steps) <= last
        self.mask = None if bool(kept.all()) else kept[None]
        self._on_device = (self.doy.to(self.device), None if self.mask is None else self.mask.to(self.device))

    @property
    def num_classes(self) -> int:
        return self.ckpt.class_table.num_classes

    def __call__(self, win: Window) -> tuple[np.ndarray, np.ndarray]:
        x, has_data = self.inputs(win)
        return self.probabilities(x), has_data

    def inputs(self, win: Window) -> tuple[torch.Tensor, np.ndarray]:
        """The model's input ``[1, C, T, h, w]`` for ``win`` and its has-data mask ``[h, w]``."""
        comp = composite_stack(self.stack, self.grid, window=win, keep_scl=self.keep_scl)
        has_data = comp.has_data
        x = torch.from_numpy(normalised_input(comp.values, self.ckpt.norm_mean, self.ckpt.norm_std))[None]
        del comp  # [1, C, T, h, w]
        if self.mask is not None:
            x[:, :, ~self.mask[0]] = 0  # masked steps hold 0 (the band mean), as in training
        return x, has_data

    def probabilities(self, x: torch.Tensor) -> np.ndarray:
        """``[K, h, w]`` calibrated class probabilities: softmax(output / T), T from the checkpoint."""
        doy, mask = self._on_device
        with torch.inference_mode():
            prob = torch.softmax(self.model(x.to(self.device), doy, mask) / self.temperature, dim=1)[0]
            return prob.cpu().numpy()  # on the CPU, the same array


class FoldScenePredictor:
    """The K models of a fold run (:mod:`cropmap.monitoring.folds`) on one scene: the pixels of a labelled
    parcel get its fold's model (which never saw it), every other pixel the mean of the K models."""

    def __init__(self, run, stack: SceneStack, keep_scl, parcels: gpd.GeoDataFrame | None,
                 device: torch.device | str = "cpu") -> None:
        self.parts = [ScenePredictor(c, stack, keep_scl, device) for c in run.checkpoints]
        self.device = self.parts[0].device
        self.ckpt, self.stack = run.checkpoints[0], stack
        self.model = self.parts[0].model  # for the receptive-radius probe: the folds share one architecture
        self.multiple = max(p.multiple for p in self.parts)
        self.parcels = parcels
        self.fold = run.fold_of(parcels["ID_PARCEL"]) if parcels is not None and "ID_PARCEL" in parcels else None

    @property
    def num_classes(self) -> int:
        return self.ckpt.class_table.num_classes

    def __call__(self, win: Window) -> tuple[np.ndarray, np.ndarray]:
        staged, has_data = self.inputs(win)
        return self.probabilities(staged), has_data

    def inputs(self, win: Window):
        """One composite for every fold model (they share the dataset's normalisation)."""
        x, has_data = self.parts[0].inputs(win)
        return (x, win, has_data.shape), has_data

    def probabilities(self, staged) -> np.ndarray:
        x, win, shape = staged
        probs = [p.probabilities(x) for p in self.parts]
        out = np.mean(probs, axis=0)
        if self.fold is not None and (self.fold >= 0).any():
            fold_px = self.pixel_folds(win, shape)
            for f, prob in enumerate(probs):
                where = fold_px == f
                out[:, where] = prob[:, where]
        return out

    def pixel_folds(self, win: Window, shape: tuple[int, int]) -> np.ndarray:
        """``[h, w]`` fold of the parcel under each pixel of ``win`` (-1: none, or not a labelled parcel)."""
        transform = rasterio.windows.transform(win, self.stack.transform)
        bounds = rasterio.transform.array_bounds(shape[0], shape[1], transform)
        near = np.sort(self.parcels.sindex.query(box(*bounds), predicate="intersects"))
        out = np.full(shape, -1, np.int16)
        if len(near):
            pid = rasterize_parcels(self.parcels.iloc[near], transform, shape)  # 1 + position in `near`
            inside = pid > 0
            out[inside] = self.fold[near][pid[inside] - 1]
        return out


def run_checkpoint(run: Path | str) -> Checkpoint:
    """The checkpoint whose classes, bands and preprocessing a run's outputs follow: its ``model.pt``, or
    the first fold's for a fold run (the folds share them)."""
    index = read_fold_index(run)
    return load_checkpoint(index.path / index.runs[0] if index else run)


def answer_parcels(gdf: gpd.GeoDataFrame, stats: ParcelStats, table, run: Path | str) -> gpd.GeoDataFrame:
    """The parcel table (:func:`~cropmap.prediction.parcels.parcel_table`) with ``fold``: the fold whose model
    answered the parcel (-1: the mean of the fold models, for parcels not labelled in training; or a run
    without folds, whose answers are in-sample for its training parcels). A fold run's parcel probabilities
    are calibrated on its out-of-fold parcels."""
    index = read_fold_index(run)  # the parcels' folds only: no checkpoint is loaded again
    fold = index.fold_of(gdf["ID_PARCEL"]) if index is not None and "ID_PARCEL" in gdf else \
        np.full(len(gdf), -1, np.int16)
    res = parcel_table(gdf, stats, table, calibrate_on=fold >= 0 if index is not None else None)
    res["fold"] = fold
    return res


UNCERTAINTY_BANDS = ("normalised entropy (0: sure, 1: uniform over the classes)",
                     "margin (top-1 minus top-2 probability; low: unsure)")


def uncertainty(prob: np.ndarray) -> np.ndarray:
    """``[2, h, w]`` normalised entropy and margin of ``prob [K, h, w]``."""
    k = prob.shape[0]
    p = np.clip(prob, 1e-12, 1.0)
    entropy = -(p * np.log(p)).sum(axis=0) / np.log(max(k, 2))
    top2 = np.partition(prob, k - 2, axis=0)[-2:] if k > 1 else np.concatenate([prob, np.zeros_like(prob)])
    return np.stack([entropy, np.abs(top2[1] - top2[0])]).astype(np.float32)


def grid_for(trained: TimeGrid, stack: SceneStack) -> TimeGrid:
    """The training grid, moved to the imagery's year when the imagery is from another season."""
    inside = [d for d in stack.dates if 0 <= trained.step_of(d) < trained.steps]
    grid = trained if inside else trained.in_year(stack.dates[0].year)
    if not any(0 <= grid.step_of(d) < grid.steps for d in stack.dates):
        raise CropmapError(f"{stack.files[0].parent}: no acquisition in the model's season "
                           f"({grid.start} + {grid.steps} x {grid.period_days} days)")
    return grid


def check_outputs(paths: list[Path | None], overwrite: bool) -> None:
    refuse_existing(*paths, overwrite=overwrite)


# the files written beside a map ``<stem>.tif``, by kind: the one place their names are made
SIDE_OUTPUTS = {"confidence": ".confidence.tif", "probabilities": ".probabilities.tif", "quicklook": ".quicklook.png",
                "uncertainty": ".uncertainty.tif",
                "parcel_stats": ".parcels.npz"}


def side_path(map_path: Path | str, kind: str) -> Path:
    """``<map stem><suffix>`` beside the map, for a kind of ``SIDE_OUTPUTS``."""
    map_path = Path(map_path)
    return map_path.with_name(map_path.stem + SIDE_OUTPUTS[kind])


def read_scene_parcels(parcels: Path | str, stack: SceneStack, imagery: Path | str) -> gpd.GeoDataFrame:
    """The parcels touching the scene (only those are read), in the scene's CRS, with their ``fid``."""
    gdf = read_parcels(parcels, bbox=stack.bounds, bbox_crs=stack.crs, with_fid=True)
    gdf = to_grid_crs(gdf, stack.crs, str(parcels))
    gdf = gdf[gdf.intersects(box(*stack.bounds))].reset_index(drop=True)
    if len(gdf) == 0:
        raise CropmapError(f"{parcels}: no parcel overlaps the imagery in {imagery}")
    total = pyogrio.read_info(parcels)["features"]
    if total > len(gdf):
        log.info("%s: %d of %d parcels touch the imagery; the others are not in the parcel output",
                 parcels, len(gdf), total)
    return gdf


def predict_scene(run: Path | str, imagery: Path | str, out: Path | str, *, parcels: Path | str | None = None,
                  confidence_out: Path | str | None = None, probabilities_out: Path | str | None = None,
                  quicklook: bool = True, window: int | None = None, overlap: int | None = None,
                  keep_scl=None, overwrite: bool = False, show_progress: bool = True,
                  staging: contextlib.ExitStack | None = None, uncertainty_out: Path | str | None = None,
                  until: str | datetime.date | None = None, restart: bool | None = None,
                  device: str | torch.device = "auto") -> tuple[PredictSummary, ParcelStats | None]:
    """Predict one scene; returns the summary and, with ``parcels``, the parcels' accumulated stats.

    The model runs on ``device`` (see :func:`~cropmap.prediction.device.inference_device`; ``auto``: a CUDA
    GPU when torch sees one); compositing stays on the CPU. ``window`` and ``overlap`` (pixels) left out are
    planned for the model and the scene (:func:`~cropmap.prediction.windows.plan_geometry`); given, they are kept.

    An interrupted run of the same is resumed from its last finished block unless ``restart`` (default:
    ``overwrite``; tiles replace their unfinished outputs but still resume).

    Outputs are written under temporary names and renamed when ``staging`` closes (by default, on return),
    the map last: a map on disk means every output of its run is complete, so a killed run leaves none.
    """
    start = time.perf_counter()
    out = Path(out)
    conf_out = Path(confidence_out) if confidence_out else None
    prob_out = Path(probabilities_out) if probabilities_out else None
    unc_out = Path(uncertainty_out) if uncertainty_out else None
    look_out = side_path(out, "quicklook") if quicklook else None
    qml_out, aux_out = style_paths(out)  # the legend's class names for QGIS and GDAL readers
    check_outputs([out, conf_out, prob_out, unc_out, look_out, qml_out, aux_out], overwrite)
    if window is not None and window < 16:
        raise CropmapError(f"--window {window}: too small (at least 16 px)")
    fold_run = read_fold_run(run)
    ckpt = fold_run.checkpoints[0] if fold_run else load_checkpoint(run)
    if ckpt.class_table.num_classes >= NODATA:
        raise CropmapError(f"{run}: {ckpt.class_table.num_classes} classes do not fit a uint8 map")
    stack = open_imagery(imagery)
    cutoff = parse_date(until)
    if cutoff is not None:  # in season: the acquisitions up to the cut-off only, as if the imagery ended there
        stack = DatesUpTo(stack, cutoff)
    if tuple(ckpt.bands) != BANDS:  # readers always give B2, B3, B4, B8: a model of other bands cannot run
        raise CropmapError(f"{ckpt.source or run}: the model's bands {', '.join(ckpt.bands)} differ from the "
                           f"imagery's {', '.join(BANDS)} ({imagery})")
    # clouds are masked as in training (the checkpoint's preprocessing record), or the scene is refused
    keep = ckpt.record.check_scene(stack, imagery, keep_scl)
    gdf = read_scene_parcels(parcels, stack, imagery) if parcels is not None else None
    dev = inference_device(device)
    predictor = (FoldScenePredictor(fold_run, stack, keep, gdf, dev) if fold_run
                 else ScenePredictor(ckpt, stack, keep, dev))
    k, names = predictor.num_classes, list(ckpt.class_table.names)
    stats = ParcelStats.zeros(gdf["fid"].to_numpy(), k) if gdf is not None else None

    radius = receptive_radius(predictor.model, len(ckpt.bands), predictor.multiple)
    window, overlap = plan_geometry(stack.height, stack.width, radius, predictor.multiple, window=window,
                                    overlap=overlap)
    if (window - overlap) // predictor.multiple < 1:
        raise CropmapError(f"--window {window} with --overlap {overlap}: the windows would not advance (the overlap "
                           f"must be at least {predictor.multiple} px smaller than the window; leave either out to "
                           "have it planned)")
    context = plan_context(radius, overlap, predictor.multiple)
    class_pixels = np.zeros(k, dtype=np.int64)
    out.parent.mkdir(parents=True, exist_ok=True)
    own = contextlib.ExitStack()
    stage = staging if staging is not None else own

    def staged(final: Path) -> Path:  # renamed into place when ``stage`` closes, in reverse order of staging
        return stage.enter_context(atomic_path(final, overwrite=overwrite))  # also clears a killed run's temps

    # what makes this run's outputs: an interrupted run of the same is resumed from its last finished block
    key = fingerprint(version=__import__("cropmap").__version__, run=file_facts(run), imagery=file_facts(imagery),
                      dates=[str(d) for d in stack.dates], window=window, overlap=overlap, context=context,
                      keep=list(keep), outputs=[p is not None for p in (conf_out, prob_out, unc_out)],
                      device=dev.type,  # a GPU's rounding differs: blocks of another device are not mixed in
                      parcels=file_facts(parcels) if parcels is not None else None)
    resume = ResumeState(out, key, overwrite if restart is None else restart)
    stage.enter_context(resume.removed_on_success())  # entered first: left last, once every output is in place

    # GDAL's block cache would otherwise grow to 5 % of RAM with every block read and written
    with own, rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        map_tmp = staged(out)  # staged first: renamed last
        conf_tmp, prob_tmp, unc_tmp, look_tmp = (staged(p) if p else None
                                                 for p in (conf_out, prob_out, unc_out, look_out))
        with tempfile.TemporaryDirectory(prefix=temp_prefix(out), suffix=".tmp", dir=out.parent) as tmpdir:
            tmp = Path(tmpdir)
            _stream_scene(stack, predictor, tmp, map_tmp, conf_tmp, prob_tmp, window, overlap, context, gdf, stats,
                          class_pixels, show_progress, unc_tmp, resume)
        if look_tmp is not None:
            from ..quicklook import render_quicklook

            render_quicklook(map_tmp, look_tmp, name=out.name)
        names_colors = list(ckpt.class_table.names), list(ckpt.class_table.colors)
        staged(qml_out).write_text(class_map_qml(*names_colors), encoding="utf-8")
        staged(aux_out).write_text(category_names_aux(names_colors[0]), encoding="utf-8")
    summary = PredictSummary(out, conf_out, prob_out, look_out, (), stack.height * stack.width,
                             int(stack.height * stack.width - class_pixels.sum()),
                             {names[i]: int(n) for i, n in enumerate(class_pixels)}, (window, overlap, context),
                             time.perf_counter() - start, unc_out)
    return summary, stats


def _stream_scene(stack, predictor: ScenePredictor, tmp: Path, map_out: Path, conf_out: Path | None,
                  prob_out: Path | None, window: int, overlap: int, context: int, gdf, stats: ParcelStats | None,
                  class_pixels: np.ndarray, show_progress: bool, unc_out: Path | None = None,
                  resume: ResumeState | None = None) -> None:
    """Predict the scene window by window, streamed into ``tmp`` and finished as COGs at ``map_out`` (and
    ``conf_out``, ``prob_out``); adds each block's pixels per class to ``class_pixels`` and, with
    ``stats``, its parcels' votes. With ``resume``, the blocks an interrupted run finished are replayed from
    disk and each new one is recorded (see :mod:`cropmap.prediction.resume`)."""
    ckpt, k = predictor.ckpt, predictor.num_classes
    grid = dict(width=stack.width, height=stack.height, crs=stack.crs, transform=stack.transform)
    rasters = {"map": StreamedRaster(map_out, tmp / "map.tif", grid, 1, resampling="mode")}
    if conf_out:
        rasters["conf"] = StreamedRaster(conf_out, tmp / "conf.tif", grid, 1, resampling="average")
    if prob_out:
        rasters["prob"] = StreamedRaster(prob_out, tmp / "prob.tif", grid, k, resampling="average")
    if unc_out:
        rasters["unc"] = StreamedRaster(unc_out, tmp / "unc.tif", grid, 2, resampling="average")
    try:
        # colour table and descriptions before any pixel: GeoTIFF fixes them once data is written
        describe_class_map(rasters["map"].dst, ckpt)
        if conf_out:
            describe_percent_raster(rasters["conf"].dst, ["confidence (max class probability)"], "confidence", ckpt)
        if prob_out:
            describe_percent_raster(rasters["prob"].dst, list(ckpt.class_table.names), "class probabilities", ckpt)
        if unc_out:
            describe_percent_raster(rasters["unc"].dst, list(UNCERTAINTY_BANDS), "uncertainty", ckpt)
        bar = (progress_bar("predicting", stack.height * stack.width, unit="px") if show_progress
               else contextlib.nullcontext(lambda n=1: None))
        with bar as advance:
            start = resume.done if resume is not None else 0
            if start:  # an interrupted run's finished blocks, as they were written
                for row0, col0, arrays in resume.blocks():
                    for name, values in arrays.items():
                        rasters[name].write(row0, col0, values)
                    advance(arrays["map"].size)
                class_pixels[:] = resume.class_pixels
                saved = resume.stats()
                if stats is not None and saved is not None:
                    stats.votes[:], stats.prob_sum[:] = saved.votes, saved.prob_sum
            for row0, col0, prob, has in stream_probabilities(
                    predictor, stack.height, stack.width, k, window=window, overlap=overlap, context=context,
                    multiple=predictor.multiple, start_block=start):
                cls = prob.argmax(axis=0).astype(np.uint8)
                cls[~has] = NODATA
                arrays = {"map": cls}
                if conf_out:
                    arrays["conf"] = to_percent(prob.max(axis=0), has)
                if prob_out:
                    arrays["prob"] = to_percent(prob, has)
                if unc_out:
                    arrays["unc"] = to_percent(uncertainty(prob), has)
                for name, values in arrays.items():
                    rasters[name].write(row0, col0, values)
                class_pixels += np.bincount(cls[has], minlength=k)
                if stats is not None:
                    block = Window(col0, row0, has.shape[1], has.shape[0])
                    stats.add_band(gdf, rasterio.windows.transform(block, stack.transform), prob, has)
                if resume is not None:
                    resume.save_block(row0, col0, arrays, class_pixels, stats)
                if heap_tuned():
                    # a tuned heap never gives memory back, and windows of a few shapes fragment it: peak RSS went
                    # 1.71 -> 1.93 GB when the scene's height doubled (2048 -> 4096 px, 720 px windows), 1.71 ->
                    # 1.71 GB with a trim per block (a window row of a strip), for ~3 % more time (re-faulting)
                    trim_heap()
                advance(cls.size)
        for r in rasters.values():
            r.finish()
    finally:
        for r in rasters.values():
            r.close()


def predict_map(run: Path | str, imagery: Path | str, out: Path | str, *, parcels: Path | str | None = None,
                parcels_out: Path | str | list | tuple | None = None, confidence_out: Path | str | None = None,
                probabilities_out: Path | str | None = None, quicklook: bool = True,
                window: int | None = None, overlap: int | None = None, keep_scl=None,
                overwrite: bool = False, uncertainty_out: Path | str | None = None,
                until: str | datetime.date | None = None, device: str | torch.device = "auto") -> PredictSummary:
    """Map one scene (the model on ``device``, see :func:`predict_scene`); with ``parcels`` and ``parcels_out``
    (one or more .gpkg / .parquet paths) also write each parcel's predicted class at every level of the hierarchy."""
    outs = parcel_outputs(parcels_out)
    if outs and parcels is None:
        raise CropmapError("--parcels-out needs --parcels")
    check_outputs(list(outs), overwrite)
    # the parcel tables are renamed into place with the rasters, before the map: see predict_scene
    with contextlib.ExitStack() as staging:
        summary, stats = predict_scene(run, imagery, out, parcels=parcels if outs else None,
                                       confidence_out=confidence_out, probabilities_out=probabilities_out,
                                       quicklook=quicklook, window=window, overlap=overlap, keep_scl=keep_scl,
                                       overwrite=overwrite, staging=staging, uncertainty_out=uncertainty_out,
                                       until=until, device=device)
        if not outs:
            return summary
        table = run_checkpoint(run).class_table
        stack = open_imagery(imagery)
        gdf = read_parcels(parcels, with_fid=True, bbox=stack.bounds, bbox_crs=stack.crs)  # the area only
        gdf = gdf[np.isin(gdf["fid"], stats.fids)].reset_index(drop=True)
        res = answer_parcels(gdf, stats, table, run)
        for p in outs:
            write_parcel_table(res, staging.enter_context(atomic_path(p, overwrite=overwrite)), overwrite=True)
    return PredictSummary(**{**summary.__dict__, "parcels_paths": outs})


def parcel_outputs(parcels_out) -> tuple[Path, ...]:
    if parcels_out is None:
        return ()
    outs = (parcels_out,) if isinstance(parcels_out, (str, Path)) else tuple(parcels_out)
    outs = tuple(Path(p) for p in outs)
    for p in outs:
        if p.suffix.lower() not in PARCEL_FORMATS:
            raise CropmapError(f"{p}: unknown parcel output format; use one of {', '.join(PARCEL_FORMATS)}")
    return outs


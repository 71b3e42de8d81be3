"""``cropmap build``: imagery folder + parcels -> patch dataset on disk (see :mod:`.store` for the format).

The imagery is composited block by block as a Dask graph (:mod:`.blocks`), in this process or on a cluster;
the parcels, labels and split are computed here first, for the whole area.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from shapely.geometry import box

from .. import __version__
from ..atomic import atomic_path, refuse_existing
from ..config import BuildConfig
from ..errors import CropmapError
from ..nomenclature import IGNORE_INDEX, LEVELS, OTHER_NAME, make_class_table, read_class_scheme
from ..progress import progress_bar
from ..sources.geotiff_folder import BANDS
from ..sources.imagery import open_imagery
from .preprocessing import Preprocessing, imagery_source
from ..sources.parcels import read_parcels
from .blocks import DEFAULT_BLOCK, PATCH_VARS, band_norm, block_jobs, compact, run_blocks
from .rasterize import border_mask, labels_from_parcels, rasterize_parcels, to_grid_crs
from .splits import SPLITS, TINY_SPLIT_PATCHES, class_aware_splits, patch_origins, split_coverage
from .store import FORMAT_VERSION
from .timegrid import TimeGrid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildSummary:
    path: Path
    n_patches: dict[str, int]
    n_parcels: int
    classes: tuple[str, ...]
    steps: int
    unknown_codes: dict[str, int]  # code left unlabelled (not in the RPG table, or not in --classes) -> parcels
    unknown_pixels: dict[str, int]  # the same codes -> pixels they would have labelled


def build_dataset(imagery: Path | str, parcels: Path | str, out: Path | str, config: BuildConfig = BuildConfig(),
                  *, overwrite: bool = False, block_size: int = DEFAULT_BLOCK, dask_address: str | None = None,
                  workers: int = 1) -> BuildSummary:
    """Rasterize, split, composite and cut; write the dataset to ``out`` atomically.

    Compositing runs per block of ``block_size`` px (rounded to whole patches) on Dask: ``workers`` threads
    here, or the cluster at ``dask_address`` (its workers must see ``imagery`` and ``out``'s folder). The
    dataset is the same whatever the block size, workers or scheduler.
    """
    out = Path(out)
    refuse_existing(out, overwrite=overwrite)  # before the work; atomic_path checks again
    level = "custom" if config.classes else config.level
    if config.level not in LEVELS:
        raise CropmapError(f"unknown label level {config.level!r}; expected group, crop, or custom with a classes file")
    if config.classes and config.level == "crop":
        raise CropmapError("--classes replaces --level: give one or the other")
    if level == "custom" and not config.classes:
        raise CropmapError("label level custom needs a classes file (--classes FILE)")
    if config.min_pixels > 0 and level != "crop":
        raise CropmapError(f"--min-pixels applies to --level crop, not to level {level}")
    scheme = read_class_scheme(config.classes) if config.classes else None  # before any work: a bad file fails fast
    stack = open_imagery(imagery)
    gdf = read_parcels(parcels)
    gdf = to_grid_crs(gdf, stack.crs, str(parcels))
    footprint = box(*stack.bounds)
    inside = gdf.intersects(footprint)
    if not inside.any():
        raise CropmapError(f"{parcels}: no parcel overlaps the imagery in {imagery} (checked in {stack.crs.to_string()})")
    gdf = gdf[inside].reset_index(drop=True)

    shape = (stack.height, stack.width)
    pidx = rasterize_parcels(gdf, stack.transform, shape)
    # labelled pixels per code: inside a parcel and off its eroded border (before the cloud mask)
    inner = (pidx > 0) & ~border_mask(pidx, config.erode) if config.erode > 0 else pidx > 0
    per_parcel = np.bincount(pidx[inner], minlength=len(gdf) + 1)[1:]
    pixels: Counter[str] = Counter()
    for code, n in zip(gdf["CODE_CULTU"], per_parcel):
        pixels[code] += int(n)
    table, unknown = make_class_table(gdf["CODE_CULTU"], level, background=config.background, pixels=pixels,
                                      min_pixels=config.min_pixels, scheme=scheme)
    counts = Counter(gdf["CODE_CULTU"])
    unknown_counts = {c: counts[c] for c in unknown}
    unknown_pixels = {c: pixels[c] for c in unknown}
    if unknown_counts:
        why = f"not in {config.classes}" if scheme else "not in the RPG code table"
        log.warning("%s: %d crop code(s) %s left unlabelled (parcels, pixels): %s", parcels, len(unknown_counts), why,
                    ", ".join(f"{c} ({n}, {unknown_pixels[c]})" for c, n in sorted(unknown_counts.items())))
    if OTHER_NAME in table.names and level == "crop":
        folded = table.codes[table.names.index(OTHER_NAME)]
        log.info("%d code(s) with fewer than %d labelled pixels folded into %r: %s", len(folded), config.min_pixels,
                 OTHER_NAME, ", ".join(folded))
    if table.num_classes - int(table.background) < 2:
        raise CropmapError(f"{parcels}: fewer than two known crop classes among the parcels in the imagery")

    if block_size < 1:
        raise CropmapError(f"block size {block_size}: expected a positive number of pixels")
    grid = TimeGrid.covering(stack.dates, config.period_days)
    parcel_class = np.array([table.class_of(c) for c in gdf["CODE_CULTU"]], dtype=np.int16)
    labels = labels_from_parcels(pidx, parcel_class, config.erode, 0 if table.background else None)

    ps = config.patch_size
    origins = patch_origins(*shape, ps)
    if len(origins) == 0:
        raise CropmapError(f"{imagery}: imagery ({shape[0]} x {shape[1]} px) is smaller than one patch ({ps} px)")
    block_split, psplit = class_aware_splits(pidx, origins, ps, parcel_class, table.num_classes,
                                             config.split_fractions, config.seed)
    warn_split_coverage(split_coverage(psplit, parcel_class, table.num_classes), table.names, imagery)
    psplit_lut = np.concatenate([[-1], psplit])

    # candidates: patches with a labelled pixel of their own split; the blocks then drop those whose labelled
    # pixels are never observed (the cloud mask is known only after compositing)
    cand, cand_labels = [], []
    for k, ((r, c), s) in enumerate(zip(origins, block_split)):
        lab = labels[r : r + ps, c : c + ps].astype(np.int16)
        other = (psplit_lut[pidx[r : r + ps, c : c + ps]] != s) & (pidx[r : r + ps, c : c + ps] > 0)
        lab[other] = IGNORE_INDEX  # the parcel belongs to another split
        if (lab != IGNORE_INDEX).any():
            cand.append(k)
            cand_labels.append(lab)
    cand = np.array(cand, dtype=int)
    _check_splits(block_split[cand], imagery, ps)
    cand_parcels = np.stack([pidx[r : r + ps, c : c + ps] for r, c in origins[cand]]).astype(np.int32)
    jobs = block_jobs(origins[cand], np.stack(cand_labels), cand_parcels, block_split[cand] == SPLITS.index("train"),
                      ps, block_size)
    del cand_labels, cand_parcels

    c, t = len(BANDS), grid.steps
    ds = xr.Dataset(  # the patch arrays are laid out empty (one chunk per patch) and filled by the blocks
        {
            "x": (("patch", "band", "time", "y", "x"), _zeros((len(cand), c, t, ps, ps), np.uint16)),
            "observed": (("patch", "time", "y", "x"), _zeros((len(cand), t, ps, ps), bool)),
            "label": (("patch", "y", "x"), _zeros((len(cand), ps, ps), np.int16)),
            "parcel": (("patch", "y", "x"), _zeros((len(cand), ps, ps), np.int32)),
            "parcel_id": (("parcel",), gdf["ID_PARCEL"].to_numpy(dtype=str)),
            "parcel_code": (("parcel",), gdf["CODE_CULTU"].to_numpy(dtype=str)),
            "parcel_split": (("parcel",), np.array([SPLITS[s] if s >= 0 else "" for s in psplit])),
        },
        coords={
            "band": list(BANDS),
            "time": np.array(grid.centres, dtype="datetime64[ns]"),
            "doy": (("time",), grid.day_of_year),
        },
    )
    ds.attrs.update(
        cropmap_dataset_version=FORMAT_VERSION,
        cropmap_version=__version__,
        class_table=table.to_json(),
        time_grid=json.dumps(grid.to_dict()),
        grid=json.dumps({"crs": stack.crs.to_wkt(), "transform": list(stack.transform)[:6],
                         "width": stack.width, "height": stack.height}),
        build_config=json.dumps(asdict(config)),
        source=json.dumps({"imagery": str(imagery), "parcels": str(parcels)}),
        unlabelled_codes=json.dumps({c: {"parcels": n, "pixels": unknown_pixels[c]} for c, n in unknown_counts.items()},
                                    ensure_ascii=False),
    )
    encoding = {name: {"chunks": (1, *ds[name].shape[1:]), "_FillValue": None} for name in PATCH_VARS}
    with atomic_path(out, is_dir=True) as tmp:
        ds.to_zarr(tmp, mode="w", compute=False, encoding=encoding, zarr_format=2, consolidated=False)
        with progress_bar(f"compositing {len(jobs)} block(s)", len(jobs)) as advance:
            results = run_blocks(imagery, grid, config.keep_scl, jobs, tmp, dask_address=dask_address,
                                 workers=workers, progress=advance)
        keep = np.zeros(len(cand), bool)
        for r in results:
            keep[r.index] = r.keep
        kept = cand[keep]
        _check_splits(block_split[kept], imagery, ps)
        compact(tmp, keep)
        mean, std = band_norm(results)
        std = std + 1e-6
        split_names = np.array([SPLITS[s] for s in block_split[kept]])
        xr.Dataset({"origin": (("patch", "yx"), origins[kept]), "split": (("patch",), split_names)}).to_zarr(
            tmp, mode="a", zarr_format=2, consolidated=False)
        norm = {"mean": mean.tolist(), "std": std.tolist(), "unit": "reflectance"}
        record = Preprocessing(bands=tuple(BANDS), keep_scl=tuple(config.keep_scl),
                               cloud_mask="scl" if getattr(stack, "has_scl", True) else "none",
                               period_days=config.period_days, time_grid=grid.to_dict(), norm=norm,
                               source=imagery_source(stack))
        _finish_store(tmp, {**ds.attrs, "norm": json.dumps(norm), "preprocessing": record.to_json()})
    n_by_split = {name: int((block_split[kept] == i).sum()) for i, name in enumerate(SPLITS)}
    tiny = {k: v for k, v in n_by_split.items() if v < TINY_SPLIT_PATCHES}
    if tiny:
        log.warning("%s: tiny split(s): %s patch(es) of %d px; validation and test figures will be noisy (a "
                    "smaller --patch-size gives more patches)", imagery,
                    ", ".join(f"{k} {v}" for k, v in tiny.items()), ps)
    return BuildSummary(out, n_by_split, len(gdf), table.names, grid.steps, unknown_counts, unknown_pixels)


def _zeros(shape: tuple[int, ...], dtype):
    """A lazy dask array of zeros, one chunk per patch: the layout of a patch array, never computed."""
    import dask.array as da

    return da.zeros(shape, dtype=dtype, chunks=(1, *shape[1:]))


def warn_split_coverage(cov: np.ndarray, names, imagery: Path | str) -> None:
    """One warning line per split that lacks classes present in the area (``cov [3, K]`` parcels per class)."""
    present = cov.sum(axis=0) > 0
    for i, split in enumerate(SPLITS):
        missing = [names[k] for k in np.flatnonzero(present & (cov[i] == 0))]
        if missing:
            log.warning("%s: %s split has no parcel of %d class(es): %s%s", imagery, split, len(missing),
                        ", ".join(missing), " (the model cannot learn them)" if split == "train" else
                        " (their scores will be missing)")


def _check_splits(splits: np.ndarray, imagery: Path | str, ps: int) -> None:
    """Every split needs a labelled patch: ``splits [N]`` split index of the labelled patches."""
    empty = [name for i, name in enumerate(SPLITS) if not (splits == i).any()]
    if empty:
        raise CropmapError(
            f"{imagery}: too small to split: no labelled patch for {', '.join(empty)} "
            f"({len(splits)} labelled patches of {ps} px); use a smaller --patch-size or a larger area"
        )


def _finish_store(path: Path, attrs: dict) -> None:
    """Set the dataset attributes and consolidate the metadata (readers open it consolidated)."""
    import zarr

    zarr.open_group(str(path), mode="r+", zarr_format=2).attrs.update(attrs)
    zarr.consolidate_metadata(str(path), zarr_format=2)

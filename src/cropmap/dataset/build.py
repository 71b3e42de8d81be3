"""``cropmap build``: imagery folder + parcels -> patch dataset on disk (see :mod:`.store` for the format)."""

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
from ..atomic import atomic_path
from ..config import BuildConfig
from ..errors import CropmapError
from ..nomenclature import IGNORE_INDEX, LEVELS, OTHER_NAME, make_class_table, read_class_scheme
from ..progress import progress_bar
from ..sources.geotiff_folder import BANDS
from ..sources.imagery import open_imagery
from ..sources.parcels import read_parcels
from .composite import composite_stack
from .rasterize import border_mask, labels_from_parcels, rasterize_parcels, to_grid_crs
from .splits import SPLITS, assign_block_splits, parcel_splits, patch_origins
from .store import FORMAT_VERSION, write_dataset
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
                  *, overwrite: bool = False) -> BuildSummary:
    """Composite, rasterize, cut and split; write the dataset to ``out`` atomically."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise CropmapError(f"{out}: already exists (pass --overwrite to replace it)")
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

    grid = TimeGrid.covering(stack.dates, config.period_days)
    with progress_bar(f"compositing {len(stack)} dates", len(stack)) as advance:
        comp = composite_stack(stack, grid, keep_scl=config.keep_scl, progress=advance)

    parcel_class = np.array([table.class_of(c) for c in gdf["CODE_CULTU"]], dtype=np.int16)
    labels = labels_from_parcels(pidx, parcel_class, config.erode, 0 if table.background else None)
    labels[~comp.has_data] = IGNORE_INDEX  # no observation: nothing to learn from

    ps = config.patch_size
    origins = patch_origins(*shape, ps)
    if len(origins) == 0:
        raise CropmapError(f"{imagery}: imagery ({shape[0]} x {shape[1]} px) is smaller than one patch ({ps} px)")
    block_split = assign_block_splits(len(origins), config.split_fractions, config.seed)
    psplit = parcel_splits(pidx, origins, block_split, ps, len(gdf))
    psplit_lut = np.concatenate([[-1], psplit])

    keep, patch_labels = [], []
    for k, ((r, c), s) in enumerate(zip(origins, block_split)):
        lab = labels[r : r + ps, c : c + ps].copy()
        other = (psplit_lut[pidx[r : r + ps, c : c + ps]] != s) & (pidx[r : r + ps, c : c + ps] > 0)
        lab[other] = IGNORE_INDEX  # the parcel belongs to another split
        if (lab != IGNORE_INDEX).any():
            keep.append(k)
            patch_labels.append(lab)
    keep = np.array(keep, dtype=int)
    n_by_split = {name: int((block_split[keep] == i).sum()) for i, name in enumerate(SPLITS)}
    empty = [name for name, n in n_by_split.items() if n == 0]
    if empty:
        raise CropmapError(
            f"{imagery}: too small to split: no labelled patch for {', '.join(empty)} "
            f"({len(keep)} labelled patches of {ps} px); use a smaller --patch-size or a larger area"
        )

    values = np.nan_to_num(comp.values, nan=0.0)  # [T, C, H, W]
    x = np.stack([values[:, :, r : r + ps, c : c + ps] for r, c in origins[keep]])  # [N, T, C, P, P]
    x = np.clip(np.rint(x), 0, 65535).astype(np.uint16).transpose(0, 2, 1, 3, 4)  # [N, C, T, P, P]
    observed = np.stack([comp.observed[:, r : r + ps, c : c + ps] for r, c in origins[keep]])
    parcel = np.stack([pidx[r : r + ps, c : c + ps] for r, c in origins[keep]])
    split_names = np.array([SPLITS[s] for s in block_split[keep]])

    train = split_names == "train"
    refl = x[train].astype(np.float64) / 10000.0  # [N, C, T, P, P]
    seen = observed[train][:, None].repeat(len(BANDS), axis=1)
    mean = np.array([refl[:, b][seen[:, b]].mean() for b in range(len(BANDS))])
    std = np.array([refl[:, b][seen[:, b]].std() for b in range(len(BANDS))]) + 1e-6

    ds = xr.Dataset(
        {
            "x": (("patch", "band", "time", "y", "x"), x),
            "observed": (("patch", "time", "y", "x"), observed),
            "label": (("patch", "y", "x"), np.stack(patch_labels).astype(np.int16)),
            "parcel": (("patch", "y", "x"), parcel.astype(np.int32)),
            "origin": (("patch", "yx"), origins[keep]),
            "split": (("patch",), split_names),
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
    ds["x"].encoding["chunks"] = (1, len(BANDS), grid.steps, ps, ps)
    ds.attrs.update(
        cropmap_dataset_version=FORMAT_VERSION,
        cropmap_version=__version__,
        class_table=table.to_json(),
        time_grid=json.dumps(grid.to_dict()),
        norm=json.dumps({"mean": mean.tolist(), "std": std.tolist(), "unit": "reflectance"}),
        grid=json.dumps({"crs": stack.crs.to_wkt(), "transform": list(stack.transform)[:6],
                         "width": stack.width, "height": stack.height}),
        build_config=json.dumps(asdict(config)),
        source=json.dumps({"imagery": str(imagery), "parcels": str(parcels)}),
        unlabelled_codes=json.dumps({c: {"parcels": n, "pixels": unknown_pixels[c]} for c, n in unknown_counts.items()},
                                    ensure_ascii=False),
    )
    with atomic_path(out, is_dir=True) as tmp:
        write_dataset(tmp, ds)
    return BuildSummary(out, n_by_split, len(gdf), table.names, grid.steps, unknown_counts, unknown_pixels)

"""A PNG quick-look of a crop map: the map in its own colours and a legend of the classes it shows.

The map is read decimated (from its overviews when it has them), so a full 10980 x 10980 tile costs
a few MB; the legend's shares are measured on that decimated read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError

from .atomic import atomic_path
from .errors import CropmapError

DPI = 100
LEGEND_IN = 3.4  # inches right of the map for the legend (class names run to ~35 characters)


@dataclass(frozen=True)
class MapPreview:
    classes: np.ndarray  # [h, w] uint8 class indices, decimated
    valid: np.ndarray  # [h, w] bool, False where the map has no observation
    names: tuple[str, ...]  # CLASS_NAMES, indexed by pixel value
    colors: dict[int, tuple[int, int, int]]  # pixel value -> RGB, from the colour table
    model: str
    level: str
    full_shape: tuple[int, int]  # the map's own height, width


def read_map_preview(map_path: Path | str, *, max_side: int = 1024) -> MapPreview:
    """The map read so that its longer side is at most ``max_side`` pixels (mode resampling, so every
    pixel of the preview is a class that occurs around it, never an average of indices)."""
    map_path = Path(map_path)
    if not map_path.exists():
        raise CropmapError(f"{map_path}: map does not exist")
    try:
        src = rasterio.open(map_path)
    except RasterioIOError as e:
        raise CropmapError(f"{map_path}: not a readable raster ({e})") from None
    with src:
        if src.count != 1 or src.dtypes[0] != "uint8":
            raise CropmapError(f"{map_path}: not a cropmap map (expected one uint8 band of class indices, found "
                               f"{src.count} band(s) of {src.dtypes[0]})")
        tags = src.tags()
        if "CLASS_NAMES" not in tags:
            raise CropmapError(f"{map_path}: not a cropmap map (no CLASS_NAMES tag; maps come from `cropmap predict`)")
        try:
            names = json.loads(tags["CLASS_NAMES"])
        except json.JSONDecodeError:
            names = None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise CropmapError(f"{map_path}: the CLASS_NAMES tag is not a JSON list of names")
        scale = max(src.height, src.width) / max(max_side, 1)
        shape = (src.height, src.width) if scale <= 1 else \
            (max(1, round(src.height / scale)), max(1, round(src.width / scale)))
        classes = src.read(1, out_shape=shape, resampling=Resampling.mode)
        valid = classes != src.nodata if src.nodata is not None else np.ones(shape, dtype=bool)
        try:
            cmap = src.colormap(1)
        except ValueError:  # no colour table: a map edited outside cropmap
            cmap = {}
        colors = {int(v): tuple(int(c) for c in rgba[:3]) for v, rgba in cmap.items()}
        return MapPreview(classes, valid, tuple(names), colors, tags.get("MODEL", ""), tags.get("CLASS_LEVEL", ""),
                          (src.height, src.width))


@dataclass(frozen=True)
class LegendEntry:
    value: int  # pixel value
    name: str
    color: tuple[int, int, int]
    share: float  # of the mapped (observed) pixels of the preview


def legend_entries(p: MapPreview) -> list[LegendEntry]:
    """The classes present in the preview, most common first."""
    counts = np.bincount(p.classes[p.valid], minlength=256)
    mapped = max(int(counts.sum()), 1)
    entries = []
    for v in np.argsort(-counts, kind="stable"):
        if counts[v] == 0:
            break
        v = int(v)
        rgb = p.colors.get(v)
        if rgb is None:  # no colour table entry (a map edited outside cropmap): matplotlib's tab20
            from matplotlib import colormaps

            rgb = tuple(int(255 * c) for c in colormaps["tab20"](v % 20)[:3])
        entries.append(LegendEntry(v, p.names[v] if v < len(p.names) else f"class {v}", rgb, counts[v] / mapped))
    return entries


def render_quicklook(map_path: Path | str, out_png: Path | str, *, max_side: int = 1024,
                     name: str | None = None) -> Path:
    """Write ``out_png``: the map (longer side at most ``max_side`` px read) with a legend giving each class
    present its colour, name and share of the mapped (observed) pixels. Returns ``out_png``.

    ``name`` titles it instead of the map's file name (a map still under its temporary name)."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, safe in worker threads
    from matplotlib.patches import Patch

    map_path, out_png = Path(map_path), Path(out_png)
    p = read_map_preview(map_path, max_side=max_side)
    entries = legend_entries(p)
    lut = np.zeros((256, 4), dtype=np.uint8)  # pixel value -> RGBA
    for e in entries:
        lut[e.value] = (*e.color, 255)
    rgba = lut[p.classes]
    rgba[~p.valid] = 0  # transparent over the white figure

    handles = [Patch(facecolor=np.array(e.color) / 255, edgecolor="0.4", linewidth=0.5,
                     label=f"{e.name}  {e.share:.1%}") for e in entries]
    if not p.valid.all():
        handles.append(Patch(facecolor="white", edgecolor="0.4", linewidth=0.5,
                             label=f"no observation ({(~p.valid).mean():.1%} of the map)"))
    h, w = p.classes.shape
    side_in = min(max(max(h, w) / DPI, 4.0), max(max_side / DPI, 4.0))  # ~one PNG px per read px, >= 4 in
    map_w, map_h = side_in * w / max(h, w), side_in * h / max(h, w)
    fig_w, fig_h = map_w + LEGEND_IN, max(map_h + 0.5, 0.8 + 0.2 * len(handles))  # room for every legend row
    fig = Figure(figsize=(fig_w, fig_h), dpi=DPI, facecolor="white")
    ax = fig.add_axes((0.1 / fig_w, 0.1 / fig_h, map_w / fig_w, map_h / fig_h))
    ax.imshow(rgba, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    for spine in ax.spines.values():  # a light frame shows the map's extent where it has no observation
        spine.set_edgecolor("0.75")
        spine.set_linewidth(0.6)
    title = (name or map_path.name) + (f" · {p.model}" if p.model else "") + (f" ({p.level})" if p.level else "")
    fig.text(0.1 / fig_w, 1 - 0.1 / fig_h, title, fontsize=9, va="top")
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=((map_w + 0.2) / fig_w, 1 - 0.35 / fig_h),
               fontsize=8, frameon=False, title="share of mapped pixels" if entries else "no mapped pixel",
               title_fontsize=8, alignment="left")
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    return out_png

"""Raster outputs of a prediction, written block by block and finished as COGs.

Each raster is first streamed into a tiled GeoTIFF in a temporary folder beside the output, then
copied to a Cloud-Optimized GeoTIFF (overviews, tiles) under the temporary name its caller renames.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from ..checkpoint import Checkpoint

NODATA = 255  # class map value where a pixel had no valid observation
PERCENT_NODATA = 255  # confidence / probability rasters: uint8 percent, 255 = no valid observation


class StreamedRaster:
    """A uint8 raster written in row bands into ``stream`` and finished as a COG at ``final``."""

    def __init__(self, final: Path, stream: Path, grid: dict, count: int, *, resampling: str) -> None:
        self.final, self.stream, self.resampling = final, stream, resampling
        profile = dict(driver="GTiff", count=count, dtype="uint8", nodata=NODATA, tiled=True, blockxsize=256,
                       blockysize=256, compress="deflate", interleave="band" if count == 1 else "pixel", **grid)
        self.dst = rasterio.open(stream, "w", **profile)

    def write(self, row0: int, col0: int, data: np.ndarray) -> None:
        """``data [bands, rows, cols]`` or ``[rows, cols]`` with its top-left pixel at ``(row0, col0)``."""
        data = data if data.ndim == 3 else data[None]
        self.dst.write(data, window=Window(col0, row0, data.shape[2], data.shape[1]))

    def finish(self) -> Path:
        """Copy the stream to ``final`` as a COG (callers give a temporary path, renamed when all are done)."""
        self.dst.close()
        rasterio.shutil.copy(self.stream, self.final, driver="COG", compress="DEFLATE",
                             overview_resampling=self.resampling, blocksize=512)
        self.stream.unlink(missing_ok=True)
        return self.final

    def close(self) -> None:
        if not self.dst.closed:
            self.dst.close()


def describe_class_map(dst, ckpt: Checkpoint) -> None:
    """Colour table, band description and class names on a class map."""
    table = ckpt.class_table
    cmap = {i: (*rgb, 255) for i, rgb in enumerate(table.colors)}
    cmap[NODATA] = (0, 0, 0, 0)
    dst.write_colormap(1, cmap)
    dst.set_band_description(1, f"crop class ({table.level})")
    dst.update_tags(CLASS_NAMES=json.dumps(list(table.names), ensure_ascii=False),
                    CLASS_CODES=json.dumps([list(c) for c in table.codes]),
                    CLASS_LEVEL=table.level, NODATA_MEANING="no valid observation", MODEL=ckpt.model_name)


def describe_percent_raster(dst, names: list[str], what: str, ckpt: Checkpoint) -> None:
    """Band descriptions and the 0.01 scale of a uint8 percent raster (confidence or probabilities)."""
    for i, name in enumerate(names, start=1):
        dst.set_band_description(i, name)
    dst.scales = [0.01] * len(names)
    dst.update_tags(CONTENT=what, UNITS="percent (scale 0.01 gives a probability)",
                    NODATA_MEANING="no valid observation", MODEL=ckpt.model_name,
                    CLASS_NAMES=json.dumps(list(ckpt.class_table.names), ensure_ascii=False))


def to_percent(p: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] -> uint8 percent, PERCENT_NODATA where not ``valid``."""
    out = np.rint(np.clip(p, 0, 1) * 100).astype(np.uint8)
    out[..., ~valid] = PERCENT_NODATA
    return out

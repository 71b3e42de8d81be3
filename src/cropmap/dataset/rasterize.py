"""Burn parcels onto the imagery grid: a parcel-index raster and a label raster with eroded borders."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import rasterio.features
from affine import Affine
from rasterio.crs import CRS

from ..errors import CropmapError
from ..nomenclature import IGNORE_INDEX


def to_grid_crs(parcels: gpd.GeoDataFrame, crs: CRS, source: str = "parcels") -> gpd.GeoDataFrame:
    """Parcels reprojected onto the imagery CRS (RPG is Lambert-93, Sentinel-2 is UTM)."""
    if parcels.crs is None:
        raise CropmapError(f"{source}: the parcels have no CRS")
    return parcels if parcels.crs == crs else parcels.to_crs(crs)


def rasterize_parcels(parcels: gpd.GeoDataFrame, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """``[H, W]`` int32: 1 + row index of the parcel whose polygon holds the pixel centre, 0 elsewhere.

    ``parcels`` must already be in the grid's CRS. Where parcels overlap, the later row wins.
    """
    if len(parcels) == 0:
        return np.zeros(shape, dtype=np.int32)
    shapes = ((geom, i + 1) for i, geom in enumerate(parcels.geometry.values) if geom is not None and not geom.is_empty)
    return rasterio.features.rasterize(shapes, out_shape=shape, transform=transform, fill=0, dtype="int32")


def border_mask(parcel_index: np.ndarray, width: int = 1) -> np.ndarray:
    """``[H, W]`` True for parcel pixels within ``width`` pixels of another parcel or of background."""
    border = np.zeros(parcel_index.shape, dtype=bool)
    p = np.pad(parcel_index, width, mode="edge")
    h, w = parcel_index.shape
    for dy in range(-width, width + 1):
        for dx in range(-width, width + 1):
            if dy or dx:
                border |= p[width + dy : width + dy + h, width + dx : width + dx + w] != parcel_index
    return border & (parcel_index > 0)


def labels_from_parcels(parcel_index: np.ndarray, parcel_class: np.ndarray, erode: int = 1,
                        background_class: int | None = None) -> np.ndarray:
    """``[H, W]`` int16 class labels; uncovered codes and eroded borders get IGNORE_INDEX.

    ``parcel_class [P]`` is the class of each parcel row (IGNORE_INDEX when the table does not cover it).
    Land outside the parcels gets ``background_class`` (IGNORE_INDEX when None), except within
    ``erode`` pixels of a parcel, where pixels mix both.
    """
    outside = IGNORE_INDEX if background_class is None else background_class
    lut = np.concatenate([[outside], parcel_class]).astype(np.int16)
    labels = lut[parcel_index]
    if erode > 0:
        labels[border_mask(parcel_index, erode)] = IGNORE_INDEX
        if background_class is not None:
            near = border_mask(np.where(parcel_index > 0, 0, 1).astype(np.int32), erode)  # background next to a parcel
            labels[near] = IGNORE_INDEX
    return labels

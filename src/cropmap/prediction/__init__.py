"""Prediction: crop maps (COG) and per-parcel answers, one scene or many tiles."""

from .rasters import NODATA
from .scene import PredictSummary, predict_map, predict_scene
from .tiles import TilesSummary, predict_tiles

__all__ = ["NODATA", "PredictSummary", "TilesSummary", "predict_map", "predict_scene", "predict_tiles"]

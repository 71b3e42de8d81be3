"""cropmap: crop-type maps from Sentinel-2 time series, with the French parcel registry (RPG) as ground truth."""

__version__ = "0.1.0"

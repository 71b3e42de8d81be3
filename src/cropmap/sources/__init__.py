"""Readers for the inputs: Sentinel-2 imagery (per-date GeoTIFF folders, Zarr cubes, CF NetCDF files,
all opened by ``imagery.open_imagery``) and RPG parcel files."""

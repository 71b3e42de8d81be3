"""Readers for the inputs: per-date Sentinel-2 GeoTIFF folders and RPG parcel files."""

"""Dataset build, disk to disk: composite imagery to a time grid, rasterize parcels, cut and split patches."""

"""A synthetic Sentinel-2 collection-1 area served as a STAC API with COG assets over HTTP (see localserver):
one tile of ``side`` x ``side`` px in UTM 31N, random DN with the +1000 offset, SCL at 20 m."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds

UTM = "EPSG:32631"
X0, Y0 = 300000.0, 4900000.0
OFFSET = {"raster:bands": [{"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": -0.1}]}
DATES = ("2024-06-03T10:50:00Z", "2024-06-08T10:50:00Z")


def _cog(path: Path, data: np.ndarray, res: float) -> None:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype, crs=UTM, transform=from_origin(X0, Y0, res, res), nodata=0, tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate") as dst:
        dst.write(data, 1)


def serve_catalog(srv, root: Path, side: int, dates=DATES, seed: int = 0) -> list[dict]:
    """Write the assets under ``root``, put them in ``srv.files`` and add the STAC API routes; returns items."""
    rng = np.random.default_rng(seed)
    items = []
    for d, when in enumerate(dates):
        iid = f"S2A_31TCJ_{when[:10].replace('-', '')}_0_L2A"
        assets = {}
        for key in ("blue", "green", "red", "nir"):
            data = rng.integers(1100, 4000, (side, side), dtype=np.uint16)
            _cog(root / f"{iid}_{key}.tif", data, 10)
            srv.files[f"/data/{iid}/{key}.tif"] = (root / f"{iid}_{key}.tif").read_bytes()
            assets[key] = {"href": f"{srv.url}/data/{iid}/{key}.tif", **OFFSET}
        scl = rng.choice(np.array([4, 5, 8, 9], np.uint8), (side // 2, side // 2))
        _cog(root / f"{iid}_scl.tif", scl, 20)
        srv.files[f"/data/{iid}/scl.tif"] = (root / f"{iid}_scl.tif").read_bytes()
        assets["scl"] = {"href": f"{srv.url}/data/{iid}/scl.tif"}
        w, s, e, n = transform_bounds(UTM, "EPSG:4326", X0, Y0 - side * 10, X0 + side * 10, Y0)
        items.append({"type": "Feature", "stac_version": "1.0.0", "id": iid, "collection": "sentinel-2-c1-l2a",
                      "bbox": [w, s, e, n], "geometry": {"type": "Polygon", "coordinates": [
                          [[w, s], [e, s], [e, n], [w, n], [w, s]]]},
                      "properties": {"datetime": when, "eo:cloud_cover": 1.0, "s2:processing_baseline": "05.10"},
                      "links": [], "assets": assets})

    srv.routes.append(stac_api(srv, items))
    return items


def stac_api(srv, items: list[dict], prefix: str = ""):
    """The route of a STAC API at ``srv.url + prefix`` whose searches answer ``items`` (the client filters)."""
    root = srv.url + prefix

    def api(handler, path, q):
        if path.rstrip("/") == prefix and handler.command == "GET":
            return 200, "application/json", json.dumps({
                "type": "Catalog", "stac_version": "1.0.0", "id": "t", "description": "t",
                "conformsTo": ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search"],
                "links": [{"rel": "search", "href": f"{root}/search", "method": "POST"},
                          {"rel": "root", "href": root}]}).encode()
        if path == f"{prefix}/search":
            return 200, "application/geo+json", json.dumps({"type": "FeatureCollection", "features": items,
                                                            "links": []}).encode()
        return None

    return api


def area(side: int) -> list[float]:
    """A UTM box of ``side`` px inside the tile, from its north-west corner."""
    return [X0 + 5, Y0 - side * 10 + 5, X0 + side * 10 - 5, Y0 - 5]

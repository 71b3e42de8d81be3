"""fetch-imagery's peak memory follows the block, not the area: two fetches over HTTP of areas one 4x the other,
each in its own process, must peak within a few MB of each other (reading a whole date at once, as before,
costs ~43 B/px: 170 MB more for the larger area)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds

from localserver import LocalServer

UTM = "EPSG:32631"
X0, Y0 = 300000.0, 4900000.0
SIDE = 2048  # px of the tile; the small area is a quarter of it
OFFSET = {"raster:bands": [{"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": -0.1}]}

FETCH = """
import json, resource, sys
from cropmap.sources.fetch import fetch_imagery
bbox = json.loads(sys.argv[1])
fetch_imagery(bbox, sys.argv[2], bbox_crs="EPSG:32631", crs="utm", start="2024-06-01", end="2024-06-30",
              stac_url=sys.argv[3], block=512, backoff=0.01)
print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _cog(path: Path, data: np.ndarray, res: float) -> None:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype, crs=UTM, transform=from_origin(X0, Y0, res, res), nodata=0, tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate") as dst:
        dst.write(data, 1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(0)
    items = []
    with LocalServer() as srv:
        for d, when in enumerate(["2024-06-03T10:50:00Z", "2024-06-08T10:50:00Z"]):
            iid = f"S2A_31TCJ_2024060{3 + 5 * d}_0_L2A"
            assets = {}
            for key in ("blue", "green", "red", "nir"):
                data = rng.integers(1100, 4000, (SIDE, SIDE), dtype=np.uint16)
                _cog(root / f"{iid}_{key}.tif", data, 10)
                srv.files[f"/data/{iid}/{key}.tif"] = (root / f"{iid}_{key}.tif").read_bytes()
                assets[key] = {"href": f"{srv.url}/data/{iid}/{key}.tif", **OFFSET}
            _cog(root / f"{iid}_scl.tif", np.full((SIDE // 2, SIDE // 2), 4, np.uint8), 20)
            srv.files[f"/data/{iid}/scl.tif"] = (root / f"{iid}_scl.tif").read_bytes()
            assets["scl"] = {"href": f"{srv.url}/data/{iid}/scl.tif"}
            w, s, e, n = transform_bounds(UTM, "EPSG:4326", X0, Y0 - SIDE * 10, X0 + SIDE * 10, Y0)
            items.append({"type": "Feature", "stac_version": "1.0.0", "id": iid, "collection": "sentinel-2-c1-l2a",
                          "bbox": [w, s, e, n], "geometry": {"type": "Polygon", "coordinates": [
                              [[w, s], [e, s], [e, n], [w, n], [w, s]]]},
                          "properties": {"datetime": when, "eo:cloud_cover": 1.0, "s2:processing_baseline": "05.10"},
                          "links": [], "assets": assets})

        def api(handler, path, q):
            if path == "/" and handler.command == "GET":
                return 200, "application/json", json.dumps({
                    "type": "Catalog", "stac_version": "1.0.0", "id": "t", "description": "t",
                    "conformsTo": ["https://api.stacspec.org/v1.0.0/core",
                                   "https://api.stacspec.org/v1.0.0/item-search"],
                    "links": [{"rel": "search", "href": f"{srv.url}/search", "method": "POST"},
                              {"rel": "root", "href": srv.url}]}).encode()
            if path == "/search":
                return 200, "application/geo+json", json.dumps({"type": "FeatureCollection", "features": items,
                                                                "links": []}).encode()
            return None

        srv.routes.append(api)
        yield srv


def _peak_mb(server, tmp_path: Path, side: int) -> float:
    bbox = [X0 + 5, Y0 - side * 10 + 5, X0 + side * 10 - 5, Y0 - 5]
    out = subprocess.run([sys.executable, "-c", FETCH, json.dumps(bbox), str(tmp_path / f"c{side}.zarr"),
                          server.url], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["maxrss_kb"] / 1024


def test_peak_memory_flat_when_the_area_quadruples(server, tmp_path):
    small = _peak_mb(server, tmp_path, SIDE // 2)
    large = _peak_mb(server, tmp_path, SIDE)
    import xarray as xr

    cube = xr.open_zarr(tmp_path / f"c{SIDE}.zarr", mask_and_scale=False)
    assert cube["dn"].shape == (2, 4, SIDE, SIDE) and bool(cube["written"].values.all())
    assert int(cube["dn"][0, 0, 5, 5]) > 0
    # 3 M more pixels: the old whole-date read would add ~130 MB; blocks of 512 px add nothing but noise
    assert large - small < 40, (small, large)

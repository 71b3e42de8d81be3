"""fetch-imagery's peak memory follows the block, not the area: two fetches over HTTP of areas one 4x the other,
each in its own process, must peak within a few MB of each other (reading a whole date at once, as before,
costs ~43 B/px: 170 MB more for the larger area)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from localserver import LocalServer
from s2catalog import area, serve_catalog

SIDE = 2048  # px of the tile; the small area is a quarter of it

FETCH = """
import json, resource, sys
from cropmap.sources.fetch import fetch_imagery
bbox = json.loads(sys.argv[1])
fetch_imagery(bbox, sys.argv[2], bbox_crs="EPSG:32631", crs="utm", start="2024-06-01", end="2024-06-30",
              stac_url=sys.argv[3], block=512, backoff=0.01)
print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LocalServer() as srv:
        serve_catalog(srv, tmp_path_factory.mktemp("big"), SIDE)
        yield srv


def _peak_mb(server, tmp_path: Path, side: int) -> float:
    bbox = area(side)
    out = subprocess.run([sys.executable, "-c", FETCH, json.dumps(bbox), str(tmp_path / f"c{side}.zarr"),
                          server.url], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["maxrss_kb"] / 1024


@pytest.mark.slow
def test_peak_memory_flat_when_the_area_quadruples(server, tmp_path):
    small = _peak_mb(server, tmp_path, SIDE // 2)
    large = _peak_mb(server, tmp_path, SIDE)
    import xarray as xr

    cube = xr.open_zarr(tmp_path / f"c{SIDE}.zarr", mask_and_scale=False)
    assert cube["dn"].shape == (2, 4, SIDE, SIDE) and bool(cube["written"].values.all())
    assert int(cube["dn"][0, 0, 5, 5]) > 0
    # 3 M more pixels: the old whole-date read would add ~130 MB; blocks of 512 px add nothing but noise
    assert large - small < 40, (small, large)

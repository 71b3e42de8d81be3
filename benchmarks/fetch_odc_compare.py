"""cropmap's block reader against odc-stac on the same local catalogue (benchmarks/fetch_large.py's two tiles
in UTM 31N and 32N, 3 dates, COGs over HTTP Range): wall time and peak RSS of each, in its own process.

    pip install odc-stac                      # not a cropmap dependency; only this comparison needs it
    python benchmarks/fetch_odc_compare.py    # 2896 x 2896 px area (8.4 Mpx)

odc-stac loads with ``groupby="solar_day"``, ``chunks`` of 2048 px, nearest resampling, EPSG:2154 at 10 m;
the +1000 offset is removed in integer arithmetic as cropmap does; the cube is written to Zarr chunk by
chunk with Dask's threads (2). Both use 2 threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

ODC = """
import json, resource, sys
import dask, numpy as np, xarray as xr
from pystac_client import Client
import odc.stac
url, out, bbox = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
items = list(Client.open(url).search(collections=["sentinel-2-c1-l2a"], bbox=bbox,
                                     datetime="2024-05-01/2024-07-31").items())
ds = odc.stac.load(items, bands=["blue", "green", "red", "nir", "scl"], crs="EPSG:2154", resolution=10, bbox=bbox,
                   groupby="solar_day", chunks={"x": 2048, "y": 2048}, resampling="nearest")
def harmonize(a):
    a = a.astype("int32")
    return xr.where(a > 0, (a - 1000).clip(1, 65535), 0).astype("uint16")
dn = xr.concat([harmonize(ds[b]) for b in ("blue", "green", "red", "nir")], dim="band").transpose("time", "band", "y", "x")
xr.Dataset({"dn": dn, "scl": ds["scl"].astype("uint8")}).drop_vars("spatial_ref", errors="ignore").to_zarr(
    out, mode="w", zarr_format=2, consolidated=True)
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
CROPMAP = ("import resource, sys; from cropmap.cli import main; rc = main(sys.argv[1:]); "
           "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")


def run(cmd: list[str]) -> tuple[float, float]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "CROPMAP_PROGRESS": "0",
                                                                 "DASK_NUM_WORKERS": "2"})
    wall = time.perf_counter() - t0
    if r.returncode:
        sys.exit(r.stderr[-3000:])
    return wall, int(r.stdout.strip().splitlines()[-1].split()[1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=2896)
    ap.add_argument("--workdir", type=Path, default=ROOT / "bench-work" / "fetch_large")
    args = ap.parse_args()
    import shutil

    from fetch_large import lonlat_box, serve
    from localserver import LocalServer

    bbox = list(lonlat_box(args.side))
    with LocalServer() as srv:
        serve(srv, args.workdir, args.side)
        out = args.workdir / "cmp"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        rows = {}
        for name, cmd in (
            ("cropmap", [sys.executable, "-c", CROPMAP, "fetch-imagery", "--bbox", *map(str, bbox), "--start",
                         "2024-05-01", "--end", "2024-07-31", "--out", str(out / "cropmap.zarr"), "--stac-url",
                         srv.url, "--workers", "2"]),
            ("odc-stac", [sys.executable, "-c", ODC, srv.url, str(out / "odc.zarr"), json.dumps(bbox)]),
        ):
            sent = srv.bytes_sent
            wall, rss = run(cmd)
            rows[name] = {"wall_s": round(wall, 1), "peak_rss_mb": round(rss), "served_mb": round((srv.bytes_sent - sent) / 1e6)}
            print(f"{name:9s} {wall:6.1f} s  peak RSS {rss:5.0f} MB  served {rows[name]['served_mb']} MB", flush=True)
    (ROOT / "benchmarks" / "results" / "fetch_odc_compare.json").write_text(
        json.dumps({"side": args.side, **rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

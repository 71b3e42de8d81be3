"""fetch-imagery at scale, offline: peak memory and throughput as the area doubles twice.

    python benchmarks/fetch_large.py                  # areas of 1448², 2048², 2896² px (2.1 to 8.4 Mpx), 3 dates
    python benchmarks/fetch_large.py --side 2048      # 4.2 to 16.8 Mpx

A synthetic Sentinel-2 collection-1 area is served on 127.0.0.1 as a STAC API with COG assets over HTTP
Range (files read from disk, range by range): two overlapping tiles in two UTM zones (31N and 32N, either
side of 6° E), several dates, a 20 m SCL with clouds, DN with the +1000 offset. Each area is fetched by
the real command line (``cropmap fetch-imagery --stac-url …``, Lambert-93 grid, default 2048 px blocks,
--workers 2) in its own process, so its peak RSS is its own. Prints px, wall time, peak RSS, MB/s served
and written, and writes benchmarks/results/fetch_large.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the local HTTP server the tests use

CENTRE = (6.0, 45.5)  # lon, lat: the 31N / 32N boundary
DATES = ("2024-05-04T10:30:00Z", "2024-06-13T10:30:00Z", "2024-07-23T10:30:00Z")
# the command line in a child that reports its own peak RSS last
CHILD = ("import resource, sys; from cropmap.cli import main; rc = main(sys.argv[1:]); "
         "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
OFFSET = {"raster:bands": [{"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": -0.1}]}


def lonlat_box(side_px: int) -> tuple[float, float, float, float]:
    """A square of ``side_px`` 10 m pixels around CENTRE, as lon/lat."""
    lon, lat = CENTRE
    half = side_px * 10 / 2
    dlat = half / 111_320
    dlon = half / (111_320 * math.cos(math.radians(lat)))
    return (lon - dlon, lat - dlat, lon + dlon, lat + dlat)


def write_tile(folder: Path, crs: str, lonlat: tuple, seed: int) -> tuple[dict, list[float]]:
    """Four 10 m bands and a 20 m SCL covering ``lonlat`` in ``crs``, as tiled, compressed GeoTIFFs."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.warp import transform_bounds

    x0, y0, x1, y1 = transform_bounds("EPSG:4326", crs, *lonlat, densify_pts=21)
    left, top = math.floor(x0 / 20) * 20, math.ceil(y1 / 20) * 20
    w, h = math.ceil((x1 - left) / 20) * 2, math.ceil((top - y0) / 20) * 2
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    fields = rng.integers(0, 600, (h // 64 + 1, w // 64 + 1)).astype(np.uint16)
    paths = {}
    profile = dict(driver="GTiff", count=1, crs=crs, nodata=0, tiled=True, blockxsize=512, blockysize=512,
                   compress="deflate", predictor=2)
    for b, key in enumerate(("blue", "green", "red", "nir")):
        p = folder / f"{key}.tif"
        if not p.exists():
            with rasterio.open(p, "w", width=w, height=h, dtype="uint16", transform=from_origin(left, top, 10, 10),
                               **profile) as dst:
                for r in range(0, h, 512):
                    rows = np.arange(r, min(r + 512, h))
                    block = fields[rows[:, None] // 64, np.arange(w)[None, :] // 64]
                    noise = rng.integers(0, 200, block.shape, dtype=np.uint16)  # texture: real COGs compress ~2x
                    dst.write((1300 + 200 * b + block + noise)[None],
                              window=rasterio.windows.Window(0, r, w, len(rows)))
        paths[key] = p
    p = folder / "scl.tif"
    if not p.exists():
        sh, sw = h // 2, w // 2
        scl = np.full((sh, sw), 4, np.uint8)
        for _ in range(20):  # cloud blobs
            cy, cx, rad = rng.integers(0, sh), rng.integers(0, sw), rng.integers(20, 120)
            yy, xx = np.ogrid[:sh, :sw]
            scl[(yy - cy) ** 2 + (xx - cx) ** 2 < rad**2] = 9
        with rasterio.open(p, "w", width=sw, height=sh, dtype="uint8", transform=from_origin(left, top, 20, 20),
                           **profile) as dst:
            dst.write(scl[None])
    paths["scl"] = p
    lon0, lat0, lon1, lat1 = transform_bounds(crs, "EPSG:4326", left, top - h * 10, left + w * 10, top)
    return paths, [lon0, lat0, lon1, lat1]


def serve(srv, work: Path, largest: int) -> int:
    """Two tiles per date overlapping on a tenth of the area, west in 31N, east in 32N; returns file bytes."""
    w, s, e, n = lonlat_box(largest)
    pad, mid, span = 0.02, (w + e) / 2, (e - w)
    tiles = {"31TGL": ("EPSG:32631", (w - pad, s - pad, mid + span / 10, n + pad)),
             "32TLR": ("EPSG:32632", (mid - span / 10, s - pad, e + pad, n + pad))}
    items, total = [], 0
    for d, when in enumerate(DATES):
        for k, (tile, (crs, box)) in enumerate(tiles.items()):
            iid = f"S2B_{tile}_{when[:10].replace('-', '')}_0_L2A"
            paths, bbox = write_tile(work / f"{largest}" / tile / when[:10], crs, box, seed=10 * d + k)
            assets = {}
            for key, p in paths.items():
                srv.files[f"/data/{iid}/{key}.tif"] = p
                total += p.stat().st_size
                assets[key] = {"href": f"{srv.url}/data/{iid}/{key}.tif", **(OFFSET if key != "scl" else {})}
            x0, y0, x1, y1 = bbox
            items.append({"type": "Feature", "stac_version": "1.0.0", "id": iid, "collection": "sentinel-2-c1-l2a",
                          "bbox": bbox, "geometry": {"type": "Polygon", "coordinates": [
                              [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
                          "properties": {"datetime": when, "eo:cloud_cover": 5.0 + k,
                                         "s2:processing_baseline": "05.10"}, "links": [], "assets": assets})

    from s2catalog import stac_api

    srv.routes.append(stac_api(srv, items))
    return total


def fetch(url: str, side: int, out: Path, workers: int, block: int) -> dict:
    """One fetch through the command line in a child process: wall time and the child's peak RSS."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    bbox = [f"{v:.6f}" for v in lonlat_box(side)]
    cmd = [sys.executable, "-c", CHILD, "fetch-imagery", "--bbox", *bbox, "--start", "2024-05-01",
           "--end", "2024-07-31", "--out", str(out), "--stac-url", url, "--workers", str(workers),
           "--block", str(block)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "CROPMAP_PROGRESS": "0"})
    wall = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"fetch failed: {r.stderr[-2000:]}")
    *lines, last = r.stdout.strip().splitlines()
    peak = int(last.removeprefix("MAXRSS_KB "))
    import xarray as xr

    ds = xr.open_zarr(out, mask_and_scale=False)
    t, _, h, w = ds["dn"].shape
    return {"px": int(h * w), "height": int(h), "width": int(w), "dates": int(t), "wall_s": round(wall, 1),
            "peak_rss_mb": round(peak / 1024, 0), "out": " ".join(lines)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=1448, help="side of the smallest area in px (default 1448)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--block", type=int, default=2048)
    ap.add_argument("--workdir", type=Path, default=ROOT / "bench-work" / "fetch_large")
    args = ap.parse_args()
    from localserver import LocalServer

    sides = [args.side, round(args.side * 2**0.5 / 16) * 16, args.side * 2]
    rows = []
    with LocalServer() as srv:
        served = serve(srv, args.workdir, sides[-1])
        print(f"serving {len(DATES)} dates x 2 tiles (31N + 32N), {served / 1e6:.0f} MB of COGs, on {srv.url}")
        for side in sides:
            sent0 = srv.bytes_sent
            row = fetch(srv.url, side, args.workdir / f"cube_{side}.zarr", args.workers, args.block)
            row["served_mb"] = round((srv.bytes_sent - sent0) / 1e6, 1)
            row["served_mb_s"] = round(row["served_mb"] / row["wall_s"], 1)
            row["written_mb_s"] = round(row["px"] * row["dates"] * 9 / 1e6 / row["wall_s"], 1)  # 4 x uint16 + SCL
            rows.append(row)
            print(f"{row['width']} x {row['height']} px ({row['px'] / 1e6:.1f} Mpx) x {row['dates']} dates: "
                  f"{row['wall_s']} s, peak RSS {row['peak_rss_mb']:.0f} MB, served {row['served_mb_s']} MB/s, "
                  f"cube written {row['written_mb_s']} MB/s")
    growth = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"] - 1
    print(f"area x{rows[-1]['px'] / rows[0]['px']:.1f}: peak RSS {growth:+.0%}")
    out = ROOT / "benchmarks" / "results" / "fetch_large.json"
    out.write_text(json.dumps({"workers": args.workers, "block": args.block, "runs": rows}, indent=2) + "\n")
    print(f"results in {out}")


if __name__ == "__main__":
    main()

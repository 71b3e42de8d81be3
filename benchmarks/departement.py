"""A rehearsal of the first real job, offline: fetch-parcels (WFS) -> fetch-imagery (STAC + COGs over HTTP)
-> build -> train -> predict -> audit through the command line on the largest area this machine does in about
ten minutes, with wall time and peak RSS per stage, extrapolated to a département and to France.

    python benchmarks/departement.py                 # 1536 x 1536 px (15 km x 15 km), 10-day revisit
    python benchmarks/departement.py --size 1024     # quicker

The area is the demo generator's scene (real formats, crop curves calibrated on real series) at the
given size; a local server on 127.0.0.1 plays the Géoplateforme WFS (RPG.2024:parcelles_graphiques,
lowercase properties, 5000 per page) and a STAC API whose items hold one COG per band with the
collection-1 +1000 offset. Each stage runs in its own process; its peak RSS is its own. Writes
benchmarks/results/departement.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the local HTTP server the tests use

DEPARTEMENT_PX = 1.5e8  # Finistère, ~6,700 km² of 10 m pixels, as in the issue
FRANCE_PX = 5.5e9  # metropolitan France, ~550,000 km²
CHILD = ("import resource, sys; from cropmap.cli import main; rc = main(sys.argv[1:]); "
         "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")


def cog_assets(scene_imagery: Path, dest: Path):
    """Each per-date GeoTIFF as five single-band COGs (blue, green, red, nir with +1000, scl at 20 m); returns
    ``([(date, {asset: path})], bounds, crs)``."""
    import rasterio
    from rasterio.enums import Resampling

    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for f in sorted(scene_imagery.glob("S2_*.tif")):
        day = f.stem.removeprefix("S2_")
        paths = {}
        with rasterio.open(f) as src:
            prof = {**src.profile, "count": 1, "tiled": True, "blockxsize": 512, "blockysize": 512,
                    "compress": "deflate", "predictor": 2, "nodata": 0}
            for b, key in enumerate(("blue", "green", "red", "nir"), start=1):
                p = dest / f"{day}_{key}.tif"
                dn = src.read(b)
                with rasterio.open(p, "w", **prof) as dst:
                    dst.write(np.where(dn > 0, np.minimum(dn.astype(np.int32) + 1000, 65535), 0).astype(np.uint16), 1)
                paths[key] = p
            scl = src.read(5, out_shape=(src.height // 2, src.width // 2), resampling=Resampling.nearest)
            t = src.transform * src.transform.scale(2, 2)
            p = dest / f"{day}_scl.tif"
            with rasterio.open(p, "w", **{**prof, "dtype": "uint8", "width": scl.shape[1], "height": scl.shape[0],
                                          "transform": t}) as dst:
                dst.write(scl.astype(np.uint8), 1)
            paths["scl"] = p
            bounds, crs = src.bounds, src.crs
        out.append((day, paths))
    return out, bounds, crs


def serve(srv, scene, work: Path):
    import geopandas as gpd
    from rasterio.warp import transform_bounds
    from shapely.geometry import box

    assets, bounds, crs = cog_assets(scene.imagery, work / "cogs")
    lonlat = transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)
    items = []
    for day, paths in assets:
        iid = f"S2A_30TWT_{day.replace('-', '')}_0_L2A"
        a = {}
        for key, p in paths.items():
            srv.files[f"/data/{iid}/{key}.tif"] = p
            a[key] = {"href": f"{srv.url}/data/{iid}/{key}.tif"}
            if key != "scl":
                a[key]["raster:bands"] = [{"nodata": 0, "scale": 0.0001, "offset": -0.1}]
        w, s, e, n = lonlat
        items.append({"type": "Feature", "stac_version": "1.0.0", "id": iid, "collection": "sentinel-2-c1-l2a",
                      "bbox": list(lonlat), "geometry": {"type": "Polygon", "coordinates": [
                          [[w, s], [e, s], [e, n], [w, n], [w, s]]]},
                      "properties": {"datetime": f"{day}T11:00:00Z", "eo:cloud_cover": 10.0,
                                     "s2:processing_baseline": "05.10"}, "links": [], "assets": a})
    parcels = gpd.read_file(scene.parcels)
    parcels.columns = [c.lower() if c != "geometry" else c for c in parcels.columns]
    parcels = parcels.set_geometry("geometry").to_crs("EPSG:2154")

    def routes(handler, path, q):
        if path == "/wfs":
            *xy, _ = q["BBOX"].split(",")
            sel = parcels[parcels.intersects(box(*map(float, xy)))]
            start, count = int(q.get("STARTINDEX", 0)), min(int(q.get("COUNT", 5000)), 5000)
            page = sel.iloc[start:start + count]
            body = json.loads(page.to_json(drop_id=True)) if len(page) else {"type": "FeatureCollection",
                                                                              "features": []}
            body.update(numberMatched=len(sel), numberReturned=len(page))
            return 200, "application/json", json.dumps(body).encode()
        return None

    from s2catalog import stac_api

    srv.routes += [stac_api(srv, items, "/stac"), routes]
    return bounds, crs, scene.dates


def stage(name: str, args: list[str], rows: list[dict], px: int) -> None:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True,
                       env={**os.environ, "CROPMAP_PROGRESS": "0"})
    wall = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"{name} failed:\n{r.stderr[-3000:]}")
    *lines, last = r.stdout.strip().splitlines()
    rss = int(last.removeprefix("MAXRSS_KB ")) / 1024
    rows.append({"stage": name, "wall_s": round(wall, 1), "peak_rss_mb": round(rss), "px_per_s": round(px / wall)})
    print(f"{name:14s} {wall:7.1f} s  peak RSS {rss:6.0f} MB  | {(lines or [''])[-1][:110]}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1536, help="scene side in px (default 1536)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=ROOT / "bench-work" / "departement")
    args = ap.parse_args()
    from cropmap.demo.scene import DemoScene, generate_scene
    from localserver import LocalServer

    work = args.workdir / str(args.size)
    shutil.rmtree(work / "out", ignore_errors=True)
    out = work / "out"
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    if (work / "scene" / "parcels.gpkg").exists():  # made by an earlier run
        imgs = sorted((work / "scene" / "imagery").glob("S2_*.tif"))
        scene = DemoScene(work / "scene", work / "scene" / "parcels.gpkg", work / "scene" / "imagery",
                          tuple(dt.date.fromisoformat(p.stem[3:]) for p in imgs))
    else:
        scene = generate_scene(work / "scene", seed=0, size=args.size, year=2024, revisit_days=10)
    print(f"scene {args.size} x {args.size} px, {len(scene.dates)} dates ({time.perf_counter() - t0:.0f} s to make)")
    px = args.size * args.size
    rows: list[dict] = []
    with LocalServer() as srv:
        bounds, crs, dates = serve(srv, scene, work)
        from rasterio.warp import transform_bounds

        l93 = transform_bounds(crs, "EPSG:2154", *bounds, densify_pts=21)
        stage("fetch-parcels", ["fetch-parcels", "--year", "2024", "--bbox", *map(str, l93), "--source", "wfs",
                                "--wfs-url", f"{srv.url}/wfs", "--cache", str(out / "cache"), "--allow-http",
                                "--out", str(out / "parcels.gpkg")], rows, px)
        stage("fetch-imagery", ["fetch-imagery", "--bbox", *map(str, bounds), "--bbox-crs", crs.to_string(),
                                "--crs", "utm", "--start", "2024-01-01", "--end", "2024-12-31", "--stac-url",
                                f"{srv.url}/stac", "--workers", "2", "--out", str(out / "cube.zarr")], rows, px)
    stage("build", ["build", "--imagery", str(out / "cube.zarr"), "--parcels", str(out / "parcels.gpkg"),
                    "--out", str(out / "dataset.zarr"), "--workers", "2"], rows, px)
    stage("train", ["train", "--data", str(out / "dataset.zarr"), "--out", str(out / "run"), "--epochs",
                    str(args.epochs)], rows, px)
    stage("predict", ["predict", "--run", str(out / "run"), "--imagery", str(out / "cube.zarr"), "--out",
                      str(out / "map.tif"), "--parcels", str(out / "parcels.gpkg"), "--parcels-out",
                      str(out / "parcels_pred.gpkg")], rows, px)
    stage("audit", ["audit", "--parcels", str(out / "parcels_pred.gpkg"), "--out", str(out / "audit.csv")], rows, px)
    total = sum(r["wall_s"] for r in rows)
    print(f"{'total':14s} {total:7.1f} s  peak RSS {max(r['peak_rss_mb'] for r in rows):6.0f} MB")
    # pixel-bound stages scale with the area; training with its schedule (epochs here), not the area
    scaled = {r["stage"]: r["wall_s"] * DEPARTEMENT_PX / px for r in rows if r["stage"] != "train"}
    print(f"\nextrapolated to one département ({DEPARTEMENT_PX:.1e} px) on this 2-core machine, linear in pixels:")
    for k, v in scaled.items():
        print(f"  {k:14s} {v / 3600:6.1f} h")
    dep_h = sum(scaled.values()) / 3600
    print(f"  (train: set by its schedule, {rows[3]['wall_s']:.0f} s here for {args.epochs} epochs)")
    for n in (8, 32, 128):  # Dask workers of 2 cores each, same per-core speed, fetch bound by the network
        print(f"metropolitan France ({FRANCE_PX:.1e} px) on {n} two-core Dask workers: "
              f"{dep_h * FRANCE_PX / DEPARTEMENT_PX / n:6.1f} h")
    res = ROOT / "benchmarks" / "results" / "departement.json"
    res.write_text(json.dumps({"size": args.size, "px": px, "dates": len(dates), "epochs": args.epochs,
                               "stages": rows, "departement_hours": round(dep_h, 1)}, indent=2) + "\n")
    print(f"results in {res}")


if __name__ == "__main__":
    main()

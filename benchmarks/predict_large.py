"""Streaming prediction on a large synthetic scene: pixels/s and peak memory, and how memory grows
when the area doubles.

    python benchmarks/predict_large.py                 # 4096 x 4096 px, T = 36, then 4096 x 8192 and 8192 x 4096
    python benchmarks/predict_large.py --size 2048     # quicker
    python benchmarks/predict_large.py --size 2048 --imagery zarr   # from a Zarr cube, as fetch-imagery writes

The scene is written once per size under --workdir (36 per-date GeoTIFFs, B2 B3 B4 B8 SCL, fields of
random crop curves with cloud patches); the model is the default seed configuration with random weights
(speed and memory do not depend on the weights). Each prediction runs in its own process, and its
peak RSS is read before the model-only figure holds its windows' inputs. "model px/s" is the model
alone on six windows of the size the prediction used, composited beforehand, and "share" end-to-end
px/s (scene pixels) over it: the windows' overlaps count against it. "in model" is the part of the
prediction's time spent in the model's calls (every window, overlaps included): the rest is reading,
compositing, blending and writing. "window" is window/overlap in px, planned per model and scene unless
--window/--overlap are given; the doubled areas keep the base scene's windows. ``--imagery zarr``
predicts from the scene copied into the Zarr cube that ``fetch-imagery`` writes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def write_scene(folder: Path, height: int, width: int, dates: int, seed: int = 0) -> Path:
    """``dates`` GeoTIFFs every 10 days of 2023: 64 px fields, each with its own seasonal curve."""
    import rasterio
    from rasterio.transform import from_origin

    if (folder / "done").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    fh, fw = -(-height // 64), -(-width // 64)
    base = rng.uniform(300, 1500, (4, fh, fw))
    amp = rng.uniform(0, 3000, (fh, fw))
    peak = rng.uniform(60, 260, (fh, fw))
    profile = dict(driver="GTiff", width=width, height=height, count=5, dtype="uint16", nodata=0,
                   crs="EPSG:32631", transform=from_origin(500000, 5000000, 10, 10), tiled=True,
                   blockxsize=512, blockysize=512, compress="deflate", interleave="pixel")
    for d in range(dates):
        day = dt.date(2023, 1, 5) + dt.timedelta(days=10 * d)
        doy = day.timetuple().tm_yday
        green = amp * np.exp(-((doy - peak) / 45) ** 2)
        fields = base.copy()
        fields[3] += green  # NIR up with the crop, red down
        fields[2] = np.maximum(fields[2] - green / 6, 100)
        with rasterio.open(folder / f"S2_{day.isoformat()}.tif", "w", **profile) as dst:
            dst.descriptions = ("B2", "B3", "B4", "B8", "SCL")
            for r in range(0, height, 512):
                h = min(512, height - r)
                block = np.repeat(np.repeat(fields[:, r // 64 : -(-(r + h) // 64)], 64, axis=1), 64, axis=2)
                block = block[:, : h, :width]
                scl = np.full((h, width), 4, dtype=np.uint16)
                cy, cx = rng.integers(0, height), rng.integers(0, width)  # one cloud per date
                yy, xx = np.ogrid[r : r + h, 0:width]
                scl[(yy - cy) ** 2 + (xx - cx) ** 2 < (height // 8) ** 2] = 9
                data = np.concatenate([block.astype(np.uint16), scl[None]])
                dst.write(data, window=rasterio.windows.Window(0, r, width, h))
    (folder / "done").touch()
    return folder


def write_cube_copy(folder: Path) -> Path:
    """The scene of ``folder`` as the Zarr cube ``fetch-imagery`` writes (512 px chunks, one per date and band set)."""
    from cropmap.sources.imagery import open_imagery
    from cropmap.sources.zarr_cube import write_cube

    cube = folder.with_suffix(".zarr")
    marker = folder.with_suffix(".zarr.done")
    if marker.exists():
        return cube
    stack = open_imagery(folder)

    def read(i, window):
        dn, scl = stack.read(i, window)
        return dn, scl.astype(np.uint8)

    write_cube(cube, stack.dates, read, crs=stack.crs, transform=stack.transform, width=stack.width,
               height=stack.height, workers=2)
    marker.touch()
    return cube


def write_checkpoint(run: Path, num_classes: int = 13) -> Path:
    import torch

    from cropmap.checkpoint import Checkpoint, save_checkpoint
    from cropmap.config import ModelConfig
    from cropmap.dataset.timegrid import TimeGrid
    from cropmap.models import build_model
    from cropmap.nomenclature import RPG_CODES, make_class_table

    cfg = ModelConfig()
    table, _ = make_class_table(list(RPG_CODES)[: num_classes * 2], "group", background=True)
    torch.manual_seed(0)
    model = build_model(cfg.name, in_channels=4, num_classes=table.num_classes, **cfg.kwargs())
    grid = TimeGrid(dt.date(2023, 1, 1), 10, 36)
    save_checkpoint(run / "model.pt", Checkpoint(cfg.name, cfg.kwargs(), model.state_dict(), table, grid,
                                                 ("B2", "B3", "B4", "B8"), np.full(4, 0.15), np.full(4, 0.1), {}))
    return run


def child(run: str, imagery: str, out: str, window: int | None, overlap: int | None, device: str) -> None:
    from cropmap.prediction import predict_map
    from cropmap.prediction.scene import ScenePredictor
    from cropmap.runtime import tune_allocator

    tune_allocator()
    in_model = [0.0]  # seconds the prediction spent in the model's calls (every window, overlaps included)
    probabilities = ScenePredictor.probabilities

    def timed(self, x):
        t0 = time.perf_counter()
        try:
            return probabilities(self, x)
        finally:
            in_model[0] += time.perf_counter() - t0

    ScenePredictor.probabilities = timed
    s = predict_map(run, imagery, out, window=window, overlap=overlap, quicklook=False, overwrite=True, device=device)
    ScenePredictor.probabilities = probabilities
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # the prediction's, before model_only's inputs
    window, overlap, _ = s.windows_px  # as planned when not given: the model-only figure uses the same windows
    print(json.dumps({"pixels": s.pixels, "seconds": s.seconds, "window": window, "overlap": overlap,
                      "peak_rss_gb": rss, "in_model_s": in_model[0], **model_only(run, imagery, window, device)}))


def model_only(run: str, imagery: str, window: int, device: str = "auto", n: int = 6) -> dict:
    """The model alone on ``n`` of the scene's windows (their inputs composited beforehand): px/s."""
    from rasterio.windows import Window

    from cropmap.checkpoint import load_checkpoint
    from cropmap.prediction.scene import ScenePredictor
    from cropmap.sources.imagery import open_imagery

    from cropmap.prediction.device import inference_device

    pred = ScenePredictor(load_checkpoint(run), open_imagery(imagery), device=inference_device(device))
    size = min(window, pred.stack.width, pred.stack.height)
    wins = [Window(i * size % max(pred.stack.width - size, 1), 0, size, size) for i in range(n + 1)]
    inputs = [pred.inputs(w)[0] for w in wins]
    pred.probabilities(inputs[0])  # warm-up
    t0 = time.perf_counter()
    for x in inputs[1:]:
        pred.probabilities(x)  # ends with the probabilities on the host: a GPU is synchronised
    secs = time.perf_counter() - t0
    return {"model_px_per_s": n * size * size / secs}


def measure(run: Path, imagery: Path, out: Path, window: int | None, overlap: int | None, device: str) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", str(run), str(imagery), str(out), str(window),
                           str(overlap), device],
                          capture_output=True, text=True, env={**os.environ, "CROPMAP_PROGRESS": "0"})
    if proc.returncode:
        sys.exit(proc.stderr)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    r["wall"] = time.perf_counter() - start
    return r


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5], *(None if v == "None" else int(v) for v in sys.argv[5:7]), sys.argv[7])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--dates", type=int, default=36)
    ap.add_argument("--window", type=int, default=None, help="window side (default: planned per model and scene)")
    ap.add_argument("--overlap", type=int, default=None, help="window overlap (default: planned)")
    ap.add_argument("--device", default="auto", help="where the model runs (predict --device)")
    ap.add_argument("--imagery", choices=("geotiff", "zarr"), default="geotiff",
                    help="the scene as per-date GeoTIFFs, or as the Zarr cube fetch-imagery writes")
    ap.add_argument("--workdir", type=Path, default=Path("bench-work"))
    ap.add_argument("--no-double", action="store_true", help="only the base size")
    a = ap.parse_args()
    n = a.size
    shapes = [(n, n)] + ([] if a.no_double else [(2 * n, n), (n, 2 * n)])  # (height, width)
    run = write_checkpoint(a.workdir / "run")
    print(f"{a.imagery} imagery")
    print(f"{'scene (h x w)':>14} {'T':>3} {'Mpx':>7} {'seconds':>8} {'px/s':>8} {'model px/s':>10} {'share':>6} "
          f"{'in model':>8} {'peak RSS GB':>11} {'window':>11}")
    base_rss, base_geometry = None, None
    for h, w in shapes:
        t0 = time.perf_counter()
        img = write_scene(a.workdir / f"scene_{h}x{w}", h, w, a.dates)
        if a.imagery == "zarr":
            img = write_cube_copy(img)
        gen = time.perf_counter() - t0
        # the doubled areas keep the base scene's windows: their memory is then compared at one geometry (the
        # planner would pick slightly different windows for them, and memory follows the window's area)
        window, overlap = (a.window, a.overlap) if base_rss is None else base_geometry
        r = measure(run, img, a.workdir / f"map_{h}x{w}.tif", window, overlap, a.device)
        base_geometry = base_geometry or (r["window"], r["overlap"])
        rss = r["peak_rss_gb"]
        base_rss = base_rss or rss
        growth = f" ({100 * (rss / base_rss - 1):+.1f} %)" if (h, w) != shapes[0] else ""
        e2e = h * w / r["seconds"]
        geometry = f"{r['window']}/{r['overlap']}"
        print(f"{f'{h} x {w}':>14} {a.dates:>3} {h * w / 1e6:>7.1f} {r['seconds']:>8.0f} "
              f"{e2e:>8,.0f} {r['model_px_per_s']:>10,.0f} {e2e / r['model_px_per_s']:>6.0%} "
              f"{r['in_model_s'] / r['seconds']:>8.0%} "
              f"{rss:>11.2f} {geometry:>11}{growth}   (scene written in {gen:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

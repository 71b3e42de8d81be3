"""The whole CLI pipeline on a real Sentinel-2 patch: be-lpis-2018-patch -> build -> train -> evaluate.

    python benchmarks/real_patch.py            # README figures: 5 seeds x (3 networks + rf)
    python benchmarks/real_patch.py --quick    # smoke run: 1 seed, tempcnn-pixel for 2 steps, rf of 20 trees

The patch (../shared/data/realdata/be-lpis-2018-patch; never copied into the project, see its
PROVENANCE.txt) is 64 x 64 px of Flanders at 10 m, 118 Sentinel-2 L2A dates (Aug 2017 - Nov 2018) with
crop labels from the 2018 Belgian LPIS. It is turned into cropmap's own inputs in a work folder:

* one GeoTIFF per date (``S2_YYYY-MM-DD.tif``, uint16 DN, bands described B2 B3 B4 B8 SCL; the 20 m
  SCL upsampled 2x by nearest neighbour), so cloudy dates are masked by the build as usual;
* an RPG-schema GeoPackage (``ID_PARCEL``, ``CODE_CULTU`` = WorldCereal crop code, EPSG:32631) made by
  vectorising the label raster; a ``--classes`` CSV from the WorldCereal legend names the codes.

The label raster has no parcel ids, so neighbouring fields of one crop merge into one region (one maize
region covers a third of the patch). With ``--parcels blocks`` (default) each region is cut along the
build's patch grid, so every patch holds its own pieces and the spatial split can put each crop in
more than one split; the 1 px border erosion then also leaves a guard band at every cut.
``--parcels regions`` keeps whole regions (each lands in one split, often leaving a split without a class).

Then, for each seed s (5 by default): ``cropmap build --seed s`` (16 px patches: 16 blocks, 50/20/30
train/val/test, no background class: seed s draws the spatial split), ``cropmap train --seed s`` for
tempcnn-pixel, tempcnn-unet and utae (30 epochs, batch 4, cropmap's defaults otherwise) and for the
product's random forest (``--model rf --trees 500 --max-pixels 0``: every train pixel), and
``cropmap evaluate`` of each on that split's test pixels. A seed is thus one spatial split and one
model seed; each network is compared with the forest run by run (paired: same split, same seed).
Results go to benchmarks/results/real_patch.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from realdata_common import REAL, RESULTS, cpu_seconds, paired, paired_line, summarise  # noqa: E402  (beside this script)

PATCH = REAL / "be-lpis-2018-patch"
PATCH_SIZE = 16  # 64 px / 16 = 16 spatial blocks, 13 of them labelled
# 50/20/30 rather than the build's default 60/20/20: the test split is 2 blocks at 20 % and 4-5 at 30 %
SPLIT_FRACTIONS = (0.5, 0.2, 0.3)
DEFAULT_MODELS = ("tempcnn-pixel", "tempcnn-unet", "utae")  # networks; --models for others
FOREST = "rf"  # the product's random-forest baseline, trained and evaluated through the same CLI


def cropmap_cli() -> list[str]:
    """The ``cropmap`` entry point next to this interpreter, else ``python -m cropmap``."""
    exe = Path(sys.executable).with_name("cropmap")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "cropmap"]


def write_inputs(work: Path, parcels_mode: str, block: int = PATCH_SIZE) -> dict:
    """The patch -> ``work/imagery/S2_*.tif``, ``work/parcels.gpkg``, ``work/classes.csv``."""
    import geopandas as gpd
    import rasterio
    from rasterio.features import shapes
    from rasterio.transform import from_bounds
    from shapely.geometry import shape

    (work / "build.yaml").write_text(f"split_fractions: {list(SPLIT_FRACTIONS)}\n")
    d = np.load(next(PATCH.glob("patch_*.npz")))
    x = d["X_TCHW"]  # [T, 4, 64, 64] uint16 DN, B02 B03 B04 B08, 0 = fill
    scl = d["SCL_20m"].repeat(2, axis=1).repeat(2, axis=2)  # [T, 64, 64]: 20 m -> 10 m, nearest
    ct = d["CT"].astype(np.int32)  # [64, 64] WorldCereal crop code, 0 = unlabelled
    h, w = ct.shape
    crs = f"EPSG:{int(d['epsg'])}"
    transform = from_bounds(*d["bounds"].tolist(), w, h)
    assert list(d["bands"]) == ["B02", "B03", "B04", "B08"]

    img = work / "imagery"
    img.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", width=w, height=h, count=5, dtype="uint16", nodata=0, crs=crs, transform=transform)
    for t, date in enumerate(d["dates"]):
        with rasterio.open(img / f"S2_{date}.tif", "w", **profile) as dst:
            dst.write(np.concatenate([x[t], scl[t][None].astype(np.uint16)]))
            dst.descriptions = ("B2", "B3", "B4", "B8", "SCL")

    codes = sorted(int(c) for c in np.unique(ct) if c > 0)
    if parcels_mode == "blocks":
        rows, cols = np.indices(ct.shape)
        block_id = (rows // block) * (w // block) + cols // block
        key = np.where(ct > 0, np.searchsorted(codes, ct) * (block_id.max() + 1) + block_id + 1, 0)
    else:
        key = ct
    # each connected region of one key becomes one parcel; its code is the crop code under it
    geoms, code_of = [], []
    for geom, _ in shapes(key.astype(np.int32), mask=ct > 0, connectivity=4, transform=transform):
        poly = shape(geom)
        r, c = rasterio.transform.rowcol(transform, *poly.representative_point().coords[0])
        geoms.append(poly)
        code_of.append(str(ct[r, c]))
    gdf = gpd.GeoDataFrame({"ID_PARCEL": [f"BE-{i:04d}" for i in range(len(geoms))], "CODE_CULTU": code_of},
                           geometry=geoms, crs=crs)
    gdf.to_file(work / "parcels.gpkg", driver="GPKG")
    n_regions = sum(1 for _ in shapes(ct, mask=ct > 0, connectivity=4))

    legend = {}
    with open(PATCH / "wc_v1_croptype_legend.csv", newline="") as f:
        for row in csv.DictReader(f):
            legend[int(row["croptype"])] = row["name"]
    with open(work / "classes.csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["code", "class"])
        for c in codes:
            wr.writerow([c, legend[c]])
    pixels = {legend[c]: int((ct == c).sum()) for c in codes}
    return {"dates": len(d["dates"]), "parcels": len(gdf), "regions": n_regions, "label_pixels": pixels}


def run(cmd: list[str], log: Path) -> float:
    """Run a CLI step, its output to ``log``; fail loudly with the log's tail. Returns seconds."""
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False)
    if proc.returncode:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    return time.perf_counter() - start


def split_report(data: Path) -> dict:
    """How parcels and labelled pixels of each class fall into train / val / test."""
    from cropmap.dataset.store import dataset_info, open_dataset
    from cropmap.nomenclature import IGNORE_INDEX

    ds = open_dataset(data)
    names = dataset_info(data).class_table.names
    report: dict = {}
    for s in ("train", "val", "test"):
        lab = ds["label"].values[ds["split"].values == s]
        px = np.bincount(lab[lab != IGNORE_INDEX].ravel(), minlength=len(names))
        parcels = ds["parcel_split"].values == s
        report[s] = {"patches": int((ds["split"].values == s).sum()), "parcels": int(parcels.sum()),
                     "pixels": {n: int(px[i]) for i, n in enumerate(names)}}
    return report


def write_results(out: dict, folder: Path, quick: bool, tag: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("real_patch.quick.json" if quick else f"real_patch{tag}.json")
    path.write_text(json.dumps(out, indent=1))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1 seed, tempcnn-pixel for 2 steps, rf of 20 trees")
    p.add_argument("--epochs", type=int, default=30, help="training epochs per network (default 30)")
    p.add_argument("--seeds", type=int, default=None, help="seeds: spatial split and model seed (default 5, quick 1)")
    p.add_argument("--first-seed", type=int, default=0, help="the first seed (to run seeds in parallel)")
    p.add_argument("--trees", type=int, default=None, help="random-forest trees (default 500, quick 20)")
    p.add_argument("--models", nargs="*", default=None, help="registered networks (default: tempcnn-pixel tempcnn-unet utae)")
    p.add_argument("--train-args", default="", help="extra `cropmap train` options for the networks, e.g. '--min-steps 1000'")
    p.add_argument("--timeliness", action="store_true",
                   help="also `evaluate --timeliness`: scores at monthly cut-offs (timeliness.csv) in the results")
    p.add_argument("--tag", default="", help="suffix of the results file (real_patch<tag>.json)")
    p.add_argument("--parcels", choices=("blocks", "regions"), default="blocks",
                   help="label regions cut along the patch grid (default) or kept whole")
    p.add_argument("--workdir", type=Path, default=None, help="keep the inputs, datasets and runs here")
    p.add_argument("--results", type=Path, default=RESULTS, help="folder for real_patch[.quick].json")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads per training")
    args = p.parse_args(argv)
    if not PATCH.is_dir():
        print(f"real_patch: skipped, no real data at {PATCH} (set CROPMAP_SHARED)")
        return 0
    from cropmap.models import MODELS

    models = args.models or (["tempcnn-pixel"] if args.quick else [m for m in DEFAULT_MODELS if m in MODELS])
    n_seeds = args.seeds or (1 if args.quick else 5)
    trees = args.trees or (20 if args.quick else 500)
    start = time.perf_counter()
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="cropmap-real-patch-")
    work = args.workdir or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    cli = cropmap_cli()

    inputs = write_inputs(work, args.parcels)
    print(f"be-lpis-2018-patch: {inputs['dates']} dates; {inputs['regions']} label regions -> "
          f"{inputs['parcels']} parcels ({args.parcels}); labelled pixels {inputs['label_pixels']}")
    out: dict = {"settings": {"quick": args.quick, "epochs": args.epochs, "trees": trees, "patch_size": PATCH_SIZE,
                              "parcels": args.parcels, "models": models, "threads": args.threads,
                              "train_args": args.train_args, "seeds": n_seeds},
                 "protocol": f"{n_seeds} seed(s), each one spatial split (build --seed) and the models' seed",
                 "inputs": inputs, "splits": []}
    for seed in range(args.first_seed, args.first_seed + n_seeds):
        data = work / f"dataset-{seed}.zarr"
        secs = run(cli + ["build", "--imagery", str(work / "imagery"), "--parcels", str(work / "parcels.gpkg"),
                          "--out", str(data), "--patch-size", str(PATCH_SIZE), "--classes", str(work / "classes.csv"),
                          "--no-background", "--seed", str(seed), "--config", str(work / "build.yaml"),
                          "--overwrite"], work / f"build-{seed}.log")
        report = split_report(data)
        print(f"split {seed} (build {secs:.0f} s): " + "; ".join(
            f"{s} {r['patches']} patches, {r['parcels']} parcels, px {r['pixels']}" for s, r in report.items()))
        entry: dict = {"seed": seed, "build_s": round(secs, 1), "split": report, "models": {}}
        for name in [*models, FOREST]:
            rundir = work / f"run-{name}-{seed}"
            train = cli + ["train", "--data", str(data), "--out", str(rundir), "--model", name, "--seed", str(seed),
                           "--threads", str(args.threads), "--overwrite"]
            if name == FOREST:
                train += ["--trees", str(trees), "--max-pixels", "0"]
            else:
                train += ["--epochs", str(args.epochs), "--batch-size", "4", "--accelerator", "cpu",
                          *args.train_args.split()]
                if args.quick:
                    train += ["--max-steps", "2"]
            t_train = run(train, work / f"train-{name}-{seed}.log")
            t_eval = run(cli + ["evaluate", "--run", str(rundir), "--data", str(data), "--split", "test",
                                *(["--timeliness"] if args.timeliness else [])],
                         work / f"evaluate-{name}-{seed}.log")
            m = json.loads((rundir / "metrics.json").read_text())
            entry["models"][name] = {"oa": m["overall_accuracy"], "macro_f1": m["macro_f1"], "miou": m["miou"],
                                     "pixels": m["pixels"], "train_s": round(t_train, 1), "evaluate_s": round(t_eval, 1),
                                     "per_class_f1": {c["class"]: c["f1"] for c in m["per_class"]}}
            if args.timeliness:
                with open(rundir / "timeliness.csv", newline="", encoding="utf-8") as f:
                    entry["models"][name]["timeliness"] = list(csv.DictReader(f))
            print(f"  {name:<15} OA {m['overall_accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}  mIoU {m['miou']:.3f}"
                  f"  (train {t_train:.0f} s)", flush=True)
        out["splits"].append(entry)
        write_results(out, args.results, args.quick, args.tag)  # after every seed, so a cut-short run still leaves figures

    keys = ("oa", "macro_f1", "miou")
    out["summary"] = {}
    print(f"\n{'model':<15} {'OA':>15} {'macro-F1':>15} {'mIoU':>15}   (test pixels, mean ± sd over {n_seeds} seed(s))")
    for name in [*models, FOREST]:
        runs = [e["models"][name] for e in out["splits"]]
        row = summarise(runs, keys)
        if name != FOREST:
            row["vs_rf"] = {k: paired(runs, [e["models"][FOREST] for e in out["splits"]], k) for k in keys}
        out["summary"][name] = row
        print(f"{name:<15} " + " ".join(f"{row[k]['mean']:>7.3f} ± {row[k]['std']:.3f}" for k in keys))
    for name in models:
        for k in keys:
            print("  " + paired_line(f"{name} {k}", FOREST, out["summary"][name]["vs_rf"][k]))
    out["wall_s"] = round(time.perf_counter() - start, 1)
    out["cpu_s"] = round(cpu_seconds(), 1)
    # on a shared machine wall time is inflated; CPU time (this process and its children) is not
    print(f"wall time {out['wall_s']:.0f} s, CPU time {out['cpu_s']:.0f} s")
    print(f"results: {write_results(out, args.results, args.quick, args.tag)}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``cropmap`` command line: each command parses its options, loads a config and calls one library function."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from .errors import CropmapError
from .sources.providers import PROVIDERS


def _build(a: argparse.Namespace) -> None:
    from .config import BuildConfig, load_config
    from .dataset.build import build_dataset

    if a.classes and a.level:
        raise CropmapError("--classes replaces --level: give one or the other")
    cfg = load_config(BuildConfig, a.config, period_days=a.period, patch_size=a.patch_size,
                      level="custom" if a.classes else a.level, min_pixels=a.min_pixels,
                      classes=str(a.classes) if a.classes else None, keep_scl=a.keep_scl, seed=a.seed, erode=a.erode,
                      background=a.background)
    s = build_dataset(a.imagery, a.parcels, a.out, cfg, overwrite=a.overwrite, block_size=a.block_size,
                      dask_address=a.dask_address, workers=a.workers)
    splits = ", ".join(f"{k} {v}" for k, v in s.n_patches.items())
    unlabelled = f", {sum(s.unknown_codes.values())} left unlabelled (codes {', '.join(sorted(s.unknown_codes))})" \
        if s.unknown_codes else ""
    print(f"dataset {s.path}: {sum(s.n_patches.values())} patches ({splits}), {s.steps} time steps, "
          f"{len(s.classes)} classes, {s.n_parcels} parcels{unlabelled}")


def _train(a: argparse.Namespace) -> None:
    from .config import TrainConfig, load_config
    from .configfile import config_yaml
    from .training import CONFIG_NAME, train_model

    model = dict(name=a.model, hidden=a.hidden, embed_dim=a.embed_dim, unet_base=a.unet_base, unet_depth=a.unet_depth)
    # --resume starts from the run's own config.yaml; options given must then agree with it
    base = a.config or (a.out / CONFIG_NAME if a.resume and a.out and (a.out / CONFIG_NAME).exists() else None)
    forest = dict(trees=a.trees, max_pixels=a.max_pixels)
    cfg = load_config(TrainConfig, base, model=model, forest=forest, epochs=a.epochs, min_steps=a.min_steps, batch_size=a.batch_size, lr=a.lr,
                      seed=a.seed, max_steps=a.max_steps, num_workers=a.num_workers, crop=a.crop,
                      threads=a.threads, accelerator=a.accelerator, levels=a.levels, patience=a.patience,
                      loss=a.loss, focal_gamma=a.focal_gamma, class_weights=a.class_weights,
                      level_heads=a.level_heads, level_weights=a.level_weights, date_dropout=a.date_dropout,
                      temporal_crop=a.temporal_crop, band_jitter=a.band_jitter, precision=a.precision,
                      devices=a.devices, num_nodes=a.num_nodes, strategy=a.strategy, logger=a.logger)
    if a.print_config:
        print(config_yaml(cfg, "cropmap train configuration (TrainConfig): use it with --config FILE;\n"
                               "options given on the command line win over the file"), end="")
        return
    if a.data is None or a.out is None:
        raise CropmapError("train: --data and --out are required (unless --print-config)")
    s = train_model(a.data, a.out, cfg, overwrite=a.overwrite, resume=a.resume, echo=print)
    stop = f", stopped early at epoch {s.stopped_epoch}" if s.stopped_epoch is not None else ""
    print(f"{s.model} ({s.parameters:,} parameters): best val mIoU {s.best_val_miou:.3f} at epoch {s.best_epoch}"
          f"{stop}, {s.seconds:.0f} s; checkpoint {s.run / 'model.pt'}")


def _evaluate(a: argparse.Namespace) -> None:
    from rich.console import Console

    from .evaluation import evaluate_run, per_class_table, summary_lines

    m = evaluate_run(a.run, a.data, split=a.split, out=a.out)
    Console(width=None if sys.stdout.isatty() else 160).print(per_class_table(m))  # pipes: no 80-column wrap
    print("\n".join(summary_lines(m)))


def _compare(a: argparse.Namespace) -> None:
    from rich.console import Console

    from .compare import compare_runs, comparison_table, write_comparison

    c = compare_runs(a.runs)
    # a pipe or a log gets the whole width of the table rather than rich's default 80 columns
    Console(width=None if sys.stdout.isatty() else 200).print(comparison_table(c))
    for note in c.notes:
        print(note)
    if a.out:
        print(f"table {write_comparison(c, a.out, overwrite=a.overwrite)}")


def _predict(a: argparse.Namespace) -> None:
    from .prediction import predict_map, predict_tiles

    common = dict(parcels=a.parcels, parcels_out=a.parcels_out, quicklook=a.quicklook, window=a.window,
                  overlap=a.overlap, overwrite=a.overwrite)
    if len(a.imagery) > 1 or a.dask_address or a.out.suffix.lower() not in (".tif", ".tiff"):
        t = predict_tiles(a.run, a.imagery, a.out, confidence=a.confidence, probabilities=a.probabilities,
                          dask_address=a.dask_address, workers=a.workers, **common)
        done = sum(not x.skipped for x in t.tiles)
        print(f"{len(t.tiles)} tile(s) in {a.out} ({done} mapped, {len(t.tiles) - done} already done, "
              f"{t.seconds:.0f} s); mosaic {', '.join(map(str, t.mosaics))}"
              + (f"; parcels {', '.join(map(str, t.parcels_paths))}" if t.parcels_paths else ""))
        return
    stem = a.out.with_suffix("")
    s = predict_map(a.run, a.imagery[0], a.out,
                    confidence_out=Path(f"{stem}.confidence.tif") if a.confidence else None,
                    probabilities_out=Path(f"{stem}.probabilities.tif") if a.probabilities else None, **common)
    extras = [p for p in (s.confidence_path, s.probabilities_path, s.quicklook_path, *s.parcels_paths) if p]
    print(f"map {s.map_path} ({s.pixels:,} px, {s.nodata_pixels:,} without observation, "
          f"{s.pixels / max(s.seconds, 1e-9):,.0f} px/s, {s.seconds:.0f} s)"
          + (f"; also {', '.join(map(str, extras))}" if extras else ""))


def _audit(a: argparse.Namespace) -> None:
    from .auditing import audit_parcels

    s = audit_parcels(a.parcels, a.out, level=a.level, min_confidence=a.min_confidence, overwrite=a.overwrite)
    print(f"{s.disagreeing:,} of {s.compared:,} parcels disagree with their declaration at the {s.level} level "
          f"({s.listed:,} listed in {s.path}, most confident first)")


def _export(a: argparse.Namespace) -> None:
    from .export import export_onnx

    s = export_onnx(a.run, a.out, opset=a.opset, overwrite=a.overwrite)
    x = ", ".join(map(str, s.inputs["x"]))
    print(f"{s.model} -> {s.path} (ONNX opset {s.opset}, x [{x}]); onnxruntime matches PyTorch "
          f"within {s.max_abs_diff:.1e} on {len(s.checked_shapes)} input shapes")


def _report(a: argparse.Namespace) -> None:
    from .report import write_report

    path = write_report(a.run, a.out, map_path=a.map, overwrite=a.overwrite)
    print(f"report {path} ({path.stat().st_size / 1e6:.1f} MB, self-contained HTML)")


def _fetch_parcels(a: argparse.Namespace) -> None:
    from .sources.rpg import fetch_parcels

    if (a.bbox is None) == (a.departement is None):
        raise CropmapError("fetch-parcels: give either --bbox or --departement")
    s = fetch_parcels(a.year, tuple(a.bbox) if a.bbox else None, a.out, bbox_crs=a.bbox_crs, departement=a.departement,
                      boundaries=a.boundaries, source=a.source, archive=a.archive, wfs_url=a.wfs_url,
                      feed_url=a.feed_url, national=a.national, cache=a.cache, sha256=a.sha256,
                      allow_http=a.allow_http, overwrite=a.overwrite)
    how = (f"WFS {s.origin}, {s.requests} page(s) fetched" if s.source == "wfs" else
           f"archive {s.origin}, layer {s.layer}"
           + (f", downloaded {s.downloaded_bytes / 1e6:,.0f} MB" if s.downloaded_bytes else ", cached"))
    print(f"{s.n_parcels:,} parcels of RPG {s.year} -> {s.path} ({how})")


def _fetch_imagery(a: argparse.Namespace) -> None:
    from .sources.fetch import fetch_imagery

    if (a.bbox is None) == (a.departement is None):
        raise CropmapError("fetch-imagery: give either --bbox or --departement")
    s = fetch_imagery(tuple(a.bbox) if a.bbox else None, a.out, start=a.start, end=a.end, bbox_crs=a.bbox_crs,
                      departement=a.departement, boundaries=a.boundaries, source=a.source,
                      crs=a.crs, max_cloud=a.max_cloud, stac_url=a.stac_url, token_url=a.token_url,
                      overwrite=a.overwrite, workers=a.workers, dask_address=a.dask_address, ee_project=a.ee_project,
                      mask=a.mask, cs_threshold=a.cs_threshold, block=a.block, wfs_url=a.wfs_url)
    print(f"{len(s.dates)} dates ({s.dates[0]} to {s.dates[-1]}, {s.n_items} items) -> {s.path} "
          f"({s.width} x {s.height} px of 10 m, {s.crs.to_string()}"
          + (f", resumed after {s.skipped} written" if s.skipped else "") + ")")


def _demo(a: argparse.Namespace) -> None:
    from .demo.run import run_demo

    run_demo(a.out, size=a.size, seed=a.seed, epochs=a.epochs, overwrite=a.overwrite)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cropmap", description="Crop-type maps from Sentinel-2 time series and RPG parcels.")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("--version", action="version", version=f"cropmap {__import__('cropmap').__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="generate the demo scene and run build, train, evaluate and predict on it")
    d.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (default: demo-out)")
    d.add_argument("--size", type=int, default=512, help="scene side in pixels (default: 512)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--epochs", type=int, default=None, help="training epochs per model")
    d.add_argument("--overwrite", action="store_true", help="replace outputs of an earlier demo run")
    d.set_defaults(func=_demo)

    f = sub.add_parser("fetch-parcels", help="RPG parcels of an area (any edition 2015-2025) from the IGN WFS or "
                                             "an RPG archive")
    f.add_argument("--year", type=int, required=True, help="RPG edition (2015-2025)")
    f.add_argument("--bbox", type=float, nargs=4, metavar=("XMIN", "YMIN", "XMAX", "YMAX"),
                   help="area to keep, in --bbox-crs (or --departement)")
    f.add_argument("--bbox-crs", default="EPSG:2154", help="CRS of --bbox (default EPSG:2154, Lambert-93)")
    f.add_argument("--departement", metavar="CODE",
                   help="metropolitan département (INSEE code, e.g. 29 or 2A): parcels clipped to its outline")
    f.add_argument("--boundaries", help="--departement: URL or vector file of départements with a code field "
                                        "(default: ADMIN EXPRESS COG from the WFS)")
    f.add_argument("--source", default="auto", choices=["auto", "wfs", "archive"],
                   help="wfs: paged GetFeature (2015-2024); archive: the edition's 7z (regional for a département); "
                        "auto (default): wfs up to 40,000 km2 of area, else archive")
    f.add_argument("--wfs-url", default="https://data.geopf.fr/wfs/ows", help="WFS 2.0 endpoint (a mirror)")
    f.add_argument("--feed-url", default="https://data.geopf.fr/telechargement/resource/RPG",
                   help="Atom feed listing the RPG archives (names and volumes are read there)")
    f.add_argument("--national", action="store_true", help="archive: the national archive even for a département")
    f.add_argument("--out", type=Path, required=True, help="GeoPackage to write (layer PARCELLES_GRAPHIQUES)")
    f.add_argument("--archive", help="URL or local path of an RPG 7z (or its first volume .7z.001); implies "
                                     "--source archive")
    f.add_argument("--cache", type=Path, help="download cache (default $CROPMAP_CACHE or ~/.cache/cropmap)")
    f.add_argument("--sha256", help="expected SHA-256 of a single-file archive (geopf publishes none)")
    f.add_argument("--allow-http", action="store_true", help="accept plain http:// URLs")
    f.add_argument("--overwrite", action="store_true", help="replace an existing output")
    f.set_defaults(func=_fetch_parcels)

    g = sub.add_parser("fetch-imagery", help="Sentinel-2 L2A of an area (STAC API or Earth Engine) -> Zarr cube "
                                             "(resumable)")
    g.add_argument("--bbox", type=float, nargs=4, metavar=("XMIN", "YMIN", "XMAX", "YMAX"),
                   help="area to cover, in --bbox-crs (or --departement)")
    g.add_argument("--bbox-crs", default="EPSG:4326", help="CRS of --bbox (default EPSG:4326, lon/lat)")
    g.add_argument("--departement", metavar="CODE", help="metropolitan département (INSEE code): its box "
                                                         "+ 1 km, as fetch-parcels --departement")
    g.add_argument("--boundaries", help="--departement: URL or vector file of départements (as fetch-parcels)")
    g.add_argument("--wfs-url", help="--departement: WFS 2.0 serving ADMIN EXPRESS (default the Géoplateforme's)")
    g.add_argument("--start", required=True, help="first acquisition date, YYYY-MM-DD")
    g.add_argument("--end", required=True, help="last acquisition date, YYYY-MM-DD (inclusive)")
    g.add_argument("--source", default="earth-search", choices=list(PROVIDERS),
                   help="imagery provider (default earth-search: sentinel-2-c1-l2a, no account; planetary-computer: "
                        "sentinel-2-l2a, signed URLs, optional key in $PC_SDK_SUBSCRIPTION_KEY; earth-engine: "
                        "S2_SR_HARMONIZED through xee, needs an account and cropmap[gee])")
    g.add_argument("--ee-project", help="earth-engine: Google Cloud project registered for Earth Engine")
    g.add_argument("--mask", choices=["cs", "scl"], default="cs",
                   help="earth-engine: clouds by Cloud Score+ (cs, default; no SCL in the cube) or keep SCL (scl)")
    g.add_argument("--cs-threshold", type=float, default=0.6,
                   help="earth-engine, --mask cs: pixels with cs_cdf below this are nodata (default 0.6)")
    g.add_argument("--out", type=Path, required=True, help="Zarr cube to write (rerun to resume an interrupted one)")
    g.add_argument("--crs", default="EPSG:2154", help="CRS of the 10 m grid: EPSG:n or utm (default EPSG:2154)")
    g.add_argument("--max-cloud", type=float, default=80.0, help="skip items with more cloud cover, %% (default 80)")
    g.add_argument("--stac-url", help="STAC API to search instead of the source's own")
    g.add_argument("--token-url", help="planetary-computer: SAS token endpoint instead of the public one")
    g.add_argument("--workers", type=int, default=1,
                   help="blocks fetched at once on this machine (threads; memory grows with it)")
    g.add_argument("--block", type=int, default=2048, metavar="PX",
                   help="side of the blocks read and written at once, a multiple of 512 (memory: ~60 B/px of a "
                        "block per worker, whatever the area; default 2048)")
    g.add_argument("--dask-address", help="tcp://host:port of a Dask scheduler to fetch the blocks on "
                                          "(its workers write --out: a path they must share)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing complete cube")
    g.set_defaults(func=_fetch_imagery)

    b = sub.add_parser("build", help="imagery folder + parcels -> patch dataset (Zarr)")
    b.add_argument("--imagery", type=Path, required=True, help="folder of per-date GeoTIFFs (S2_YYYY-MM-DD.tif), a .zarr cube or a .nc NetCDF file")
    b.add_argument("--parcels", type=Path, required=True, help="parcels (GeoPackage, RPG schema)")
    b.add_argument("--out", type=Path, required=True, help="dataset to write (a .zarr folder)")
    b.add_argument("--config", type=Path, help="YAML file with BuildConfig fields")
    b.add_argument("--period", type=int, help="composite period in days (default 10)")
    b.add_argument("--patch-size", type=int, help="patch side in pixels (default 64)")
    b.add_argument("--level", choices=["group", "crop"], help="label level (default group)")
    b.add_argument("--min-pixels", type=int, metavar="N",
                   help="--level crop: codes with fewer than N labelled pixels form one class, 'Autres cultures'")
    b.add_argument("--classes", type=Path, metavar="FILE",
                   help="your own classes: a CSV code,class[,color]; unlisted codes are left unlabelled")
    b.add_argument("--keep-scl", type=int, nargs="+", help="SCL classes kept as clear (default 4 5 6 7)")
    b.add_argument("--erode", type=int, help="parcel border pixels set to ignore (default 1)")
    b.add_argument("--no-background", dest="background", action="store_const", const=False, default=None,
                   help="no class for land outside the parcels (unlabelled instead)")
    b.add_argument("--seed", type=int, help="seed of the spatial split")
    b.add_argument("--block-size", type=int, default=1024, metavar="PX",
                   help="composite the area in blocks of this side, rounded to whole patches (memory grows with it; "
                        "the dataset does not change; default 1024)")
    b.add_argument("--dask-address", help="tcp://host:port of a Dask scheduler to composite the blocks on "
                                          "(its workers must see --imagery and --out's folder)")
    b.add_argument("--workers", type=int, default=1, help="blocks composited at once on this machine (threads)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    b.set_defaults(func=_build)

    t = sub.add_parser("train", help="train a model on a dataset")
    t.add_argument("--data", type=Path, help="dataset written by `cropmap build` (required)")
    t.add_argument("--out", type=Path, help="run folder (required)")
    t.add_argument("--config", type=Path, help="YAML file with TrainConfig fields (model: {...} nested)")
    t.add_argument("--print-config", action="store_true",
                   help="print the resolved configuration as a commented YAML file and exit")
    t.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its last completed epoch (same config)")
    t.add_argument("--model", help="registered model name (default tempcnn-unet; rf: the random-forest baseline)")
    t.add_argument("--epochs", type=int, help="passes over the training patches")
    t.add_argument("--min-steps", type=int, help="the schedule lasts at least this many optimiser steps: on a small "
                                                 "area the epochs are raised until it does (default 300; 0: off)")
    t.add_argument("--batch-size", type=int, help="patches per step")
    t.add_argument("--lr", type=float, help="AdamW learning rate")
    t.add_argument("--seed", type=int, help="seed of weights, sampling and augmentation")
    t.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    t.add_argument("--num-workers", type=int, help="data-loader worker processes")
    t.add_argument("--crop", type=int, help="train on random crops of this size")
    t.add_argument("--threads", type=int, help="torch CPU threads")
    t.add_argument("--accelerator", choices=["auto", "cpu", "gpu"])
    t.add_argument("--hidden", type=int, help="temporal CNN channels")
    t.add_argument("--embed-dim", type=int, help="temporal embedding size D")
    t.add_argument("--unet-base", type=int, help="U-Net channels at full resolution")
    t.add_argument("--unet-depth", type=int, help="U-Net down-sampling steps")
    t.add_argument("--trees", type=int, help="--model rf: trees in the forest (default 100)")
    t.add_argument("--max-pixels", type=int, help="--model rf: train pixels used at most, large classes capped to a "
                                                  "common quota (default 100000; 0: all)")
    t.add_argument("--levels", nargs="+", metavar="LEVEL",
                   help="one head per level, the dataset's first, e.g. crop group coarse (default: one flat head)")
    t.add_argument("--level-heads", choices=["top", "intermediate"],
                   help="--levels: every head on the last layer (top, default) or the coarser levels on earlier "
                        "temporal layers (intermediate, as in ms-convSTAR)")
    t.add_argument("--level-weights", nargs="+", type=float, metavar="W",
                   help="--levels: loss weight per level, finest first (ms-convSTAR: 1 0.5 0.1; default 1 each)")
    t.add_argument("--patience", type=int, help="stop after this many validations without val mIoU gain (0: off)")
    t.add_argument("--loss", choices=["ce", "focal"], help="training loss (default ce)")
    t.add_argument("--focal-gamma", type=float, help="focal loss exponent (default 2)")
    t.add_argument("--class-weights", choices=["none", "inverse", "median", "effective"],
                   help="loss weights from the train split's label counts (default none)")
    t.add_argument("--date-dropout", type=float, help="probability of masking each date of a training patch")
    t.add_argument("--band-jitter", type=float,
                   help="standard deviation of a random per-band gain on each training patch's reflectance (0: off)")
    t.add_argument("--temporal-crop", type=float, help="keep a random window of at least this fraction of the season")
    t.add_argument("--precision", choices=["auto", "32", "bf16-mixed", "16-mixed"],
                   help="auto: bf16-mixed on GPU, 32 on CPU")
    t.add_argument("--devices", type=lambda v: v if v == "auto" else int(v), help="devices per node (or auto)")
    t.add_argument("--num-nodes", type=int, help="machines in distributed (DDP) training")
    t.add_argument("--strategy", help="Lightning strategy, e.g. ddp (default auto)")
    t.add_argument("--logger", choices=["csv", "tensorboard"], help="training logs (default csv)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="metrics of a run on a dataset split")
    e.add_argument("--run", type=Path, required=True, help="run folder written by `cropmap train`")
    e.add_argument("--data", type=Path, required=True, help="dataset written by `cropmap build`")
    e.add_argument("--split", default="test", choices=["train", "val", "test"], help="default test")
    e.add_argument("--out", type=Path, help="folder for metrics.json and confusion.png (default: the run)")
    e.set_defaults(func=_evaluate)

    c = sub.add_parser("compare", help="side-by-side metrics of evaluated runs, per level")
    c.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folders (after `cropmap evaluate`)")
    c.add_argument("--out", type=Path, help="also write the table as .csv or .md")
    c.add_argument("--overwrite", action="store_true", help="replace an existing table file")
    c.set_defaults(func=_compare)

    r = sub.add_parser("predict", help="crop map (COG), quick-look, per-parcel predictions; one scene or many tiles")
    r.add_argument("--run", type=Path, required=True, help="run folder written by `cropmap train`")
    r.add_argument("--imagery", type=Path, required=True, nargs="+",
                   help="folder(s) of per-date GeoTIFFs, .zarr cube(s) or .nc file(s); several are mapped as tiles")
    r.add_argument("--out", type=Path, required=True,
                   help="map to write (.tif); with several imagery folders, a folder for the tiles and mosaic.vrt")
    r.add_argument("--parcels", type=Path, help="parcels to answer for (any CRS; only those in the area are read)")
    r.add_argument("--parcels-out", type=Path, nargs="+",
                   help="per-parcel predictions: .gpkg (layer predictions) and/or .parquet (GeoParquet)")
    r.add_argument("--confidence", action="store_true", help="also write <map>.confidence.tif (max probability)")
    r.add_argument("--probabilities", action="store_true",
                   help="also write <map>.probabilities.tif (one band per class)")
    r.add_argument("--no-quicklook", dest="quicklook", action="store_false",
                   help="do not write <map>.quicklook.png")
    r.add_argument("--window", type=int, default=512, help="window side in pixels (memory grows with it)")
    r.add_argument("--overlap", type=int, default=64, help="pixels shared by neighbouring windows, blended")
    r.add_argument("--dask-address", help="tcp://host:port of a Dask scheduler to run the tiles on")
    r.add_argument("--workers", type=int, default=1, help="tiles predicted at once on this machine")
    r.add_argument("--overwrite", action="store_true", help="replace existing outputs (and redo finished tiles)")
    r.set_defaults(func=_predict)

    u = sub.add_parser("audit", help="parcels whose prediction disagrees with their declared crop, as CSV")
    u.add_argument("--parcels", type=Path, required=True, help="per-parcel predictions from `cropmap predict`")
    u.add_argument("--out", type=Path, required=True, help="CSV to write")
    u.add_argument("--level", help="hierarchy level to compare (default: the model's own level)")
    u.add_argument("--min-confidence", type=float, default=0.0, help="list only disagreements this confident")
    u.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    u.set_defaults(func=_audit)

    x = sub.add_parser("export", help="trained model -> ONNX file with classes, bands and normalisation inside")
    x.add_argument("--run", type=Path, required=True, help="run folder written by `cropmap train`")
    x.add_argument("--format", choices=["onnx"], required=True, help="output format")
    x.add_argument("--out", type=Path, required=True, help="model file to write (.onnx)")
    x.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's recommended one)")
    x.add_argument("--overwrite", action="store_true", help="replace an existing file")
    x.set_defaults(func=_export)

    h = sub.add_parser("report", help="self-contained HTML report of an evaluated run")
    h.add_argument("--run", type=Path, required=True, help="run folder, after `cropmap evaluate`")
    h.add_argument("--map", type=Path, help="map from `cropmap predict` to show as a quick-look")
    h.add_argument("--out", type=Path, help="HTML file to write (default: RUN/report.html)")
    h.add_argument("--overwrite", action="store_true", help="replace an existing report")
    h.set_defaults(func=_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s: %(message)s")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.INFO if args.debug else logging.WARNING)
    if not args.debug:
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
    from .runtime import tune_allocator

    tune_allocator()
    try:
        args.func(args)
    except CropmapError as e:
        if args.debug:
            raise
        print(f"cropmap: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cropmap: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``cropmap`` command line: each command parses its options, loads a config and calls one library function."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .cli_options import add_config_options, given, overrides_from
from .config import (AreasConfig, AuditConfig, BuildConfig, BuildRunConfig, DemoConfig, EvaluateConfig, ExportConfig,
                     FetchImageryConfig, FetchParcelsConfig, PredictConfig, ReviewConfig, TrainConfig, config_from,
                     missing_required, read_config_file)
from .errors import CropmapError


def _build(a: argparse.Namespace, cfg, run) -> None:
    from .dataset.build import build_dataset

    s = build_dataset(a.imagery, a.parcels, a.out, cfg, overwrite=a.overwrite, **fields(run))
    splits = ", ".join(f"{k} {v}" for k, v in s.n_patches.items())
    unlabelled = f", {sum(s.unknown_codes.values())} left unlabelled (codes {', '.join(sorted(s.unknown_codes))})" \
        if s.unknown_codes else ""
    print(f"dataset {s.path}: {sum(s.n_patches.values())} patches ({splits}), {s.steps} time steps, "
          f"{len(s.classes)} classes, {s.n_parcels} parcels{unlabelled}")


def _check_build(a: argparse.Namespace) -> None:
    if given(a, BuildConfig, "classes") and given(a, BuildConfig, "level"):
        raise CropmapError("--classes replaces --level: give one or the other")


def _train(a: argparse.Namespace, cfg) -> None:
    from .training import train_model

    s = train_model(a.data, a.out, cfg, overwrite=a.overwrite, resume=a.resume, echo=print)
    stop = f", stopped early at epoch {s.stopped_epoch}" if s.stopped_epoch is not None else ""
    print(f"{s.model} ({s.parameters:,} parameters): best val mIoU {s.best_val_miou:.3f} at epoch {s.best_epoch}"
          f"{stop}, {s.seconds:.0f} s; checkpoint {s.run / 'model.pt'}")


def _train_base(a: argparse.Namespace) -> Path | None:
    """--resume starts from the run's own config.yaml (options given must then agree with it)."""
    from .training import CONFIG_NAME

    return a.out / CONFIG_NAME if a.resume and a.out and (a.out / CONFIG_NAME).exists() else None


def _evaluate(a: argparse.Namespace, cfg) -> None:
    from rich.console import Console

    from .evaluation import evaluate_run, per_class_table, summary_lines

    m = evaluate_run(a.run, a.data, out=a.out, **fields(cfg))
    Console(width=None if sys.stdout.isatty() else 160).print(per_class_table(m))  # pipes: no 80-column wrap
    print("\n".join(summary_lines(m)))
    if cfg.timeliness:
        import csv

        from .monitoring.timeliness import PASS_F1, first_passing

        out_dir = a.out or a.run
        with open(out_dir / "timeliness.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        print("timeliness (" + str(out_dir / "timeliness.csv") + "): " + ", ".join(
            f"{r['cutoff']} OA {float(r['overall_accuracy']):.3f}" for r in rows))
        passing = first_passing(rows, PASS_F1)
        print(f"first cut-off with F1 >= {PASS_F1}: " + "; ".join(f"{c} {d or 'never'}" for c, d in passing.items()))


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


def _predict(a: argparse.Namespace, cfg) -> None:
    from .prediction import predict_map, predict_tiles
    from .prediction.scene import side_path

    if len(a.imagery) > 1 or cfg.dask_address or a.out.suffix.lower() not in (".tif", ".tiff"):
        t = predict_tiles(a.run, a.imagery, a.out, parcels=a.parcels, parcels_out=a.parcels_out,
                          overwrite=a.overwrite, **fields(cfg))
        done = sum(not x.skipped for x in t.tiles)
        print(f"{len(t.tiles)} tile(s) in {a.out} ({done} mapped, {len(t.tiles) - done} already done, "
              f"{t.seconds:.0f} s); mosaic {', '.join(map(str, t.mosaics))}"
              + (f"; parcels {', '.join(map(str, t.parcels_paths))}" if t.parcels_paths else ""))
        return
    s = predict_map(a.run, a.imagery[0], a.out, parcels=a.parcels, parcels_out=a.parcels_out,
                    confidence_out=side_path(a.out, "confidence") if cfg.confidence else None,
                    probabilities_out=side_path(a.out, "probabilities") if cfg.probabilities else None,
                    uncertainty_out=side_path(a.out, "uncertainty") if cfg.uncertainty else None,
                    quicklook=cfg.quicklook, window=cfg.window, overlap=cfg.overlap, overwrite=a.overwrite,
                    until=cfg.until, device=cfg.device)
    extras = [p for p in (s.confidence_path, s.probabilities_path, s.uncertainty_path, s.quicklook_path,
                          *s.parcels_paths) if p]
    print(f"map {s.map_path} ({s.pixels:,} px, {s.nodata_pixels:,} without observation, "
          f"{s.pixels / max(s.seconds, 1e-9):,.0f} px/s, {s.seconds:.0f} s)"
          + (f"; also {', '.join(map(str, extras))}" if extras else ""))


def _audit(a: argparse.Namespace, cfg) -> None:
    from .auditing import audit_parcels

    s = audit_parcels(a.parcels, a.out, overwrite=a.overwrite, **fields(cfg))
    e = s.errors
    print(f"{s.compared:,} parcels at the {s.level} level: {s.markers['red']:,} red, {s.markers['orange']:,} "
          f"orange, {s.markers['green']:,} green ({s.disagreeing:,} disagree with their declaration); "
          f"{'out-of-fold' if s.out_of_fold else 'IN-SAMPLE'} answers; expected red precision "
          + (f"{e['expected_red_precision']:.2f}" if e["expected_red_precision"] is not None else "-")
          + (f", alpha {e['alpha']:.3f}, beta {e['beta']:.3f}" if e["alpha"] is not None else "")
          + f"; {s.path} (red first) and {s.summary_path}")


def _areas(a: argparse.Namespace, cfg) -> None:
    from .monitoring.areas import estimate_areas

    est, what = estimate_areas(a.map, a.reference, a.out, overwrite=a.overwrite, **fields(cfg))
    print(f"areas of {len(est.classes)} classes from {what}: overall accuracy {est.overall:.3f}; {a.out}")
    unsampled = est.mapped_ha[est.sample_units == 0].sum()
    if unsampled > 0:
        print(f"  {unsampled:,.1f} ha mapped in classes without a sample unit are in no estimate (sample them)")
    for i, name in enumerate(est.classes):
        if est.sample_units[i] or est.estimated_ha[i]:
            print(f"  {name}: mapped {est.mapped_ha[i]:,.1f} ha, estimated {est.estimated_ha[i]:,.1f} "
                  f"± {est.ci95_ha[i]:,.1f} ha")


def _review(a: argparse.Namespace, cfg) -> None:
    from .monitoring.review import write_review

    s = write_review(a.parcels, a.out, audit=a.audit, data=a.data, overwrite=a.overwrite, **fields(cfg))
    print(f"review page {a.out}: {s['parcels']:,} parcels, {s['profiles']:,} NDVI profiles, "
          f"{s['bytes'] / 1e6:.1f} MB, one file, offline")


def _export(a: argparse.Namespace, cfg) -> None:
    from . import export

    exporters = {"onnx": export.export_onnx}  # ExportConfig.format's values
    s = exporters[cfg.format](a.run, a.out, opset=cfg.opset, overwrite=a.overwrite)
    x = ", ".join(map(str, s.inputs["x"]))
    print(f"{s.model} -> {s.path} (ONNX opset {s.opset}, x [{x}]); onnxruntime matches PyTorch "
          f"within {s.max_abs_diff:.1e} on {len(s.checked_shapes)} input shapes")


def _report(a: argparse.Namespace) -> None:
    from .report import write_report

    path = write_report(a.run, a.out, map_path=a.map, audit=a.audit, areas=a.areas, uncertainty=a.uncertainty,
                        data=a.data, review=a.review, overwrite=a.overwrite)
    print(f"report {path} ({path.stat().st_size / 1e6:.1f} MB, self-contained HTML)")


def _fetch_parcels(a: argparse.Namespace, cfg) -> None:
    from .sources.rpg import fetch_parcels

    if (cfg.bbox is None) == (cfg.departement is None):
        raise CropmapError("fetch-parcels: give either --bbox or --departement")
    opts = fields(cfg)
    year, bbox = opts.pop("year"), opts.pop("bbox")
    s = fetch_parcels(year, bbox, a.out, overwrite=a.overwrite, **opts)
    how = (f"WFS {s.origin}, {s.requests} page(s) fetched" if s.source == "wfs" else
           f"archive {s.origin}, layer {s.layer}"
           + (f", downloaded {s.downloaded_bytes / 1e6:,.0f} MB" if s.downloaded_bytes else ", cached"))
    print(f"{s.n_parcels:,} parcels of RPG {s.year} -> {s.path} ({how})")


def _fetch_imagery(a: argparse.Namespace, cfg) -> None:
    from .sources.fetch import fetch_imagery

    if (cfg.bbox is None) == (cfg.departement is None):
        raise CropmapError("fetch-imagery: give either --bbox or --departement")
    opts = fields(cfg)
    s = fetch_imagery(opts.pop("bbox"), a.out, overwrite=a.overwrite, **opts)
    print(f"{len(s.dates)} dates ({s.dates[0]} to {s.dates[-1]}, {s.n_items} items) -> {s.path} "
          f"({s.width} x {s.height} px of 10 m, {s.crs.to_string()}"
          + (f", resumed after {s.skipped} written" if s.skipped else "") + ")")


def _demo(a: argparse.Namespace, cfg) -> None:
    from .demo.run import run_demo

    run_demo(a.out, overwrite=a.overwrite, **fields(cfg))


def fields(config: Any) -> dict[str, Any]:
    """A flat config's fields as keyword arguments of the library function it configures."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def arg(*flags: str, **kwargs: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    return flags, kwargs


@dataclass(frozen=True)
class Command:
    """One subcommand: its hand-written arguments (files and folders; ``required`` ones are checked after
    ``--print-config``), its config classes (options generated from their fields) and the function called
    with the namespace and one resolved config per class."""

    name: str
    help: str
    run: Callable[..., None]
    args: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = ()
    configs: tuple[type, ...] = ()
    check: Callable[[argparse.Namespace], None] | None = None  # option combinations, before anything runs
    base: Callable[[argparse.Namespace], Path | None] | None = None  # a config file to start from (resume)


# older names of generated options (README, "Option renames")
ALIASES = {"period-days": ("--period",)}
EXTRA = {"bbox": dict(metavar=("XMIN", "YMIN", "XMAX", "YMAX")), "departement": dict(metavar="CODE"),
         "levels": dict(metavar="LEVEL"), "level-weights": dict(metavar="W"), "keep-scl": dict(metavar="SCL"),
         "block-size": dict(metavar="PX"), "block": dict(metavar="PX"), "min-pixels": dict(metavar="N"),
         "split-fractions": dict(metavar=("TRAIN", "VAL", "TEST")), "until": dict(metavar="YYYY-MM-DD"),
         "start": dict(metavar="YYYY-MM-DD"), "end": dict(metavar="YYYY-MM-DD"), "folds": dict(metavar="K")}


def commands() -> list[Command]:
    run_in = arg("--run", type=Path, required=True, help="run folder written by `cropmap train`")
    return [
        Command("demo", "generate the demo scene and run build, train, evaluate and predict on it", _demo,
                (arg("--out", type=Path, default=Path("demo-out"), help="output folder (default: demo-out)"),
                 arg("--overwrite", action="store_true", help="replace outputs of an earlier demo run")),
                (DemoConfig,)),
        Command("fetch-parcels", "RPG parcels of an area (any edition 2015-2025) from the IGN WFS or an RPG archive",
                _fetch_parcels,
                (arg("--out", type=Path, required=True, help="GeoPackage to write (layer PARCELLES_GRAPHIQUES)"),
                 arg("--overwrite", action="store_true", help="replace an existing output")),
                (FetchParcelsConfig,)),
        Command("fetch-imagery", "Sentinel-2 L2A of an area (STAC API or Earth Engine) -> Zarr cube (resumable)",
                _fetch_imagery,
                (arg("--out", type=Path, required=True, help="Zarr cube to write (rerun to resume an interrupted one)"),
                 arg("--overwrite", action="store_true", help="replace an existing complete cube")),
                (FetchImageryConfig,)),
        Command("build", "imagery folder + parcels -> patch dataset (Zarr)", _build,
                (arg("--imagery", type=Path, required=True,
                     help="folder of per-date GeoTIFFs (S2_YYYY-MM-DD.tif), a .zarr cube or a .nc NetCDF file"),
                 arg("--parcels", type=Path, required=True, help="parcels (GeoPackage, RPG schema)"),
                 arg("--out", type=Path, required=True, help="dataset to write (a .zarr folder)"),
                 arg("--overwrite", action="store_true", help="replace an existing dataset")),
                (BuildConfig, BuildRunConfig), check=_check_build),
        Command("train", "train a model on a dataset", _train,
                (arg("--data", type=Path, required=True, help="dataset written by `cropmap build`"),
                 arg("--out", type=Path, required=True, help="run folder"),
                 arg("--resume", action="store_true",
                     help="continue an interrupted run from its last completed epoch (same config)"),
                 arg("--overwrite", action="store_true", help="replace an existing run folder")),
                (TrainConfig,), base=_train_base),
        Command("evaluate", "metrics of a run on a dataset split", _evaluate,
                (run_in, arg("--data", type=Path, required=True, help="dataset written by `cropmap build`"),
                 arg("--out", type=Path, help="folder for metrics.json and confusion.png (default: the run)")),
                (EvaluateConfig,)),
        Command("compare", "side-by-side metrics of evaluated runs, per level", _compare,
                (arg("runs", type=Path, nargs="+", metavar="RUN", help="run folders (after `cropmap evaluate`)"),
                 arg("--out", type=Path, help="also write the table as .csv or .md"),
                 arg("--overwrite", action="store_true", help="replace an existing table file"))),
        Command("predict", "crop map (COG), quick-look, per-parcel predictions; one scene or many tiles", _predict,
                (run_in,
                 arg("--imagery", type=Path, required=True, nargs="+",
                     help="folder(s) of per-date GeoTIFFs, .zarr cube(s) or .nc file(s); several are mapped as tiles"),
                 arg("--out", type=Path, required=True,
                     help="map to write (.tif); with several imagery folders, a folder for the tiles and mosaic.vrt"),
                 arg("--parcels", type=Path, help="parcels to answer for (any CRS; only those in the area are read)"),
                 arg("--parcels-out", type=Path, nargs="+",
                     help="per-parcel predictions: .gpkg (layer predictions) and/or .parquet (GeoParquet)"),
                 arg("--overwrite", action="store_true",
                     help="replace existing outputs (and redo finished tiles)")),
                (PredictConfig,)),
        Command("audit", "a green / orange / red marker for every declared parcel, as CSV (red first) + JSON summary",
                _audit,
                (arg("--parcels", type=Path, required=True, help="per-parcel predictions from `cropmap predict`"),
                 arg("--out", type=Path, required=True, help="CSV to write"),
                 arg("--overwrite", action="store_true", help="replace an existing CSV")),
                (AuditConfig,)),
        Command("areas", "per-class mapped area and its stratified estimate with a confidence interval "
                         "(Olofsson et al. 2014), as CSV", _areas,
                (arg("--map", type=Path, required=True, help="class map from `cropmap predict`"),
                 arg("--reference", type=Path, required=True,
                     help="reference sample: a CSV map_class,reference_class, or an out-of-fold parcel table "
                          "(`cropmap predict --parcels-out` on a --folds run)"),
                 arg("--out", type=Path, required=True, help="CSV to write"),
                 arg("--overwrite", action="store_true", help="replace an existing CSV")),
                (AreasConfig,)),
        Command("review", "one offline HTML page to review parcels: map by marker or class, filters, search, "
                          "NDVI profile on click", _review,
                (arg("--parcels", type=Path, required=True, help="per-parcel predictions from `cropmap predict`"),
                 arg("--out", type=Path, required=True, help="HTML file to write"),
                 arg("--audit", type=Path, help="audit CSV from `cropmap audit`: the markers"),
                 arg("--data", type=Path, help="dataset from `cropmap build`: the NDVI profiles"),
                 arg("--overwrite", action="store_true", help="replace an existing page")),
                (ReviewConfig,)),
        Command("export", "trained model -> ONNX file with classes, bands and normalisation inside", _export,
                (run_in, arg("--out", type=Path, required=True, help="model file to write (.onnx)"),
                 arg("--overwrite", action="store_true", help="replace an existing file")),
                (ExportConfig,)),
        Command("report", "self-contained HTML report of an evaluated run", _report,
                (arg("--run", type=Path, required=True, help="run folder, after `cropmap evaluate`"),
                 arg("--map", type=Path, help="map from `cropmap predict` to show as a quick-look"),
                 arg("--audit", type=Path, help="audit CSV from `cropmap audit` (its .json beside it): an audit section "
                                                "with the red list's NDVI profiles"),
                 arg("--data", type=Path, help="--audit: dataset for the NDVI profiles (default: the run's own)"),
                 arg("--areas", type=Path, help="area table from `cropmap areas`"),
                 arg("--uncertainty", type=Path, help="uncertainty raster from `cropmap predict --uncertainty`"),
                 arg("--review", type=Path, help="review page from `cropmap review`, linked from the report"),
                 arg("--out", type=Path, help="HTML file to write (default: RUN/report.html)"),
                 arg("--overwrite", action="store_true", help="replace an existing report"))),
    ]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cropmap", description="Crop-type maps from Sentinel-2 time series and RPG parcels.")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("--version", action="version", version=f"cropmap {__import__('cropmap').__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for c in commands():
        s = sub.add_parser(c.name, help=c.help, description=c.help)
        required = []
        for flags, kwargs in c.args:
            kwargs = dict(kwargs)
            if kwargs.pop("required", False) and c.configs:  # checked after --print-config
                required.append(flags[0])
                kwargs["help"] = f"{kwargs.get('help', '')} (required)"
            s.add_argument(*flags, **kwargs)
        if c.configs:
            names = " and ".join(k.__name__ for k in c.configs)
            s.add_argument("--config", type=Path, metavar="FILE",
                           help=f"YAML file with {names} fields (see --print-config); options given win over it")
            s.add_argument("--print-config", action="store_true",
                           help="print the resolved configuration as a commented YAML file and exit")
            for k in c.configs:
                add_config_options(s, k, ALIASES, EXTRA)
        s.set_defaults(command_spec=c, required_args=tuple(required))
    return p


def run_command(a: argparse.Namespace) -> None:
    """Resolve the command's configs (defaults, then --config, then options), then call it."""
    c: Command = a.command_spec
    if c.check:
        c.check(a)
    if not c.configs:
        c.run(a)
        return
    path = a.config or (c.base(a) if c.base else None)
    values = read_config_file(path) if path is not None else {}
    configs = []
    for k in c.configs:
        own = {f.name for f in dataclasses.fields(k)}
        mine = {n: v for n, v in values.items() if n in own or len(c.configs) == 1}
        configs.append(config_from(k, mine, overrides_from(a, k), str(path or "options")))
    if len(c.configs) > 1:  # a key no config of the command knows
        unknown = sorted(set(values) - {f.name for k in c.configs for f in dataclasses.fields(k)})
        if unknown:
            raise CropmapError(f"{path}: unknown option(s) {', '.join(unknown)} for "
                               f"{' or '.join(k.__name__ for k in c.configs)}")
    if a.print_config:
        from .configfile import config_yaml

        for i, cfg in enumerate(configs):
            head = (f"cropmap {c.name} configuration ({type(cfg).__name__}): use it with --config FILE;\n"
                    "options given on the command line win over the file") if i == 0 else ""
            print(config_yaml(cfg, head), end="")
        return
    missing = [f for f in a.required_args if getattr(a, f.lstrip("-").replace("-", "_")) is None]
    missing += [f"--{n.replace('_', '-')}" for cfg in configs for n in missing_required(cfg)]
    if missing:
        also = " (unless --print-config)" if c.name == "train" else ""
        raise CropmapError(f"{c.name}: {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                           f"required{also}")
    c.run(a, *configs)


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
        run_command(args)
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

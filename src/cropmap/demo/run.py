"""``cropmap demo``: generate the demo scene, then build, train the seed model, the pixel baseline and the
random-forest baseline, evaluate them on the test split and map the scene; print where everything is."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..auditing import audit_parcels
from ..config import BuildConfig, ModelConfig, TrainConfig
from ..dataset.build import build_dataset
from ..errors import CropmapError
from ..evaluation import evaluate_run
from ..prediction import predict_map
from ..prediction.scene import side_path
from ..progress import progress_counter
from ..report import write_report
from ..training import train_model
from .scene import generate_scene

# Sized so that the whole demo runs in a few minutes on two CPU cores.
DEMO_MODEL = ModelConfig(hidden=32, embed_dim=32, unet_base=24, unet_depth=2)
# 900 steps of 4 random 32 px crops. 36 epochs (324 steps) left the networks far from converged: test mIoU
# 0.790 for tempcnn-unet against 0.997 after 150 epochs (seed 0), and the random forest's 0.931 in between;
# 100 epochs keep the demo within ~6 min on 2 cores.
DEMO_TRAIN = TrainConfig(model=DEMO_MODEL, epochs=100, batch_size=4, lr=3e-3, crop=32, val_every=4)
MODELS = ("tempcnn-unet", "tempcnn-pixel", "rf")
STAGES = 3 + len(MODELS)


def run_demo(out: Path | str, *, size: int = 512, seed: int = 0, epochs: int | None = None,
             overwrite: bool = False, console: Console | None = None) -> dict[str, dict]:
    out = Path(out)
    console = console or Console()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CropmapError(f"{out}: already exists and is not empty (pass --overwrite to replace its contents)")
    t0 = time.perf_counter()
    console.print(f"[bold]1/{STAGES}[/] generating the demo scene ({size} x {size} px, seed {seed}) in {out / 'scene'}")
    with progress_counter("writing dates") as report:
        scene = generate_scene(out / "scene", seed=seed, size=size, progress=report)
    console.print(f"      {len(scene.dates)} dates, parcels {scene.parcels}")

    console.print(f"[bold]2/{STAGES}[/] building the dataset")
    ds = build_dataset(scene.imagery, scene.parcels, out / "dataset.zarr", BuildConfig(seed=seed), overwrite=True)
    splits = ", ".join(f"{k} {v}" for k, v in ds.n_patches.items())
    console.print(f"      {sum(ds.n_patches.values())} patches ({splits}), {ds.steps} time steps, "
                  f"{len(ds.classes)} classes: {', '.join(ds.classes)}")

    results: dict[str, dict] = {}
    # --epochs N asks for exactly N epochs (a quick look, or a test): the step floor does not raise it
    cfg = replace(DEMO_TRAIN, seed=seed, epochs=epochs or DEMO_TRAIN.epochs, min_steps=0 if epochs else DEMO_TRAIN.min_steps)
    for i, name in enumerate(MODELS):
        console.print(f"[bold]{3 + i}/{STAGES}[/] training {name}")
        run = out / "runs" / name
        s = train_model(ds.path, run, replace(cfg, model=replace(cfg.model, name=name)), overwrite=True)
        m = evaluate_run(run, ds.path, split="test")
        m["train_seconds"] = s.seconds
        results[name] = m
        console.print(f"      {s.parameters:,} parameters, {s.seconds:.0f} s; test OA {m['overall_accuracy']:.3f}, "
                      f"mIoU {m['miou']:.3f}")

    console.print(f"[bold]{STAGES}/{STAGES}[/] mapping the scene with tempcnn-unet")
    p = predict_map(out / "runs" / "tempcnn-unet", scene.imagery, out / "map.tif", parcels=scene.parcels,
                    parcels_out=out / "parcels_pred.gpkg", confidence_out=side_path(out / "map.tif", "confidence"),
                    overwrite=True)
    audit = audit_parcels(p.parcels_path, out / "audit.csv", overwrite=True)
    report = write_report(out / "runs" / "tempcnn-unet", map_path=p.map_path, overwrite=True)

    table = Table(title="Demo scene, test split (pixels)")
    for col in ("model", "params", "OA", "mIoU", "macro-F1", "kappa", "train s"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for name, m in results.items():
        table.add_row(name, f"{m['parameters']:,}", f"{m['overall_accuracy']:.3f}", f"{m['miou']:.3f}",
                      f"{m['macro_f1']:.3f}", f"{m['kappa']:.3f}", f"{m['train_seconds']:.0f}")
    console.print(table)
    console.print("test mIoU: " + ", ".join(f"{n} {m['miou']:.3f}" for n, m in results.items()))
    console.print("test OA:   " + ", ".join(f"{n} {m['overall_accuracy']:.3f}" for n, m in results.items()))
    console.print(f"side by side, per level: cropmap compare {' '.join(str(out / 'runs' / n) for n in results)}")
    console.print("Outputs:")
    for label, path in (("scene (imagery, parcels)", scene.root), ("dataset", ds.path),
                        ("runs (model.pt, metrics.json, confusion.png, curves.png)", out / "runs"),
                        ("crop map (COG)", p.map_path), ("confidence (COG)", p.confidence_path),
                        ("quick-look", p.quicklook_path), ("parcel predictions", p.parcels_path),
                        (f"audit ({audit.disagreeing} parcels disagree with their declaration)", audit.path),
                        ("report (HTML)", report)):
        console.print(f"  {label}: {path}")
    console.print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return results

"""Label-hierarchy variants of the seed model on the demo scene at crop level, 5 seeds each.

    python benchmarks/hierarchy.py             # 3 variants x 5 seeds, the demo's training settings
    python benchmarks/hierarchy.py --quick     # smoke run: 1 seed, 2 epochs

Variants (``cropmap train`` options):
* ``flat``: one head, crop classes only (no ``--levels``);
* ``top``: crop, group and coarse heads all on the last layer, unweighted summed loss
  (``--levels crop group coarse``, cropmap's earlier hierarchy);
* ``top-weighted``: the same heads on top, losses (and the joint rule's path score) weighted 1, 0.5, 0.1
  (``--level-weights 1 0.5 0.1``): the weights alone;
* ``intermediate``: ms-convSTAR's placement and weights (Turkoglu et al. 2021): the group head on the second
  temporal layer, the coarse head on the first, the crop head on top, weighted 1, 0.5, 0.1
  (``--level-heads intermediate --level-weights 1 0.5 0.1``).
Every variant with levels predicts through the joint-path consistency rule. Training: the demo's settings
(batch 4, 32 px crops, lr 3e-3) for 36 epochs. The scene is the demo's (512 px, seed 0) built at crop
level (``cropmap build --level crop``); each seed trains every
variant with that seed on the same split, scored on the test split at crop, group and coarse level;
paired comparison of each hierarchical variant against ``flat``. Results: benchmarks/results/hierarchy.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from realdata_common import RESULTS, cpu_seconds, paired, paired_line, summarise  # noqa: E402  (beside this script)

VARIANTS = {
    "flat": {},
    "top": {"levels": ("crop", "group", "coarse")},
    "top-weighted": {"levels": ("crop", "group", "coarse"), "level_weights": (1.0, 0.5, 0.1)},
    "intermediate": {"levels": ("crop", "group", "coarse"), "level_heads": "intermediate",
                     "level_weights": (1.0, 0.5, 0.1)},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 2 epochs")
    p.add_argument("--seeds", type=int, default=None, help="seeds (default 5, quick 1)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 36, the demo's until 2026-12-02; quick 2)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--workdir", type=Path, default=None, help="keep the scene, dataset and runs here")
    p.add_argument("--results", type=Path, default=RESULTS, help="folder for hierarchy[.quick].json")
    args = p.parse_args(argv)

    from cropmap.config import BuildConfig
    from cropmap.dataset.build import build_dataset
    from cropmap.demo.run import DEMO_TRAIN
    from cropmap.demo.scene import generate_scene
    from cropmap.evaluation import evaluate_run
    from cropmap.training import train_model

    seeds = args.seeds or (1 if args.quick else 5)
    epochs = args.epochs or (2 if args.quick else 36)
    start = time.perf_counter()
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="cropmap-hierarchy-")
    work = args.workdir or Path(tmp.name)
    scene = generate_scene(work / "scene", seed=0, size=192 if args.quick else 512)
    ds = build_dataset(scene.imagery, scene.parcels, work / "dataset.zarr", BuildConfig(level="crop"), overwrite=True)
    print(f"demo scene at crop level: {sum(ds.n_patches.values())} patches, {len(ds.classes)} classes", flush=True)
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for seed in range(seeds):
        for name, opts in VARIANTS.items():
            cfg = replace(DEMO_TRAIN, seed=seed, epochs=epochs, threads=args.threads, min_steps=0 if args.quick else
                          DEMO_TRAIN.min_steps, **opts)
            run = work / f"run-{name}-{seed}"
            s = train_model(ds.path, run, cfg, overwrite=True)
            m = evaluate_run(run, ds.path, split="test")
            row = {"seed": seed, "train_s": round(s.seconds, 1), "crop_miou": m["miou"], "crop_oa": m["overall_accuracy"],
                   "crop_macro_f1": m["macro_f1"]}
            for lv, lm in m["levels"].items():
                row[f"{lv}_miou"], row[f"{lv}_oa"] = lm["miou"], lm["overall_accuracy"]
            runs[name].append(row)
            print(f"  seed {seed} {name:<12} crop mIoU {row['crop_miou']:.3f} OA {row['crop_oa']:.3f}; group mIoU "
                  f"{row.get('group_miou', float('nan')):.3f}; coarse mIoU {row.get('coarse_miou', float('nan')):.3f} "
                  f"({s.seconds:.0f} s)", flush=True)
    keys = ("crop_miou", "crop_oa", "crop_macro_f1", "group_miou", "coarse_miou")
    out = {"settings": {"quick": args.quick, "seeds": seeds, "epochs": epochs, "variants": {k: {a: list(b) if
           isinstance(b, tuple) else b for a, b in v.items()} for k, v in VARIANTS.items()}},
           "classes": list(ds.classes), "summary": {}}
    print(f"\n{'variant':<13} " + " ".join(f"{k:>15}" for k in keys) + f"   (mean ± sd over {seeds} seed(s))")
    for name in VARIANTS:
        row = summarise(runs[name], keys)
        if name != "flat":
            row["vs_flat"] = {k: paired(runs[name], runs["flat"], k) for k in keys}
        out["summary"][name] = {**row, "runs": runs[name]}
        print(f"{name:<13} " + " ".join(f"{row[k]['mean']:>7.3f} ± {row[k]['std']:.3f}" for k in keys))
    for name in VARIANTS:
        if name != "flat":
            for k in ("crop_miou", "group_miou", "coarse_miou"):
                print("  " + paired_line(f"{name} {k}", "flat", out["summary"][name]["vs_flat"][k]))
    out["wall_s"], out["cpu_s"] = round(time.perf_counter() - start, 1), round(cpu_seconds(), 1)
    print(f"wall time {out['wall_s']:.0f} s, CPU time {out['cpu_s']:.0f} s")
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / ("hierarchy.quick.json" if args.quick else "hierarchy.json")
    path.write_text(json.dumps(out, indent=1))
    print(f"results: {path}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

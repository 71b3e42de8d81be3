"""cropmap's networks on real pixel time series, next to a random forest, 5 seeds each.

    python benchmarks/real_points.py            # README figures (5 spatial folds x 5 seeds; 5 seeds; 60 epochs)
    python benchmarks/real_points.py --quick    # smoke run: 2 folds, 1 seed, tempcnn-pixel, 2 epochs, 20 trees

Two datasets from ../shared/data/realdata (never copied into the project; see each PROVENANCE.txt):

* ``fr-rpg-points/fr2023_dekad.npz``: 500 RPG-labelled points in western France, Sentinel-2 L2A at up to
  51 dekads (Sep 2022 - Jan 2024), about half the observations missing (clouds). Labels are grouped with
  WorldCereal's own ``CROPTYPE_INSEASON_FRANCE`` mapping; groups with fewer than 10 points and points
  outside the mapping (fallow, non-crop grass) are left out. 5-fold cross-validation, stratified and
  grouped by spatial block (``--block-deg`` cells of 0.1 degree, about 11 x 7 km): points of one block are
  all in the same fold, so neighbouring fields of one farm or one soil cannot sit on both sides of a
  fold (each point as its own group, the earlier protocol, was plain stratified CV).
* ``formosat2-tempcnn``: the FORMOSAT-2 pixels of the TempCNN paper's example (13 classes, 260 train /
  260 test pixels from disjoint polygons, 149 gap-filled dates); its own train/test split.

Protocol: every (fold, seed) trains each network with that seed and fits the random forest with that
seed, on the same training part, scored on the same test part; results are mean ± sd over those runs
and a paired comparison of each network against the forest (mean and sd of the per-run difference,
wins / losses, Wilcoxon signed-rank p-value). The networks are the registry's, with cropmap's default
model configuration, fed as 1 x 1 images ``[N, C, T, 1, 1]`` (so tempcnn-unet's U-Net and U-TAE's
spatial encoder see one pixel: on point data they are temporal models with extra layers). All models
see the same inputs: per-band standardised series (statistics from the training part), missing
dekads filled by linear interpolation in time; the random forest (500 trees) gets them flattened to
``C x T`` features. Results go to benchmarks/results/real_points.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np

from realdata_common import REAL, RESULTS, cpu_seconds, paired, paired_line, summarise  # noqa: E402  (beside this script)

RPG_BANDS = ("B02", "B03", "B04", "B08")  # the four 10 m bands cropmap's pipeline uses
MIN_POINTS = 10  # smallest class kept: 5 folds need at least 2 points per class per fold to mean anything
NETWORKS = ("tempcnn-pixel", "tempcnn-unet", "utae")


def gap_fill(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``[N, T, C]`` with ``valid [N, T, C]`` -> linear interpolation in time (ends held flat).

    A series with no valid step at all gets NaN here; callers replace it with the training mean.
    """
    out = np.full(x.shape, np.nan, dtype=np.float32)
    t = np.arange(x.shape[1])
    for i in range(x.shape[0]):
        for c in range(x.shape[2]):
            ok = valid[i, :, c]
            if ok.any():
                out[i, :, c] = np.interp(t, t[ok], x[i, ok, c])
    return out


def load_rpg_points(folder: Path) -> dict:
    """fr2023 dekads -> gap-filled reflectance ``[N, T, 4]``, day of year ``[T]``, labels, groups."""
    d = np.load(folder / "fr2023_dekad.npz")
    groups_map = json.loads((folder / "ewoc_class_mappings.json").read_text())["CROPTYPE_INSEASON_FRANCE"]
    label = np.array([groups_map.get(str(c), "") for c in d["ewoc_code"]])
    names, counts = np.unique(label[label != ""], return_counts=True)
    keep_names = sorted(n for n, k in zip(names, counts) if k >= MIN_POINTS)
    keep = np.isin(label, keep_names)
    bands = [list(d["bands"]).index(b) for b in RPG_BANDS]
    raw = d["X_NTC"][keep][:, :, bands]  # [N, T, 4] uint16, 65535 = missing
    x = gap_fill(raw.astype(np.float32) / 10000.0, raw != 65535)
    # the dekad starts are labelled; the composite is centred 5 days later
    doy = np.array([(dt.date.fromisoformat(s) + dt.timedelta(days=5)).timetuple().tm_yday for s in d["dates"]])
    y = np.array([keep_names.index(n) for n in label[keep]])
    # the last day of each dekad: a step may be used at a cut-off on or after it
    ends = [dt.date.fromisoformat(s) + dt.timedelta(days=9) for s in d["dates"]]
    return {"x": x, "doy": doy, "y": y, "names": keep_names, "lat": d["lat"][keep], "lon": d["lon"][keep], "ends": ends,
            "dropped": int((~keep).sum()), "valid_fraction": float((raw != 65535).mean())}


def spatial_blocks(lat: np.ndarray, lon: np.ndarray, deg: float) -> np.ndarray:
    """``[N]`` id of the ``deg`` x ``deg`` degree cell each point falls in (the CV groups)."""
    cells = np.stack([np.floor(lat / deg), np.floor(lon / deg)], axis=1).astype(np.int64)
    return np.unique(cells, axis=0, return_inverse=True)[1].ravel()


def load_formosat2(folder: Path) -> dict:
    """Train and test pixels ``[N, 149, 3]`` (NIR, R, G) with labels; day of year is positional (see below)."""
    tr, te = np.load(folder / "train.npz"), np.load(folder / "test.npz")
    names = [line.split(",")[1].strip() for line in (folder / "class_map.txt").read_text().splitlines()[1:] if line.strip()]
    t = tr["X_NTC"].shape[1]
    # the example ships no dates (149 gap-filled steps of the 2006 season): spread them evenly over one
    # year, so the day-of-year features act as a positional code shared by every pixel
    doy = np.round(np.arange(t) * 365.0 / t).astype(int) + 1
    return {"x_train": tr["X_NTC"], "y_train": tr["y"], "x_test": te["X_NTC"], "y_test": te["y"], "doy": doy,
            "names": names, "polygons_shared": len(set(tr["polygon_id"]) & set(te["polygon_id"]))}


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Per-band mean/std over the training series ``[N, T, C]``; NaN (no valid step) -> band mean (0).
    The last item is ``mean / std [C]`` (what a gain on reflectance adds to standardised values)."""
    mean = np.nanmean(train, axis=(0, 1))
    std = np.nanstd(train, axis=(0, 1)) + 1e-6
    return [np.nan_to_num((a - mean) / std, nan=0.0).astype(np.float32) for a in (train, *others)] + \
        [(mean / std).astype(np.float32)]


def train_network(name: str, x: np.ndarray, y: np.ndarray, doy: np.ndarray, num_classes: int, *, epochs: int,
                  seed: int, batch_size: int = 32, lr: float = 2e-3, date_dropout: float = 0.0,
                  band_jitter: float = 0.0, mean_over_std: np.ndarray | None = None, cutoff: float = 0.0):
    """Train the registry's ``name`` (cropmap's default ModelConfig, dropout 0.2) on series ``[N, T, C]`` fed
    as 1 x 1 images ``[N, C, T, 1, 1]``. ``date_dropout`` and ``band_jitter`` are ``cropmap train``'s
    augmentations (a dropped date: value 0 and mask False; a per-band gain N(1, jitter) on reflectance,
    which on standardised values ``x`` is ``x g + (g - 1) mean / std``, hence ``mean_over_std [C]``);
    ``cutoff`` is ``cropmap train --cutoff``: that share of the series is cut at a random step, the rest masked."""
    import torch
    import torch.nn.functional as F

    from cropmap.config import ModelConfig
    from cropmap.models import build_model

    torch.manual_seed(seed)
    model = build_model(name, in_channels=x.shape[2], num_classes=num_classes,
                        **ModelConfig(name=name, dropout=0.2).kwargs())
    xt = torch.from_numpy(x).permute(0, 2, 1)[..., None, None].contiguous()  # [N, C, T, 1, 1]
    yt = torch.from_numpy(y).long()[:, None, None]  # [N, 1, 1]
    doy_t = torch.as_tensor(doy, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * -(-len(x) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            if len(idx) < 2:  # batch norm needs two samples
                continue
            xb, mask = xt[idx], None
            if band_jitter > 0:
                g = (1 + band_jitter * torch.randn(len(idx), xb.shape[1], 1, 1, 1, generator=gen)).clamp(0.5, 1.5)
                xb = xb * g + (g - 1) * torch.as_tensor(mean_over_std, dtype=torch.float32).view(1, -1, 1, 1, 1)
            if date_dropout > 0:
                mask = torch.rand(len(idx), xb.shape[2], generator=gen) >= date_dropout
                mask[mask.sum(1) == 0, 0] = True  # keep a date
                xb = xb * mask[:, None, :, None, None]
            if cutoff > 0:
                t = xb.shape[2]
                cut = torch.rand(len(idx), generator=gen) < cutoff
                last = torch.randint(0, t, (len(idx),), generator=gen)
                tail = cut[:, None] & (torch.arange(t)[None] > last[:, None])
                mask = (~tail) if mask is None else (mask & ~tail)
                mask[mask.sum(1) == 0, 0] = True
                xb = xb * mask[:, None, :, None, None]
            logits = model(xb, doy_t.expand(len(idx), -1), mask)  # [B, K, 1, 1]
            loss = F.cross_entropy(logits, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model


def predict_network(model, x: np.ndarray, doy: np.ndarray, kept: np.ndarray | None = None) -> np.ndarray:
    """``[N, K]`` class probabilities of a trained network on series ``[N, T, C]``; ``kept [T]`` (a cut-off):
    the other steps are masked and zeroed, as ``cropmap evaluate --until`` does."""
    import torch

    xt = torch.from_numpy(x).permute(0, 2, 1)[..., None, None].contiguous()
    mask = None
    if kept is not None and not kept.all():
        mask = torch.as_tensor(kept)[None].expand(len(x), -1)
        xt = xt * mask[:, None, :, None, None]
    with torch.no_grad():
        logits = model(xt, torch.as_tensor(doy, dtype=torch.float32).expand(len(x), -1), mask)
    return torch.softmax(logits[:, :, 0, 0], 1).numpy()


def random_forest(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, *, trees: int, seed: int) -> np.ndarray:
    from sklearn.ensemble import RandomForestClassifier

    rf = RandomForestClassifier(n_estimators=trees, n_jobs=2, random_state=seed)
    rf.fit(x_train.reshape(len(x_train), -1), y_train)
    return rf.predict(x_test.reshape(len(x_test), -1))


def scores(y: np.ndarray, pred: np.ndarray, names: list[str]) -> dict:
    from cropmap.metrics import confusion_matrix, metrics_from_confusion

    m = metrics_from_confusion(confusion_matrix(y, pred, len(names)), names)
    return {"oa": m["overall_accuracy"], "macro_f1": m["macro_f1"],
            "per_class_f1": {c["class"]: c["f1"] for c in m["per_class"]}}


def fit_all(args: argparse.Namespace, xtr, ytr, xte, yte, doy, names, seed: int,
            mean_over_std: np.ndarray, ends: list | None = None) -> dict[str, dict]:
    """Every network and the random forest on one train/test part with one seed: name -> scores (with
    ``--timeliness`` and step end dates ``ends``, the networks' scores at monthly cut-offs too)."""
    out = {}
    for name in args.models:
        prob = 0
        for member in range(args.ensemble):  # a small ensemble: the members' probabilities averaged
            model = train_network(name, xtr, ytr, doy, len(names), epochs=args.epochs,
                                  seed=seed if member == 0 else seed * 1000 + member,
                                  date_dropout=args.date_dropout, band_jitter=args.band_jitter,
                                  mean_over_std=mean_over_std, cutoff=args.cutoff)
            prob = prob + predict_network(model, xte, doy)
        out[name] = scores(yte, np.asarray(prob).argmax(1), names)
        if args.timeliness and ends is not None:  # the last member's model at each month's end
            from cropmap.monitoring.timeliness import monthly_cutoffs

            rows = []
            for cut in monthly_cutoffs(ends[0], ends[-1]):
                kept = np.array([e <= cut for e in ends])
                if kept.any():
                    rows.append({"cutoff": cut.isoformat(),
                                 **scores(yte, predict_network(model, xte, doy, kept).argmax(1), names)})
            out[name]["timeliness"] = rows
    out["random-forest"] = scores(yte, random_forest(xtr, ytr, xte, trees=args.trees, seed=seed), names)
    return out


def report(runs: dict[str, list[dict]], models: list[str], keys: tuple[str, ...] = ("oa", "macro_f1")) -> dict:
    """Per model: mean ± sd over the runs and every run; per network: the paired comparison with the forest."""
    out = {m: {**summarise(r, keys), "runs": r} for m, r in runs.items()}
    for m in models:
        out[m]["vs_random_forest"] = {k: paired(runs[m], runs["random-forest"], k) for k in keys}
        for k in keys:
            print("  " + paired_line(f"{m} {k}", "random forest", out[m]["vs_random_forest"][k]), flush=True)
    return out


def run_rpg_points(args: argparse.Namespace) -> dict:
    from sklearn.model_selection import StratifiedGroupKFold

    data = load_rpg_points(REAL / "fr-rpg-points")
    x, y, names = data["x"], data["y"], data["names"]
    groups = spatial_blocks(data["lat"], data["lon"], args.block_deg)
    print(f"fr-rpg-points: {len(y)} points x {x.shape[1]} dekads x {x.shape[2]} bands, {len(names)} classes "
          f"({data['dropped']} points outside them left out), valid observations {data['valid_fraction']:.0%}; "
          f"{groups.max() + 1} spatial blocks of {args.block_deg} degree", flush=True)
    folds = StratifiedGroupKFold(n_splits=args.folds, shuffle=True, random_state=0)
    runs: dict[str, list[dict]] = {m: [] for m in [*args.models, "random-forest"]}
    for k, (tr, te) in enumerate(folds.split(x, y, groups=groups)):
        assert not set(groups[tr]) & set(groups[te])
        xtr, xte, ratio = standardise(x[tr], x[te])
        for seed in range(args.seeds):
            for m, r in fit_all(args, xtr, y[tr], xte, y[te], data["doy"], names, seed, ratio,
                                data["ends"]).items():
                runs[m].append({**r, "fold": k, "seed": seed})
            print(f"  fold {k} seed {seed}: {len(tr)} train / {len(te)} test points; OA / macro-F1 " + ", ".join(
                f"{m} {runs[m][-1]['oa']:.3f} / {runs[m][-1]['macro_f1']:.3f}" for m in runs), flush=True)
    return {"protocol": f"{args.folds}-fold StratifiedGroupKFold by {args.block_deg}-degree spatial block x "
                        f"{args.seeds} seed(s)",
            "classes": names, "n_points": len(y), "n_blocks": int(groups.max() + 1),
            "class_counts": np.bincount(y).tolist(), **report(runs, args.models)}


def run_formosat2(args: argparse.Namespace) -> dict:
    data = load_formosat2(REAL / "formosat2-tempcnn")
    names = data["names"]
    print(f"formosat2-tempcnn: {len(data['y_train'])} train / {len(data['y_test'])} test pixels x "
          f"{data['x_train'].shape[1]} dates x {data['x_train'].shape[2]} bands, {len(names)} classes, "
          f"polygons in both splits: {data['polygons_shared']}", flush=True)
    xtr, xte, ratio = standardise(data["x_train"], data["x_test"])
    runs: dict[str, list[dict]] = {m: [] for m in [*args.models, "random-forest"]}
    for seed in range(args.seeds):
        for m, r in fit_all(args, xtr, data["y_train"], xte, data["y_test"], data["doy"], names, seed, ratio).items():
            runs[m].append({**r, "seed": seed})
        print(f"  seed {seed}: OA / macro-F1 " + ", ".join(
            f"{m} {runs[m][-1]['oa']:.3f} / {runs[m][-1]['macro_f1']:.3f}" for m in runs), flush=True)
    return {"protocol": f"own train/test split, {args.seeds} seed(s)", "classes": names,
            **report(runs, args.models)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 2 folds, 1 seed, tempcnn-pixel, 2 epochs, 20 trees")
    p.add_argument("--epochs", type=int, default=None, help="network epochs (default 60, quick 2)")
    p.add_argument("--trees", type=int, default=None, help="random-forest trees (default 500, quick 20)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per fold (default 5, quick 1)")
    p.add_argument("--models", nargs="+", default=None, help=f"networks (default {' '.join(NETWORKS)})")
    p.add_argument("--date-dropout", type=float, default=0.0, help="networks: date dropout (cropmap train's)")
    p.add_argument("--band-jitter", type=float, default=0.0, help="networks: per-band gain jitter (cropmap train's)")
    p.add_argument("--cutoff", type=float, default=0.0, help="networks: in-season training (cropmap train --cutoff)")
    p.add_argument("--timeliness", action="store_true",
                   help="fr-rpg-points: the networks' scores at monthly cut-offs too (cropmap evaluate --timeliness)")
    p.add_argument("--ensemble", type=int, default=1, help="networks: members per run, probabilities averaged")
    p.add_argument("--tag", default="", help="suffix of the results file (a recipe trial), e.g. --tag=-aug")
    p.add_argument("--block-deg", type=float, default=0.1, help="fr-rpg-points: spatial block size in degrees")
    p.add_argument("--results", type=Path, default=RESULTS, help="folder for real_points[.quick].json")
    # 1 thread: the models are tiny, and on a shared machine a second OpenMP thread mostly spin-waits
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--dataset", choices=("all", "fr-rpg-points", "formosat2-tempcnn"), default="all",
                   help="one dataset only (to run the two in parallel); results go to real_points-<dataset>.json")
    args = p.parse_args(argv)
    if not REAL.is_dir():
        print(f"real_points: skipped, no real data at {REAL} (set CROPMAP_SHARED)")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    args.folds = 2 if args.quick else 5
    args.seeds = args.seeds or (1 if args.quick else 5)
    args.models = args.models or (["tempcnn-pixel"] if args.quick else list(NETWORKS))
    args.epochs = args.epochs or (2 if args.quick else 60)
    args.trees = args.trees or (20 if args.quick else 500)
    start = time.perf_counter()
    out = {"settings": {"quick": args.quick, "epochs": args.epochs, "trees": args.trees, "folds": args.folds,
                        "seeds": args.seeds, "models": args.models, "block_deg": args.block_deg,
                        "date_dropout": args.date_dropout, "band_jitter": args.band_jitter, "ensemble": args.ensemble,
                        "threads": args.threads}}
    runners = {"fr-rpg-points": run_rpg_points, "formosat2-tempcnn": run_formosat2}
    datasets = list(runners) if args.dataset == "all" else [args.dataset]
    for ds in datasets:
        out[ds] = runners[ds](args)
    out["wall_s"] = round(time.perf_counter() - start, 1)

    print(f"\n{'dataset':<20} {'model':<15} {'OA':>15} {'macro-F1':>15}   (mean ± sd over runs)")
    for ds in datasets:
        for m in [*args.models, "random-forest"]:
            r = out[ds][m]
            print(f"{ds:<20} {m:<15} {r['oa']['mean']:.3f} ± {r['oa']['std']:.3f}   "
                  f"{r['macro_f1']['mean']:.3f} ± {r['macro_f1']['std']:.3f}")
    out["cpu_s"] = round(cpu_seconds(), 1)
    # on a shared machine wall time is inflated; CPU time (this process and its children) is not
    print(f"wall time {out['wall_s']:.0f} s, CPU time {out['cpu_s']:.0f} s")
    args.results.mkdir(parents=True, exist_ok=True)
    stem = ("real_points" if args.dataset == "all" else f"real_points-{args.dataset}") + args.tag
    path = args.results / (f"{stem}.quick.json" if args.quick else f"{stem}.json")
    path.write_text(json.dumps(out, indent=1))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

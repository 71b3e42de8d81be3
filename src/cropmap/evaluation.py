"""``cropmap evaluate``: a trained run on one split of a dataset -> metrics.json and confusion PNGs.

Pixel metrics at the dataset's level and at every coarser level of the hierarchy (crop -> group -> coarse),
parcel metrics (majority vote of each parcel's pixels) at each level, and, for a model with one head per
level, each head's own metrics.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from .atomic import atomic_path
from .checkpoint import Checkpoint, load_checkpoint
from .data.patches import PatchDataset
from .dataset.store import DatasetInfo, dataset_info
from .errors import CropmapError
from .hierarchy import HierarchicalModel
from .monitoring.calibration import Reliability
from .metrics import (
    ParcelVotes,
    coarser_confusion,
    confusion_matrix,
    metrics_from_confusion,
)
from .nomenclature import coarser_levels

SUMMARY_KEYS = ("overall_accuracy", "miou", "macro_f1", "kappa")


def check_compatible(ckpt: Checkpoint, info: DatasetInfo, run: Path | str) -> None:
    if ckpt.class_table.names != info.class_table.names:
        raise CropmapError(f"{run}: the model's classes differ from the dataset's {info.path} "
                           f"({len(ckpt.class_table.names)} vs {len(info.class_table.names)} classes)")
    if ckpt.bands != info.bands:
        raise CropmapError(f"{run}: the model's bands {ckpt.bands} differ from the dataset's {info.bands}")


METRICS_NAME = "metrics.json"
METRICS_KEYS = ("overall_accuracy", "miou", "macro_f1", "kappa", "per_class")  # what report and compare read


def read_metrics(run: Path | str) -> dict | None:
    """The run's ``metrics.json`` (written by :func:`evaluate_run`); None when the run has none yet, a
    one-line error naming the file when it is unreadable or not a cropmap metrics file."""
    path = Path(run) / METRICS_NAME
    if not path.exists():
        return None
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CropmapError(f"{path}: not a readable metrics file ({type(e).__name__}: {e})") from None
    missing = [k for k in METRICS_KEYS if not isinstance(m, dict) or k not in m]
    if missing:
        raise CropmapError(f"{path}: not a cropmap metrics file (missing {', '.join(missing)})")
    return m


def evaluate_run(run: Path | str, data: Path | str, *, split: str = "test", out: Path | str | None = None,
                 batch_size: int = 8, until: str | None = None, timeliness: bool = False) -> dict:
    """Metrics of the run's model on ``split``; writes ``metrics.json``, ``confusion.png`` (the dataset's
    level) and ``confusion_<level>.png`` (each coarser level) to ``out`` (default: the run directory).

    The returned dict (= metrics.json) has the dataset level's pixel metrics at the top (see
    ``metrics_from_confusion``) plus ``level``, ``parcels`` (the same metrics over parcels), ``levels``
    (``{level: {pixel metrics..., parcels: {...}}}`` for each coarser level) and, for a hierarchical
    model, ``heads`` (``{level: pixel metrics}`` of each head's own argmax, before the consistency rule).

    ``until`` (YYYY-MM-DD) scores the model in season: the composite steps that end after that date are
    masked (``until`` in metrics.json). ``timeliness`` also writes ``timeliness.csv`` and ``timeliness.png``
    (see :func:`timeliness_table`).
    """
    from .monitoring.folds import read_fold_index

    index = read_fold_index(run)
    if index is not None:
        if timeliness:
            raise CropmapError(f"{run}: --timeliness scores one model; give a fold: --run {Path(run) / 'fold_0'}")
        metrics = score_out_of_fold(index, data, batch_size=batch_size, until=until)
        ckpt = load_checkpoint(index.path / index.runs[0])
        split = metrics["split"]
    else:
        metrics = score_split(run, data, split=split, batch_size=batch_size, until=until)
        ckpt = load_checkpoint(run)
    table = ckpt.class_table
    levels = coarser_levels(table)
    out_dir = Path(out) if out is not None else (Path(run) if Path(run).is_dir() else Path(run).parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / METRICS_NAME) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
    for level, (names, _) in levels.items():
        lm = metrics if level == table.level else metrics["levels"][level]
        png = out_dir / ("confusion.png" if level == table.level else f"confusion_{level}.png")
        plot_confusion(np.asarray(lm["confusion_matrix"]), names, png,
                       title=f"{ckpt.model_name} on {split}, {level} level: OA {lm['overall_accuracy']:.3f}, "
                             f"mIoU {lm['miou']:.3f}")
    if timeliness:
        from .monitoring.timeliness import write_timeliness

        write_timeliness(run, data, out_dir, split=split, batch_size=batch_size)
    return metrics


def score_out_of_fold(index, data: Path | str, *, batch_size: int = 8, until: str | None = None) -> dict:
    """A fold run's cross-validated metrics: each fold model scored on the fold it never saw, the
    confusion matrices (pixels, parcels, every level) and reliability bins summed over the folds."""
    from .metrics import metrics_from_confusion as from_cm
    from .monitoring.folds import plan_folds

    if Path(index.dataset).resolve() != Path(data).resolve():
        raise CropmapError(f"{index.path}: trained on {index.dataset}, not {data}: out-of-fold scores "
                           "need the folds' own dataset")
    plan = plan_folds(data, index.folds, index.seed)
    parts = [score_split(index.path / r, data, split=plan.roles(i)["test"], batch_size=batch_size, until=until)
             for i, r in enumerate(index.runs)]
    first = parts[0]
    names = first["class_names"]

    def pooled(get, labels):
        return from_cm(np.sum([np.asarray(get(m)["confusion_matrix"]) for m in parts], axis=0), labels)

    metrics = pooled(lambda m: m, names)
    metrics.update({k: first[k] for k in ("model", "dataset", "parameters", "level", "until")},
                   run=str(index.path), split=f"out of fold ({len(parts)} folds)",
                   folds=[{"fold": i, "overall_accuracy": m["overall_accuracy"], "miou": m["miou"],
                           "macro_f1": m["macro_f1"], "pixels": m["pixels"]} for i, m in enumerate(parts)])
    metrics["parcels"] = pooled(lambda m: m["parcels"], names)
    metrics["parcels"]["parcels"] = metrics["parcels"].pop("pixels")
    metrics["levels"] = {}
    for level, lm in first["levels"].items():
        metrics["levels"][level] = pooled(lambda m: m["levels"][level], lm["class_names"])
        metrics["levels"][level]["parcels"] = pooled(lambda m: m["levels"][level]["parcels"], lm["class_names"])
        metrics["levels"][level]["parcels"]["parcels"] = metrics["levels"][level]["parcels"].pop("pixels")
    before, after = (Reliability.pooled([m["calibration"][key] for m in parts]).result()
                     for key in ("reliability_before", "reliability_after"))
    metrics["calibration"] = {"temperature": None, "ece_before": before["ece"], "ece_after": after["ece"],
                              "fitted_on": "each fold's val fold", "reliability_before": before["bins"],
                              "reliability_after": after["bins"]}
    return metrics


def score_split(run: Path | str, data: Path | str, *, split="test", batch_size: int = 8,
                until: str | None = None) -> dict:
    """The metrics of :func:`evaluate_run`, written nowhere; ``split`` a split name or a
    :class:`~cropmap.data.patches.PatchSelection`."""
    from .monitoring.folds import FOLDS_NAME
    from .sources.imagery import parse_date

    if (Path(run) / FOLDS_NAME).exists():
        raise CropmapError(f"{run}: a fold run (--folds): score it with evaluate_run (out of fold)")
    ckpt = load_checkpoint(run)
    info = dataset_info(data)
    check_compatible(ckpt, info, run)
    ds = PatchDataset(data, split)
    if len(ds) == 0:
        raise CropmapError(f"{data}: no patch in split {getattr(split, 'name', split)!r}")
    model = ckpt.build()
    table = ckpt.class_table
    k = table.num_classes
    hierarchy = model.hierarchy if isinstance(model, HierarchicalModel) else None  # one head per level
    cm = np.zeros((k, k), dtype=np.int64)
    head_cms = {lv: np.zeros((n, n), np.int64) for lv, n in zip(hierarchy.levels, hierarchy.sizes)} if hierarchy else {}
    votes = ParcelVotes(int(ds.parcel.max(initial=0)), k)
    cutoff = parse_date(until)
    kept = None
    if cutoff is not None:  # whole steps ending by the cut-off: no acquisition after it reaches the model
        grid = ckpt.time_grid
        ends = [grid.start + datetime.timedelta(days=(t + 1) * grid.period_days - 1) for t in range(grid.steps)]
        kept = torch.tensor([e <= cutoff for e in ends])
        if not kept.any():
            raise CropmapError(f"--until {cutoff}: before the end of the first composite step "
                               f"({ends[0]}); nothing to score")
    temperature = ckpt.temperature
    raw_rel, cal_rel = Reliability(), Reliability()  # the model's softmax, and after temperature scaling
    start = 0
    with torch.inference_mode():
        # unshuffled and unaugmented, so batch i holds patches start..start+B of ds.parcel
        for batch in DataLoader(ds, batch_size=batch_size):
            if kept is not None:
                batch["mask"] = batch["mask"] & kept
                batch["x"][:, :, ~kept] = 0  # as training masks a dropped step
            y = batch["y"].numpy()
            if hierarchy is not None:
                raw = model.forward_levels(batch["x"], batch["doy"], batch["mask"])
                logits = hierarchy.consistent(list(raw.values()), all_levels=False)[0]
                for (lv, head), y_lv in zip(raw.items(), hierarchy.labels(batch["y"])):
                    head_cms[lv] += confusion_matrix(y_lv.numpy(), head.argmax(1).numpy(), len(head_cms[lv]))
            else:
                logits = model(batch["x"], batch["doy"], batch["mask"])
            pred = logits.argmax(1).numpy()
            labelled = batch["y"] >= 0
            z = logits.permute(0, 2, 3, 1)[labelled].float()  # [N, K] at the labelled pixels
            raw_rel.add(torch.softmax(z, 1).numpy(), batch["y"][labelled].numpy())
            cal_rel.add(torch.softmax(z / temperature, 1).numpy(), batch["y"][labelled].numpy())
            cm += confusion_matrix(y, pred, k)
            votes.add(ds.parcel[start : start + len(y)], y, pred)
            start += len(y)

    levels = coarser_levels(table)
    metrics = metrics_from_confusion(cm, table.names)
    metrics.update(model=ckpt.model_name, split=getattr(split, "name", split), dataset=str(data), run=str(run),
                   parameters=int(ckpt.extra.get("parameters", 0)), level=table.level,
                   until=None if cutoff is None else cutoff.isoformat())
    metrics["parcels"] = _parcel_metrics(votes, None, table.names)
    before, after = raw_rel.result(), cal_rel.result()
    metrics["calibration"] = {"temperature": temperature, "ece_before": before["ece"], "ece_after": after["ece"],
                              "fitted_on": ckpt.extra.get("calibration", {}).get("split"),
                              "reliability_before": before["bins"], "reliability_after": after["bins"]}
    metrics["levels"] = {}
    for level, (names, m) in levels.items():
        if level == table.level:
            continue
        lm = metrics_from_confusion(coarser_confusion(cm, m), names)
        lm["parcels"] = _parcel_metrics(votes, m, names)
        metrics["levels"][level] = lm
    if hierarchy is not None:
        metrics["heads"] = {lv: metrics_from_confusion(c, names) for (lv, c), names in zip(head_cms.items(), hierarchy.names)}

    return metrics


def _parcel_metrics(votes: ParcelVotes, parent: np.ndarray | None, names: tuple[str, ...] | list[str]) -> dict:
    m = metrics_from_confusion(votes.confusion(parent), names)
    m["parcels"] = m.pop("pixels")  # the count is of parcels here
    return m


def level_rows(metrics: dict) -> list[tuple[str, dict]]:
    """``(level, metrics)`` for the dataset's level then each coarser one, from a metrics.json dict."""
    rows = [(str(metrics.get("level", "")), metrics)]
    return rows + list(metrics.get("levels", {}).items())


def summary_lines(metrics: dict) -> list[str]:
    """One line per level (pixels and parcels), then one per head of a hierarchical model."""
    lines = []
    for level, m in level_rows(metrics):
        p = m.get("parcels", {})
        lines.append(f"{metrics['model']} on {metrics['split']}, {level or 'own'} level: OA {m['overall_accuracy']:.3f}  "
                     f"mIoU {m['miou']:.3f}  macro-F1 {m['macro_f1']:.3f}  kappa {m['kappa']:.3f}  "
                     f"({m['pixels']:,} px)"
                     + (f" | parcels: OA {p['overall_accuracy']:.3f}  mIoU {p['miou']:.3f}  macro-F1 "
                        f"{p['macro_f1']:.3f} ({p['parcels']:,} parcels)" if p else ""))
    for level, m in metrics.get("heads", {}).items():
        lines.append(f"  {level} head alone: OA {m['overall_accuracy']:.3f}  mIoU {m['miou']:.3f}  "
                     f"macro-F1 {m['macro_f1']:.3f}  kappa {m['kappa']:.3f}")
    c = metrics.get("calibration")
    if c:
        t = "per fold" if c["temperature"] is None else f"{c['temperature']:.3f}"
        lines.append(f"calibration: temperature {t} (fitted on {c['fitted_on'] or 'no'} pixels): "
                     f"ECE {c['ece_before']:.3f} -> {c['ece_after']:.3f} on {metrics['split']}")
    return lines


def per_class_table(metrics: dict):
    """A rich Table of the dataset level's classes, rarest first, so rare crops are not lost at the bottom."""
    from rich.table import Table

    parcel_f1 = {c["class"]: c["f1"] for c in metrics.get("parcels", {}).get("per_class", [])}
    t = Table(title=f"per class, {metrics.get('level', '')} level ({metrics['split']} split)")
    for col in ("class", "pixels", "precision", "recall", "F1", "IoU", "parcel F1"):
        t.add_column(col, justify="left" if col == "class" else "right")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    for c in sorted(metrics["per_class"], key=lambda c: c["support"]):
        t.add_row(c["class"], f"{c['support']:,}", fmt(c["precision"]), fmt(c["recall"]), fmt(c["f1"]),
                  fmt(c["iou"]), fmt(parcel_f1.get(c["class"])))
    return t


def plot_confusion(cm: np.ndarray, names: tuple[str, ...] | list[str], png: Path, title: str = "") -> None:
    """Row-normalised confusion matrix (recall on the diagonal), with counts' share in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    n = len(names)
    fig, ax = plt.subplots(figsize=(2.5 + 0.55 * n, 2 + 0.5 * n))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted"), ax.set_ylabel("reference")
    for i in range(n):
        for j in range(n):
            if norm[i, j] >= 0.005:
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)

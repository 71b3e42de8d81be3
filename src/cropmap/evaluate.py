"""``cropmap evaluate``: a trained run on one split of a dataset -> metrics.json and confusion.png."""

from __future__ import annotations

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
from .metrics import confusion_matrix, metrics_from_confusion


def check_compatible(ckpt: Checkpoint, info: DatasetInfo, run: Path | str) -> None:
    if ckpt.class_table.names != info.class_table.names:
        raise CropmapError(f"{run}: the model's classes differ from the dataset's {info.path} "
                           f"({len(ckpt.class_table.names)} vs {len(info.class_table.names)} classes)")
    if ckpt.bands != info.bands:
        raise CropmapError(f"{run}: the model's bands {ckpt.bands} differ from the dataset's {info.bands}")


def evaluate_run(run: Path | str, data: Path | str, *, split: str = "test", out: Path | str | None = None,
                 batch_size: int = 8) -> dict:
    """Pixel metrics of the run's model on ``split``; writes ``metrics.json`` and ``confusion.png`` to ``out``
    (default: the run directory) and returns the metrics."""
    ckpt = load_checkpoint(run)
    info = dataset_info(data)
    check_compatible(ckpt, info, run)
    ds = PatchDataset(data, split)
    if len(ds) == 0:
        raise CropmapError(f"{data}: no patch in split {split!r}")
    model = ckpt.build()
    k = ckpt.class_table.num_classes
    cm = np.zeros((k, k), dtype=np.int64)
    with torch.inference_mode():
        for batch in DataLoader(ds, batch_size=batch_size):
            pred = model(batch["x"], batch["doy"], batch["mask"]).argmax(1)
            cm += confusion_matrix(batch["y"].numpy(), pred.numpy(), k)
    metrics = metrics_from_confusion(cm, ckpt.class_table.names)
    metrics.update(model=ckpt.model_name, split=split, dataset=str(data), run=str(run),
                   parameters=int(ckpt.extra.get("parameters", 0)))
    out_dir = Path(out) if out is not None else (Path(run) if Path(run).is_dir() else Path(run).parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
    plot_confusion(cm, ckpt.class_table.names, out_dir / "confusion.png",
                   title=f"{ckpt.model_name} on {split}: OA {metrics['overall_accuracy']:.3f}, mIoU {metrics['miou']:.3f}")
    return metrics


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

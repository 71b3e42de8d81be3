"""``cropmap train --model rf``: the classical baseline, a random forest on per-pixel features.

Why a random forest (and not gradient boosting): it is what paying agencies and the literature compare
deep crop mappers against (sits, the TempCNN paper, cropmap's own real-data figures), it needs no tuning
to be a fair baseline, and its fitted trees are plain arrays (split feature, threshold, children, leaf
class shares) that a cropmap checkpoint stores as tensors (:mod:`cropmap.models.forest`): the checkpoint
loads with ``torch.load(weights_only=True)`` like every other, so no pickle (and no code) from a file
is ever run, and prediction needs torch only. scikit-learn's ``HistGradientBoosting`` would need its
binning and its raw-score link re-implemented to be stored that way, for a baseline that gains little
on these features.

Features: each labelled train pixel's standardised series, flattened band-major (``C·T`` values), the
same values the networks see (:class:`cropmap.data.patches.PatchDataset`). At most
``forest.max_pixels`` pixels are used: classes larger than a common quota are subsampled to it, smaller
ones kept whole, so a département fits in memory and rare classes keep every pixel. The run folder
holds what a network's holds: ``model.pt``, ``config.yaml``, ``classes.json``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .atomic import atomic_path
from .checkpoint import CHECKPOINT_NAME, Checkpoint, save_checkpoint
from .config import TrainConfig
from .configfile import config_yaml
from .data.patches import PatchSelection, normalise, select_patches, selected_labels
from .dataset.store import dataset_info, open_dataset
from .errors import CropmapError
from .losses import label_counts
from .metrics import confusion_matrix, metrics_from_confusion
from .hierarchy import build_network
from .models.forest import LOG_FLOOR, forest_tensors
from .monitoring.calibration import calibration_of

log = logging.getLogger(__name__)

MAX_FEATURES = {"sqrt": "sqrt", "log2": "log2", "all": None}
PATCHES_PER_READ = 64  # patches read at once when gathering the sampled pixels


def class_quota(counts: np.ndarray, budget: int) -> np.ndarray:
    """Pixels to take per class: all of them if the total fits ``budget`` (0: no limit), else ``min(n_k, q)``
    with the largest common quota ``q`` whose total does not exceed ``budget``."""
    counts = np.asarray(counts, dtype=np.int64)
    if budget <= 0 or counts.sum() <= budget:
        return counts
    lo, hi = 0, int(counts.max())
    while lo < hi:  # largest q with sum(min(n, q)) <= budget
        q = (lo + hi + 1) // 2
        lo, hi = (q, hi) if np.minimum(counts, q).sum() <= budget else (lo, q - 1)
    return np.minimum(counts, lo)


def sample_pixels(data: Path | str, split: "str | PatchSelection", budget: int, num_classes: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[N, C·T]`` standardised features and ``[N]`` labels of (a class-capped sample of) ``split``'s
    labelled pixels, read a few patches at a time, and ``[K]`` the split's labelled pixels per class."""
    info = dataset_info(data)
    ds = open_dataset(data)
    sel, keep = select_patches(ds, split)
    labels = selected_labels(ds, sel, keep) if len(sel) else np.zeros((0, 1, 1), np.int64)
    flat = labels.reshape(-1)
    counts = label_counts(flat, num_classes)
    take = class_quota(counts, budget)
    chosen = []
    for k in np.flatnonzero(take):
        where = np.flatnonzero(flat == k)
        chosen.append(where if take[k] == len(where) else rng.choice(where, take[k], replace=False))
    idx = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    per_patch = labels.shape[1] * labels.shape[2]
    patch, pixel = np.divmod(idx, per_patch)
    c, t = ds["x"].shape[1:3]
    feats = np.empty((len(idx), c * t), np.float32)
    for start in range(0, len(sel), PATCHES_PER_READ):
        inside = (patch >= start) & (patch < start + PATCHES_PER_READ)
        if not inside.any():
            continue
        block = ds["x"].isel(patch=sel[start : start + PATCHES_PER_READ]).values  # [n, C, T, P, P] uint16
        block = block.reshape(len(block), c, t, per_patch)
        picked = block[patch[inside] - start, :, :, pixel[inside]]  # [m, C, T]
        feats[inside] = normalise(picked[..., None, None], info.norm_mean, info.norm_std).reshape(len(picked), -1)
    return feats, flat[idx], counts


def train_forest(data: Path | str, out: Path | str, config: TrainConfig, *, overwrite: bool = False,
                 resume: bool = False, echo: Callable[[str], None] | None = None,
                 splits: tuple[PatchSelection, PatchSelection] | None = None):
    """Fit the forest on ``data``'s train split, score it on val (through the stored tensors, so the
    figure is what evaluate and predict will see), write the run folder ``out``."""
    from .training import CONFIG_NAME, TrainSummary, _prepare_run, warn_tiny_splits

    echo = echo or log.info
    try:
        from sklearn.ensemble import RandomForestClassifier
    except ImportError:  # a core dependency; a trimmed environment may lack it
        raise CropmapError("train --model rf: needs scikit-learn (pip install scikit-learn)") from None
    f = config.forest
    if config.levels:
        raise CropmapError("train --model rf: a random forest has one flat output; --levels needs a network")
    if resume:
        raise CropmapError(f"{out}: --resume continues an interrupted network training; a random forest is "
                           "fitted in one go (train it again with --overwrite)")
    if f.max_features not in MAX_FEATURES:
        raise CropmapError(f"forest.max_features {f.max_features!r}: expected one of {', '.join(MAX_FEATURES)}")
    for name in ("trees", "min_samples_leaf"):
        if not isinstance(getattr(f, name), int) or getattr(f, name) < 1:
            raise CropmapError(f"forest.{name} {getattr(f, name)!r}: expected a positive integer")
    if not isinstance(f.max_pixels, int) or f.max_pixels < 0:
        raise CropmapError(f"forest.max_pixels {f.max_pixels!r}: expected 0 (no limit) or a positive integer")
    out = Path(out)
    info = dataset_info(data)
    _prepare_run(out, config, overwrite=overwrite, resume=False, echo=echo)
    names = info.class_table.names
    k = info.class_table.num_classes
    rng = np.random.default_rng(config.seed)
    start = time.perf_counter()
    train_split, val_split = splits or ("train", "val")
    x_train, y_train, all_train = sample_pixels(data, train_split, f.max_pixels, k, rng)
    x_val, y_val, val_counts = sample_pixels(data, val_split, 0, k, rng)
    if len(y_train) == 0:
        raise CropmapError(f"{data}: the train split has no labelled pixel")
    sizes_of = [len(s.patches) if isinstance(s, PatchSelection) else info.n_patches.get(s, 0)
                for s in (train_split, val_split)]
    warn_tiny_splits(data, names, all_train, val_counts, *sizes_of,
                     info.class_table.background)
    if len(y_val) == 0:
        echo(f"{data}: no labelled val pixel; the forest is fitted without a val score")
    used = label_counts(y_train, k)
    if used.sum() < all_train.sum():
        echo(f"forest: {used.sum():,} of {all_train.sum():,} train pixels (classes capped at {used.max():,} "
             f"pixels, --max-pixels {f.max_pixels:,})")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / CONFIG_NAME) as tmp:
        tmp.write_text(config_yaml(config, f"cropmap train: the resolved configuration of {out.name}"))
    jobs = config.threads if config.threads > 0 else (os.cpu_count() or 1)
    rf = RandomForestClassifier(n_estimators=f.trees, min_samples_leaf=f.min_samples_leaf,
                                max_features=MAX_FEATURES[f.max_features], n_jobs=jobs, random_state=config.seed)
    rf.fit(x_train, y_train)
    state, sizes = forest_tensors(rf.estimators_, rf.classes_.astype(np.int64))
    kwargs = {"steps": int(info.time_grid.steps), **sizes}
    model = build_network("rf", in_channels=len(info.bands), num_classes=k, **kwargs)
    model.load_state_dict(state)
    model.eval()
    val_miou, calibration = float("nan"), calibration_of(torch.zeros(0, k), torch.zeros(0, dtype=torch.long), "val")
    if len(y_val):
        with torch.inference_mode():
            prob = model.probabilities(torch.from_numpy(x_val))
        val_miou = metrics_from_confusion(confusion_matrix(y_val, prob.argmax(1).numpy(), k), names)["miou"]
        # the forest's output is log(prob) (floored): its temperature sharpens or flattens the tree votes
        calibration = calibration_of(prob.clamp_min(LOG_FLOOR).log(), torch.from_numpy(y_val).long(),
                                     getattr(val_split, "name", val_split), seed=config.seed)
    seconds = time.perf_counter() - start
    size = sum(int(v.numel()) for v in state.values())
    echo(f"rf: {sizes['trees']} trees, up to {sizes['nodes']:,} nodes and depth {sizes['depth']}, fitted on "
         f"{len(y_train):,} pixels x {x_train.shape[1]} features in {seconds:.0f} s; val mIoU {val_miou:.3f}")
    extra = {"calibration": calibration, "best_epoch": 0, "best_val_miou": val_miou, "parameters": size, "selection": "fitted",
             "epochs_scheduled": 0, "dataset": str(Path(data).resolve()), "train_seconds": seconds,
             "class_counts": used.tolist(), "class_weights": None, "stopped_epoch": None,
             "forest": {"trees": sizes["trees"], "pixels": int(len(y_train)), "features": int(x_train.shape[1]),
                        "scikit_learn": __import__("sklearn").__version__}}
    with atomic_path(out / "classes.json") as tmp:
        tmp.write_text(json.dumps({"names": list(names), "train_pixels": all_train.tolist(),
                                   "pixels_used": used.tolist(), "scheme": "none", "weights": None}, indent=2,
                                  ensure_ascii=False))
    save_checkpoint(out / CHECKPOINT_NAME, Checkpoint(
        model_name="rf", model_kwargs=kwargs, state_dict=state, class_table=info.class_table,
        time_grid=info.time_grid, bands=info.bands, norm_mean=info.norm_mean, norm_std=info.norm_std,
        extra=extra, preprocessing=info.preprocessing.to_dict()))
    return TrainSummary(out, "rf", size, 0, val_miou, 1, seconds)


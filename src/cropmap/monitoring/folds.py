"""Out-of-fold ("cross-") prediction: K models, each trained without one fold of the dataset, so that every
labelled parcel is answered by a model that never saw its declaration (as theroggy/cropclassification does
for the Flemish paying agency).

Folds are spatial blocks: the dataset's patches (its split unit, contiguous squares of the grid) are dealt
into K folds by a seeded shuffle. They are parcel-disjoint: a parcel belongs to the fold holding most of its
labelled pixels, and its pixels in any other fold's patches are ignored. Model ``i`` tests on fold ``i`` (its
held-out parcels), selects its epoch and fits its calibration on fold ``i + 1``, and trains on the others.

``cropmap train --folds K`` writes ``out/fold_<i>/`` (each a complete run) and ``out/folds.json`` (the plan:
each parcel's fold by ``ID_PARCEL``); ``cropmap predict`` on ``out`` answers each labelled parcel, and
every pixel of it, with its fold's model and the rest of the map with the mean of the K models.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..atomic import atomic_path
from ..checkpoint import CHECKPOINT_NAME, Checkpoint, load_checkpoint
from ..data.patches import PatchSelection
from ..dataset.store import open_dataset
from ..errors import CropmapError

FOLDS_NAME = "folds.json"
PATCHES_PER_READ = 64


@dataclass(frozen=True)
class FoldPlan:
    k: int
    seed: int
    patch_fold: np.ndarray  # [N] fold of each patch of the dataset
    parcel_fold: np.ndarray  # [P] fold of each parcel of the dataset's table (-1: no labelled pixel)
    parcel_ids: np.ndarray  # [P] ID_PARCEL

    def selection(self, folds: list[int], name: str) -> PatchSelection:
        """The patches of ``folds``, keeping the labels of their parcels (and of land outside parcels)."""
        keep = np.concatenate([[True], np.isin(self.parcel_fold, folds)])  # index 0: no parcel (background)
        return PatchSelection(name, np.flatnonzero(np.isin(self.patch_fold, folds)), keep)

    def roles(self, i: int) -> dict[str, PatchSelection]:
        """Fold ``i``'s model: ``train`` (the other folds), ``val`` (fold i + 1), ``test`` (fold i)."""
        val = (i + 1) % self.k
        rest = [f for f in range(self.k) if f not in (i, val)]
        return {"train": self.selection(rest, f"folds {', '.join(map(str, rest))}"),
                "val": self.selection([val], f"fold {val}"), "test": self.selection([i], f"fold {i}")}


def plan_folds(data: Path | str, k: int, seed: int = 0) -> FoldPlan:
    """Deal the dataset's patches into ``k`` folds (seeded) and give each parcel the fold holding most of
    its labelled pixels."""
    ds = open_dataset(data)
    n = int(ds.sizes["patch"])
    if k < 3:
        raise CropmapError(f"folds {k}: at least 3 (each model trains on k - 2 folds, validates on one, "
                           "and leaves one out)")
    if n < k:
        raise CropmapError(f"{data}: {n} patches cannot make {k} folds (build smaller patches, or fewer folds)")
    patch_fold = np.random.default_rng(seed).permutation(np.arange(n) % k).astype(np.int16)
    n_parcels = int(ds.sizes.get("parcel", 0))
    votes = np.zeros((n_parcels + 1, k), np.int64)
    for start in range(0, n, PATCHES_PER_READ):
        idx = slice(start, min(start + PATCHES_PER_READ, n))
        parcel = ds["parcel"].isel(patch=idx).values
        labelled = ds["label"].isel(patch=idx).values >= 0
        fold = np.broadcast_to(patch_fold[idx][:, None, None], parcel.shape)
        sel = labelled & (parcel > 0)
        votes += np.bincount(parcel[sel] * k + fold[sel], minlength=(n_parcels + 1) * k).reshape(-1, k)
    parcel_fold = np.where(votes.sum(axis=1) > 0, votes.argmax(axis=1), -1)[1:].astype(np.int16)
    ids = ds["parcel_id"].values.astype(str) if "parcel_id" in ds else np.arange(n_parcels).astype(str)
    return FoldPlan(k, seed, patch_fold, parcel_fold, ids)


@dataclass(frozen=True)
class FoldIndex:
    """A fold run's ``folds.json``: its fold folders, in fold order, the plan (folds, seed, dataset) and each
    training parcel's fold; read without loading a model."""

    path: Path
    runs: tuple[str, ...]
    folds: int
    seed: int
    dataset: str
    parcel_fold: dict[str, int]

    def fold_of(self, ids) -> np.ndarray:
        """``[n]`` fold of each ``ID_PARCEL`` (-1: not a labelled parcel of the training dataset)."""
        return np.array([self.parcel_fold.get(str(i), -1) for i in ids], dtype=np.int16)


@dataclass(frozen=True)
class FoldRun:
    """A fold run with its fold checkpoints loaded, in fold order."""

    index: FoldIndex
    checkpoints: tuple[Checkpoint, ...]

    @property
    def path(self) -> Path:
        return self.index.path

    def fold_of(self, ids) -> np.ndarray:
        return self.index.fold_of(ids)


def read_fold_index(run: Path | str) -> FoldIndex | None:
    """The fold index of the run at ``run`` (a folder with ``folds.json``, every fold trained); None for a
    plain run."""
    run = Path(run)
    path = run / FOLDS_NAME
    if not run.is_dir() or not path.exists():
        return None
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
        index = FoldIndex(run, tuple(plan["runs"]), int(plan["folds"]), int(plan["seed"]), str(plan["dataset"]),
                          {str(k): int(v) for k, v in plan["parcels"].items()})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise CropmapError(f"{path}: not a readable fold plan ({type(e).__name__}: {e})") from None
    missing = [r for r in index.runs if not (run / r / CHECKPOINT_NAME).exists()]
    if missing:
        raise CropmapError(f"{run}: fold(s) {', '.join(missing)} not trained (rerun `cropmap train --folds "
                           f"{len(index.runs)} --resume` on it)")
    return index


def read_fold_run(run: Path | str) -> FoldRun | None:
    """The fold run at ``run`` with its checkpoints (checked to share one dataset); None for a plain run."""
    index = read_fold_index(run)
    if index is None:
        return None
    ckpts = tuple(load_checkpoint(index.path / r) for r in index.runs)
    first = ckpts[0]
    for r, c in zip(index.runs[1:], ckpts[1:]):
        if (c.class_table.names != first.class_table.names or c.time_grid != first.time_grid
                or tuple(c.bands) != tuple(first.bands) or not np.allclose(c.norm_mean, first.norm_mean)):
            raise CropmapError(f"{index.path / r}: not trained on the same dataset as {index.runs[0]} (classes, "
                               "time grid, bands or normalisation differ)")
    return FoldRun(index, ckpts)


def train_folds(data: Path | str, out: Path | str, config, *, overwrite: bool = False, resume: bool = False,
                echo: Callable[[str], None] | None = None):
    """Train ``config.folds`` models into ``out/fold_<i>`` (see the module docstring); finished folds are kept
    on ``resume``. Returns a :class:`~cropmap.training.TrainSummary` of the whole (mean val mIoU)."""
    from ..configfile import config_yaml
    from ..training import CONFIG_NAME, TrainSummary, train_model

    echo = echo or (lambda s: None)
    out = Path(out)
    if resume and overwrite:
        raise CropmapError(f"{out}: --resume continues the run and --overwrite replaces it; give one of them")
    if (out / FOLDS_NAME).exists() and not (resume or overwrite):
        raise CropmapError(f"{out}: already holds a fold run (pass --resume to finish it, or --overwrite)")
    if out.exists() and any(out.iterdir()) and not (out / FOLDS_NAME).exists() and not overwrite:
        raise CropmapError(f"{out}: already exists and is not a fold run (pass --overwrite to replace it)")
    start = time.perf_counter()
    plan = plan_folds(data, config.folds, config.seed)
    runs = [f"fold_{i}" for i in range(plan.k)]
    out.mkdir(parents=True, exist_ok=True)
    labelled = plan.parcel_fold >= 0
    with atomic_path(out / CONFIG_NAME) as tmp:
        tmp.write_text(config_yaml(config, f"cropmap train: the resolved configuration of {out.name} (all folds)"))
    with atomic_path(out / FOLDS_NAME) as tmp:
        tmp.write_text(json.dumps({
            "folds": plan.k, "seed": plan.seed, "dataset": str(Path(data).resolve()), "runs": runs,
            "patches_per_fold": np.bincount(plan.patch_fold, minlength=plan.k).tolist(),
            "parcels_per_fold": np.bincount(plan.parcel_fold[labelled], minlength=plan.k).tolist(),
            "parcels": {str(i): int(f) for i, f in zip(plan.parcel_ids[labelled], plan.parcel_fold[labelled])},
        }, ensure_ascii=False))
    summaries = []
    for i, name in enumerate(runs):
        roles = plan.roles(i)
        if resume and (out / name / CHECKPOINT_NAME).exists():
            echo(f"{name}: already trained, kept")
            extra = load_checkpoint(out / name).extra
            summaries.append(TrainSummary(out / name, config.model.name, int(extra.get("parameters", 0)),
                                          int(extra.get("best_epoch", 0)), float(extra.get("best_val_miou", 0)),
                                          0, 0.0))
            continue
        echo(f"{name}: trains on {roles['train'].name}, validates on {roles['val'].name}, leaves {roles['test'].name} "
             f"out ({len(roles['test'].patches)} patches, {int((plan.parcel_fold == i).sum())} parcels)")
        summaries.append(train_model(data, out / name, config, overwrite=overwrite,
                                     resume=resume and (out / name).exists(), echo=echo,
                                     splits=(roles["train"], roles["val"])))
    s = summaries[0]
    return TrainSummary(out, s.model, s.parameters, s.best_epoch,
                        float(np.mean([x.best_val_miou for x in summaries])), max(x.epochs_run for x in summaries),
                        time.perf_counter() - start)

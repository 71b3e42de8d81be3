"""``cropmap train``: fit a registered model on a built dataset with Lightning; keep the best epoch.

The run directory gets ``model.pt`` (see :mod:`cropmap.checkpoint`), ``config.yaml`` (the resolved
config, written first), ``checkpoints/last.ckpt`` (the full training state after the last completed
epoch, for ``--resume``), ``classes.json`` (label counts and loss weights), ``logs/metrics.csv``
(per-epoch curves) and ``curves.png``.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import random
import shutil
import time
import warnings
from dataclasses import replace, asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.callbacks import Checkpoint as LightningCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassConfusionMatrix

from .atomic import atomic_path
from .checkpoint import CHECKPOINT_NAME, Checkpoint, save_checkpoint
from .config import TrainConfig, load_config
from .configfile import config_yaml
from .data.collate import pad_collate
from .data.patches import PatchDataset, PatchSelection
from .dataset.splits import TINY_SPLIT_PATCHES
from .dataset.store import dataset_info
from .errors import CropmapError
from .hierarchy import HierarchicalLoss, Hierarchy, build_network, for_inference, level_counts
from .losses import CLASS_WEIGHTS, LOSSES, class_weights, label_counts, make_loss
from .metrics import metrics_from_confusion
from .monitoring.calibration import calibrate
from .models import MODELS, accepted_kwargs
from .nomenclature import IGNORE_INDEX
from .progress import progress_enabled

log = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
LAST_NAME = "checkpoints/last.ckpt"  # training state after the last completed epoch
RESUME_FORMAT = "cropmap-resume"
PRECISIONS = ("auto", "32", "32-true", "bf16-mixed", "16-mixed")
LOGGERS = ("csv", "tensorboard")
LEVEL_HEADS = ("top", "intermediate")

@dataclass(frozen=True)
class TrainSummary:
    run: Path
    model: str
    parameters: int
    best_epoch: int
    best_val_miou: float
    epochs_run: int
    seconds: float
    stopped_epoch: int | None = None  # the epoch early stopping ended training at (None: ran to the end)
    resumed_from: int | None = None  # epochs already completed when this call resumed the run


class CropModule(L.LightningModule):
    """Training of a ``[B, C, T, H, W] -> [B, K, H, W]`` model; validation mIoU per epoch, best weights kept."""

    def __init__(self, model: torch.nn.Module, num_classes: int, class_names: tuple[str, ...], lr: float,
                 weight_decay: float, epochs: int, loss: torch.nn.Module, hierarchy: Hierarchy | None = None) -> None:
        super().__init__()
        self.model = model
        self.class_names = class_names
        self.lr, self.weight_decay, self.epochs = lr, weight_decay, epochs
        self.loss = loss
        self.hierarchy = hierarchy  # one head per level: logits [B, sum K_l, H, W], scored on the finest level
        self.val_cm = MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX)
        # weights of the epoch with the best validation mIoU, restored after training
        self.best_miou, self.best_epoch = -1.0, -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.first_epoch, self.val_classes, self.val_support = -1, 0, None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch["x"], batch["doy"], batch["mask"])

    def compute_loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The one per-batch loss call (training and validation): ``logits [B, K, H, W]``, ``y [B, H, W]``."""
        return self.loss(logits, batch["y"])

    def training_step(self, batch: dict[str, torch.Tensor], _: int) -> torch.Tensor:
        loss = self.compute_loss(self(batch), batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch["y"]))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], _: int) -> None:
        logits = self(batch)
        self.log("val_loss", self.compute_loss(logits, batch), on_epoch=True, batch_size=len(batch["y"]))
        if self.hierarchy is not None:  # the finest level's consistent prediction, as `ckpt.build()` gives
            logits = self.hierarchy.consistent(self.hierarchy.split(logits), all_levels=False)[0]
        self.val_cm.update(logits.argmax(1), batch["y"])

    def on_validation_epoch_end(self) -> None:
        cm = self.val_cm.compute().cpu().numpy()
        self.val_support = cm.sum(axis=1)
        m = metrics_from_confusion(cm, self.class_names)
        self.val_cm.reset()
        self.log("val_miou", m["miou"], prog_bar=True)
        self.log("val_oa", m["overall_accuracy"])
        if not self.trainer.sanity_checking:
            self.val_classes = int((self.val_support > 0).sum()) if self.val_support is not None else 0
            if self.first_epoch < 0:
                self.first_epoch = self.current_epoch
        if not self.trainer.sanity_checking and np.isfinite(m["miou"]) and m["miou"] > self.best_miou:
            self.best_miou, self.best_epoch = m["miou"], self.current_epoch
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(self.epochs, 1))
        return {"optimizer": opt, "lr_scheduler": sched}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["cropmap"] = {"format": RESUME_FORMAT, "epochs_done": self.current_epoch + 1,
                                 "best_miou": float(self.best_miou),
                                 "best_epoch": int(self.best_epoch), "best_state": self.best_state}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["cropmap"]
        self.best_miou, self.best_epoch, self.best_state = state["best_miou"], state["best_epoch"], state["best_state"]


class RandomState(Callback):
    """Saves every generator that decides what a training epoch sees, and restores them on resume.

    The train loader draws its shuffling (and worker seeds) from its own generator, restored as soon as
    the checkpoint is loaded, before Lightning creates the first iterator. Augmentation and dropout draw
    from the global torch, numpy and Python generators, restored when the first epoch after the resume
    starts: in an uninterrupted run nothing draws from them between the end of one epoch and the start of
    the next. Stored as tensors and plain values, so that the checkpoint loads with ``weights_only=True``.
    """

    def __init__(self, *generators: torch.Generator) -> None:
        self.generators = generators
        self.pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": random.getstate(),
            "loaders": [g.get_state() for g in self.generators],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for g, s in zip(self.generators, state["loaders"]):
            g.set_state(s)
        self.pending = state

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.pending is None:
            return
        s, self.pending = self.pending, None
        torch.set_rng_state(s["torch"])
        if s["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(s["cuda"])
        n = s["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        random.setstate(_as_tuples(s["python"]))


def _as_tuples(x: Any) -> Any:
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


class EpochCheckpoint(LightningCheckpoint):
    """Writes the full training state to ``path`` at the end of every epoch (after validation), so that
    ``--resume`` continues where it stopped. A ``Checkpoint`` callback, so that Lightning runs it after
    the other callbacks and the module's own epoch-end hook: the state saved is the epoch's final one."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning writes a checkpoint in place: a kill during the write would leave a truncated file that a
    resume then trips on. Write to a temporary name and rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def check_config(config: TrainConfig) -> None:
    """Values the dataclass types cannot check, named in one line."""
    choices = {"loss": LOSSES, "class_weights": CLASS_WEIGHTS, "precision": PRECISIONS, "logger": LOGGERS,
               "accelerator": ("auto", "cpu", "gpu", "cuda", "mps")}
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise CropmapError(f"{name} {getattr(config, name)!r}: expected one of {', '.join(allowed)}")
    numbers = {"lr": (0, None), "weight_decay": (0, None), "focal_gamma": (0, None), "date_dropout": (0, 1),
               "temporal_crop": (0, 1), "class_weights_beta": (0, 1), "band_jitter": (0, 1),
               "cutoff": (0, 1)}
    for name, (lo, hi) in numbers.items():
        v = getattr(config, name)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
            raise CropmapError(f"{name} {v!r}: expected a number" + (f" in [{lo}, {hi}]" if hi else f" >= {lo}"))
    for name in ("epochs", "batch_size", "val_every", "num_nodes"):
        if not isinstance(getattr(config, name), int) or getattr(config, name) < 1:
            raise CropmapError(f"{name} {getattr(config, name)!r}: expected a positive integer")
    if config.patience < 0:
        raise CropmapError(f"patience {config.patience}: expected 0 (off) or a positive integer")
    if config.deterministic not in (True, False, "warn", "auto"):
        raise CropmapError(f"deterministic {config.deterministic!r}: expected true, false, warn or auto")
    if config.level_heads not in LEVEL_HEADS:
        raise CropmapError(f"level_heads {config.level_heads!r}: expected one of {', '.join(LEVEL_HEADS)}")
    if config.level_weights and len(config.level_weights) != len(config.levels):
        raise CropmapError(f"level_weights {list(config.level_weights)}: one weight per level of --levels "
                           f"({len(config.levels)}: {', '.join(config.levels) or 'none'})")
    if any(not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0 for w in config.level_weights):
        raise CropmapError(f"level_weights {list(config.level_weights)}: expected numbers >= 0")
    taking = sorted(n for n in MODELS if accepted_kwargs(n, {"coarse_heads": ()}))  # builders with coarse_heads
    if config.level_heads == "intermediate" and config.levels and config.model.name not in taking:
        raise CropmapError(f"level_heads intermediate: model {config.model.name} has no intermediate temporal layers "
                           f"to read from (use one of {', '.join(taking)}, or level_heads top)")
    if config.logger == "tensorboard" and not any(importlib.util.find_spec(m) for m in ("tensorboardX", "tensorboard")):
        raise CropmapError("logger tensorboard: needs tensorboardX (pip install 'cropmap[tensorboard]')")


def _on_gpu(config: TrainConfig) -> bool:
    return config.accelerator in ("gpu", "cuda") or (config.accelerator == "auto" and torch.cuda.is_available())


def resolve_precision(config: TrainConfig) -> str:
    """``auto``: bf16 mixed precision where training runs on a GPU, full precision on the CPU."""
    if config.precision != "auto":
        return "32-true" if config.precision == "32" else config.precision
    return "bf16-mixed" if _on_gpu(config) else "32-true"


def resolve_deterministic(config: TrainConfig) -> bool | str:
    """``auto``: deterministic on the CPU; on a GPU deterministic where a kernel exists, a warning elsewhere."""
    if config.deterministic != "auto":
        return config.deterministic
    return "warn" if _on_gpu(config) else True


def selection_rule(module: "CropModule", epochs_run: int) -> str:
    """``"val_miou"`` (keep the best validated epoch), or why validation cannot select one, in which case the
    last epoch is kept: fewer than two classes in the val split, or a val mIoU that never rose above 0."""
    if module.val_classes < 2:
        return f"the val split holds {module.val_classes} class(es)"
    if module.best_miou <= 0.0:
        return "val mIoU stayed 0"
    return "val_miou"


def scheduled_epochs(config: TrainConfig, steps_per_epoch: int) -> int:
    """The epochs to train: ``config.epochs``, raised until the schedule lasts ``config.min_steps`` steps."""
    return max(config.epochs, -(-config.min_steps // max(steps_per_epoch, 1)))


def warn_tiny_splits(data, names, train_counts: np.ndarray, val_counts: np.ndarray, n_train: int, n_val: int,
                     background: bool) -> None:
    """One warning line per problem: classes with no train or no val pixel, a tiny split."""
    crop = np.arange(len(names)) >= int(background)
    for split, counts in (("train", train_counts), ("val", val_counts)):
        missing = [names[k] for k in np.flatnonzero(crop & (counts == 0))]
        if missing:
            log.warning("%s: the %s split has no pixel of %d class(es): %s", data, split, len(missing),
                        ", ".join(missing))
    tiny = [f"{k} {n}" for k, n in (("train", n_train), ("val", n_val)) if n < TINY_SPLIT_PATCHES]
    if tiny:
        log.warning("%s: tiny split(s): %s patch(es); the val figures that select the epoch are noisy", data,
                    ", ".join(tiny))


def trainer_arguments(config: TrainConfig) -> dict[str, Any]:
    """The ``L.Trainer`` arguments that come from the config (devices, nodes, strategy, precision, ...)."""
    return dict(max_epochs=config.epochs, max_steps=config.max_steps, accelerator=config.accelerator,
                devices=config.devices, num_nodes=config.num_nodes, strategy=config.strategy,
                precision=resolve_precision(config), deterministic=resolve_deterministic(config),
                check_val_every_n_epoch=config.val_every)


def make_datasets(data: Path | str, config: TrainConfig, splits: tuple[PatchSelection, PatchSelection] | None = None
                  ) -> tuple[PatchDataset, PatchDataset]:
    """Train patches with the config's augmentations; val patches as they are."""
    train_split, val_split = splits or ("train", "val")
    train = PatchDataset(data, train_split, augment=config.augment, crop=config.crop or None,
                         date_dropout=config.date_dropout, temporal_crop=config.temporal_crop,
                         band_jitter=config.band_jitter, cutoff=config.cutoff)
    return train, PatchDataset(data, val_split)


def config_differences(saved: TrainConfig, new: TrainConfig) -> list[str]:
    """``field: saved -> new`` for every field (nested ones as ``model.hidden``) that differs."""
    a, b = _flat(asdict(saved)), _flat(asdict(new))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "options":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def read_resume_state(path: Path) -> dict[str, Any]:
    """The saved training state, read with ``weights_only=True``; a damaged file is named, not a traceback."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CropmapError(f"{path}: not a readable training state ({type(e).__name__}: {str(e).splitlines()[0]}); "
                           "pass --overwrite to start again") from e
    if not isinstance(state, dict) or state.get("cropmap", {}).get("format") != RESUME_FORMAT:
        raise CropmapError(f"{path}: not a cropmap training state")
    return state


def _prepare_run(out: Path, config: TrainConfig, *, overwrite: bool, resume: bool,
                 echo: Callable[[str], None]) -> Path | None:
    """Check what the run folder holds against ``overwrite`` / ``resume``; return the state to resume from."""
    last = out / LAST_NAME
    if resume:
        if (out / CHECKPOINT_NAME).exists():
            extra = _finished_extra(out)
            raise CropmapError(f"{out}: the run is already finished (model.pt: best val mIoU "
                               f"{extra.get('best_val_miou', float('nan')):.3f} at epoch {extra.get('best_epoch')}); "
                               "nothing to resume (pass --overwrite to train it again)")
        if not (out / CONFIG_NAME).exists():
            # a job script can always pass --resume: the first run starts, a requeued one continues
            echo(f"{out}: no run to resume; starting a new one")
            return None
        diff = config_differences(load_config(TrainConfig, out / CONFIG_NAME), config)
        if diff:
            raise CropmapError(f"{out}: --resume with a different config ({'; '.join(diff)}); "
                               "resume with the run's own config.yaml, or train a new run")
        if not last.exists():
            echo(f"{out}: no epoch was completed; starting from the beginning")
            return None
        state = read_resume_state(last)
        echo(f"resuming {out} after epoch {state['cropmap']['epochs_done']} of {config.epochs}")
        return last
    if (out / CHECKPOINT_NAME).exists() and not overwrite:
        raise CropmapError(f"{out}: already holds a trained model (pass --overwrite to replace it)")
    if last.exists():
        if not overwrite:
            raise CropmapError(f"{out}: holds an interrupted run (pass --resume to continue it, "
                               "or --overwrite to start again)")
        shutil.rmtree(last.parent, ignore_errors=True)  # the earlier run's state must not be resumed into this one
    return None


def _finished_extra(out: Path) -> dict[str, Any]:
    from .checkpoint import load_checkpoint

    try:
        return load_checkpoint(out).extra
    except CropmapError:
        return {}


def train_model(data: Path | str, out: Path | str, config: TrainConfig = TrainConfig(), *,
                overwrite: bool = False, resume: bool = False,
                echo: Callable[[str], None] | None = None,
                splits: tuple[PatchSelection, PatchSelection] | None = None) -> TrainSummary:
    """Train ``config.model`` on ``data``'s train split, validating on val; write the run folder ``out``.

    ``resume`` continues an interrupted run from its last completed epoch (same config required) and ends
    with the weights and metrics the uninterrupted run would have had. ``echo`` receives one-line notes
    (parameter count, class weights, resume point, early stop); the CLI prints them. ``splits`` replaces
    the dataset's train and val splits by two selections (one fold's, see :mod:`cropmap.monitoring.folds`);
    ``config.folds`` > 1 trains that many fold models instead, into ``out/fold_<i>``.
    """
    if config.folds > 1 and splits is None:
        from .monitoring.folds import train_folds

        return train_folds(data, out, config, overwrite=overwrite, resume=resume, echo=echo)
    if config.model.name == "rf":  # fitted, not trained by gradient descent: its own loop
        from .train_forest import train_forest

        return train_forest(data, out, config, overwrite=overwrite, resume=resume, echo=echo, splits=splits)
    echo = rank_zero_only(echo or log.info)  # one note per run, not one per DDP process
    _quiet_lightning()
    check_config(config)
    if resume and overwrite:
        raise CropmapError(f"{out}: --resume continues the run and --overwrite replaces it; give one of them")
    out = Path(out)
    info = dataset_info(data)
    ckpt_path = _prepare_run(out, config, overwrite=overwrite, resume=resume, echo=echo)
    resumed_from = _epochs_done(ckpt_path)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    L.seed_everything(config.seed, workers=True, verbose=False)
    train_ds, val_ds = make_datasets(data, config, splits)
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise CropmapError(f"{data}: the dataset has no train or no val patches")
    num_classes = info.class_table.num_classes
    hierarchy = Hierarchy.from_table(info.class_table, config.levels) if config.levels else None
    if hierarchy is not None and config.level_weights:  # the joint rule weighs the heads as the loss does
        hierarchy = replace(hierarchy, weights=tuple(float(w) for w in config.level_weights))
    model_kwargs = config.model.kwargs()
    if hierarchy is not None and config.level_heads == "intermediate":
        model_kwargs["coarse_heads"] = list(hierarchy.sizes[1:])
    model = build_network(config.model.name, in_channels=len(info.bands), num_classes=num_classes,
                          hierarchy=hierarchy, **model_kwargs)
    n_params = sum(p.numel() for p in model.parameters())
    echo(f"{config.model.name}: {n_params:,} parameters")
    counts = label_counts(train_ds.y, num_classes)
    warn_tiny_splits(data, info.class_table.names, counts, label_counts(val_ds.y, num_classes), len(train_ds),
                     len(val_ds), info.class_table.background)
    steps_per_epoch = max(len(train_ds) // config.batch_size if len(train_ds) > config.batch_size else 1, 1)
    epochs = scheduled_epochs(config, steps_per_epoch)
    if epochs > config.epochs:
        echo(f"{config.epochs} epochs are {config.epochs * steps_per_epoch} optimiser steps on this dataset "
             f"({len(train_ds)} train patches): training {epochs} epochs, the floor of {config.min_steps} steps "
             "(--min-steps)")
    fit = replace(config, epochs=epochs)  # what runs; config.yaml keeps the config as given
    weights = class_weights(counts, config.class_weights, config.class_weights_beta)
    if weights is not None:
        echo(f"class weights ({config.class_weights}): "
             + ", ".join(f"{n} {w:.3g}" for n, w in zip(info.class_table.names, weights)))
    module = CropModule(model, num_classes, info.class_table.names, config.lr, config.weight_decay, fit.epochs,
                        make_loss(config, counts) if hierarchy is None else
                        HierarchicalLoss(hierarchy, [make_loss(config, c) for c in level_counts(hierarchy, counts)],
                                         config.level_weights or None),
                        hierarchy)

    # the loaders' own generators keep shuffling and worker seeds out of the global stream (see RandomState);
    # workers are not persistent, so that each epoch's worker seeds come from that generator alone
    shuffle_gen, val_gen = torch.Generator().manual_seed(config.seed), torch.Generator().manual_seed(config.seed)
    loader_args = dict(batch_size=config.batch_size, num_workers=config.num_workers, collate_fn=pad_collate,
                       pin_memory=torch.cuda.is_available())
    train_dl = DataLoader(train_ds, shuffle=True, drop_last=len(train_ds) > config.batch_size,
                          generator=shuffle_gen, **loader_args)
    val_dl = DataLoader(val_ds, shuffle=False, generator=val_gen, **loader_args)

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / CONFIG_NAME) as tmp:
        tmp.write_text(config_yaml(config, f"cropmap train: the resolved configuration of {out.name}"))
    callbacks: list[Callback] = [RandomState(shuffle_gen, val_gen)]
    early = None
    if config.patience > 0:
        early = EarlyStopping("val_miou", mode="max", patience=config.patience, check_finite=False,
                              check_on_train_epoch_end=False)
        callbacks.append(early)
    callbacks.append(EpochCheckpoint(out / LAST_NAME))
    logger = _make_logger(out, config, keep_epochs=resumed_from)
    trainer = L.Trainer(
        **trainer_arguments(fit),
        logger=logger,
        callbacks=callbacks,
        plugins=_plugins(),
        default_root_dir=out,
        enable_checkpointing=True,  # our EpochCheckpoint, not a default ModelCheckpoint
        enable_model_summary=False,
        enable_progress_bar=progress_enabled(),
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        # few workers on a 2-core machine is a choice, not a mistake
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")  # inside lightning 2.6 + torch 2.13
        # deterministic=True also fills every new tensor with NaN (to expose reads of uninitialised
        # memory): ~10 % of a CPU step for no change in results, so it is off during training
        fill = torch.utils.deterministic.fill_uninitialized_memory
        torch.utils.deterministic.fill_uninitialized_memory = False
        try:
            trainer.fit(module, train_dl, val_dl, ckpt_path=ckpt_path, weights_only=True)
        finally:
            torch.utils.deterministic.fill_uninitialized_memory = fill
        if module.best_state is None and trainer.global_step > 0:
            # --max-steps stopped training before the first end-of-epoch validation
            trainer.validate(module, val_dl, verbose=False)
    seconds = time.perf_counter() - start
    if module.best_state is None:
        raise CropmapError(f"{data}: training produced no validation result (no epoch completed)")
    stopped = early.stopped_epoch if early is not None and early.stopped_epoch > 0 else None
    if stopped is not None:
        echo(f"early stopping at epoch {stopped}: no val mIoU gain in {config.patience} validation(s) "
             f"since epoch {module.best_epoch}")
    if not trainer.is_global_zero:
        return TrainSummary(out, config.model.name, n_params, module.best_epoch, module.best_miou,
                            trainer.current_epoch, seconds, stopped, resumed_from)
    selection = selection_rule(module, trainer.current_epoch)
    if selection == "val_miou":
        model.load_state_dict(module.best_state)  # else the weights of the last epoch stay
        if module.best_epoch == module.first_epoch and trainer.current_epoch > module.best_epoch + 1:
            echo(f"kept epoch {module.best_epoch}, the first validated one: val mIoU never rose above "
                 f"{module.best_miou:.3f} in {trainer.current_epoch} epochs")
    else:
        echo(f"validation cannot select an epoch ({selection}): kept the last epoch, "
             f"{trainer.current_epoch - 1}")
        module.best_epoch = trainer.current_epoch - 1
    model.cpu()
    calibration = calibrate(for_inference(model, hierarchy), val_ds, seed=config.seed)
    echo(f"calibration on {calibration['pixels']:,} val pixels: temperature {calibration['temperature']:.3f}, "
         f"ECE {calibration['ece_before']:.3f} -> {calibration['ece_after']:.3f}")
    extra = {"calibration": calibration, "best_epoch": module.best_epoch, "best_val_miou": module.best_miou, "parameters": n_params,
             "selection": selection, "epochs_scheduled": fit.epochs,
             "dataset": str(Path(data).resolve()), "train_seconds": seconds, "class_counts": counts.tolist(),
             "class_weights": None if weights is None else weights.tolist(), "stopped_epoch": stopped}
    with atomic_path(out / "classes.json") as tmp:
        tmp.write_text(json.dumps({"names": list(info.class_table.names), "train_pixels": counts.tolist(),
                                   "scheme": config.class_weights,
                                   "weights": None if weights is None else weights.tolist()}, indent=2,
                                  ensure_ascii=False))
    save_checkpoint(out / CHECKPOINT_NAME, Checkpoint(
        model_name=config.model.name,
        model_kwargs=model_kwargs,
        state_dict=model.state_dict(),
        class_table=info.class_table,
        time_grid=info.time_grid,
        bands=info.bands,
        norm_mean=info.norm_mean,
        norm_std=info.norm_std,
        extra=extra,
        hierarchy=hierarchy.to_dict() if hierarchy else None,
        preprocessing=info.preprocessing.to_dict(),
    ))
    plot_curves(out / "logs" / "metrics.csv", out / "curves.png")
    return TrainSummary(out, config.model.name, n_params, module.best_epoch, module.best_miou,
                        trainer.current_epoch, seconds, stopped, resumed_from)


def _plugins() -> list[Any]:
    """Atomic checkpoint writes; under SLURM, no auto-requeue: Lightning would save a mid-epoch ``hpc_ckpt``
    and resume from it on its own, past our checks; a requeued job passes ``--resume`` instead."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    plugins: list[Any] = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return plugins


def _epochs_done(ckpt_path: Path | None) -> int | None:
    return None if ckpt_path is None else int(read_resume_state(ckpt_path)["cropmap"]["epochs_done"])


def _make_logger(out: Path, config: TrainConfig, keep_epochs: int | None):
    """CSV (always: the curves come from it) or TensorBoard too. On resume, the CSV rows of the completed
    epochs are kept (Lightning would delete the file) and the rows after them dropped."""
    old = _csv_rows(out / "logs" / "metrics.csv", keep_epochs) if keep_epochs is not None else []
    csv_logger = CSVLogger(out, name="", version="logs", flush_logs_every_n_steps=1)
    with warnings.catch_warnings():  # it deletes an earlier metrics.csv, as intended (its rows are in old)
        warnings.filterwarnings("ignore", message=".*Experiment logs directory.*exists and is not empty.*")
        csv_logger.experiment
    if old:
        csv_logger.experiment.metrics.extend(old)
        csv_logger.save()
    if config.logger == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return [csv_logger, TensorBoardLogger(out, name="", version="logs", default_hp_metric=False)]
    return csv_logger


def _csv_rows(path: Path, epochs: int) -> list[dict[str, float]]:
    if not path.exists():
        return []
    rows = []
    for r in csv.DictReader(path.open()):
        if r.get("epoch") not in (None, "") and int(float(r["epoch"])) < epochs:
            rows.append({k: (int(float(v)) if k in ("epoch", "step") else float(v)) for k, v in r.items() if v != ""})
    return rows


def _quiet_lightning() -> None:
    """Lightning logs device and tips at INFO when imported; keep them for --debug only."""
    level = logging.INFO if logging.getLogger().isEnabledFor(logging.DEBUG) else logging.WARNING
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(level)


def plot_curves(metrics_csv: Path, png: Path) -> None:
    """Loss and validation mIoU per epoch, from Lightning's CSV log."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not metrics_csv.exists():
        return
    rows = list(csv.DictReader(metrics_csv.open()))
    series: dict[str, dict[int, float]] = {}
    for r in rows:
        for k in ("train_loss", "val_loss", "val_miou"):
            if r.get(k):
                series.setdefault(k, {})[int(r["epoch"])] = float(r[k])
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    for k in ("train_loss", "val_loss"):
        if k in series:
            a.plot(list(series[k]), list(series[k].values()), marker="o", label=k)
    a.set_xlabel("epoch"), a.set_title("loss"), a.legend()
    if "val_miou" in series:
        b.plot(list(series["val_miou"]), list(series["val_miou"].values()), marker="o", color="C2")
    b.set_xlabel("epoch"), b.set_title("validation mIoU")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)

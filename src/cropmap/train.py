"""``cropmap train``: fit a registered model on a built dataset with Lightning; keep the best epoch.

The run directory gets ``model.pt`` (see :mod:`cropmap.checkpoint`), ``config.yaml`` (the resolved
config), ``logs/metrics.csv`` (per-epoch curves) and ``curves.png``.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassConfusionMatrix

from .checkpoint import CHECKPOINT_NAME, Checkpoint, save_checkpoint
from .config import TrainConfig
from .data.patches import PatchDataset
from .dataset.store import dataset_info
from .errors import CropmapError
from .metrics import metrics_from_confusion
from .models import build_model
from .nomenclature import IGNORE_INDEX
from .progress import progress_enabled

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSummary:
    run: Path
    model: str
    parameters: int
    best_epoch: int
    best_val_miou: float
    epochs_run: int
    seconds: float


class CropModule(L.LightningModule):
    """Cross-entropy training of a ``[B, C, T, H, W] -> [B, K, H, W]`` model; validation mIoU per epoch."""

    def __init__(self, model: torch.nn.Module, num_classes: int, class_names: tuple[str, ...], lr: float,
                 weight_decay: float, epochs: int) -> None:
        super().__init__()
        self.model = model
        self.class_names = class_names
        self.lr, self.weight_decay, self.epochs = lr, weight_decay, epochs
        self.loss = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
        self.val_cm = MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX)
        # weights of the epoch with the best validation mIoU, restored after training
        self.best_miou, self.best_epoch = -1.0, -1
        self.best_state: dict[str, torch.Tensor] | None = None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch["x"], batch["doy"], batch["mask"])

    def training_step(self, batch: dict[str, torch.Tensor], _: int) -> torch.Tensor:
        loss = self.loss(self(batch), batch["y"])
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch["y"]))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], _: int) -> None:
        logits = self(batch)
        self.log("val_loss", self.loss(logits, batch["y"]), on_epoch=True, batch_size=len(batch["y"]))
        self.val_cm.update(logits.argmax(1), batch["y"])

    def on_validation_epoch_end(self) -> None:
        m = metrics_from_confusion(self.val_cm.compute().cpu().numpy(), self.class_names)
        self.val_cm.reset()
        self.log("val_miou", m["miou"], prog_bar=True)
        self.log("val_oa", m["overall_accuracy"])
        if not self.trainer.sanity_checking and np.isfinite(m["miou"]) and m["miou"] > self.best_miou:
            self.best_miou, self.best_epoch = m["miou"], self.current_epoch
            self.best_state = copy.deepcopy(self.model.state_dict())

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(self.epochs, 1))
        return {"optimizer": opt, "lr_scheduler": sched}


def train_model(data: Path | str, out: Path | str, config: TrainConfig = TrainConfig(), *,
                overwrite: bool = False) -> TrainSummary:
    _quiet_lightning()
    out = Path(out)
    if (out / CHECKPOINT_NAME).exists() and not overwrite:
        raise CropmapError(f"{out}: already holds a trained model (pass --overwrite to replace it)")
    info = dataset_info(data)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    L.seed_everything(config.seed, workers=True, verbose=False)
    train_ds = PatchDataset(data, "train", augment=config.augment, crop=config.crop or None)
    val_ds = PatchDataset(data, "val")
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise CropmapError(f"{data}: the dataset has no train or no val patches")
    num_classes = info.class_table.num_classes
    model = build_model(config.model.name, in_channels=len(info.bands), num_classes=num_classes,
                        **config.model.kwargs())
    n_params = sum(p.numel() for p in model.parameters())
    log.info("%s: %d parameters", config.model.name, n_params)
    module = CropModule(model, num_classes, info.class_table.names, config.lr, config.weight_decay, config.epochs)

    loader_args = dict(batch_size=config.batch_size, num_workers=config.num_workers,
                       persistent_workers=config.num_workers > 0, pin_memory=torch.cuda.is_available())
    train_dl = DataLoader(train_ds, shuffle=True, drop_last=len(train_ds) > config.batch_size, **loader_args)
    val_dl = DataLoader(val_ds, shuffle=False, **loader_args)

    out.mkdir(parents=True, exist_ok=True)
    trainer = L.Trainer(
        max_epochs=config.epochs,
        max_steps=config.max_steps,
        accelerator=config.accelerator,
        devices=1,
        logger=CSVLogger(out, name="", version="logs"),
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress_enabled(),
        num_sanity_val_steps=0,
        check_val_every_n_epoch=config.val_every,
        log_every_n_steps=1,
        deterministic=True,
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
            trainer.fit(module, train_dl, val_dl)
        finally:
            torch.utils.deterministic.fill_uninitialized_memory = fill
        if module.best_state is None and trainer.global_step > 0:
            # --max-steps stopped training before the first end-of-epoch validation
            trainer.validate(module, val_dl, verbose=False)
    seconds = time.perf_counter() - start
    if module.best_state is None:
        raise CropmapError(f"{data}: training produced no validation result (no epoch completed)")
    model.load_state_dict(module.best_state)

    save_checkpoint(out / CHECKPOINT_NAME, Checkpoint(
        model_name=config.model.name,
        model_kwargs=config.model.kwargs(),
        state_dict=model.state_dict(),
        class_table=info.class_table,
        time_grid=info.time_grid,
        bands=info.bands,
        norm_mean=info.norm_mean,
        norm_std=info.norm_std,
        extra={"best_epoch": module.best_epoch, "best_val_miou": module.best_miou, "parameters": n_params,
               "dataset": str(Path(data).resolve()), "train_seconds": seconds},
    ))
    (out / "config.yaml").write_text(yaml.safe_dump(asdict(config), sort_keys=False))
    plot_curves(out / "logs" / "metrics.csv", out / "curves.png")
    return TrainSummary(out, config.model.name, n_params, module.best_epoch, module.best_miou,
                        trainer.current_epoch, seconds)


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

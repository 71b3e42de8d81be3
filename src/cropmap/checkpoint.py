"""The checkpoint: weights + the model's name and arguments + class table + time grid + normalisation.

A plain dict of tensors, strings and numbers saved with ``torch.save`` and read back with
``torch.load(weights_only=True)``, so loading a checkpoint never unpickles arbitrary objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .atomic import atomic_path
from .dataset.timegrid import TimeGrid
from .errors import CropmapError
from .nomenclature import ClassTable

FORMAT = "cropmap-checkpoint"
VERSION = 1
CHECKPOINT_NAME = "model.pt"


@dataclass
class Checkpoint:
    model_name: str
    model_kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    class_table: ClassTable
    time_grid: TimeGrid
    bands: tuple[str, ...]
    norm_mean: np.ndarray
    norm_std: np.ndarray
    extra: dict[str, Any]
    source: Path | None = None  # the file it was read from, named in messages
    # one head per level (cropmap.hierarchy.Hierarchy.to_dict: levels, names, parent maps); None = flat model
    hierarchy: dict[str, Any] | None = None
    # the dataset's preprocessing record (cropmap.dataset.preprocessing.Preprocessing.to_dict); None: a checkpoint
    # from before the record, whose imagery is then taken as SCL-masked with the default classes
    preprocessing: dict[str, Any] | None = None

    @property
    def temperature(self) -> float:
        """The calibration temperature: probabilities are ``softmax(output / T)`` (1 for a checkpoint from
        before calibration; see :mod:`cropmap.monitoring.calibration`)."""
        return float(self.extra.get("calibration", {}).get("temperature", 1.0))

    @property
    def record(self):
        """The preprocessing record predict and export follow."""
        from .dataset.preprocessing import DEFAULT_KEEP_SCL, Preprocessing

        if self.preprocessing:
            return Preprocessing.from_dict(self.preprocessing)
        return Preprocessing(bands=tuple(self.bands), keep_scl=DEFAULT_KEEP_SCL, cloud_mask="unknown",
                             period_days=int(self.time_grid.to_dict().get("period_days", 10)),
                             time_grid=self.time_grid.to_dict(),
                             norm={"mean": [float(v) for v in self.norm_mean], "std": [float(v) for v in self.norm_std]})

    def build(self) -> nn.Module:
        """The model in eval mode, ``[B, C, T, H, W] -> [B, K, H, W]``; a hierarchical one outputs its finest
        level's consistent log-probabilities (see :mod:`cropmap.hierarchy`), so callers need not know."""
        from .hierarchy import Hierarchy, build_network, for_inference

        h = Hierarchy.from_dict(self.hierarchy) if self.hierarchy else None
        model = build_network(self.model_name, in_channels=len(self.bands), num_classes=self.class_table.num_classes,
                              hierarchy=h, **self.model_kwargs)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as e:  # weights saved for another class table, band set or model size
            first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
            raise CropmapError(
                f"{self.source or 'checkpoint'}: the weights do not fit {self.model_name} with "
                f"{self.class_table.num_classes} classes and {len(self.bands)} bands ({first})"
            ) from e
        return for_inference(model, h)


def save_checkpoint(path: Path | str, ckpt: Checkpoint) -> None:
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_name": ckpt.model_name,
        "model_kwargs": dict(ckpt.model_kwargs),
        "state_dict": {k: v.detach().cpu() for k, v in ckpt.state_dict.items()},
        "class_table": ckpt.class_table.to_dict(),
        "time_grid": ckpt.time_grid.to_dict(),
        "bands": list(ckpt.bands),
        "norm": {"mean": [float(v) for v in ckpt.norm_mean], "std": [float(v) for v in ckpt.norm_std]},
        "extra": ckpt.extra,
        "hierarchy": ckpt.hierarchy,
        "preprocessing": ckpt.preprocessing,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path | str) -> Checkpoint:
    """Read a checkpoint file, or the ``model.pt`` inside a run directory."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise CropmapError(f"{path}: checkpoint does not exist (train one with `cropmap train`)")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, foreign pickle with objects, ...
        raise CropmapError(f"{path}: not a readable cropmap checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise CropmapError(f"{path}: not a cropmap checkpoint")
    if d.get("version") != VERSION:
        raise CropmapError(f"{path}: checkpoint version {d.get('version')} is not supported (expected {VERSION})")
    return Checkpoint(
        model_name=d["model_name"],
        model_kwargs=d["model_kwargs"],
        state_dict=d["state_dict"],
        class_table=ClassTable.from_dict(d["class_table"]),
        time_grid=TimeGrid.from_dict(d["time_grid"]),
        bands=tuple(d["bands"]),
        norm_mean=np.asarray(d["norm"]["mean"], dtype=np.float32),
        norm_std=np.asarray(d["norm"]["std"], dtype=np.float32),
        extra=d.get("extra", {}),
        source=path,
        hierarchy=d.get("hierarchy"),
        preprocessing=d.get("preprocessing"),
    )

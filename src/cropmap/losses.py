"""Training losses for ``[B, K, H, W]`` logits and ``[B, H, W]`` labels: cross-entropy or focal, with class
weights against imbalance computed from the train split's label counts."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig
from .errors import CropmapError
from .nomenclature import IGNORE_INDEX

LOSSES = ("ce", "focal")
CLASS_WEIGHTS = ("none", "inverse", "median", "effective")


def label_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels per class in ``labels`` (any shape); the ignore index and out-of-range values are not counted."""
    y = np.asarray(labels).ravel()
    y = y[(y >= 0) & (y < num_classes)]
    return np.bincount(y, minlength=num_classes).astype(np.int64)


def class_weights(counts: np.ndarray | list[int], scheme: str, beta: float = 0.9999) -> np.ndarray | None:
    """Per-class loss weights ``[K]`` from pixel counts ``[K]``; classes without pixels get 0.

    - ``inverse``: ``N / (K' n_c)`` (K' classes present), so a pixel weighs 1 on average;
    - ``median``: median frequency balancing, ``median(f) / f_c`` with ``f_c = n_c / N`` over present classes;
    - ``effective``: ``(1 - beta) / (1 - beta^n_c)``, the inverse effective number of samples
      (Cui et al. 2019), scaled to sum to K'.
    """
    if scheme == "none":
        return None
    n = np.asarray(counts, dtype=np.float64)
    present = n > 0
    if not present.any():
        raise CropmapError("class weights: the train split has no labelled pixel")
    w = np.zeros_like(n)
    k = int(present.sum())
    if scheme == "inverse":
        w[present] = n.sum() / (k * n[present])
    elif scheme == "median":
        f = n[present] / n.sum()
        w[present] = np.median(f) / f
    elif scheme == "effective":
        if not 0 <= beta < 1:
            raise CropmapError(f"class_weights_beta {beta}: must be in [0, 1)")
        # 1 - beta^n computed as -expm1(n log beta): exact for beta close to 1 and large n
        eff = -np.expm1(n[present] * np.log(beta)) / (1 - beta) if beta > 0 else np.ones(k)
        w[present] = 1.0 / eff
        w *= k / w.sum()
    else:
        raise CropmapError(f"class_weights {scheme!r}: expected one of {', '.join(CLASS_WEIGHTS)}")
    return w


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017), ``-w_y (1 - p_y)^gamma log p_y``, averaged like ``CrossEntropyLoss``:
    divided by the summed weights of the labelled pixels, so that ``gamma = 0`` is cross-entropy exactly."""

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.gamma = gamma
        self.ignore_index = ignore_index
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits [B, K, H, W]``, ``target [B, H, W]`` -> scalar."""
        valid = target != self.ignore_index  # [B, H, W]
        t = target.where(valid, torch.zeros_like(target))
        logp = F.log_softmax(logits.float(), dim=1).gather(1, t[:, None]).squeeze(1)  # [B, H, W]
        loss = -logp if self.gamma == 0 else -((1 - logp.exp()).clamp_min(0) ** self.gamma) * logp
        w = valid.to(loss.dtype) if self.weight is None else self.weight[t] * valid
        return (loss * w).sum() / w.sum()


def make_loss(config: TrainConfig, class_counts: np.ndarray) -> nn.Module:
    """The training criterion of ``config`` (``loss``, ``class_weights``), weighted from the train split's counts.

    The one place a loss is built: a multi-level head adds its terms here.
    """
    w = class_weights(class_counts, config.class_weights, config.class_weights_beta)
    wt = None if w is None else torch.as_tensor(w, dtype=torch.float32)
    if config.loss == "ce":
        return nn.CrossEntropyLoss(weight=wt, ignore_index=IGNORE_INDEX)
    if config.loss == "focal":
        return FocalLoss(config.focal_gamma, wt, IGNORE_INDEX)
    raise CropmapError(f"loss {config.loss!r}: expected one of {', '.join(LOSSES)}")

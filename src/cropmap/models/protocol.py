"""What the rest of cropmap (predict, evaluate, export) may ask of a registered model, in one place.

Every model is an ``nn.Module`` whose ``forward(x, doy, mask=None)`` maps ``x [B, C, T, H, W]``
(normalised reflectance), ``doy [B, T]`` (day of year) and ``mask [B, T]`` (True: the date is observed)
to logits ``[B, K, H, W]`` for any H, W. A model, or any of its submodules, may declare:

- ``multiple: int`` — H, W are padded inside to a multiple of this (a U-Net's pooling): windowed
  prediction starts its windows on that grid, so that they see what a whole-scene pass sees;
- ``global_context: bool`` — an output pixel depends on the whole input (e.g. U-TAE's GroupNorm): no
  finite receptive radius, windows are blended rather than proven seamless;
- ``receptive_radius: int`` — the radius in pixels, for models without gradients to measure it by (the
  random forest: 0);
- ``no_export: str`` — why the model has no ONNX export (the forest: its traversal loops over tree depth);
- ``fold_batchnorm_()`` — folds its own BatchNorms into convolutions for inference (see ``fold.py``).

Nothing else reads these attributes: they are gathered by :func:`model_traits`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class CropModel(Protocol):
    def forward(self, x: torch.Tensor, doy: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        ...


@dataclass(frozen=True)
class ModelTraits:
    multiple: int = 1  # windows start on this pixel grid
    global_context: bool = False  # no finite receptive radius
    receptive_radius: int | None = None  # declared radius in px; None: measure it (or global context)
    no_export: str | None = None  # why there is no ONNX export; None: it has one


def model_traits(model: nn.Module) -> ModelTraits:
    """The declarations of ``model`` and its submodules, combined (the largest multiple and radius; global
    context or a missing export anywhere holds for the whole)."""
    multiple, radius, global_context, no_export = 1, None, False, None
    for m in model.modules():
        value = getattr(m, "multiple", 1)
        if not isinstance(value, int) or value < 1:
            raise TypeError(f"{type(m).__name__}.multiple must be a positive int, not {value!r}")
        multiple = max(multiple, value)
        r = getattr(m, "receptive_radius", None)
        if r is not None:
            if not isinstance(r, int) or r < 0:
                raise TypeError(f"{type(m).__name__}.receptive_radius must be an int >= 0, not {r!r}")
            radius = r if radius is None else max(radius, r)
        global_context |= bool(getattr(m, "global_context", False))
        no_export = no_export or getattr(m, "no_export", None)
    return ModelTraits(multiple, global_context, radius, no_export)

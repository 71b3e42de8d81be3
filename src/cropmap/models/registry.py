"""Models by name, so that checkpoints and configs can say which one they hold."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}
# fitted in one go by their own trainer (cropmap.train_forest), not by gradient descent: no gradients and a
# fixed T, so the networks' shared tests (backward, any T, masking) do not apply; they have their own
FITTED_MODELS = ("rf",)


def register(name: str) -> Callable:
    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = builder
        return builder

    return deco


def build_model(name: str, *, in_channels: int, num_classes: int, **kwargs) -> nn.Module:
    """Instantiate a registered model; ``kwargs`` are its hyper-parameters (stored in checkpoints)."""
    if name not in MODELS:
        from ..errors import CropmapError

        raise CropmapError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    params = inspect.signature(MODELS[name]).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        from ..errors import CropmapError

        taken = ", ".join(k for k in params if k not in ("in_channels", "num_classes"))
        raise CropmapError(f"model {name!r} has no option {', '.join(unknown)} (it takes {taken})")
    return MODELS[name](in_channels=in_channels, num_classes=num_classes, **kwargs)


def accepted_kwargs(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``kwargs`` that model ``name``'s builder takes (all of them if it takes ``**kwargs``).

    Shared config fields (e.g. ``hidden``) mean nothing to some models; they are left out rather than
    passed to a constructor that would refuse them.
    """
    if name not in MODELS:
        return kwargs
    params = inspect.signature(MODELS[name]).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}

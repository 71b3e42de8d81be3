"""Model registry: every model maps ``x [B, C, T, H, W]``, ``doy [B, T]`` to logits ``[B, K, H, W]``."""

from .registry import FITTED_MODELS, MODELS, accepted_kwargs, build_model, register

# importing the model modules fills the registry
from . import tempcnn_unet  # noqa: E402,F401
from . import utae  # noqa: E402,F401
from . import forest  # noqa: E402,F401

__all__ = ["FITTED_MODELS", "MODELS", "accepted_kwargs", "build_model", "register"]

"""Model registry: every model maps ``x [B, C, T, H, W]``, ``doy [B, T]`` to logits ``[B, K, H, W]``."""

from .registry import MODELS, accepted_kwargs, build_model, register

# importing the model modules fills the registry
from . import tempcnn_unet  # noqa: E402,F401
from . import utae  # noqa: E402,F401

__all__ = ["MODELS", "accepted_kwargs", "build_model", "register"]

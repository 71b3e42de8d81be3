"""Where the model runs when predicting: the CPU, or a GPU when one is asked for (``auto``: a CUDA GPU when
torch sees one). Compositing stays on the CPU either way; only the model's input and its probabilities
cross to and from the device, one window at a time."""

from __future__ import annotations

import torch

from ..errors import CropmapError

DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"


def inference_device(name: str | torch.device | None = "auto") -> torch.device:
    """The ``torch.device`` for ``--device name``; a clear error for a device this machine does not have."""
    text = str(name or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise CropmapError(f"--device {name}: not a device name (expected {DEVICE_NAMES})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CropmapError(f"--device {name}: torch sees no CUDA GPU here (a CPU-only torch build, or no GPU "
                               "visible); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CropmapError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise CropmapError(f"--device {name}: no Apple GPU (MPS) here; use --device cpu")
    elif device.type != "cpu":
        raise CropmapError(f"--device {name}: predicting on {device.type} is not supported (expected {DEVICE_NAMES})")
    return device

"""Convolution + ReLU in one pass where the CPU's oneDNN can fuse them, two ordinary ops elsewhere.

Measured on 2 Xeon cores (benchmarks/README.md, "The seed model against its FLOP limit"): with channels-last
activations a (5, 1) temporal convolution runs at 84-93 % of the fp32 matmul peak, and the separate ReLU
pass over its output costs another ~7 % of the model's time; oneDNN applies the ReLU as a post-op while the
output is still in registers. The fused operator is the one torch's own compiler (inductor) emits on CPUs
(``torch.ops.mkldnn._convolution_pointwise``); it has no autograd formula, so it is used only without
autograd, on float32 CPU tensors, outside autocast and compilation. ``FUSE = False`` turns it off (the
benchmark's "fast paths one by one" and the equivalence tests use that).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FUSE = True
_broken = False  # set when the fused operator failed once in this process: never tried again


def conv_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int] = (1, 1),
              padding: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """``relu(conv2d(x, weight, bias, stride, padding))``; the output keeps ``x``'s memory format."""
    global _broken
    if FUSE and not _broken and _fusable(x, weight):
        try:
            return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, list(padding), list(stride), [1, 1], 1,
                                                          "relu", [], "")
        except (RuntimeError, NotImplementedError):  # a torch build without it, or a shape oneDNN refuses
            _broken = True
    return F.relu_(F.conv2d(x, weight, bias, stride=stride, padding=padding))


def _fusable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing() and not _dispatch_mode_active() and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))


def _dispatch_mode_active() -> bool:
    """A Python dispatch mode (torch's FLOP counter, a tracer) is watching: give it the ops it knows."""
    stack_len = getattr(torch._C, "_len_torch_dispatch_stack", None)
    return bool(stack_len and stack_len() > 0)

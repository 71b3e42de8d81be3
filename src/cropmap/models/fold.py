"""Inference-time BatchNorm folding: an eval copy of a model whose BatchNorms are merged into the
convolution (or linear layer) before them, so each costs no pass over the activations."""

from __future__ import annotations

import copy
import itertools

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` computing the same function (up to float rounding) with fewer passes.

    Folded: a BatchNorm that directly follows a convolution or linear layer inside an ``nn.Sequential``,
    and whatever a module folds itself through its ``fold_batchnorm_()`` method (e.g. ``TemporalCNN``,
    whose convolutions and norms live in two lists). Everything else is left as it is. The copy is for
    inference only: its folded weights would not train like the originals.
    """
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):
        if hasattr(module, "fold_batchnorm_"):
            module.fold_batchnorm_()
        if isinstance(module, nn.Sequential):
            _fold_sequential(module)
    return folded


def _fold_sequential(seq: nn.Sequential) -> None:
    names = list(seq._modules)
    for a, b in itertools.pairwise(names):
        layer, norm = seq._modules[a], seq._modules[b]
        if not isinstance(norm, _BatchNorm) or not norm.track_running_stats or norm.running_mean is None:
            continue
        if isinstance(layer, _CONVS):
            seq._modules[a] = fuse_conv_bn_eval(layer, norm)
        elif isinstance(layer, _TRANSPOSED):
            seq._modules[a] = fuse_conv_bn_eval(layer, norm, transpose=True)
        elif isinstance(layer, nn.Linear) and isinstance(norm, nn.BatchNorm1d):
            seq._modules[a] = fuse_linear_bn_eval(layer, norm)
        else:
            continue
        seq._modules[b] = nn.Identity()

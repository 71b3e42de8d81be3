"""The fused convolution + ReLU computes ``relu(conv2d(...))``, is used only where it may be, and the seed
models give the same logits with it on and off, on the channels-last path and the reference path."""

import pytest
import torch
import torch.nn.functional as F
from test_fast_paths import _inputs, _random_norms
from test_models import SMALL

from cropmap.models import build_model, kernels
from cropmap.models.fold import fold_batchnorm


needs_mkldnn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


def _fused_calls(monkeypatch) -> list:
    """Records each call of the fused operator (and still runs it)."""
    calls, real = [], torch.ops.mkldnn._convolution_pointwise

    class Spy:
        def __call__(self, *args):
            calls.append(args[1].shape)
            return real(*args)

    monkeypatch.setattr(torch.ops.mkldnn, "_convolution_pointwise", Spy())
    return calls


@needs_mkldnn
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(("kernel", "stride", "padding"), [((5, 1), (1, 1), (2, 0)), ((5, 1), (2, 1), (2, 0)),
                                                            ((3, 3), (1, 1), (1, 1)), ((1, 1), (1, 1), (0, 0))])
def test_fused_conv_relu_equals_the_two_ops(monkeypatch, layout, kernel, stride, padding):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 13, 17, generator=g).contiguous(memory_format=layout)
    w, b = torch.randn(8, 6, *kernel, generator=g), torch.randn(8, generator=g)
    calls = _fused_calls(monkeypatch)
    with torch.inference_mode():
        got = kernels.conv_relu(x, w, b, stride, padding)
    assert calls, "the fused operator was not used under inference mode on the CPU"
    torch.testing.assert_close(got, F.relu(F.conv2d(x, w, b, stride=stride, padding=padding)), rtol=1e-5, atol=1e-5)
    assert got.is_contiguous(memory_format=layout)


@needs_mkldnn
def test_no_fusion_under_autograd_or_a_flop_counter(monkeypatch):
    from torch.utils.flop_counter import FlopCounterMode

    x, w = torch.randn(1, 3, 8, 8, requires_grad=True), torch.randn(4, 3, 3, 3)
    calls = _fused_calls(monkeypatch)
    y = kernels.conv_relu(x, w, None, (1, 1), (1, 1))
    y.sum().backward()  # the fused operator has no backward: the plain ops ran
    assert x.grad is not None and not calls
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        kernels.conv_relu(x.detach(), w, None, (1, 1), (1, 1))
    assert not calls and counter.get_total_flops() == 2 * 4 * 3 * 9 * 64  # the counter saw a convolution


def test_a_failing_fused_operator_falls_back_once_and_for_all(monkeypatch):
    def broken(*args):
        raise RuntimeError("no such kernel")

    monkeypatch.setattr(torch.ops.mkldnn, "_convolution_pointwise", broken, raising=False)
    monkeypatch.setattr(kernels, "_broken", False)
    x, w = torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3)
    with torch.inference_mode():
        got = kernels.conv_relu(x, w, None, (1, 1), (1, 1))
    assert kernels._broken
    torch.testing.assert_close(got, F.relu(F.conv2d(x, w, padding=1)))


@needs_mkldnn
@pytest.mark.parametrize("name", ["tempcnn-unet", "tempcnn-unet-fast", "tempcnn-pixel"])
@pytest.mark.parametrize("taps", [(), (3,)])
def test_seed_models_give_the_same_logits_fused_unfused_and_by_reference(monkeypatch, name, taps):
    """The fold-and-fuse inference path against the trained model's own path and the per-pixel reference
    (``[B·H·W, C, T]`` through Conv1d), with padded steps and an intermediate-layer head."""
    kwargs = {**SMALL[name], "temporal_layers": 3}
    model = _random_norms(build_model(name, in_channels=4, num_classes=5 + sum(taps), coarse_heads=taps, **kwargs))
    folded = fold_batchnorm(model)
    x, doy, mask = _inputs(t=11, h=16, w=12)
    calls = _fused_calls(monkeypatch)
    with torch.inference_mode():
        fused = folded(x, doy, mask)
        assert calls
        monkeypatch.setattr(kernels, "FUSE", False)
        unfused = folded(x, doy, mask)
        reference = model(x, doy, mask, reference=True)
    torch.testing.assert_close(fused, unfused, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused, reference, rtol=1e-4, atol=1e-5)


def test_channels_last_training_path_has_the_reference_gradients():
    model = _random_norms(build_model("tempcnn-unet", in_channels=4, num_classes=4, **SMALL["tempcnn-unet"])).train()
    model.temporal.dropout.p = 0.0
    x, doy, mask = _inputs(t=9)
    grads = []
    for reference in (False, True):
        model.zero_grad()
        torch.manual_seed(0)
        model(x, doy, mask, reference=reference).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-5, msg=n)

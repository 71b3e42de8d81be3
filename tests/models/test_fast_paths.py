"""Inference fast paths compute the same function as the reference formulation, same weights:
BatchNorm folding, row-band chunking of the temporal CNN, and the strided (cheaper) configuration."""

import pytest
import torch
from test_models import NETWORKS, SMALL
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.flop_counter import FlopCounterMode

from cropmap.models import build_model, temporal
from cropmap.models.fold import fold_batchnorm


def _random_norms(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so that folding has something to fold."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


def _inputs(b=2, t=9, h=12, w=10):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, 4, t, h, w, generator=g)
    doy = torch.linspace(10, 350, t).expand(b, t)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[-1, max(1, t - 3):] = False  # the last series padded by up to 3 steps, as in a batch of mixed T
    return x, doy, mask


def _batchnorms(model: torch.nn.Module) -> int:
    return sum(isinstance(m, _BatchNorm) for m in model.modules())


@pytest.mark.parametrize("name", NETWORKS)
def test_folded_model_gives_the_same_logits(name):
    model = _random_norms(build_model(name, in_channels=4, num_classes=5, **SMALL[name]))
    folded = fold_batchnorm(model)
    x, doy, mask = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(folded(x, doy, mask), model(x, doy, mask), rtol=1e-4, atol=1e-5)
    assert _batchnorms(folded) < _batchnorms(model)  # something was folded


@pytest.mark.parametrize("name", ["tempcnn-unet", "tempcnn-unet-fast", "tempcnn-pixel"])
def test_every_batchnorm_of_the_temporal_cnns_is_folded_on_both_paths(name):
    model = _random_norms(build_model(name, in_channels=4, num_classes=5, **SMALL[name]))
    folded = fold_batchnorm(model)
    assert _batchnorms(model) > 0 and _batchnorms(folded) == 0
    x, doy, mask = _inputs(t=11)
    with torch.no_grad():  # the folded convolutions now carry a bias: the reference Conv1d path uses it too
        torch.testing.assert_close(folded(x, doy, mask, reference=True), model(x, doy, mask), rtol=1e-4, atol=1e-5)


def test_folding_leaves_the_original_model_alone():
    model = build_model("tempcnn-unet", in_channels=4, num_classes=3, **SMALL["tempcnn-unet"]).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_batchnorm(model)
    assert model.training and _batchnorms(model) > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_chunked_inference_equals_one_pass(monkeypatch):
    """Without autograd the temporal CNN runs in bands of rows; the result must not depend on the band size."""
    model = _random_norms(build_model("tempcnn-unet", in_channels=4, num_classes=4, **SMALL["tempcnn-unet"]))
    x, doy, mask = _inputs(h=23, w=9)
    with torch.enable_grad():
        whole = model(x, doy, mask).detach()  # autograd on: one pass
    monkeypatch.setattr(temporal, "INFERENCE_CHUNK_PIXELS", 40)  # bands of 2 rows x 9 px x 2 series
    with torch.inference_mode():
        torch.testing.assert_close(model(x, doy, mask), whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("t", [1, 2, 7, 12])
def test_strided_model_reference_and_grid_agree_for_any_t(t):
    model = _random_norms(build_model("tempcnn-unet-fast", in_channels=4, num_classes=4, **SMALL["tempcnn-unet-fast"]))
    x, doy, mask = _inputs(t=t)
    with torch.no_grad():
        torch.testing.assert_close(model(x, doy, mask), model(x, doy, mask, reference=True), rtol=1e-4, atol=1e-5)


def test_fast_configuration_costs_about_half_the_flops():
    def flops(name: str) -> int:
        model = build_model(name, in_channels=4, num_classes=10, hidden=32, embed_dim=32, unet_base=32).eval()
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(*_inputs(b=1, t=48, h=16, w=16)[:2])
        return counter.get_total_flops()

    ratio = flops("tempcnn-unet-fast") / flops("tempcnn-unet")
    assert 0.45 < ratio < 0.65


def test_even_kernel_with_stride_is_refused():
    with pytest.raises(ValueError, match="must be odd"):
        temporal.TemporalCNN(kernel_size=4, time_stride=2)

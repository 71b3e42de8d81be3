"""U-TAE specifics: attention over real dates only, invariance to date order, odd sizes, its own parts."""

import math

import pytest
import torch

from cropmap.config import ModelConfig
from cropmap.errors import CropmapError
from cropmap.models import build_model
from cropmap.models.utae import LTAE, UTAE, date_encoding, masked_group_norm

TINY = dict(encoder_widths=(8, 8, 8, 16), decoder_widths=(8, 8, 8, 16), n_head=2, d_model=16, d_k=4)


def _model(**kw) -> UTAE:
    torch.manual_seed(0)
    return build_model("utae", in_channels=4, num_classes=5, **{**TINY, **kw}).eval()


def _inputs(b=2, t=7, h=12, w=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 4, t, h, w, generator=g)
    doy = torch.sort(torch.rand(b, t, generator=g) * 365, dim=1).values
    return x, doy


def test_attention_sums_to_one_over_real_dates_and_is_zero_on_padded_ones():
    model = _model()
    x, doy = _inputs(t=9, h=16, w=16)
    mask = torch.tensor([[True] * 9, [True, False, True, True, True, True, False, False, True]])
    with torch.no_grad():
        attn = model.attention(x, doy, mask)
    assert attn.shape == (2, 2, 9, 2, 2)  # [heads, B, T, h, w]: 16 px / 2^3
    torch.testing.assert_close(attn.sum(dim=2), torch.ones(2, 2, 2, 2))
    assert (attn[:, 1, ~mask[1]] == 0).all()
    assert (attn[:, 1, mask[1]] > 0).all()


def test_permuting_dates_with_their_doy_leaves_the_logits_unchanged():
    """Attention is a weighted sum over dates: their order carries nothing, only their doy does."""
    model = _model()
    x, doy = _inputs(t=8)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x, doy)
        torch.testing.assert_close(model(x[:, :, perm], doy[:, perm]), want, rtol=1e-4, atol=1e-5)
        moved = model(x[:, :, perm], doy)  # the same images said to be taken on other days
    assert (moved - want).abs().max() > 1e-3


@pytest.mark.parametrize("h, w", [(1, 1), (13, 7), (33, 20), (3, 50)])
def test_odd_sizes_train_and_crop_back(h, w):
    model = _model().train()
    x, doy = _inputs(b=2, t=3, h=h, w=w)
    out = model(x, doy)
    assert out.shape == (2, 5, h, w)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_padded_dates_are_not_encoded():
    """The shared encoder sees each real date once and nothing else (the reference code runs it on padded
    dates and on a batch of zeros besides)."""
    model = _model()
    seen = []
    model.in_conv.register_forward_hook(lambda _m, inp, _out: seen.append(inp[0].shape[0]))
    x, doy = _inputs(b=2, t=6)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    with torch.no_grad():
        model(x, doy, mask)
        model(x, doy)
        model(x, doy, mask, reference=True)
    assert seen == [10, 12, 12]


def test_masked_group_norm_is_group_norm_without_padding_and_ignores_padding():
    norm = torch.nn.GroupNorm(4, 8)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2), norm.bias.uniform_(-1, 1)
    x = torch.randn(5, 6, 8)  # [N, T, C]
    want = norm(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(masked_group_norm(x, None, norm), want)
    torch.testing.assert_close(masked_group_norm(x, torch.ones(5, 6, dtype=torch.bool), norm), want)
    padded = torch.cat([x, torch.full((5, 2, 8), float("inf"))], dim=1)
    mask = torch.tensor([[True] * 6 + [False] * 2] * 5)
    torch.testing.assert_close(masked_group_norm(padded, mask, norm)[:, :6], want)


def test_date_encoding_is_the_papers_sinusoid():
    enc = date_encoding(torch.tensor([[0.0, 100.0]]), d=4, repeat=2)  # [1, 2, 8]
    want = [math.sin(100), math.cos(100), math.sin(100 / 1000 ** 0.5), math.cos(100 / 1000 ** 0.5)]
    torch.testing.assert_close(enc[0, 0], torch.tensor([0.0, 1, 0, 1] * 2))
    torch.testing.assert_close(enc[0, 1], torch.tensor(want * 2))


def test_collapse_with_one_hot_attention_picks_that_date():
    model = _model()
    skip = torch.randn(2, 5, 8, 8, 6)  # [B, T, C, H, W]
    attn = torch.zeros(2, 2, 5, 4, 3)  # [heads, B, T, h, w]
    attn[0, :, 1], attn[1, :, 3] = 1, 1  # head 0 takes date 1, head 1 date 3
    out = model.collapse(skip, attn, 2)
    torch.testing.assert_close(out[:, :4], skip[:, 1, :4])
    torch.testing.assert_close(out[:, 4:], skip[:, 3, 4:])


def test_ltae_with_no_real_date_gives_finite_output():
    ltae = LTAE(8, 8, n_head=2, d_model=8).eval()
    out, attn = ltae(torch.randn(3, 4, 8), torch.rand(3, 4) * 365, torch.zeros(3, 4, dtype=torch.bool))
    assert torch.isfinite(out).all() and torch.isfinite(attn).all()


def test_defaults_match_the_paper_size():
    model = build_model("utae", in_channels=4, num_classes=20)
    n = sum(p.numel() for p in model.parameters())
    assert 1.0e6 < n < 1.2e6  # paper: 1.1 M
    assert model.multiple == 8 and model.ltae.n_head == 16 and model.ltae.d_k == 4


def test_config_options_reach_the_model_and_shared_fields_are_filtered():
    cfg = ModelConfig(name="utae", hidden=8, embed_dim=8, options={"encoder_widths": [8, 8, 16], "decoder_widths":
                                                                   [8, 8, 16], "n_head": 2, "d_model": 8})
    kwargs = cfg.kwargs()
    assert "hidden" not in kwargs and kwargs["dropout"] == cfg.dropout
    model = build_model("utae", in_channels=4, num_classes=3, **kwargs)
    assert model.multiple == 4 and len(model.down) == 2


def test_bad_hyper_parameters_are_one_line_errors():
    with pytest.raises(CropmapError, match=r"^utae: d_model 16, encoder_widths \[8, 8, 8, 12\] .* multiples of n_head 8"):
        _model(encoder_widths=[8, 8, 8, 12], n_head=8)
    with pytest.raises(CropmapError, match="need the same length"):
        _model(decoder_widths=[8, 8, 16])
    with pytest.raises(CropmapError, match=r"^model 'utae' has no option encoder_width \(it takes encoder_widths, "):
        build_model("utae", in_channels=4, num_classes=3, encoder_width=[8])


def test_batchnorm_folding_keeps_the_logits():
    """Prediction folds BatchNorms into the layers before them: the decoder and L-TAE MLP are built to allow it."""
    from cropmap.models.fold import fold_batchnorm

    model = _model()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    x, doy = _inputs(t=5, h=13, w=9)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    with torch.no_grad():
        torch.testing.assert_close(folded(x, doy, mask), model(x, doy, mask), rtol=1e-4, atol=1e-5)

"""Every registered network gets the same shape, backward, masking and save/load tests (the fitted models,
``FITTED_MODELS``, have theirs in test_forest.py: no backward, one T)."""

import numpy as np
import pytest
import torch

from cropmap.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from cropmap.dataset.timegrid import TimeGrid
from cropmap.errors import CropmapError
from cropmap.models import FITTED_MODELS, MODELS, build_model
from cropmap.nomenclature import make_class_table

# small hyper-parameters per registered model (a new model fails test_every_model_has_small_kwargs until added);
# U-TAE's widths are lists, as YAML and checkpoints give them
SMALL = {
    "tempcnn-unet": dict(hidden=8, embed_dim=8, unet_base=8, unet_depth=2, temporal_layers=2),
    "tempcnn-unet-fast": dict(hidden=8, embed_dim=8, unet_base=8, unet_depth=2, temporal_layers=3),
    "tempcnn-pixel": dict(hidden=8, embed_dim=8, temporal_layers=2),
    "utae": dict(encoder_widths=[8, 8, 8, 16], decoder_widths=[8, 8, 8, 16], n_head=2, d_model=16, d_k=4),
}
NETWORKS = sorted(set(MODELS) - set(FITTED_MODELS))
# what keeps padded steps from touching real ones: for the temporal CNNs, a kernel of 1 (their convolutions
# mix neighbouring steps); U-TAE's attention and normalisation exclude them as built
UNMIXED = {"tempcnn-unet": dict(temporal_layers=1, kernel_size=1), "tempcnn-pixel": dict(temporal_layers=1, kernel_size=1)}
# the fast model keeps two layers, so that its strided mask is what gets tested
UNMIXED["tempcnn-unet-fast"] = dict(temporal_layers=2, kernel_size=1)


def _inputs(b=2, c=4, t=7, h=12, w=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, t, h, w, generator=g)
    doy = torch.linspace(10, 350, t).expand(b, t)
    return x, doy


@pytest.fixture(params=NETWORKS)
def name(request):
    return request.param


def test_every_model_has_small_kwargs():
    assert sorted(SMALL) == NETWORKS and set(FITTED_MODELS) <= set(MODELS)


@pytest.mark.parametrize("t, h, w", [(5, 16, 16), (11, 13, 7), (36, 1, 1), (2, 33, 20)])
def test_shapes_for_any_t_h_w(name, t, h, w):
    model = build_model(name, in_channels=4, num_classes=5, **SMALL[name]).eval()
    x, doy = _inputs(t=t, h=h, w=w)
    assert model(x, doy).shape == (2, 5, h, w)


def test_backward_reaches_every_parameter(name):
    model = build_model(name, in_channels=4, num_classes=3, **SMALL[name])
    x, doy = _inputs()
    model(x, doy).logsumexp(1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_fast_path_equals_reference_formulation(name):
    """The two formulations agree: for the temporal CNNs [B·H·W, C, T] Conv1d (the mission's) and the (k, 1)
    grid convolution; for U-TAE the encoder run on every date and on the real dates only."""
    model = build_model(name, in_channels=4, num_classes=4, **SMALL[name]).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    x, doy = _inputs(t=9, h=6, w=5)
    mask = torch.tensor([[True] * 9, [True] * 6 + [False] * 3])
    with torch.no_grad():
        fast, ref = model(x, doy, mask), model(x, doy, mask, reference=True)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)


def test_masked_steps_do_not_change_the_output(name):
    """Padding a series with masked steps of random values (as a batch of mixed T does) must not change the
    result, by either formulation. Any difference would come from pooling, attention or normalisation over time."""
    model = build_model(name, in_channels=4, num_classes=4, **{**SMALL[name], **UNMIXED.get(name, {})}).eval()
    x, doy = _inputs(b=1, t=6)
    padded = torch.cat([x, 5 * torch.randn(1, 4, 3, 12, 10)], dim=2)
    doy_p = torch.cat([doy, torch.full((1, 3), 100.0)], dim=1)
    mask = torch.tensor([[True] * 6 + [False] * 3])
    with torch.no_grad():
        want = model(x, doy)
        torch.testing.assert_close(model(padded, doy_p, mask), want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model(padded, doy_p, mask, reference=True), want, rtol=1e-4, atol=1e-5)
        assert (model(padded, doy_p) - want).abs().max() > 1e-3  # unmasked, the padding does change it


def test_checkpoint_round_trip(name, tmp_path):
    table, _ = make_class_table(["BTH", "MIS", "PPH"], "group")
    model = build_model(name, in_channels=4, num_classes=table.num_classes, **SMALL[name]).eval()
    grid = TimeGrid.covering([__import__("datetime").date(2023, 1, 5)] * 2, 10)
    save_checkpoint(tmp_path / "model.pt", Checkpoint(name, SMALL[name], model.state_dict(), table, grid,
                                                      ("B2", "B3", "B4", "B8"), np.zeros(4), np.ones(4), {"a": 1}))
    ck = load_checkpoint(tmp_path)
    assert ck.class_table == table and ck.time_grid == grid and ck.extra == {"a": 1}
    x, doy = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(ck.build()(x, doy), model(x, doy))


def test_checkpoint_loading_refuses_foreign_files(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "cropmap-checkpoint", "obj": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CropmapError, match="not a readable cropmap checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CropmapError, match="not a cropmap checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "trunc.pt").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(CropmapError, match="trunc.pt: not a readable"):
        load_checkpoint(tmp_path / "trunc.pt")


def test_unknown_model_name():
    with pytest.raises(CropmapError, match=f"unknown model 'nope'; available: {', '.join(sorted(MODELS))}$"):
        build_model("nope", in_channels=4, num_classes=2)


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_every_model_follows_the_protocol(model_name):
    """What predict, evaluate and export ask of a model (cropmap.models.protocol), for every registered one."""
    from cropmap.models.protocol import CropModel, ModelTraits, model_traits

    if model_name in FITTED_MODELS:
        model = build_model(model_name, in_channels=4, num_classes=3, steps=2, trees=1, nodes=1, leaves=1,
                            leaf_classes=1, depth=0)
    else:
        model = build_model(model_name, in_channels=4, num_classes=3, **SMALL[model_name])
    assert isinstance(model, CropModel)
    t = model_traits(model)
    assert isinstance(t, ModelTraits) and t.multiple >= 1
    assert (t.no_export is not None) == (model_name in FITTED_MODELS)
    assert t.global_context == (model_name == "utae")
    if model_name in FITTED_MODELS:
        assert t.receptive_radius == 0


def test_model_traits_combine_submodules_and_refuse_bad_declarations():
    from cropmap.models.protocol import model_traits

    class Part(torch.nn.Module):
        def __init__(self, **declared):
            super().__init__()
            for k, v in declared.items():
                setattr(self, k, v)

    whole = torch.nn.Sequential(Part(multiple=4, receptive_radius=3), Part(multiple=8, receptive_radius=1),
                                Part(no_export="why"))
    t = model_traits(whole)
    assert (t.multiple, t.receptive_radius, t.global_context, t.no_export) == (8, 3, False, "why")
    with pytest.raises(TypeError, match="multiple must be a positive int"):
        model_traits(Part(multiple=0))
    with pytest.raises(TypeError, match="receptive_radius must be an int"):
        model_traits(Part(receptive_radius=1.5))

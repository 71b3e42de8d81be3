"""The label hierarchy: levels of a class table, labels per level, summed loss, consistency rule, and a
hierarchical model going through the checkpoint like a flat one."""

import datetime as dt

import numpy as np
import pytest
import torch

from cropmap.cli import main
from cropmap.errors import CropmapError
from cropmap.hierarchy import (
    HierarchicalLoss,
    HierarchicalModel,
    Hierarchy,
    build_hierarchical,
)
from cropmap.nomenclature import IGNORE_INDEX, OTHER_NAME, make_class_table

# crop level with background and a rare-codes class: 0 bg, 1 BTH, 2 MIS, 3 ORH, 4 PPH, 5 Autres cultures (SOJ, TTH)
PIXELS = {"BTH": 100, "MIS": 100, "ORH": 100, "PPH": 100, "SOJ": 1, "TTH": 1}
TABLE, _ = make_class_table(PIXELS, "crop", background=True, pixels=PIXELS, min_pixels=10)


def test_hierarchy_of_a_crop_table():
    h = Hierarchy.from_table(TABLE)
    assert h.levels == ("crop", "group", "coarse") and TABLE.names[5] == OTHER_NAME
    crop, group, coarse = h.names
    assert len(crop) == 6 and len(group) == 6  # soft wheat, maize, barley, permanent meadow: own groups
    assert coarse == ("Hors parcelles", "Cultures d'hiver", "Cultures de printemps et d'été", "Prairies et fourrages", "Autres")
    up = h.of_finest()
    # background is its own class everywhere; wheat and barley are winter crops; "Autres cultures"
    # (soy + triticale: summer and winter) keeps its name at the group level and goes to "Autres" above
    assert [coarse[c] for c in up[2]] == ["Hors parcelles", "Cultures d'hiver", "Cultures de printemps et d'été", "Cultures d'hiver",
                                          "Prairies et fourrages", "Autres"]
    assert group[up[1][5]] == OTHER_NAME
    assert Hierarchy.from_dict(h.to_dict()) == h
    assert Hierarchy.from_table(TABLE, ["crop", "coarse"]).names == (crop, coarse)


def test_levels_that_do_not_nest():
    """RPG coarse classes are per code: winter and spring soft wheat share the group "Blé tendre" but not a
    coarse class, so crop -> group -> coarse is no chain; each level is its own partition of the crops."""
    pixels = {"BTH": 100, "BTP": 100, "MIS": 100}
    table, _ = make_class_table(pixels, "crop", background=False, pixels=pixels)
    h = Hierarchy.from_table(table)
    up = h.of_finest()
    assert table.codes[:2] == (("BTH",), ("BTP",))
    assert up[1][0] == up[1][1] and up[2][0] != up[2][1]  # one group, two coarse classes
    out = h.consistent(h.split(torch.randn(2, h.total, 3, 3, generator=torch.Generator().manual_seed(0))))
    for lv, m in enumerate(up[1:], start=1):
        assert torch.equal(torch.as_tensor(m)[out[0].argmax(1)], out[lv].argmax(1))
    # a checkpoint written before this change (nested parent maps) still reads
    legacy = Hierarchy.from_dict({"levels": ["crop", "group"], "names": [["a", "b"], ["A"]], "parent": [[0, 0]]})
    assert legacy.of_finest() == [[0, 1], [0, 0]]


def test_bad_levels_are_errors():
    with pytest.raises(CropmapError, match="expected the dataset's level crop first"):
        Hierarchy.from_table(TABLE, ["group", "coarse"])
    with pytest.raises(CropmapError, match="expected the dataset's level crop first"):
        Hierarchy.from_table(TABLE, ["crop", "county"])
    coarse_only, _ = make_class_table(["BTH", "MIS"], "group")
    with pytest.raises(CropmapError, match="no coarser level"):
        Hierarchy.from_table(coarse_only, ["group"])


def test_labels_per_level_keep_the_ignore_index():
    h = Hierarchy.from_table(TABLE)
    y = torch.tensor([[[0, 1, 2], [3, 4, 5]], [[IGNORE_INDEX, 3, 1], [5, 5, IGNORE_INDEX]]])  # [B=2, H=2, W=3]
    crop, group, coarse = h.labels(y)
    assert torch.equal(crop, y)
    up = h.of_finest()
    want = torch.tensor([[[up[2][v] if v >= 0 else IGNORE_INDEX for v in row] for row in b] for b in y.tolist()])
    assert torch.equal(coarse, want) and coarse[1, 0, 0] == IGNORE_INDEX
    assert coarse[0, 0, 1] == coarse[0, 1, 0] == 1  # wheat and barley: winter crops
    assert group.shape == y.shape and group.dtype == y.dtype


def test_summed_loss_is_one_cross_entropy_per_level():
    h = Hierarchy.from_table(TABLE)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, h.total, 4, 4, generator=g)
    y = torch.randint(-1, 6, (2, 4, 4), generator=g)
    ce = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    want = sum(ce(z, t) for z, t in zip(h.split(logits), h.labels(y)))
    assert HierarchicalLoss(h)(logits, y).item() == pytest.approx(want.item(), rel=1e-6)
    # a per-level loss (e.g. weighted) replaces the default one
    class Seven(torch.nn.Module):
        def forward(self, z, t):
            return torch.tensor(7.0)

    parts = [ce(z, t) for z, t in zip(h.split(logits), h.labels(y))]
    swapped = HierarchicalLoss(h, [ce, Seven(), ce])(logits, y)
    assert swapped.item() == pytest.approx((parts[0] + 7 + parts[2]).item(), rel=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_consistent_argmax_child_sits_under_argmax_parent(seed):
    h = Hierarchy.from_table(TABLE)
    g = torch.Generator().manual_seed(seed)
    logits = h.split(torch.randn(3, h.total, 8, 8, generator=g) * 4)
    out = h.consistent(logits)
    assert [o.shape[1] for o in out] == list(h.sizes)
    for lv, m in enumerate(h.of_finest()[1:], start=1):  # every level's argmax contains the finest argmax
        assert torch.equal(torch.as_tensor(m)[out[0].argmax(1)], out[lv].argmax(1))
    for o in out:
        assert torch.allclose(o.exp().sum(1), torch.ones(1)) and torch.isfinite(o).all()  # distributions
    # the finest argmax is the best crop -> group -> coarse path under the three heads (brute force)
    logp = [torch.log_softmax(z, 1) for z in logits]
    path = torch.stack([sum(lp[:, m[c]] for lp, m in zip(logp, h.of_finest())) for c in range(h.sizes[0])], 1)
    assert torch.equal(out[0].argmax(1), path.argmax(1))
    assert torch.equal(h.consistent(logits, all_levels=False)[0], out[0])
    # the same property fails for the raw heads on some pixels: the rule is doing something
    raw_ok = torch.equal(torch.as_tensor(h.of_finest()[1])[logits[0].argmax(1)], logits[1].argmax(1))
    assert not raw_ok


def test_consistency_by_hand():
    # parent A (children a1, a2) a little likelier than B (child b1); b1 by far the likeliest child
    h = Hierarchy.from_parents(("crop", "group"), (("a1", "a2", "b1"), ("A", "B")), ((0, 0, 1),))
    p_child = torch.tensor([0.05, 0.05, 0.9]).log().view(1, 3, 1, 1)
    p_parent = torch.tensor([0.51, 0.49]).log().view(1, 2, 1, 1)
    child, parent = h.consistent([p_child, p_parent])
    # paths: a1 0.05 * 0.51, a2 the same, b1 0.9 * 0.49 -> b1, under B (a sum over A's children, 0.051,
    # would still lose to B's 0.441, but A's head probability alone, 0.51, would pick the wrong parent)
    paths = torch.tensor([0.05 * 0.51, 0.05 * 0.51, 0.9 * 0.49])
    assert child.exp().flatten().tolist() == pytest.approx((paths / paths.sum()).tolist(), abs=1e-6)
    best = torch.tensor([0.05 * 0.51, 0.9 * 0.49])  # max-marginals
    assert parent.exp().flatten().tolist() == pytest.approx((best / best.sum()).tolist(), abs=1e-6)
    assert child.argmax(1).item() == 2 and parent.argmax(1).item() == 1


def test_hierarchical_model_through_the_checkpoint(tmp_path):
    from cropmap.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from cropmap.dataset.timegrid import TimeGrid

    h = Hierarchy.from_table(TABLE)
    kwargs = {"hidden": 4, "embed_dim": 4, "unet_base": 4, "temporal_layers": 1}
    model = build_hierarchical("tempcnn-unet", in_channels=4, hierarchy=h, **kwargs).eval()
    x, doy = torch.randn(1, 4, 5, 16, 16), torch.tensor([[10.0, 50, 90, 130, 170]])
    raw = model.forward_levels(x, doy)
    assert list(raw) == list(h.levels) and [v.shape[1] for v in raw.values()] == list(h.sizes)
    tg = TimeGrid(dt.date(2023, 1, 1), 10, 5)
    save_checkpoint(tmp_path / "model.pt", Checkpoint(
        model_name="tempcnn-unet", model_kwargs=kwargs, state_dict=model.model.state_dict(), class_table=TABLE,
        time_grid=tg, bands=("B2", "B3", "B4", "B8"), norm_mean=np.zeros(4), norm_std=np.ones(4), extra={},
        hierarchy=h.to_dict()))
    ckpt = load_checkpoint(tmp_path)  # weights_only loading: the hierarchy is plain lists
    built = ckpt.build()
    assert isinstance(built, HierarchicalModel) and built.hierarchy == h
    with torch.inference_mode():
        out = built(x, doy)
        assert out.shape == (1, TABLE.num_classes, 16, 16)
        assert torch.allclose(out, model(x, doy))



@pytest.fixture(scope="module")
def hier_run(tiny_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("hier") / "run"
    assert main(["train", "--data", str(tiny_dataset), "--out", str(run), "--epochs", "2", "--max-steps", "4",
                 "--batch-size", "2", "--hidden", "8", "--embed-dim", "8", "--unet-base", "8",
                 "--levels", "group", "coarse"]) == 0
    return run


def test_hierarchical_train_evaluate_predict(hier_run, tiny_dataset, tiny_scene, capsys):
    import json

    import rasterio

    from cropmap.checkpoint import load_checkpoint
    from cropmap.dataset.store import dataset_info

    ckpt = load_checkpoint(hier_run)
    table = dataset_info(tiny_dataset).class_table
    assert ckpt.hierarchy == Hierarchy.from_table(table).to_dict()
    head = ckpt.state_dict[[k for k in ckpt.state_dict if k.endswith("weight")][-1]]
    assert head.shape[0] == Hierarchy.from_table(table).total  # one shared trunk, one 1x1 head per level
    capsys.readouterr()
    assert main(["evaluate", "--run", str(hier_run), "--data", str(tiny_dataset)]) == 0
    out = capsys.readouterr().out
    assert "group head alone: OA" in out and "coarse head alone: OA" in out and "coarse level: OA" in out
    m = json.loads((hier_run / "metrics.json").read_text(encoding="utf-8"))
    assert list(m["heads"]) == ["group", "coarse"]
    assert m["heads"]["group"]["pixels"] == m["pixels"] == m["levels"]["coarse"]["pixels"]
    # predict sees a flat model: the finest level's classes, consistent with the coarse head
    assert main(["predict", "--run", str(hier_run), "--imagery", str(tiny_scene.imagery),
                 "--out", str(hier_run / "map.tif"), "--window", "48", "--overlap", "24"]) == 0
    with rasterio.open(hier_run / "map.tif") as src:
        a = src.read(1)
        assert json.loads(src.tags()["CLASS_NAMES"]) == list(table.names)
    assert set(np.unique(a)) <= set(range(table.num_classes)) | {255}


def test_weighted_loss_weighs_each_level():
    h = Hierarchy.from_table(TABLE)
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, h.total, 4, 4, generator=g)
    y = torch.randint(-1, 6, (2, 4, 4), generator=g)
    ce = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    parts = [ce(z, t) for z, t in zip(h.split(logits), h.labels(y))]
    got = HierarchicalLoss(h, weights=(1, 0.5, 0.1))(logits, y)
    assert got.item() == pytest.approx((parts[0] + 0.5 * parts[1] + 0.1 * parts[2]).item(), rel=1e-6)
    with pytest.raises(ValueError, match="one weight per level"):
        HierarchicalLoss(h, weights=(1, 0.5))


@pytest.mark.parametrize("name", ["tempcnn-unet", "tempcnn-pixel"])
def test_intermediate_heads_read_earlier_temporal_layers(name):
    """ms-convSTAR's placement: the coarse level's head reads the first temporal layer, the group's the second,
    the crop's the top. A change after the first layer leaves the coarse logits alone, not the others."""
    from cropmap.models import build_model
    from cropmap.models.tempcnn_unet import level_taps

    h = Hierarchy.from_table(TABLE)
    assert level_taps(h.sizes[1:], 3) == ((1, h.sizes[1]), (0, h.sizes[2]))
    model = build_model(name, in_channels=4, num_classes=h.total, hidden=6, embed_dim=6, unet_base=4,
                        temporal_layers=3, coarse_heads=list(h.sizes[1:])).eval()
    x, doy = torch.randn(2, 4, 7, 8, 8), torch.linspace(10, 300, 7).expand(2, 7)
    mask = torch.tensor([[True] * 7, [True] * 5 + [False] * 2])
    with torch.no_grad():
        before = h.split(model(x, doy, mask))
        torch.testing.assert_close(model(x, doy, mask, reference=True), torch.cat(before, 1), rtol=1e-4, atol=1e-5)
        model.temporal.convs[2].weight.mul_(3)
        after = h.split(model(x, doy, mask))
    assert [b.shape[1] for b in before] == list(h.sizes)
    torch.testing.assert_close(after[2], before[2])
    torch.testing.assert_close(after[1], before[1])
    assert (after[0] - before[0]).abs().max() > 1e-4
    with torch.no_grad():
        model.temporal.convs[1].weight.mul_(3)
        again = h.split(model(x, doy, mask))
    torch.testing.assert_close(again[2], before[2])
    assert (again[1] - before[1]).abs().max() > 1e-4


def test_intermediate_heads_train_and_reload(tiny_dataset, tmp_path):
    import json

    from cropmap.checkpoint import load_checkpoint

    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_dataset), "--out", str(run), "--epochs", "1", "--max-steps", "2",
                 "--batch-size", "2", "--hidden", "8", "--embed-dim", "8", "--unet-base", "8", "--levels", "group",
                 "coarse", "--level-heads", "intermediate", "--level-weights", "1", "0.5"]) == 0
    ck = load_checkpoint(run)
    assert ck.model_kwargs["coarse_heads"] == [Hierarchy.from_dict(ck.hierarchy).sizes[1]]
    assert main(["evaluate", "--run", str(run), "--data", str(tiny_dataset)]) == 0
    assert "group" in json.loads((run / "metrics.json").read_text(encoding="utf-8"))["heads"]
    from cropmap.config import ModelConfig, TrainConfig
    from cropmap.training import check_config

    with pytest.raises(CropmapError, match="level_weights .* one weight per level"):
        check_config(TrainConfig(levels=("group", "coarse"), level_weights=(1.0,)))
    with pytest.raises(CropmapError, match="model utae has no intermediate temporal layers"):
        check_config(TrainConfig(levels=("group", "coarse"), level_heads="intermediate",
                                 model=ModelConfig(name="utae")))


def test_level_weights_temper_the_joint_rule():
    """Path score = sum of w_l log p_l: weight 0 on the coarse heads gives the crop head's own answer, and
    every level's argmax still contains the finest argmax; the weights travel in the checkpoint dict."""
    from dataclasses import replace

    h = Hierarchy.from_table(TABLE)
    logits = h.split(torch.randn(2, h.total, 5, 5, generator=torch.Generator().manual_seed(4)) * 3)
    alone = replace(h, weights=(1.0, 0.0, 0.0)).consistent(logits)
    torch.testing.assert_close(alone[0], torch.log_softmax(logits[0], 1))
    tempered = replace(h, weights=(1.0, 0.5, 0.1))
    out = tempered.consistent(logits)
    for lv, m in enumerate(h.of_finest()[1:], start=1):
        assert torch.equal(torch.as_tensor(m)[out[0].argmax(1)], out[lv].argmax(1))
    assert Hierarchy.from_dict(tempered.to_dict()) == tempered
    with pytest.raises(ValueError, match="one number >= 0 per level"):
        replace(h, weights=(1.0, 0.5))

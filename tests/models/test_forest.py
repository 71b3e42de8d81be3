"""The random-forest baseline: trees stored as tensors give scikit-learn's probabilities exactly, by both
traversals; the checkpoint holds tensors only; train --model rf runs and evaluate / predict use it."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier

from cropmap.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from cropmap.config import ForestConfig, ModelConfig, TrainConfig
from cropmap.dataset.store import dataset_info
from cropmap.dataset.timegrid import TimeGrid
from cropmap.errors import CropmapError
from cropmap.evaluation import evaluate_run
from cropmap.models import build_model
from cropmap.models.forest import forest_tensors
from cropmap.nomenclature import make_class_table
from cropmap.prediction.windows import receptive_radius
from cropmap.training import train_model
from cropmap.train_forest import class_quota, sample_pixels


def _fitted(c=4, t=5, k=5, classes=(0, 1, 2, 3, 4), n=400, seed=0, **rf_args):
    """A forest fitted on random features ``[n, c·t]`` rounded to a few values (so that many samples sit on
    thresholds' neighbours) with labels among ``classes`` of ``k``; returns (model, forest, features)."""
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=(n, c * t)), 1).astype(np.float32)
    y = np.asarray(classes)[((x[:, 0] > 0).astype(int) + (x[:, 3] > 0.5) + (x[:, 7] < -0.5) * 2) % len(classes)]
    rf = RandomForestClassifier(n_estimators=7, random_state=seed, **rf_args).fit(x, y)
    state, sizes = forest_tensors(rf.estimators_, rf.classes_.astype(np.int64))
    model = build_model("rf", in_channels=c, num_classes=k, steps=t, **sizes)
    model.load_state_dict(state)
    return model.eval(), rf, x


def _as_image(x: np.ndarray, c: int, t: int, h: int, w: int) -> torch.Tensor:
    """``[h·w, c·t]`` features -> ``[1, c, t, h, w]``, feature ``c·T + t`` at pixel row-major."""
    return torch.from_numpy(x).reshape(h, w, c, t).permute(2, 3, 0, 1)[None]


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("rf_args", [{}, {"min_samples_leaf": 9}])
def test_probabilities_equal_scikit_learn(compiled, rf_args):
    model, rf, x = _fitted(**rf_args)
    rng = np.random.default_rng(1)
    # new points, and points exactly on every float32 neighbour of the thresholds
    thr = np.concatenate([e.tree_.threshold[e.tree_.feature >= 0] for e in rf.estimators_]).astype(np.float32)
    probe = np.round(rng.normal(size=(300, x.shape[1])), 1).astype(np.float32)
    feat = np.concatenate([e.tree_.feature[e.tree_.feature >= 0] for e in rf.estimators_])
    for i, (f, v) in enumerate(zip(feat[:150], thr[:150])):
        probe[i, f] = v
        probe[150 + i, f] = np.nextafter(v, np.float32(np.inf))
    got = model.probabilities(torch.from_numpy(probe), compiled=compiled).numpy()
    np.testing.assert_allclose(got, rf.predict_proba(probe), atol=1e-6)
    if rf_args:  # leaves holding several classes are stored whole
        assert model.leaf_class.shape[1] > 1


def test_forward_is_log_probability_per_pixel_and_checks_the_time_grid():
    model, rf, _ = _fitted()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6 * 7, 20)).astype(np.float32)
    out = model(_as_image(x, 4, 5, 6, 7), torch.zeros(1, 5))
    assert out.shape == (1, 5, 6, 7)
    np.testing.assert_allclose(out.exp().permute(0, 2, 3, 1).reshape(-1, 5).numpy(), rf.predict_proba(x), atol=1e-6)
    with pytest.raises(ValueError, match="fitted on 4 bands x 5 steps, got 4 x 6"):
        model(torch.zeros(1, 4, 6, 2, 2), torch.zeros(1, 6))
    assert receptive_radius(model, 4) == 0  # declared: pixel-wise, nothing to probe


def test_a_forest_fitted_on_some_classes_puts_them_in_their_columns():
    model, rf, x = _fitted(k=6, classes=(1, 4, 5))
    p = model.probabilities(torch.from_numpy(x[:50])).numpy()
    assert np.allclose(p[:, [0, 2, 3]], 0) and np.allclose(p.sum(1), 1)
    np.testing.assert_allclose(p[:, [1, 4, 5]], rf.predict_proba(x[:50]), atol=1e-6)


def test_checkpoint_holds_tensors_only_and_round_trips(tmp_path):
    table, _ = make_class_table(["BTH", "MIS", "PPH", "ORH"], "crop")
    k = table.num_classes
    model, rf, x = _fitted(k=k, classes=range(k))
    grid = TimeGrid.covering([__import__("datetime").date(2023, 1, 5)] * 2, 10)
    kwargs = {"steps": 5, **{k: int(v) for k, v in dict(trees=7, nodes=model.feature.shape[1],
                                                         leaves=len(model.leaf_prob), leaf_classes=model.leaf_class.shape[1],
                                                         depth=model.depth).items()}}
    save_checkpoint(tmp_path / "model.pt", Checkpoint("rf", kwargs, model.state_dict(), table, grid,
                                                      ("B2", "B3", "B4", "B8"), np.zeros(4), np.ones(4), {}))
    # nothing but tensors and plain values: the strictest loader reads it
    raw = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in raw["state_dict"].values())
    back = load_checkpoint(tmp_path).build()
    feats = torch.from_numpy(x[:64])
    torch.testing.assert_close(back.probabilities(feats), model.probabilities(feats))


def test_class_quota_caps_large_classes_to_a_common_share():
    assert class_quota(np.array([50, 10, 5]), 0).tolist() == [50, 10, 5]
    assert class_quota(np.array([50, 10, 5]), 100).tolist() == [50, 10, 5]
    assert class_quota(np.array([50, 10, 5]), 30).tolist() == [15, 10, 5]  # q = 15: 15 + 10 + 5 = 30
    assert class_quota(np.array([50, 40, 5]), 30).tolist() == [12, 12, 5]  # the largest q within budget
    assert class_quota(np.array([0, 7]), 3).tolist() == [0, 3]


def test_sampled_pixels_are_the_datasets_values(tiny_dataset):
    from cropmap.data.patches import PatchDataset
    from cropmap.nomenclature import IGNORE_INDEX

    info = dataset_info(tiny_dataset)
    k = info.class_table.num_classes
    x, y, counts = sample_pixels(tiny_dataset, "train", 0, k, np.random.default_rng(0))
    assert counts.tolist() == np.bincount(y, minlength=k).tolist()
    ds = PatchDataset(tiny_dataset, "train")
    want = np.concatenate([ds[i]["x"].numpy().transpose(2, 3, 0, 1)[ds.y[i] != IGNORE_INDEX] for i in range(len(ds))])
    assert x.shape == (len(want), want.shape[1] * want.shape[2])
    np.testing.assert_allclose(np.sort(x, axis=0), np.sort(want.reshape(len(want), -1), axis=0), atol=1e-6)
    xs, ys, _ = sample_pixels(tiny_dataset, "train", 200, k, np.random.default_rng(0))
    assert len(ys) <= 200 and np.bincount(ys, minlength=k).tolist() == class_quota(np.bincount(y, minlength=k), 200).tolist()


def test_train_rf_then_evaluate_and_predict(tiny_dataset, tiny_scene, tmp_path):
    run = tmp_path / "rf"
    cfg = TrainConfig(model=ModelConfig(name="rf"), forest=ForestConfig(trees=5, max_pixels=3000))
    notes = []
    s = train_model(tiny_dataset, run, cfg, echo=notes.append)
    assert s.model == "rf" and (run / "model.pt").exists() and (run / "config.yaml").exists()
    assert any("5 trees" in n for n in notes) and any("of" in n and "train pixels" in n for n in notes)
    ck = load_checkpoint(run)
    assert ck.extra["forest"]["pixels"] <= 3000 and ck.extra["selection"] == "fitted"
    m = evaluate_run(run, tiny_dataset, split="test")
    assert m["model"] == "rf" and 0 < m["overall_accuracy"] <= 1
    assert json.loads((run / "metrics.json").read_text())["pixels"] == m["pixels"]
    from cropmap.prediction import predict_map

    p = predict_map(run, tiny_scene.imagery, tmp_path / "map.tif", parcels=tiny_scene.parcels,
                    parcels_out=tmp_path / "parcels.gpkg")
    assert p.map_path.exists() and p.parcels_path.exists()
    with pytest.raises(CropmapError, match="already holds a trained model"):
        train_model(tiny_dataset, run, cfg)
    with pytest.raises(CropmapError, match="fitted in one go"):
        train_model(tiny_dataset, tmp_path / "rf2", cfg, resume=True)
    bad = replace(cfg, forest=ForestConfig(max_features="half"))
    with pytest.raises(CropmapError, match="forest.max_features 'half'"):
        train_model(tiny_dataset, tmp_path / "rf3", bad)


def test_export_refuses_a_forest_in_one_line(tiny_dataset, tmp_path):
    pytest.importorskip("onnx")
    from cropmap.export import export_onnx

    run = tmp_path / "rf"
    train_model(tiny_dataset, run, TrainConfig(model=ModelConfig(name="rf"), forest=ForestConfig(trees=2, max_pixels=500)))
    with pytest.raises(CropmapError, match="rf has no ONNX export here .a random forest"):
        export_onnx(run, tmp_path / "m.onnx")

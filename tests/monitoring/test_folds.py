"""Out-of-fold prediction: parcel-disjoint spatial folds, and each parcel answered by the model of the fold
that excluded it (asserted on fold ids and on answers that differ from the in-sample ones)."""

import json

import numpy as np
import pyogrio
import pytest

from cropmap.config import ForestConfig, TrainConfig
from cropmap.data.patches import PatchDataset
from cropmap.dataset.store import open_dataset
from cropmap.errors import CropmapError
from cropmap.monitoring.folds import FOLDS_NAME, plan_folds, read_fold_run
from cropmap.prediction import predict_map
from cropmap.training import train_model

RF = TrainConfig(model=TrainConfig().model.__class__(name="rf"), forest=ForestConfig(trees=5, max_pixels=5000))


def test_folds_partition_patches_and_parcels(tiny_dataset):
    plan = plan_folds(tiny_dataset, 3, seed=0)
    ds = open_dataset(tiny_dataset)
    assert sorted(np.bincount(plan.patch_fold).tolist()) == sorted([ds.sizes["patch"] // 3 + (i < ds.sizes["patch"] % 3)
                                                                      for i in range(3)])
    for i in range(3):
        roles = plan.roles(i)
        idx = [set(roles[r].patches.tolist()) for r in ("train", "val", "test")]
        assert not (idx[0] & idx[1]) and not (idx[0] & idx[2]) and not (idx[1] & idx[2])
        assert set().union(*idx) == set(range(ds.sizes["patch"]))
        # parcel-disjoint: every labelled pixel of a selection belongs to a parcel of that selection's folds
        for role, folds in (("test", [i]), ("val", [(i + 1) % 3])):
            d = PatchDataset(tiny_dataset, roles[role])
            pid = d.parcel[d.y >= 0]
            pid = pid[pid > 0]
            assert set(plan.parcel_fold[pid - 1].tolist()) <= set(folds)
    with pytest.raises(CropmapError, match="at least 3"):
        plan_folds(tiny_dataset, 2)


@pytest.fixture(scope="module")
def fold_run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("folds") / "run"
    from dataclasses import replace

    train_model(tiny_dataset, out, replace(RF, folds=3))
    return out


def test_fold_run_layout(fold_run, tiny_dataset):
    plan = json.loads((fold_run / FOLDS_NAME).read_text())
    assert plan["runs"] == ["fold_0", "fold_1", "fold_2"] and plan["folds"] == 3
    assert all((fold_run / r / "model.pt").exists() for r in plan["runs"])
    want = plan_folds(tiny_dataset, 3, seed=0)
    labelled = want.parcel_fold >= 0
    assert plan["parcels"] == {i: int(f) for i, f in zip(want.parcel_ids[labelled], want.parcel_fold[labelled])}
    run = read_fold_run(fold_run)
    assert len(run.checkpoints) == 3 and run.checkpoints[0].extra["calibration"]["split"] == "fold 1"
    with pytest.raises(CropmapError, match="already holds a fold run"):
        train_model(tiny_dataset, fold_run, TrainConfig(model=RF.model, forest=RF.forest, folds=3))


def test_each_parcel_is_answered_by_the_model_that_never_saw_it(fold_run, tiny_scene, tmp_path):
    predict_map(fold_run, tiny_scene.imagery, tmp_path / "oof.tif", parcels=tiny_scene.parcels,
                parcels_out=tmp_path / "oof.gpkg", quicklook=False)
    oof = pyogrio.read_dataframe(tmp_path / "oof.gpkg", layer="predictions")
    plan = read_fold_run(fold_run)
    assert (oof["fold"].to_numpy() == plan.fold_of(oof["ID_PARCEL"])).all()
    assert (oof["fold"] >= 0).any()
    for f in range(3):  # the fold model alone gives the same votes for its held-out parcels
        predict_map(fold_run / f"fold_{f}", tiny_scene.imagery, tmp_path / f"f{f}.tif", parcels=tiny_scene.parcels,
                    parcels_out=tmp_path / f"f{f}.gpkg", quicklook=False)
        alone = pyogrio.read_dataframe(tmp_path / f"f{f}.gpkg", layer="predictions").set_index("ID_PARCEL")
        mine = oof[oof["fold"] == f].set_index("ID_PARCEL")
        assert (alone.loc[mine.index, "pred_class"] == mine["pred_class"]).all()
        assert np.allclose(alone.loc[mine.index, "agreement"], mine["agreement"])
    # the in-sample answer of the model trained on a parcel's own fold differs from the out-of-fold one:
    # a fully grown forest reproduces its training labels
    f = int(oof.loc[oof["fold"] >= 0, "fold"].iloc[0])
    other = (f + 1) % 3  # model m trains on fold m + 2 (mod 3): this one trained on fold f
    insample = pyogrio.read_dataframe(tmp_path / f"f{other}.gpkg", layer="predictions").set_index("ID_PARCEL")
    mine = oof[oof["fold"] == f].set_index("ID_PARCEL")
    assert not np.allclose(insample.loc[mine.index, "agreement"], mine["agreement"])


def test_areas_from_out_of_fold_parcels(fold_run, tiny_scene, tmp_path, capsys):
    import csv

    from cropmap.cli import main

    predict_map(fold_run, tiny_scene.imagery, tmp_path / "oof.tif", parcels=tiny_scene.parcels,
                parcels_out=tmp_path / "oof.gpkg", quicklook=False)
    assert main(["areas", "--map", str(tmp_path / "oof.tif"), "--reference", str(tmp_path / "oof.gpkg"),
                 "--out", str(tmp_path / "areas.csv")]) == 0
    assert "out-of-fold parcels" in capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "areas.csv", encoding="utf-8")))
    classes = [r for r in rows if r["class"] != "overall accuracy"]
    mapped = sum(float(r["mapped_ha"]) for r in classes)
    import rasterio

    with rasterio.open(tmp_path / "oof.tif") as src:
        observed = int((src.read(1) != src.nodata).sum())
    assert mapped == pytest.approx(observed * 0.01, rel=1e-6)  # 10 m pixels: 0.01 ha each
    # strata (map classes) without a sample unit cannot be estimated: their area is left out, and said
    unsampled = sum(float(r["mapped_ha"]) for r in classes if r["sample_units"] == "0")
    assert sum(float(r["estimated_ha"]) for r in classes) == pytest.approx(mapped - unsampled, abs=0.05)
    # an in-sample table is refused: it would grade the map with its own training labels
    predict_map(fold_run / "fold_0", tiny_scene.imagery, tmp_path / "in.tif", parcels=tiny_scene.parcels,
                parcels_out=tmp_path / "in.gpkg", quicklook=False)
    assert main(["areas", "--map", str(tmp_path / "in.tif"), "--reference", str(tmp_path / "in.gpkg"),
                 "--out", str(tmp_path / "a2.csv")]) == 2
    assert "no out-of-fold parcel" in capsys.readouterr().err


def test_evaluate_a_fold_run_out_of_fold(fold_run, tiny_dataset, tmp_path):
    """Each fold model on the fold it never saw; the pooled confusion sums the folds'."""
    from cropmap.evaluation import evaluate_run, score_split

    m = evaluate_run(fold_run, tiny_dataset, out=tmp_path)
    plan = plan_folds(tiny_dataset, 3, seed=0)
    parts = [score_split(fold_run / f"fold_{i}", tiny_dataset, split=plan.roles(i)["test"]) for i in range(3)]
    assert m["pixels"] == sum(p["pixels"] for p in parts)
    assert np.array_equal(np.asarray(m["confusion_matrix"]), np.sum([p["confusion_matrix"] for p in parts], axis=0))
    assert m["split"] == "out of fold (3 folds)" and [f["fold"] for f in m["folds"]] == [0, 1, 2]
    assert (tmp_path / "metrics.json").exists() and m["calibration"]["temperature"] is None
    with pytest.raises(CropmapError, match="not .*out-of-fold scores need the folds' own dataset"):
        evaluate_run(fold_run, tmp_path / "other.zarr", out=tmp_path)

"""In-season maps: a cut-off masks later dates exactly as imagery that ends there; the timeliness table
ends with the plain evaluation; in-season training masks a random tail of each patch."""

import datetime as dt
import shutil

import numpy as np
import pytest
import rasterio
import torch

from cropmap.data.patches import PatchDataset
from cropmap.errors import CropmapError
from cropmap.evaluation import evaluate_run, score_split
from cropmap.monitoring.timeliness import first_passing, monthly_cutoffs, timeliness_table
from cropmap.prediction import predict_map


def _probabilities(path):
    with rasterio.open(path) as src:
        return src.read()


def test_until_equals_imagery_that_ends_there(tiny_run, tiny_scene, tmp_path):
    until = tiny_scene.dates[len(tiny_scene.dates) // 2]
    cut = tmp_path / "cut"
    cut.mkdir()
    for d in tiny_scene.dates:
        if d <= until:
            shutil.copy(tiny_scene.imagery / f"S2_{d.isoformat()}.tif", cut)
    a = predict_map(tiny_run, tiny_scene.imagery, tmp_path / "a.tif", probabilities_out=tmp_path / "a.p.tif",
                    quicklook=False, until=until.isoformat())
    b = predict_map(tiny_run, cut, tmp_path / "b.tif", probabilities_out=tmp_path / "b.p.tif", quicklook=False)
    full = predict_map(tiny_run, tiny_scene.imagery, tmp_path / "f.tif", probabilities_out=tmp_path / "f.p.tif",
                       quicklook=False)
    np.testing.assert_array_equal(_probabilities(a.probabilities_path), _probabilities(b.probabilities_path))
    np.testing.assert_array_equal(_probabilities(a.map_path), _probabilities(b.map_path))
    # in float, before the percent rounding (the tiny run's temperature flattens its probabilities): the
    # cut-off changes them, and equals the imagery that ends there
    from rasterio.windows import Window

    from cropmap.checkpoint import load_checkpoint
    from cropmap.prediction.scene import ScenePredictor
    from cropmap.sources.imagery import DatesUpTo, open_imagery

    ckpt, win = load_checkpoint(tiny_run), Window(0, 0, 96, 96)
    p_cut = ScenePredictor(ckpt, DatesUpTo(open_imagery(tiny_scene.imagery), until))(win)[0]
    p_copy = ScenePredictor(ckpt, open_imagery(cut))(win)[0]
    p_full = ScenePredictor(ckpt, open_imagery(tiny_scene.imagery))(win)[0]
    np.testing.assert_array_equal(p_cut, p_copy)
    assert np.abs(p_cut - p_full).max() > 1e-6
    assert full.map_path.exists()
    with pytest.raises(CropmapError, match="no acquisition on or before 1999-01-01"):
        predict_map(tiny_run, tiny_scene.imagery, tmp_path / "c.tif", quicklook=False, until="1999-01-01")
    with pytest.raises(CropmapError, match="expected a date YYYY-MM-DD"):
        predict_map(tiny_run, tiny_scene.imagery, tmp_path / "d.tif", quicklook=False, until="June")


def test_timeliness_ends_with_the_plain_evaluation(tiny_run, tiny_dataset):
    plain = evaluate_run(tiny_run, tiny_dataset, split="test")
    rows = timeliness_table(tiny_run, tiny_dataset, split="test")
    assert rows[-1]["cutoff"] == "all"
    assert rows[-1]["overall_accuracy"] == plain["overall_accuracy"] and rows[-1]["miou"] == plain["miou"]
    assert [r["cutoff"] for r in rows[:-1]] == sorted(r["cutoff"] for r in rows[:-1]) and len(rows) > 3
    # a cut-off after the season keeps every step: the plain evaluation again
    late = score_split(tiny_run, tiny_dataset, split="test", until="2030-01-01")
    assert late["overall_accuracy"] == plain["overall_accuracy"] and late["until"] == "2030-01-01"
    cutoffs = {r["cutoff"] for r in rows}
    assert set(first_passing(rows, 0.0).values()) <= cutoffs | {None}
    assert set(first_passing(rows, 1.01).values()) == {None}


def test_monthly_cutoffs():
    assert monthly_cutoffs(dt.date(2023, 11, 5), dt.date(2024, 2, 10)) == \
        [dt.date(2023, 11, 30), dt.date(2023, 12, 31), dt.date(2024, 1, 31)]


def test_in_season_training_masks_a_random_tail(tiny_dataset):
    torch.manual_seed(0)
    ds = PatchDataset(tiny_dataset, "train", cutoff=1.0)
    masks = [ds.time_mask() for _ in range(50)]
    for m in masks:
        first_false = int((~m).nonzero()[0]) if (~m).any() else len(m)
        assert m[:first_false].all() and not m[first_false:].any() and m.any()  # a prefix of the season
    assert len({int(m.sum()) for m in masks}) > 5  # cut at many dates
    assert PatchDataset(tiny_dataset, "train").time_mask().all()
    with pytest.raises(CropmapError, match="cutoff 2"):
        PatchDataset(tiny_dataset, "train", cutoff=2)

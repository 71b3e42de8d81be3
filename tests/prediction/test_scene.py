"""predict_map on generated scenes: seamless windows, valid COGs, nodata, parcels, errors."""

import datetime as dt

import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import torch
from conftest import write_date
from rio_cogeo.cogeo import cog_validate

from cropmap.checkpoint import load_checkpoint, save_checkpoint
from cropmap.errors import CropmapError
from cropmap.models import build_model
from cropmap.prediction import NODATA, predict_map
from cropmap.prediction.scene import ScenePredictor, normalised_input
from cropmap.prediction.windows import plan_geometry, receptive_radius, stream_probabilities
from cropmap.sources.geotiff_folder import open_scene_folder


@pytest.fixture(scope="module")
def shallow_run(tiny_run, tmp_path_factory):
    """The tiny run's checkpoint with a depth-1 U-Net of random weights and BatchNorm statistics:
    a receptive field small enough for exact blending with small windows on a 96 px scene."""
    ckpt = load_checkpoint(tiny_run)
    kwargs = dict(ckpt.model_kwargs, unet_depth=1)
    torch.manual_seed(1)
    model = build_model(ckpt.model_name, in_channels=4, num_classes=ckpt.class_table.num_classes, **kwargs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    ckpt.model_kwargs, ckpt.state_dict = kwargs, model.state_dict()
    # new random weights: the tiny run's calibration does not apply to them (temperature 1)
    ckpt.extra = {k: v for k, v in ckpt.extra.items() if k != "calibration"}
    run = tmp_path_factory.mktemp("shallow") / "run"
    save_checkpoint(run / "model.pt", ckpt)
    return run


def _mosaic(run, imagery, window, overlap, context, max_strip=4096):
    pred = ScenePredictor(load_checkpoint(run), open_scene_folder(imagery))
    h, w, k = pred.stack.height, pred.stack.width, pred.num_classes
    out = np.zeros((k, h, w), dtype=np.float32)
    for row0, col0, p, _ in stream_probabilities(pred, h, w, k, window=window, overlap=overlap, context=context,
                                                 multiple=pred.multiple, max_strip=max_strip):
        out[:, row0 : row0 + p.shape[1], col0 : col0 + p.shape[2]] = p
    return out


def test_windowed_mosaic_equals_one_shot_prediction(shallow_run, tiny_scene):
    model = load_checkpoint(shallow_run).build()
    radius = receptive_radius(model, 4, 2)
    assert 0 < radius <= 11
    one_shot = _mosaic(shallow_run, tiny_scene.imagery, 1024, 64, 0)
    # 3 x 3 windows of 48 px (stride 24) in two strips of 72 px sharing the middle window column
    windowed = _mosaic(shallow_run, tiny_scene.imagery, 48, 24, radius, max_strip=72)
    exact_err = np.abs(windowed - one_shot).max()
    assert exact_err < 2e-5
    # without context the window edges show (small here: random weights), so the test above can fail
    seams_err = np.abs(_mosaic(shallow_run, tiny_scene.imagery, 48, 24, 0) - one_shot).max()
    assert seams_err > 1e-4 and seams_err > 20 * exact_err


def test_map_and_rasters_are_valid_cogs_and_agree(shallow_run, tiny_scene, tmp_path):
    s = predict_map(shallow_run, tiny_scene.imagery, tmp_path / "map.tif", confidence_out=tmp_path / "conf.tif",
                    probabilities_out=tmp_path / "prob.tif", window=48, overlap=30, quicklook=False)
    one = predict_map(shallow_run, tiny_scene.imagery, tmp_path / "one.tif", window=1024, quicklook=False)
    for p in (s.map_path, s.confidence_path, s.probabilities_path):
        valid, errors, _ = cog_validate(str(p))
        assert valid, (p, errors)
    with rasterio.open(s.map_path) as m, rasterio.open(one.map_path) as o, rasterio.open(s.probabilities_path) as pr, \
            rasterio.open(s.confidence_path) as cf:
        cls, prob, conf = m.read(1), pr.read(), cf.read(1)
        np.testing.assert_array_equal(cls, o.read(1))
        assert m.colormap(1)[int(cls[0, 0])][:3] == tuple(load_checkpoint(shallow_run).class_table.colors[cls[0, 0]])
        assert pr.count == len(load_checkpoint(shallow_run).class_table.names) and pr.scales[0] == 0.01
        assert pr.descriptions[0] == "Hors parcelles"
    top2 = np.sort(prob.astype(int), axis=0)[-2:]
    clear = (conf != 255) & (top2[1] - top2[0] >= 1)  # no tie after rounding to percent
    assert clear.mean() > 0.3
    np.testing.assert_array_equal(prob.argmax(axis=0)[clear], cls[clear])
    assert abs(prob.astype(int).sum(axis=0) - 100).max() <= len(prob)  # percentages of a distribution
    np.testing.assert_array_equal(conf, prob.max(axis=0))
    assert s.pixels == 96 * 96 and sum(s.class_pixels.values()) + s.nodata_pixels == s.pixels


def test_pixels_never_observed_are_nodata(tiny_run, tmp_path):
    rng = np.random.default_rng(0)
    scl = np.full((32, 32), 4, dtype=np.uint8)
    scl[:10, :10] = 9  # cloudy on every date
    for d in range(0, 360, 15):
        write_date(tmp_path / "img", dt.date(2023, 1, 1) + dt.timedelta(d),
                   rng.integers(300, 3000, (4, 32, 32)), scl)
    s = predict_map(tiny_run, tmp_path / "img", tmp_path / "map.tif", confidence_out=tmp_path / "c.tif",
                    window=24, overlap=12, quicklook=False)
    with rasterio.open(s.map_path) as m, rasterio.open(s.confidence_path) as c:
        cls, conf = m.read(1), c.read(1)
    assert (cls[:10, :10] == NODATA).all() and (cls[10:, 10:] != NODATA).all()
    assert (conf[:10, :10] == 255).all() and (conf[10:, 10:] <= 100).all()
    assert s.nodata_pixels == 100


def test_parcels_match_a_one_shot_prediction(shallow_run, tiny_scene, tmp_path):
    """Parcels crossing window edges get the same answer as with one window over the whole scene."""
    a = predict_map(shallow_run, tiny_scene.imagery, tmp_path / "a.tif", parcels=tiny_scene.parcels,
                    parcels_out=[tmp_path / "a.gpkg", tmp_path / "a.parquet"], window=48, overlap=30, quicklook=False)
    b = predict_map(shallow_run, tiny_scene.imagery, tmp_path / "b.tif", parcels=tiny_scene.parcels,
                    parcels_out=tmp_path / "b.gpkg", window=1024, quicklook=False)
    pa = pyogrio.read_dataframe(a.parcels_paths[0], layer="predictions")
    pb = pyogrio.read_dataframe(b.parcels_path, layer="predictions")
    src = pyogrio.read_dataframe(tiny_scene.parcels)
    assert len(pa) == len(src) and pa.crs == src.crs  # back in the parcels' own CRS (Lambert-93)
    assert (pa.n_pixels == pb.n_pixels).all() and (pa.pred_class.fillna("") == pb.pred_class.fillna("")).all()
    np.testing.assert_allclose(pa.confidence.fillna(0), pb.confidence.fillna(0), atol=1e-4)
    assert {"pred_coarse", "agrees_coarse", "confidence_coarse"} <= set(pa.columns)
    assert (pa.n_pixels > 0).mean() > 0.9


def test_refuses_to_overwrite_and_bad_arguments(tiny_run, tiny_scene, tmp_path):
    out = tmp_path / "map.tif"
    predict_map(tiny_run, tiny_scene.imagery, out, quicklook=False)
    before = out.read_bytes()
    with pytest.raises(CropmapError, match="already exists"):
        predict_map(tiny_run, tiny_scene.imagery, out, quicklook=False)
    assert out.read_bytes() == before
    with pytest.raises(CropmapError, match="needs --parcels"):
        predict_map(tiny_run, tiny_scene.imagery, tmp_path / "x.tif", parcels_out=tmp_path / "p.gpkg")
    with pytest.raises(CropmapError, match="unknown parcel output format"):
        predict_map(tiny_run, tiny_scene.imagery, tmp_path / "x.tif", parcels=tiny_scene.parcels,
                    parcels_out=tmp_path / "p.csv")
    with pytest.raises(CropmapError, match="too small"):
        predict_map(tiny_run, tiny_scene.imagery, tmp_path / "x.tif", window=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.qml", "map.tif", "map.tif.aux.xml"]  # nothing half-written


def test_only_parcels_touching_the_imagery_are_read_and_answered(tiny_run, tiny_scene, tmp_path):
    gdf = pyogrio.read_dataframe(tiny_scene.parcels)
    far = gdf.iloc[[0]].copy()
    far["ID_PARCEL"], far["geometry"] = "far-away", far.geometry.translate(50_000, 0)
    pyogrio.write_dataframe(pd.concat([gdf, far]), tmp_path / "p.gpkg", layer="PARCELLES_GRAPHIQUES")
    s = predict_map(tiny_run, tiny_scene.imagery, tmp_path / "m.tif", parcels=tmp_path / "p.gpkg",
                    parcels_out=tmp_path / "o.gpkg", quicklook=False)
    out = pyogrio.read_dataframe(s.parcels_path)
    assert "far-away" not in set(out.ID_PARCEL) and len(out) == len(gdf)


def test_planned_geometry_mosaic_equals_one_shot_prediction(shallow_run, tiny_scene):
    pred = ScenePredictor(load_checkpoint(shallow_run), open_scene_folder(tiny_scene.imagery))
    radius = receptive_radius(pred.model, 4, pred.multiple)
    # windows capped at 56 px so that the 96 px scene needs several; the overlap is the planner's own
    window, overlap = plan_geometry(96, 96, radius, pred.multiple, max_window=56)
    assert overlap == -(-(2 * radius + 1) // pred.multiple) * pred.multiple and window < 96
    one_shot = _mosaic(shallow_run, tiny_scene.imagery, 1024, 64, 0)
    assert np.abs(_mosaic(shallow_run, tiny_scene.imagery, window, overlap, radius) - one_shot).max() < 2e-5


def test_predict_plans_the_geometry_unless_given(shallow_run, tiny_scene, tmp_path):
    s = predict_map(shallow_run, tiny_scene.imagery, tmp_path / "a.tif", quicklook=False)
    model = load_checkpoint(shallow_run).build()
    radius = receptive_radius(model, 4, 2)
    assert s.windows_px == (*plan_geometry(96, 96, radius, 2), radius)
    given = predict_map(shallow_run, tiny_scene.imagery, tmp_path / "b.tif", window=48, overlap=30, quicklook=False)
    assert given.windows_px == (48, 30, radius)


def test_normalised_input_is_bit_identical_to_whole_array_normalisation():
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 9000, (5, 4, 7, 9)).astype(np.float32)  # [T, C, h, w] DN
    values[rng.random(values.shape) < 0.2] = np.nan
    mean, std = rng.uniform(0.05, 0.3, 4), rng.uniform(0.05, 0.2, 4)  # float64, as checkpoints hold them
    ref = values.copy()
    ref /= 10000.0
    ref -= mean.astype(np.float32).reshape(1, -1, 1, 1)
    ref /= std.astype(np.float32).reshape(1, -1, 1, 1)
    np.nan_to_num(ref, copy=False, nan=0.0)
    out = normalised_input(values, mean, std)
    assert out.shape == (4, 5, 7, 9) and out.flags.c_contiguous
    assert out.tobytes() == np.ascontiguousarray(ref.transpose(1, 0, 2, 3)).tobytes()


def test_a_tuned_heap_is_trimmed_after_every_block(shallow_run, tiny_scene, tmp_path, monkeypatch):
    import cropmap.prediction.scene as scene

    trims = []
    monkeypatch.setattr(scene, "heap_tuned", lambda: True)
    monkeypatch.setattr(scene, "trim_heap", lambda: trims.append(1) or True)
    # 96 px in 48 px windows with a 24 px overlap: 3 window rows, each finishing one block
    predict_map(shallow_run, tiny_scene.imagery, tmp_path / "a.tif", window=48, overlap=24, quicklook=False)
    assert len(trims) == 3
    monkeypatch.setattr(scene, "heap_tuned", lambda: False)
    predict_map(shallow_run, tiny_scene.imagery, tmp_path / "b.tif", window=48, overlap=24, quicklook=False)
    assert len(trims) == 3  # an untuned heap gives memory back by itself


def test_a_window_no_larger_than_its_overlap_is_refused_by_name(shallow_run, tiny_scene, tmp_path):
    with pytest.raises(CropmapError, match="--window 40 with --overlap 40: the windows would not advance"):
        predict_map(shallow_run, tiny_scene.imagery, tmp_path / "a.tif", window=40, overlap=40, quicklook=False)
    assert not (tmp_path / "a.tif").exists()

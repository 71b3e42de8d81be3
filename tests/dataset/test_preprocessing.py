"""The preprocessing record travels from build to the checkpoint to predict and export: a dataset built with
--keep-scl 4 5 is predicted with 4 5, and a scene that does not fit the record is refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from cropmap.checkpoint import load_checkpoint
from cropmap.cli import main
from cropmap.config import BuildConfig, ModelConfig, TrainConfig
from cropmap.dataset.build import build_dataset
from cropmap.dataset.store import dataset_info
from cropmap.errors import CropmapError
from cropmap.prediction import scene as scene_mod
from cropmap.prediction.scene import predict_map
from cropmap.sources.imagery import open_imagery
from cropmap.training import train_model


@pytest.fixture(scope="module")
def run45(tiny_scene, tmp_path_factory):
    root = tmp_path_factory.mktemp("k45")
    data = root / "ds.zarr"
    build_dataset(tiny_scene.imagery, tiny_scene.parcels, data, BuildConfig(patch_size=32, seed=1, keep_scl=(4, 5)))
    run = root / "run"
    model = ModelConfig(hidden=8, embed_dim=8, unet_base=8, temporal_layers=2)
    train_model(data, run, TrainConfig(model=model, epochs=1, max_steps=2, batch_size=2))
    return data, run


def test_record_written_by_build_and_copied_into_the_checkpoint(run45):
    data, run = run45
    rec = dataset_info(data).preprocessing
    assert rec.keep_scl == (4, 5) and rec.cloud_mask == "scl" and rec.bands == ("B2", "B3", "B4", "B8")
    assert rec.source["kind"] == "SceneStack" and rec.period_days == 10 and rec.norm["mean"]
    ckpt = load_checkpoint(run)
    assert ckpt.record == rec
    assert ckpt.record.time_grid == ckpt.time_grid.to_dict()


def test_predict_masks_with_the_classes_training_used(run45, tiny_scene, tmp_path, monkeypatch):
    _, run = run45
    seen = []
    real = scene_mod.composite_stack

    def spy(*a, **kw):
        seen.append(tuple(kw["keep_scl"]))
        return real(*a, **kw)

    monkeypatch.setattr(scene_mod, "composite_stack", spy)
    predict_map(run, tiny_scene.imagery, tmp_path / "m.tif", quicklook=False)
    assert seen and set(seen) == {(4, 5)}
    # and it matters on this scene: 4 5 masks other pixels than the default 4 5 6 7
    stack = open_imagery(tiny_scene.imagery)
    from cropmap.dataset.timegrid import TimeGrid
    grid = TimeGrid.covering(stack.dates, 10)
    a = real(stack, grid, keep_scl=(4, 5))
    b = real(stack, grid, keep_scl=(4, 5, 6, 7))
    assert not np.array_equal(a.observed, b.observed)
    with pytest.raises(CropmapError, match="SCL classes 4 5 6 7 asked, but the model was trained with 4 5"):
        predict_map(run, tiny_scene.imagery, tmp_path / "x.tif", quicklook=False, keep_scl=(4, 5, 6, 7))


def test_scene_without_scl_is_flagged_in_one_line(run45, tiny_scene, tmp_path, capsys, caplog):
    _, run = run45
    bare = tmp_path / "no_scl"
    bare.mkdir()
    for f in sorted(tiny_scene.imagery.glob("*.tif")):
        with rasterio.open(f) as src:
            profile = {**src.profile, "count": 4}
            data, names = src.read([1, 2, 3, 4]), src.descriptions[:4]
        with rasterio.open(bare / f.name, "w", **profile) as dst:
            dst.write(data)
            for i, n in enumerate(names, 1):
                dst.set_band_description(i, n)
    rc = main(["predict", "--run", str(run), "--imagery", str(bare), "--out", str(tmp_path / "m.tif")])
    assert rc == 0, capsys.readouterr().err
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "no SCL band" in warned[0] and "4 5" in warned[0] and str(bare) in warned[0]


def test_export_carries_the_record(run45, tmp_path):
    pytest.importorskip("onnx")
    import onnx

    from cropmap.export import export_onnx

    _, run = run45
    s = export_onnx(run, tmp_path / "m.onnx")
    meta = {p.key: p.value for p in onnx.load(str(s.path)).metadata_props}
    assert json.loads(meta["preprocessing"])["keep_scl"] == [4, 5]

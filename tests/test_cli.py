"""The CLI end to end on a tiny generated scene: build -> train (a few steps) -> evaluate -> predict."""

import json
import subprocess
import sys

import numpy as np
import pyogrio
import pytest
import rasterio

from cropmap.cli import main
from cropmap.prediction.parcels import read_parcel_table


@pytest.fixture(scope="module")
def pipeline(tiny_scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    data, run = out / "ds.zarr", out / "run"
    assert main(["build", "--imagery", str(tiny_scene.imagery), "--parcels", str(tiny_scene.parcels),
                 "--out", str(data), "--patch-size", "32", "--seed", "1"]) == 0
    assert main(["train", "--data", str(data), "--out", str(run), "--epochs", "2", "--max-steps", "3",
                 "--batch-size", "2", "--hidden", "8", "--embed-dim", "8", "--unet-base", "8"]) == 0
    assert main(["evaluate", "--run", str(run), "--data", str(data)]) == 0
    assert main(["predict", "--run", str(run), "--imagery", str(tiny_scene.imagery), "--out", str(out / "map.tif"),
                 "--parcels", str(tiny_scene.parcels), "--parcels-out", str(out / "pred.gpkg"), str(out / "pred.parquet"),
                 "--window", "48", "--overlap", "24", "--confidence", "--probabilities"]) == 0
    return out


def test_train_writes_run_files(pipeline):
    run = pipeline / "run"
    for name in ("model.pt", "config.yaml", "curves.png", "logs/metrics.csv"):
        assert (run / name).exists(), name


def test_evaluate_writes_metrics(pipeline):
    m = json.loads((pipeline / "run" / "metrics.json").read_text())
    assert 0 <= m["overall_accuracy"] <= 1 and 0 <= m["miou"] <= 1
    k = len(m["class_names"])
    assert np.array(m["confusion_matrix"]).shape == (k, k)
    assert sum(c["support"] for c in m["per_class"]) == m["pixels"] > 0
    assert (pipeline / "run" / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_predict_writes_a_cog_on_the_imagery_grid(pipeline, tiny_scene):
    first = sorted(tiny_scene.imagery.glob("*.tif"))[0]
    with rasterio.open(pipeline / "map.tif") as m, rasterio.open(first) as img:
        assert (m.crs, m.transform, m.shape) == (img.crs, img.transform, img.shape)
        assert m.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        names = json.loads(m.tags()["CLASS_NAMES"])
        cmap = m.colormap(1)
        assert m.nodata == 255 and len(names) >= 2 and cmap[0][:3] != (0, 0, 0)
        a = m.read(1)
        assert set(np.unique(a)) <= set(range(len(names))) | {255}
    assert not list(pipeline.glob(".map.tif*"))  # no temporary left behind


def test_predict_writes_parcels(pipeline, tiny_scene):
    src = pyogrio.read_dataframe(tiny_scene.parcels)
    pred = pyogrio.read_dataframe(pipeline / "pred.gpkg")
    assert len(pred) == len(src) and pred.crs.to_epsg() == 2154
    assert list(pred["ID_PARCEL"]) == list(src["ID_PARCEL"])
    seen = pred[pred["n_pixels"] > 0]
    assert len(seen) > 0.8 * len(pred)
    assert seen["confidence"].between(0, 1).all() and seen["agreement"].between(0, 1).all()
    assert seen["pred_class"].notna().all()


def test_predict_writes_confidence_probabilities_quicklook_and_parquet(pipeline):
    with rasterio.open(pipeline / "map.confidence.tif") as c, rasterio.open(pipeline / "map.probabilities.tif") as p:
        assert c.count == 1 and p.count == len(json.loads(p.tags()["CLASS_NAMES"]))
        assert c.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    assert (pipeline / "map.quicklook.png").read_bytes()[:4] == b"\x89PNG"
    a = pyogrio.read_dataframe(pipeline / "pred.gpkg")
    b = read_parcel_table(pipeline / "pred.parquet")
    assert a["pred_class"].fillna("").tolist() == b["pred_class"].fillna("").tolist()


def test_predict_several_folders_as_tiles(pipeline, tiny_scene, capsys):
    out = pipeline / "tiles"
    assert main(["predict", "--run", str(pipeline / "run"), "--imagery", str(tiny_scene.imagery),
                 "--out", str(out), "--no-quicklook"]) == 0
    assert "1 tile(s)" in capsys.readouterr().out
    with rasterio.open(out / "mosaic.vrt") as vrt, rasterio.open(pipeline / "map.tif") as m:
        assert vrt.shape == m.shape and vrt.crs == m.crs


def test_rerun_refuses_to_overwrite(pipeline, tiny_scene, capsys):
    rc = main(["predict", "--run", str(pipeline / "run"), "--imagery", str(tiny_scene.imagery),
               "--out", str(pipeline / "map.tif")])
    assert rc == 2
    assert "already exists (pass --overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["build", "--imagery", "missing_dir", "--parcels", "p.gpkg", "--out", "d.zarr"], "missing_dir: imagery folder does not exist"),
    (["evaluate", "--run", "no_run", "--data", "d.zarr"], "no_run: checkpoint does not exist (train one with `cropmap train`)"),
])
def test_errors_are_one_line_without_traceback(argv, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cropmap", *argv], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"cropmap: error: {message}"
    assert "Traceback" not in proc.stderr


def test_missing_parcel_crs_is_reported(tiny_scene, tmp_path, capsys):
    gdf = pyogrio.read_dataframe(tiny_scene.parcels)
    gdf = gdf.set_crs(None, allow_override=True)
    with pytest.warns(UserWarning):
        pyogrio.write_dataframe(gdf, tmp_path / "nocrs.gpkg")
    rc = main(["build", "--imagery", str(tiny_scene.imagery), "--parcels", str(tmp_path / "nocrs.gpkg"),
               "--out", str(tmp_path / "d.zarr")])
    assert rc == 2 and "nocrs.gpkg: the parcels have no CRS" in capsys.readouterr().err
    assert not (tmp_path / "d.zarr").exists()


def test_utae_trains_and_predicts_through_the_cli(tiny_dataset, tiny_scene, tmp_path, capsys):
    """A registry model with its own options (YAML ``model: {options: ...}``) goes through train and predict."""
    from cropmap.checkpoint import load_checkpoint

    cfg = tmp_path / "utae.yaml"
    cfg.write_text("model:\n  options: {encoder_widths: [8, 8, 16], decoder_widths: [8, 8, 16], n_head: 2, d_model: 8}\n")
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_dataset), "--out", str(run), "--model", "utae", "--config", str(cfg),
                 "--epochs", "1", "--max-steps", "2", "--batch-size", "2"]) == 0
    ck = load_checkpoint(run)
    n = sum(v.numel() for k, v in ck.state_dict.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert f"utae ({n:,} parameters): best val mIoU " in capsys.readouterr().out
    assert ck.model_name == "utae" and ck.model_kwargs["encoder_widths"] == [8, 8, 16]
    assert "hidden" not in ck.model_kwargs  # shared tempcnn fields are filtered out
    assert main(["predict", "--run", str(run), "--imagery", str(tiny_scene.imagery), "--out", str(tmp_path / "map.tif"),
                 "--window", "48", "--overlap", "24", "--no-quicklook"]) == 0
    with rasterio.open(tmp_path / "map.tif") as m:
        a = m.read(1)
        assert set(np.unique(a)) <= set(range(ck.class_table.num_classes)) | {255} and (a != 255).any()

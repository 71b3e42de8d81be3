"""A predict interrupted after any finished block resumes from it: outputs byte-identical to an
uninterrupted run, and only the window row before the resume point computed again."""

import shutil

import pytest

from cropmap.config import ForestConfig, ModelConfig, TrainConfig
from cropmap.prediction import predict_map
from cropmap.prediction.resume import ResumeState, partial_dir
from cropmap.prediction.scene import ScenePredictor
from cropmap.training import train_model

# a forest is pixel-wise (no context), so small windows and many blocks are allowed on the 96 px scene
WINDOW, OVERLAP = 32, 16  # stride 16: 5 window rows of 5 windows, one strip, 5 blocks


@pytest.fixture(scope="module")
def forest(tiny_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("forest") / "rf"
    train_model(tiny_dataset, run, TrainConfig(model=ModelConfig(name="rf"), forest=ForestConfig(trees=5)))
    return run


def _predict(run, scene, out, **kw):
    return predict_map(run, scene.imagery, out / "map.tif", parcels=scene.parcels, parcels_out=out / "p.gpkg",
                       confidence_out=out / "map.confidence.tif", probabilities_out=out / "map.probabilities.tif",
                       window=WINDOW, overlap=OVERLAP, quicklook=False, **kw)


def _files(folder):
    """Every output's bytes; the parcel table's content (a GeoPackage holds its writing time)."""
    import pyogrio

    out = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.suffix != ".gpkg"}
    out["p.gpkg"] = pyogrio.read_dataframe(folder / "p.gpkg", layer="predictions").to_json()
    return out


@pytest.fixture(scope="module")
def uninterrupted(forest, tiny_scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    _predict(forest, tiny_scene, out)
    return _files(out)


@pytest.mark.parametrize("blocks_done", [1, 2, 4])
def test_resumes_after_a_kill_and_gives_the_same_bytes(forest, tiny_scene, uninterrupted, tmp_path, monkeypatch,
                                                        blocks_done):
    save = ResumeState.save_block

    def killed(self, *a, **k):  # the run dies right after recording this many blocks
        save(self, *a, **k)
        if self.done == blocks_done:
            raise KeyboardInterrupt

    monkeypatch.setattr(ResumeState, "save_block", killed)
    with pytest.raises(KeyboardInterrupt):
        _predict(forest, tiny_scene, tmp_path)
    assert not (tmp_path / "map.tif").exists() and partial_dir(tmp_path / "map.tif").is_dir()
    monkeypatch.setattr(ResumeState, "save_block", save)

    windows = []
    call = ScenePredictor.inputs
    monkeypatch.setattr(ScenePredictor, "inputs", lambda self, win: windows.append(win) or call(self, win))
    _predict(forest, tiny_scene, tmp_path)
    assert _files(tmp_path) == uninterrupted  # every output, byte for byte
    assert not partial_dir(tmp_path / "map.tif").exists()
    # 5 windows a row: the rows after the finished blocks, plus the one row before the resume point
    assert len(windows) == 5 * (5 - blocks_done + 1)


def test_other_inputs_or_overwrite_start_again(forest, tiny_scene, tmp_path, monkeypatch, caplog):
    save = ResumeState.save_block

    def killed(self, *a, **k):
        save(self, *a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(ResumeState, "save_block", killed)
    with pytest.raises(KeyboardInterrupt):
        _predict(forest, tiny_scene, tmp_path)
    monkeypatch.setattr(ResumeState, "save_block", save)
    windows = []
    call = ScenePredictor.inputs
    monkeypatch.setattr(ScenePredictor, "inputs", lambda self, win: windows.append(win) or call(self, win))
    # another window geometry is another run: nothing is reused
    predict_map(forest, tiny_scene.imagery, tmp_path / "map.tif", window=48, overlap=16, quicklook=False)
    assert "resuming" not in caplog.text and not partial_dir(tmp_path / "map.tif").exists()
    shutil.rmtree(tmp_path)


@pytest.mark.skipif((__import__("os").cpu_count() or 1) < 2, reason="the reader thread needs a second core")
def test_reading_ahead_on_a_spare_core_gives_the_same_bytes(forest, tiny_scene, tmp_path, monkeypatch):
    """With a core left by torch, the next window is read and composited on a thread while the model runs;
    the outputs are those of the one-after-the-other run."""
    import os

    import torch

    import concurrent.futures as cf

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        used = []
        pool = cf.ThreadPoolExecutor  # pipelined() imports it when it reads ahead
        monkeypatch.setattr(cf, "ThreadPoolExecutor", lambda *a, **k: used.append(1) or pool(*a, **k))
        (tmp_path / "ahead").mkdir()
        _predict(forest, tiny_scene, tmp_path / "ahead")
        assert used  # the reader thread ran
        monkeypatch.setattr(os, "cpu_count", lambda: 1)  # no spare core: one window after the other
        (tmp_path / "seq").mkdir()
        used.clear()
        _predict(forest, tiny_scene, tmp_path / "seq")
        assert not used
    finally:
        torch.set_num_threads(threads)
    assert _files(tmp_path / "ahead") == _files(tmp_path / "seq")

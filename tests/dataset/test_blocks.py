"""Block-wise build: the dataset does not depend on the block size, the threads or the scheduler, and it
equals the whole-area composite cut into patches; never-observed patches are dropped from the store."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
import xarray as xr

from conftest import parcels_frame, write_date
from cropmap import cluster
from cropmap.cli import main
from cropmap.config import BuildConfig
from cropmap.dataset.blocks import BlockResult, band_norm, block_jobs
from cropmap.dataset.build import build_dataset
from cropmap.dataset.composite import composite_stack
from cropmap.dataset.store import open_dataset
from cropmap.dataset.timegrid import TimeGrid
from cropmap.errors import CropmapError
from cropmap.sources.imagery import open_imagery


def _same(a, b) -> None:
    x, y = open_dataset(a), open_dataset(b)
    assert set(x.variables) == set(y.variables)
    for v in x.variables:
        assert x[v].dtype == y[v].dtype, v
        np.testing.assert_array_equal(x[v].values, y[v].values, err_msg=v)
    for k in x.attrs:
        if k == "norm":
            nx, ny = json.loads(x.attrs[k]), json.loads(y.attrs[k])
            np.testing.assert_allclose(nx["mean"] + nx["std"], ny["mean"] + ny["std"], rtol=1e-12)
        elif k != "source":
            assert x.attrs[k] == y.attrs[k], k


@pytest.fixture(scope="module")
def cloudy_scene(tmp_path_factory):
    """48 x 48 px, 4 dates: the top-left 16 x 16 px are cloudy (SCL 9) on every date, so the patch there is
    never observed and must be dropped; parcels cover the whole scene."""
    root = tmp_path_factory.mktemp("cloudy")
    rng = np.random.default_rng(0)
    for k in range(4):
        dn = rng.integers(300, 4000, (4, 48, 48)).astype(np.uint16)
        scl = np.full((48, 48), 4, np.uint8)
        scl[:16, :16] = 9
        scl[rng.random((48, 48)) < 0.2] = 8  # scattered clouds: gaps to fill
        write_date(root / "img", dt.date(2023, 4, 1) + dt.timedelta(days=12 * k), dn, scl)
    boxes = [(r, c, r + 8, c + 8) for r in range(0, 48, 8) for c in range(0, 48, 8)]  # one parcel per patch
    codes = [("BTH", "MIS", "PPH")[(r + c) % 3] for r in range(6) for c in range(6)]
    parcels_frame(boxes, codes).to_file(root / "parcels.gpkg", layer="PARCELLES_GRAPHIQUES")
    return root


def test_blocks_threads_and_cluster_give_the_whole_area_dataset(cloudy_scene, tmp_path):
    img, parcels = cloudy_scene / "img", cloudy_scene / "parcels.gpkg"
    cfg = BuildConfig(patch_size=8, period_days=10, erode=1, seed=4)
    whole = build_dataset(img, parcels, tmp_path / "whole.zarr", cfg, block_size=4096)
    small = build_dataset(img, parcels, tmp_path / "small.zarr", cfg, block_size=12, workers=2)  # 8 px blocks
    _same(whole.path, small.path)
    assert small.n_patches == whole.n_patches
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        dist = build_dataset(img, parcels, tmp_path / "dist.zarr", cfg, block_size=16,
                             dask_address=cluster.scheduler_address)
    _same(whole.path, dist.path)

    # against the whole-area composite, cut by hand
    ds = open_dataset(whole.path)
    stack = open_imagery(img)
    grid = TimeGrid.covering(stack.dates, cfg.period_days)
    comp = composite_stack(stack, grid, keep_scl=cfg.keep_scl)
    ref = np.clip(np.rint(np.nan_to_num(comp.values, nan=0.0)), 0, 65535).astype(np.uint16)  # [T, C, H, W]
    origins = ds["origin"].values
    assert len(origins) == 32 and not ((origins[:, 0] < 16) & (origins[:, 1] < 16)).any()  # 36 minus the cloud
    for k, (r, c) in enumerate(origins):
        np.testing.assert_array_equal(ds["x"].values[k], ref[:, :, r : r + 8, c : c + 8].transpose(1, 0, 2, 3))
        np.testing.assert_array_equal(ds["observed"].values[k], comp.observed[:, r : r + 8, c : c + 8])
    train = ds["split"].values == "train"
    seen = ds["observed"].values[train][:, None].repeat(4, axis=1)
    refl = ds["x"].values[train].astype(np.float64) / 1e4
    norm = json.loads(ds.attrs["norm"])
    np.testing.assert_allclose(norm["mean"], [refl[:, b][seen[:, b]].mean() for b in range(4)], rtol=1e-12)
    np.testing.assert_allclose(norm["std"], [refl[:, b][seen[:, b]].std() + 1e-6 for b in range(4)], rtol=1e-12)


def test_block_jobs_and_norm():
    origins = np.array([(r, c) for r in (0, 8, 16) for c in (0, 8, 16)], np.int32)
    lab = np.zeros((9, 8, 8), np.int16)
    jobs = block_jobs(origins, lab, lab.astype(np.int32), np.ones(9, bool), 8, 20)  # 20 px -> 16 px blocks
    assert [j.window for j in jobs] == [(0, 0, 16, 16), (0, 16, 16, 8), (16, 0, 8, 16), (16, 16, 8, 8)]
    assert sorted(np.concatenate([j.index for j in jobs]).tolist()) == list(range(9))
    assert [len(j.index) for j in jobs] == [4, 2, 2, 1]
    assert len(block_jobs(origins, lab, lab, np.ones(9, bool), 8, 3)) == 9  # at least one patch per block
    dn = [np.array([100, 300]), np.array([500])]  # one band split over two blocks
    parts = [BlockResult(np.arange(1), np.ones(1, bool), (len(d),), (int(d.sum()),), (int((d * d).sum()),)) for d in dn]
    mean, std = band_norm(parts)
    np.testing.assert_allclose([mean[0], std[0]], [0.03, np.std([0.01, 0.03, 0.05])], rtol=1e-12)


def test_cli_block_options_and_bad_scheduler(cloudy_scene, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cluster, "DASK_CONNECT_TIMEOUT_S", 1)  # a refused connection is retried until then
    img, parcels = cloudy_scene / "img", cloudy_scene / "parcels.gpkg"
    rc = main(["build", "--imagery", str(img), "--parcels", str(parcels), "--out", str(tmp_path / "a.zarr"),
               "--patch-size", "8", "--block-size", "16", "--workers", "2"])
    assert rc == 0, capsys.readouterr().err
    assert "32 patches" in capsys.readouterr().out
    rc = main(["build", "--imagery", str(img), "--parcels", str(parcels), "--out", str(tmp_path / "b.zarr"),
               "--patch-size", "8", "--dask-address", "tcp://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot reach the Dask scheduler" in err and err.count("\n") == 1
    assert not (tmp_path / "b.zarr").exists() and not list(tmp_path.glob(".b.zarr*"))
    with pytest.raises(CropmapError, match="block size 0"):
        build_dataset(img, parcels, tmp_path / "c.zarr", BuildConfig(patch_size=8), block_size=0)
    assert xr.open_zarr(tmp_path / "a.zarr")["x"].shape[0] == 32

"""build, fetch-imagery and multi-tile predict on a real Dask cluster: a ``dask scheduler`` and two
``dask worker`` processes (``--nthreads 1``, each under its nanny) started on 127.0.0.1, as a user runs them
on other machines. Outputs must equal single-process runs, also when a worker is SIGKILLed mid-fetch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr

from cropmap.config import BuildConfig
from cropmap.dataset.build import build_dataset
from cropmap.prediction import predict_tiles
from cropmap.sources.fetch import fetch_imagery
from localserver import LocalServer
from s2catalog import area, serve_catalog

pytestmark = pytest.mark.slow
DASK = [sys.executable, "-m", "distributed.cli"]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The scheduler's address; workers run in a folder of their own, so only absolute paths reach them."""
    root = tmp_path_factory.mktemp("dask")
    sched_file = root / "scheduler.json"
    procs = [_start([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                     "--no-dashboard", "--scheduler-file", str(sched_file)], root / "scheduler.log")]
    for i in range(2):
        wdir = root / f"w{i}"
        wdir.mkdir()
        procs.append(_start([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(sched_file),
                             "--nthreads", "1", "--nworkers", "1", "--no-dashboard", "--local-directory", str(wdir),
                             "--host", "127.0.0.1", "--memory-limit", "4GB"], root / f"worker{i}.log"))
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        from dask.distributed import Client

        with Client(address, timeout=30) as c:
            c.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def _worker_pids(address: str) -> dict[str, int]:
    from dask.distributed import Client

    with Client(address, timeout=30) as c:
        return c.run(os.getpid)


def test_build_on_worker_processes_equals_one_process(cluster, tiny_scene, tmp_path):
    cfg = BuildConfig(patch_size=32, seed=1)
    one = build_dataset(tiny_scene.imagery, tiny_scene.parcels, tmp_path / "one.zarr", cfg)
    dist = build_dataset(tiny_scene.imagery, tiny_scene.parcels, tmp_path / "dist.zarr", cfg, block_size=32,
                         dask_address=cluster)
    a, b = xr.open_zarr(one.path), xr.open_zarr(dist.path)
    for v in ("x", "observed", "label", "parcel", "origin", "split"):
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)
    assert a.attrs["norm"] == b.attrs["norm"]


def test_fetch_survives_a_killed_worker(cluster, tmp_path):
    side = 1536
    with LocalServer() as srv:
        serve_catalog(srv, tmp_path, side)
        common = dict(bbox_crs="EPSG:32631", crs="utm", start="2024-06-01", end="2024-06-30", stac_url=srv.url,
                      block=512, backoff=0.01)
        ref = fetch_imagery(area(side), tmp_path / "one.zarr", **common)
        srv.delay = 0.02  # slow enough that the kill lands while blocks are being fetched
        before = len(srv.log)
        pids = _worker_pids(cluster)
        killed = []

        def kill_one():
            deadline = time.monotonic() + 60
            while len(srv.log) < before + 30 and time.monotonic() < deadline:
                time.sleep(0.05)
            pid = next(iter(pids.values()))
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

        t = threading.Thread(target=kill_one)
        t.start()
        dist = fetch_imagery(area(side), tmp_path / "dist.zarr", dask_address=cluster, **common)
        t.join()
    assert killed, "the worker was never killed"
    after = _worker_pids(cluster)
    assert len(after) == 2 and killed[0] not in after.values()  # the nanny started a new worker
    assert dist.dates == ref.dates
    a, b = xr.open_zarr(ref.path, mask_and_scale=False), xr.open_zarr(dist.path, mask_and_scale=False)
    for v in ("dn", "scl", "written", "time"):
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)
    assert b["written"].values.all()


def test_tiles_on_worker_processes_equal_one_process(cluster, tiny_run, tiny_scene, tmp_path):
    from cropmap.sources.imagery import open_imagery

    stack = open_imagery(tiny_scene.imagery)
    tiles = []
    for k, (c0, c1) in enumerate(((0, 48), (48, 96))):  # two tiles side by side, real GeoTIFF folders
        folder = tmp_path / f"tile_{k}"
        folder.mkdir()
        for f in stack.files:
            with rasterio.open(f) as src:
                win = rasterio.windows.Window(c0, 0, c1 - c0, src.height)
                profile = {**src.profile, "width": c1 - c0, "transform": src.window_transform(win)}
                with rasterio.open(folder / f.name, "w", **profile) as dst:
                    dst.write(src.read(window=win))
                    dst.descriptions = src.descriptions
        tiles.append(folder)
    one = predict_tiles(tiny_run, tiles, tmp_path / "one", parcels=tiny_scene.parcels,
                        parcels_out=[tmp_path / "one.parquet"])
    dist = predict_tiles(tiny_run, tiles, tmp_path / "dist", parcels=tiny_scene.parcels,
                         parcels_out=[tmp_path / "dist.parquet"], dask_address=cluster)
    for a, b in zip(one.tiles, dist.tiles):
        assert a.map_path.read_bytes() == b.map_path.read_bytes()
    import pandas as pd

    pa, pb = pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "dist.parquet")
    pd.testing.assert_frame_equal(pa, pb)

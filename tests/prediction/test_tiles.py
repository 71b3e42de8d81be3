"""Many tiles: one task per tile (locally or on a Dask cluster), skipping finished tiles, a VRT mosaic
and one parcel table for the whole area."""

import numpy as np
import pyogrio
import pytest
import rasterio
from rasterio.windows import Window

from cropmap.errors import CropmapError
from cropmap.prediction import predict_map, predict_tiles
from cropmap.prediction.parcels import read_parcel_table


def _split(imagery, out, halves=((0, 48), (48, 96))):
    """The scene cut into tiles of columns [c0, c1), each a per-date GeoTIFF folder like the original."""
    folders = []
    for c0, c1 in halves:
        folder = out / f"tile_{c0:03d}"
        folder.mkdir(parents=True)
        for f in sorted(imagery.glob("*.tif")):
            with rasterio.open(f) as src:
                win = Window(c0, 0, c1 - c0, src.height)
                prof = dict(src.profile, width=c1 - c0, transform=src.window_transform(win))
                with rasterio.open(folder / f.name, "w", **prof) as dst:
                    dst.write(src.read(window=win))
                    dst.descriptions = src.descriptions
        folders.append(folder)
    return folders


@pytest.fixture(scope="module")
def tiles(tiny_scene, tmp_path_factory):
    return _split(tiny_scene.imagery, tmp_path_factory.mktemp("tiles"))


def test_tiles_mosaic_and_parcels(tiny_run, tiny_scene, tiles, tmp_path):
    out = tmp_path / "maps"
    s = predict_tiles(tiny_run, tiles, out, parcels=tiny_scene.parcels, parcels_out=tmp_path / "p.gpkg",
                      confidence=True)
    assert [t.skipped for t in s.tiles] == [False, False]
    assert s.mosaics == (out / "mosaic.vrt",)
    with rasterio.open(s.mosaics[0]) as vrt:
        mosaic = vrt.read(1)
        assert (vrt.width, vrt.height) == (96, 96) and vrt.colormap(1)[1][:3] != (0, 0, 0)
        assert "CLASS_NAMES" in vrt.tags()
        with rasterio.open(tiny_scene.imagery / sorted(p.name for p in tiny_scene.imagery.iterdir())[0]) as img:
            assert vrt.transform == img.transform and vrt.crs == img.crs
    for t, (c0, c1) in zip(s.tiles, ((0, 48), (48, 96))):
        with rasterio.open(t.map_path) as m:
            np.testing.assert_array_equal(mosaic[:, c0:c1], m.read(1))
        assert t.map_path.with_name(t.map_path.stem + ".confidence.tif").exists()
    # a parcel crossing the tile edge counts its pixels from both tiles: same counts as one whole-scene map
    whole = predict_map(tiny_run, tiny_scene.imagery, tmp_path / "whole.tif", parcels=tiny_scene.parcels,
                        parcels_out=tmp_path / "whole.gpkg", quicklook=False)
    a = pyogrio.read_dataframe(tmp_path / "p.gpkg", layer="predictions").sort_values("ID_PARCEL")
    b = pyogrio.read_dataframe(whole.parcels_path, layer="predictions").sort_values("ID_PARCEL")
    assert a.ID_PARCEL.tolist() == b.ID_PARCEL.tolist()
    np.testing.assert_array_equal(a.n_pixels.to_numpy(), b.n_pixels.to_numpy())

    # a re-run skips the finished tiles and gives the same parcel table
    mtimes = [t.map_path.stat().st_mtime_ns for t in s.tiles]
    again = predict_tiles(tiny_run, tiles, out, parcels=tiny_scene.parcels, parcels_out=tmp_path / "p2.parquet")
    assert [t.skipped for t in again.tiles] == [True, True]
    assert [t.map_path.stat().st_mtime_ns for t in again.tiles] == mtimes
    c = read_parcel_table(tmp_path / "p2.parquet").sort_values("ID_PARCEL")
    np.testing.assert_array_equal(c.n_pixels.to_numpy(), a.n_pixels.to_numpy())


def test_an_unfinished_tile_is_redone(tiny_run, tiny_scene, tiles, tmp_path):
    out = tmp_path / "maps"
    predict_tiles(tiny_run, tiles[:1], out, parcels=tiny_scene.parcels, parcels_out=tmp_path / "p.gpkg")
    (out / "tile_000.parcels.npz").unlink()  # as if killed between the map and its parcel stats
    s = predict_tiles(tiny_run, tiles[:1], out, parcels=tiny_scene.parcels, parcels_out=tmp_path / "q.gpkg")
    assert [t.skipped for t in s.tiles] == [False] and (out / "tile_000.parcels.npz").exists()


def test_tiles_on_a_dask_distributed_cluster(tiny_run, tiles, tmp_path):
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        s = predict_tiles(tiny_run, tiles, tmp_path / "maps", dask_address=cluster.scheduler_address)
    assert [t.skipped for t in s.tiles] == [False, False]
    with rasterio.open(s.mosaics[0]) as vrt:
        assert (vrt.read(1) != 255).any()


def test_tile_errors(tiny_run, tiles, tmp_path, monkeypatch):
    monkeypatch.setattr("cropmap.cluster.DASK_CONNECT_TIMEOUT_S", 2)
    with pytest.raises(CropmapError, match="several imagery folders are named"):
        predict_tiles(tiny_run, [tiles[0], tiles[0]], tmp_path / "maps")
    with pytest.raises(CropmapError, match="cannot reach the Dask scheduler"):
        predict_tiles(tiny_run, tiles, tmp_path / "maps", dask_address="tcp://127.0.0.1:9")

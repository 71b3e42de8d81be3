import datetime as dt

import numpy as np
import pytest

from conftest import write_date
from cropmap.errors import CropmapError
from cropmap.sources.geotiff_folder import date_from_name, open_scene_folder


@pytest.mark.parametrize("name, expected", [
    ("S2_2023-05-14.tif", dt.date(2023, 5, 14)),
    ("T30UXU_20230514T105619_L2A.tif", dt.date(2023, 5, 14)),
    ("tile_99999999_2023-02-03.tif", dt.date(2023, 2, 3)),  # first *valid* date wins
    ("S2_2023-0514.tif", None),
    ("nodate.tif", None),
])
def test_date_from_name(name, expected):
    assert date_from_name(name) == expected


def _dn(value: int, shape=(4, 5, 6)) -> np.ndarray:
    return np.full(shape, value, dtype=np.uint16)


def test_opens_and_sorts_by_date(tmp_path):
    write_date(tmp_path, dt.date(2023, 6, 1), _dn(200), np.full((5, 6), 4))
    write_date(tmp_path, dt.date(2023, 5, 1), _dn(100), np.full((5, 6), 4))
    (tmp_path / "notes.txt").write_text("not imagery")
    stack = open_scene_folder(tmp_path)
    assert stack.dates == (dt.date(2023, 5, 1), dt.date(2023, 6, 1))
    assert (stack.width, stack.height) == (6, 5)
    dn, scl = stack.read(0)
    assert dn.shape == (4, 5, 6) and (dn == 100).all() and (scl == 4).all()


def test_bands_found_by_description_in_any_order(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    path = tmp_path / "S2_20230501.tif"
    order = ["SCL", "B8", "B4", "B3", "B2"]
    with rasterio.open(path, "w", driver="GTiff", width=3, height=2, count=5, dtype="uint16", crs="EPSG:32630",
                       transform=from_origin(0, 0, 10, 10)) as dst:
        for i, name in enumerate(order, start=1):
            dst.write(np.full((2, 3), 10 * i, dtype=np.uint16), i)
            dst.set_band_description(i, name)
    stack = open_scene_folder(tmp_path)
    dn, scl = stack.read(0)
    assert dn[:, 0, 0].tolist() == [50, 40, 30, 20]  # B2, B3, B4, B8
    assert scl[0, 0] == 10


def test_bands_without_descriptions_taken_in_order_scl_optional(tmp_path):
    write_date(tmp_path, dt.date(2023, 5, 1), np.arange(4, dtype=np.uint16)[:, None, None].repeat(2, 1).repeat(2, 2) + 1,
               descriptions=False)
    stack = open_scene_folder(tmp_path)
    dn, scl = stack.read(0)
    assert dn[:, 0, 0].tolist() == [1, 2, 3, 4] and scl is None


def test_missing_band_is_a_clear_error(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    path = tmp_path / "S2_2023-05-01.tif"
    with rasterio.open(path, "w", driver="GTiff", width=3, height=2, count=3, dtype="uint16", crs="EPSG:32630",
                       transform=from_origin(0, 0, 10, 10)) as dst:
        for i, name in enumerate(["B2", "B3", "B4"], start=1):
            dst.write(np.ones((2, 3), np.uint16), i)
            dst.set_band_description(i, name)
    with pytest.raises(CropmapError, match=r"S2_2023-05-01.tif: missing band\(s\) B8"):
        open_scene_folder(tmp_path)


@pytest.mark.parametrize("problem, match", [
    ("missing", "does not exist"),
    ("empty", "no GeoTIFF"),
    ("nodate", "no date"),
    ("nocrs", "has no CRS"),
    ("grid", "grid differs"),
    ("duplicate", "several files for the date"),
])
def test_bad_folders(tmp_path, problem, match):
    folder = tmp_path / "imagery"
    if problem != "missing":
        folder.mkdir()
    if problem == "nodate":
        write_date(folder, dt.date(2023, 5, 1), _dn(1), name="scene.tif")
    if problem == "nocrs":
        write_date(folder, dt.date(2023, 5, 1), _dn(1), crs=None)
    if problem == "grid":
        write_date(folder, dt.date(2023, 5, 1), _dn(1))
        write_date(folder, dt.date(2023, 5, 6), _dn(1), origin=(700010.0, 5170000.0))
    if problem == "duplicate":
        write_date(folder, dt.date(2023, 5, 1), _dn(1), name="a_2023-05-01.tif")
        write_date(folder, dt.date(2023, 5, 1), _dn(1), name="b_20230501.tif")
    with pytest.raises(CropmapError, match=match):
        open_scene_folder(folder)

import numpy as np
from affine import Affine

from conftest import ORIGIN, parcels_frame
from cropmap.dataset.rasterize import border_mask, labels_from_parcels, rasterize_parcels, to_grid_crs
from cropmap.nomenclature import IGNORE_INDEX
from rasterio.crs import CRS


def test_parcel_in_lambert93_lands_on_the_right_utm_pixels():
    # a 4 x 5 px parcel at rows 2..6, cols 3..8, stored in EPSG:2154 as the RPG is
    gdf = parcels_frame([(2, 3, 6, 8)], ["BTH"], crs="EPSG:2154")
    transform = Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1])
    grid = to_grid_crs(gdf, CRS.from_epsg(32630))
    idx = rasterize_parcels(grid, transform, (10, 12))
    expected = np.zeros((10, 12), dtype=np.int32)
    expected[2:6, 3:8] = 1
    assert (idx == expected).all()


def test_borders_are_eroded_to_ignore():
    idx = np.zeros((6, 8), dtype=np.int32)
    idx[:, :4] = 1
    idx[:, 4:] = 2
    labels = labels_from_parcels(idx, np.array([0, 5], dtype=np.int16), erode=1)
    assert (labels[:, 3] == IGNORE_INDEX).all() and (labels[:, 4] == IGNORE_INDEX).all()
    assert labels[2, 1] == 0 and labels[2, 6] == 5
    assert border_mask(np.zeros((3, 3), np.int32)).sum() == 0


def test_uncovered_codes_and_background_are_ignored():
    idx = np.array([[0, 1, 2]], dtype=np.int32)
    labels = labels_from_parcels(idx, np.array([3, IGNORE_INDEX], dtype=np.int16), erode=0)
    assert labels.tolist() == [[IGNORE_INDEX, 3, IGNORE_INDEX]]


def test_background_class_outside_parcels_with_a_gap_at_their_edge():
    idx = np.zeros((1, 7), dtype=np.int32)
    idx[0, 3:] = 1
    labels = labels_from_parcels(idx, np.array([4], dtype=np.int16), erode=1, background_class=0)
    assert labels.tolist() == [[0, 0, IGNORE_INDEX, IGNORE_INDEX, 4, 4, 4]]

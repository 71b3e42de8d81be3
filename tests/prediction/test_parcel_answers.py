"""Per-parcel answers on hand-made parcels and probabilities with known results."""

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from conftest import ORIGIN, UTM, parcels_frame
from rasterio.transform import from_origin
from shapely.geometry import MultiPolygon, box

from cropmap.nomenclature import make_class_table
from cropmap.prediction.parcels import ParcelStats, parcel_table, read_parcel_table, write_parcel_table

TABLE, _ = make_class_table(["BTH", "MIS", "PPH"], "group", background=True)  # 0 bg, 1 wheat, 2 maize, 3 meadow
H, W = 40, 40


def _probabilities():
    """Left half wheat (0.8), right half maize (0.6), rows 30+ meadow (0.9)."""
    p = np.full((4, H, W), 0.0, dtype=np.float32)
    p[1, :, :20], p[0, :, :20] = 0.8, 0.2
    p[2, :, 20:], p[3, :, 20:] = 0.6, 0.4
    p[:, 30:] = 0
    p[3, 30:], p[0, 30:] = 0.9, 0.1
    return p


@pytest.fixture
def parcels():
    gdf = parcels_frame([(2, 2, 12, 12),  # wheat, declared wheat
                         (5, 15, 25, 25),  # crosses the band edge (row 20) and the wheat/maize edge (col 20)
                         (100, 100, 110, 110),  # outside the imagery
                         (0, 30, 4, 34),  # maize, declared with an unknown code
                         (2, 36, 6, 40)],  # maize declared meadow (the second part is added below)
                        ["BTH", "MIS", "BTH", "XXX", "PPH"], crs=UTM)
    x0, y0 = ORIGIN
    meadow_part = box(x0 + 0 * 10, y0 - 38 * 10, x0 + 4 * 10, y0 - 34 * 10)  # rows 34-38, cols 0-4: meadow
    gdf.loc[4, "geometry"] = MultiPolygon([gdf.geometry[4], meadow_part])
    gdf["fid"] = np.arange(10, 15)
    return gdf


def _stats(parcels, bands=((0, 20), (20, 40)), cols=(0, W)):
    stats = ParcelStats.zeros(parcels["fid"].to_numpy(), TABLE.num_classes)
    p, valid = _probabilities(), np.ones((H, W), dtype=bool)
    for r0, r1 in bands:
        transform = from_origin(ORIGIN[0] + cols[0] * 10, ORIGIN[1] - r0 * 10, 10, 10)
        stats.add_band(parcels, transform, p[:, r0:r1, cols[0]:cols[1]], valid[r0:r1, cols[0]:cols[1]])
    return stats


def test_known_answers(parcels):
    res = parcel_table(parcels, _stats(parcels), TABLE).set_index("ID_PARCEL")
    wheat = res.loc["1000"]
    assert (wheat.pred_class, wheat.n_pixels, wheat.agrees) == ("Blé tendre", 100, True)
    assert wheat.confidence == pytest.approx(0.8) and wheat.agreement == pytest.approx(1.0)
    cross = res.loc["1001"]  # cols 15-24, rows 5-24: 5 wheat columns, 5 maize columns, 200 px over 2 bands
    assert cross.n_pixels == 200
    assert cross.agreement == pytest.approx(0.5)
    assert cross.pred_class == "Blé tendre"  # tie broken towards the lower class index
    assert cross.confidence == pytest.approx(0.8 * 100 / 200)
    assert cross.agrees == False  # noqa: E712  (declared maize)
    assert cross.pred_coarse == "Cultures d'hiver" and cross.agrees_coarse == False  # noqa: E712
    outside = res.loc["1002"]
    assert outside.n_pixels == 0 and pd.isna(outside.pred_class) and pd.isna(outside.agrees)
    unknown = res.loc["1003"]
    assert unknown.pred_class == "Maïs grain et ensilage" and pd.isna(unknown.declared_class) and pd.isna(unknown.agrees)
    multi = res.loc["1004"]  # 16 maize px + 16 meadow px; meadow is more confident (0.9 vs 0.6)
    assert multi.n_pixels == 32 and multi.agreement == pytest.approx(0.5)
    assert multi.confidence_coarse == pytest.approx(0.6 * 16 / 32)
    assert set(res.level) == {"group"}


def test_tiles_add_up_to_the_whole(parcels):
    whole = _stats(parcels)
    left, right = _stats(parcels, cols=(0, 17)), _stats(parcels, cols=(17, W))
    right.fids = right.fids[::-1].copy()  # tiles may list parcels in another order
    right.votes, right.prob_sum = right.votes[::-1].copy(), right.prob_sum[::-1].copy()
    left.merge(right)
    np.testing.assert_array_equal(left.votes, whole.votes)
    np.testing.assert_allclose(left.prob_sum, whole.prob_sum)


def test_stats_round_trip(parcels, tmp_path):
    s = _stats(parcels)
    s.save(tmp_path / "s.npz")
    back = ParcelStats.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(back.votes, s.votes)
    np.testing.assert_array_equal(back.fids, s.fids)


@pytest.mark.parametrize("suffix", [".gpkg", ".parquet"])
def test_written_tables_read_back(parcels, tmp_path, suffix):
    res = parcel_table(parcels.to_crs("EPSG:2154"), _stats(parcels.to_crs("EPSG:2154").to_crs(UTM)), TABLE)
    out = write_parcel_table(res, tmp_path / f"p{suffix}", overwrite=False)
    back = read_parcel_table(out)
    assert list(back["ID_PARCEL"]) == list(res["ID_PARCEL"])
    assert back.crs == gpd.GeoSeries(crs="EPSG:2154").crs
    assert back["n_pixels"].tolist() == res["n_pixels"].tolist()
    assert back["agrees"].isna().tolist() == res["agrees"].isna().tolist()
    with pytest.raises(Exception, match="already exists"):
        write_parcel_table(res, out, overwrite=False)

import pyogrio
import pytest
from shapely.geometry import Polygon

from conftest import parcels_frame
from cropmap.errors import CropmapError
from cropmap.sources.parcels import read_parcels


def test_reads_and_normalises(tmp_path):
    gdf = parcels_frame([(0, 0, 10, 10), (0, 10, 10, 20)], ["BTH", "MIS"])
    gdf["ID_PARCEL"] = [123, 456]  # some files store it as a number
    path = tmp_path / "p.gpkg"
    gdf.to_file(path)
    out = read_parcels(path)
    assert out["ID_PARCEL"].tolist() == ["123", "456"]
    assert out.crs.to_epsg() == 2154


def test_bbox_reads_only_the_area(tmp_path):
    gdf = parcels_frame([(0, 0, 10, 10), (100, 100, 110, 110)], ["BTH", "MIS"], crs="EPSG:32630")
    path = tmp_path / "p.gpkg"
    gdf.to_file(path)
    out = read_parcels(path, bbox=(700000, 5169900, 700100, 5170000))
    assert out["CODE_CULTU"].tolist() == ["BTH"]


def test_invalid_geometry_repaired_and_empty_dropped(tmp_path):
    gdf = parcels_frame([(0, 0, 10, 10), (0, 10, 10, 20), (0, 20, 10, 30)], ["BTH", "MIS", "PPH"])
    x0, y0 = gdf.geometry.iloc[1].bounds[:2]
    gdf.loc[1, "geometry"] = Polygon([(x0, y0), (x0 + 100, y0 + 100), (x0 + 100, y0), (x0, y0 + 100)])  # bow-tie
    gdf.loc[2, "geometry"] = Polygon()
    path = tmp_path / "p.gpkg"
    gdf.to_file(path)
    out = read_parcels(path)
    assert len(out) == 2 and out.geometry.is_valid.all()


@pytest.mark.filterwarnings("ignore:.crs. was not provided")
def test_no_crs_is_an_error(tmp_path):
    gdf = parcels_frame([(0, 0, 10, 10)], ["BTH"]).set_crs(None, allow_override=True)
    path = tmp_path / "nocrs.gpkg"
    pyogrio.write_dataframe(gdf, path)
    with pytest.raises(CropmapError, match="nocrs.gpkg: the parcels have no CRS"):
        read_parcels(path)


def test_missing_file_and_columns(tmp_path):
    with pytest.raises(CropmapError, match="does not exist"):
        read_parcels(tmp_path / "nope.gpkg")
    gdf = parcels_frame([(0, 0, 10, 10)], ["BTH"]).drop(columns=["CODE_CULTU"])
    gdf.to_file(tmp_path / "p.gpkg")
    with pytest.raises(CropmapError, match="missing column.*CODE_CULTU"):
        read_parcels(tmp_path / "p.gpkg")
    (tmp_path / "junk.gpkg").write_text("not a geopackage")
    with pytest.raises(CropmapError, match="junk.gpkg: not a readable vector file"):
        read_parcels(tmp_path / "junk.gpkg")

"""cropmap audit: disagreeing parcels ranked by confidence, on a hand-made prediction table."""

import csv

import geopandas as gpd
import pandas as pd
import pytest
from shapely.geometry import box

from cropmap.auditing import AUDIT_COLUMNS, audit_parcels
from cropmap.cli import main
from cropmap.errors import CropmapError
from cropmap.prediction.parcels import write_parcel_table


@pytest.fixture
def table(tmp_path):
    gdf = gpd.GeoDataFrame({
        "ID_PARCEL": ["a", "b", "c", "d", "e"],
        "CODE_CULTU": ["BTH", "MIS", "PPH", "XXX", "ORH"],
        "SURF_PARC": [1.0, 2.0, 3.0, 4.0, 5.0],
        "declared_class": ["Blé tendre", "Maïs", "Prairies permanentes", None, "Orge"],
        "pred_class": ["Blé tendre", "Tournesol", "Prairies temporaires", "Maïs", "Blé tendre"],
        "confidence": [0.9, 0.6, 0.8, 0.7, 0.95],
        "agreement": [1.0, 0.7, 0.9, 0.8, 0.5],
        "agrees": pd.array([True, False, False, None, False], dtype="boolean"),
        "declared_coarse": ["Cultures d'hiver", "Cultures de printemps et d'été", "Prairies", None, "Cultures d'hiver"],
        "pred_coarse": ["Cultures d'hiver", "Cultures de printemps et d'été", "Prairies", "Cultures de printemps et d'été", "Cultures d'hiver"],
        "confidence_coarse": [0.95, 0.9, 0.99, 0.8, 0.97],
        "agreement_coarse": [1.0, 1.0, 1.0, 0.9, 1.0],
        "agrees_coarse": pd.array([True, True, True, None, True], dtype="boolean"),
        "n_pixels": [100, 200, 300, 400, 500],
        "level": ["group"] * 5,
    }, geometry=[box(700000 + i * 100, 6600000, 700050 + i * 100, 6600050) for i in range(5)], crs="EPSG:2154")
    return write_parcel_table(gdf, tmp_path / "pred.gpkg", overwrite=False)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_disagreements_most_confident_first(table, tmp_path):
    s = audit_parcels(table, tmp_path / "audit.csv")
    rows = _rows(s.path)
    assert [r["ID_PARCEL"] for r in rows] == ["e", "c", "b"]
    assert list(rows[0]) == list(AUDIT_COLUMNS)
    assert (s.compared, s.disagreeing, s.listed, s.level) == (4, 3, 3, "group")
    assert rows[0]["declared"] == "Orge" and rows[0]["predicted"] == "Blé tendre" and rows[0]["rank"] == "1"
    lon, lat = float(rows[0]["lon"]), float(rows[0]["lat"])
    assert -6 < lon < 10 and 41 < lat < 52  # WGS84 centroid in France


def test_filters_and_levels(table, tmp_path):
    s = audit_parcels(table, tmp_path / "a.csv", min_confidence=0.7)
    assert [r["ID_PARCEL"] for r in _rows(s.path)] == ["e", "c"] and s.disagreeing == 3
    s = audit_parcels(table, tmp_path / "b.csv", level="coarse")
    assert _rows(s.path) == [] and s.compared == 4
    with pytest.raises(CropmapError, match="no level 'crop'; levels here: group, coarse"):
        audit_parcels(table, tmp_path / "c.csv", level="crop")
    assert not (tmp_path / "c.csv").exists()


def test_cli_and_errors(table, tmp_path, capsys):
    out = tmp_path / "audit.csv"
    assert main(["audit", "--parcels", str(table), "--out", str(out)]) == 0
    assert "3 of 4 parcels disagree" in capsys.readouterr().out
    assert main(["audit", "--parcels", str(table), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["audit", "--parcels", str(tmp_path / "none.gpkg"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err

"""cropmap audit: a marker per declared parcel, red first, on a hand-made prediction table."""

import csv
import json

import geopandas as gpd
import pandas as pd
import pytest
from shapely.geometry import box

from cropmap.auditing import AUDIT_COLUMNS, audit_parcels
from cropmap.cli import main
from cropmap.errors import CropmapError
from cropmap.prediction.parcels import write_parcel_table


def _frame(fold):
    return gpd.GeoDataFrame({
        "ID_PARCEL": ["a", "b", "c", "d", "e", "f"],
        "CODE_CULTU": ["BTH", "MIS", "PPH", "XXX", "ORH", "BTH"],
        "SURF_PARC": [1.0, 2.0, 3.0, 4.0, 5.0, 0.1],
        "declared_class": ["Blé tendre", "Maïs", "Prairies permanentes", None, "Orge", "Blé tendre"],
        "pred_class": ["Blé tendre", "Tournesol", "Prairies temporaires", "Maïs", "Blé tendre", "Orge"],
        "p_declared": [0.97, 0.3, 0.15, None, 0.02, 0.01],
        "p_predicted": [0.97, 0.6, 0.8, 0.7, 0.95, 0.9],
        "confidence": [0.97, 0.6, 0.8, 0.7, 0.95, 0.9],
        "agreement": [1.0, 0.7, 0.9, 0.8, 0.5, 0.9],
        "agrees": pd.array([True, False, False, None, False, False], dtype="boolean"),
        "declared_coarse": ["Cultures d'hiver", "Cultures de printemps et d'été", "Prairies", None, "Cultures d'hiver",
                            "Cultures d'hiver"],
        "pred_coarse": ["Cultures d'hiver", "Cultures de printemps et d'été", "Prairies", "Cultures de printemps et d'été",
                        "Cultures d'hiver", "Cultures d'hiver"],
        "p_declared_coarse": [0.99, 0.9, 0.99, None, 0.97, 0.95],
        "confidence_coarse": [0.99, 0.9, 0.99, 0.8, 0.97, 0.95],
        "agreement_coarse": [1.0, 1.0, 1.0, 0.9, 1.0, 1.0],
        "agrees_coarse": pd.array([True, True, True, None, True, True], dtype="boolean"),
        "n_pixels": [100, 200, 300, 400, 500, 5],
        "level": ["group"] * 6,
        "fold": fold,
    }, geometry=[box(700000 + i * 100, 6600000, 700050 + i * 100, 6600050) for i in range(6)], crs="EPSG:2154")


@pytest.fixture
def table(tmp_path):
    return write_parcel_table(_frame([0, 1, 2, -1, 0, 1]), tmp_path / "pred.gpkg", overwrite=False)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_markers_red_first_with_a_summary(table, tmp_path):
    s = audit_parcels(table, tmp_path / "audit.csv")
    rows = _rows(s.path)
    assert list(rows[0]) == list(AUDIT_COLUMNS)
    # red pool (disagreeing, >= 20 px): e 0.02, c 0.15, b 0.3 -> mean(1 - p): 0.98, 0.915, 0.843: e and c red
    # f has 5 clear pixels: orange whatever its probability; a is green (p 0.97, predicted = declared)
    assert [(r["ID_PARCEL"], r["marker"]) for r in rows] == [("e", "red"), ("c", "red"), ("f", "orange"),
                                                             ("b", "orange"), ("a", "green")]
    assert (s.compared, s.disagreeing, s.listed, s.level, s.out_of_fold) == (5, 4, 5, "group", True)
    assert s.markers == {"red": 2, "orange": 2, "green": 1}
    assert rows[0]["declared"] == "Orge" and rows[0]["predicted"] == "Blé tendre" and rows[0]["fold"] == "0"
    lon, lat = float(rows[0]["lon"]), float(rows[0]["lat"])
    assert -6 < lon < 10 and 41 < lat < 52  # WGS84 centroid in France
    summary = json.loads(s.summary_path.read_text())
    assert summary["thresholds"]["red_max_p_declared"] == 0.15 and summary["thresholds"]["target_precision"] == 0.9
    assert summary["markers_per_declared_class"]["Blé tendre"] == {"red": 0, "orange": 1, "green": 1}
    assert summary["errors"]["expected_red_precision"] == pytest.approx((0.98 + 0.85) / 2)
    assert summary["out_of_fold"] and summary["note"] is None
    import xml.etree.ElementTree as ET

    import pyogrio

    layer = pyogrio.read_dataframe(s.layer_path, layer="audit")
    assert list(layer["ID_PARCEL"]) == [r["ID_PARCEL"] for r in rows] and list(layer["marker"])[0] == "red"
    style = ET.parse(s.layer_path.with_suffix(".qml")).getroot()
    assert style.find("renderer-v2").get("attr") == "marker"
    assert {c.get("value") for c in style.iter("category")} == {"red", "orange", "green"}


def test_in_sample_answers_are_said_so(tmp_path, caplog):
    table = write_parcel_table(_frame([-1] * 6), tmp_path / "p.gpkg", overwrite=False)
    s = audit_parcels(table, tmp_path / "a.csv")
    assert not s.out_of_fold and "answers are in-sample" in caplog.text
    assert "in-sample" in json.loads(s.summary_path.read_text())["note"]


def test_filters_levels_and_target(table, tmp_path):
    s = audit_parcels(table, tmp_path / "a.csv", min_confidence=0.85)  # drops b (0.6) and c (0.8) from the list
    assert [r["ID_PARCEL"] for r in _rows(s.path)] == ["e", "f", "a"] and s.disagreeing == 4
    s = audit_parcels(table, tmp_path / "b.csv", level="coarse")
    assert {r["marker"] for r in _rows(s.path)} == {"green", "orange"} and s.compared == 5
    s = audit_parcels(table, tmp_path / "t.csv", target_precision=0.95)  # only e keeps 0.95
    assert s.markers["red"] == 1
    with pytest.raises(CropmapError, match="no level 'crop'; levels here: group, coarse"):
        audit_parcels(table, tmp_path / "c.csv", level="crop")
    assert not (tmp_path / "c.csv").exists()


def test_cli_and_errors(table, tmp_path, capsys):
    out = tmp_path / "audit.csv"
    assert main(["audit", "--parcels", str(table), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "5 parcels at the group level: 2 red, 2 orange, 1 green (4 disagree" in text and "out-of-fold" in text
    assert main(["audit", "--parcels", str(table), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["audit", "--parcels", str(tmp_path / "none.gpkg"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_inspect_lists_uncertain_parcels_per_class(table, tmp_path):
    audit_parcels(table, tmp_path / "a.csv", inspect=3)
    rows = _rows(tmp_path / "a.inspect.csv")
    # least confident first, in turn over the declared classes (f has too few pixels to teach anything)
    assert [r["ID_PARCEL"] for r in rows] == ["b", "c", "e"]

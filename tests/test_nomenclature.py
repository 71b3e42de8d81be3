import csv
from pathlib import Path
from importlib import resources

import numpy as np
import pytest

from cropmap.errors import CropmapError
from cropmap.nomenclature import (
    COARSE_COLORS, OTHER_NAME, RPG_CODES, RPG_GROUPS, coarse_of, coarser_levels, group_of,
    make_class_table, read_class_scheme,
)

# The 11 codes of the fiboa supplement (introduced after the 2020 table), with the group we gave them.
SUPPLEMENT = {"JAC": "11", "FVP": "8", "AAR": "24", "ARP": "24", "AME": "24", "PME": "24", "PRF": "24",
              "PEV": "28", "SAG": "28", "CAH": "4", "MCS": "4"}
# Codes the 2020 groups table lacks but its validity table lists as valid (since 2019, 2021), with our group.
VALID_SINCE = {"CNA": "28", "ACP": "28"}
# The 14 group names the demo and its tests print: they must not change.
DEMO_GROUPS = {"1": "Blé tendre", "2": "Maïs grain et ensilage", "3": "Orge", "4": "Autres céréales", "5": "Colza",
               "6": "Tournesol", "7": "Autres oléagineux", "8": "Protéagineux",
               "11": "Gel (surfaces gelées sans production)", "18": "Prairies permanentes",
               "19": "Prairies temporaires", "21": "Vignes", "24": "Autres cultures industrielles",
               "25": "Légumes ou fleurs"}


def _rows() -> list[dict[str, str]]:
    text = resources.files("cropmap").joinpath("data_files", "rpg_codes.csv").read_text(encoding="utf-8")
    assert text.startswith("#") and "f2c2e50555b664ed79fc13129608baa6028cc6dd" in text  # sources cited
    return list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))


def test_table_has_every_official_and_supplement_code():
    rows = _rows()
    assert len(rows) == len(RPG_CODES) == 351 + len(VALID_SINCE) + len(SUPPLEMENT)
    assert len({r["code"] for r in rows}) == len(rows)
    assert {c: RPG_CODES[c][1] for c in SUPPLEMENT} == SUPPLEMENT
    assert len(RPG_GROUPS) == 24 and {r["group"] for r in rows} == set(RPG_GROUPS)
    assert {g: RPG_GROUPS[g] for g in DEMO_GROUPS} == DEMO_GROUPS
    for r in rows:  # every code has a coarse class of its own
        assert r["coarse"] == coarse_of(r["code"]) and r["coarse"] in COARSE_COLORS
        assert r["label"] and r["group_label"] == RPG_GROUPS[r["group"]]
    assert {c: RPG_CODES[c][1] for c in VALID_SINCE} == VALID_SINCE


OFFICIAL = Path(__file__).resolve().parents[2] / "shared/data/nomenclature/ign_rpg_official_2020"


@pytest.mark.skipif(not OFFICIAL.is_dir(), reason="the official IGN tables are in ../shared only")
def test_table_matches_the_official_files():
    """Every code of IGN's 2020 groups table, with its label and group, and every code its validity table
    still lists as valid; nothing else but the supplement."""
    with open(OFFICIAL / "REF_CULTURES_GROUPES_CULTURES_2020.csv", encoding="utf-8", newline="") as f:
        official = {r["CODE_CULTURE"].strip(): (r["LIBELLE_CULTURE"].strip(), r["CODE_GROUPE_CULTURE"].strip(),
                                                r["LIBELLE_GROUPE_CULTURE"].strip())
                    for r in csv.DictReader(f, delimiter=";")}
    with open(OFFICIAL / "REF_CULTURES_2020.csv", encoding="utf-8", newline="") as f:
        valid = {r["CODE"].strip() for r in csv.DictReader(f, delimiter=";") if r["CAMPAGNE_FIN"].strip() in ("NA", "")}
    assert len(official) == 351
    for code, (label, group, glabel) in official.items():
        assert RPG_CODES[code] == (label, group), code
        assert RPG_GROUPS[group] == glabel
    assert set(RPG_CODES) == set(official) | (valid - set(official)) | set(SUPPLEMENT)
    assert valid - set(official) == set(VALID_SINCE)


@pytest.mark.parametrize("codes, coarse", [
    (["ORP", "BTP", "CZP", "SOG", "MLT", "CPZ", "TRN", "MIS", "SOJ", "FVT", "AAR"], "Cultures de printemps et d'été"),
    (["BTH", "ORH", "CZH", "TTH", "AIL", "PHI"], "Cultures d'hiver"),
    (["PPH", "PTR", "LUZ", "MLF"], "Prairies et fourrages"),
    (["VRC", "VRG", "OLI", "LAV", "PPP", "PME", "ARP", "ACP", "HBL"], "Cultures permanentes"),
    (["JAC", "J6P", "BOR", "FVL", "HSA"], "Autres"),  # fallow, margins, season not given, under glass
])
def test_coarse_by_sowing_season_and_life_cycle(codes, coarse):
    assert {c: coarse_of(c) for c in codes} == dict.fromkeys(codes, coarse)


@pytest.mark.parametrize("code, group, group_name, coarse", [
    ("BTH", "1", "Blé tendre", "Cultures d'hiver"),
    ("MIS", "2", "Maïs grain et ensilage", "Cultures de printemps et d'été"),
    ("PPH", "18", "Prairies permanentes", "Prairies et fourrages"),
    ("VRC", "21", "Vignes", "Cultures permanentes"),
    ("JAC", "11", "Gel (surfaces gelées sans production)", "Autres"),
])
def test_known_codes(code, group, group_name, coarse):
    assert group_of(code) == group and RPG_GROUPS[group] == group_name and coarse_of(code) == coarse
    assert group_of("QQQ") is None and coarse_of("QQQ") is None


def test_official_label_wins():
    assert RPG_CODES["BTH"] == ("Blé tendre d’hiver", "1")  # typographic apostrophe, as IGN writes it


def test_unknown_codes_are_returned():
    table, unknown = make_class_table(["BTH", "QQQ", "MIS", "QQQ", "AAA"], "group")
    assert table.names == ("Blé tendre", "Maïs grain et ensilage") and unknown == ["AAA", "QQQ"]
    assert table.class_of("QQQ") == -1


def test_min_pixels_folds_rare_codes_into_other():
    pixels = {"BTH": 500, "MIS": 400, "PPH": 9, "JAC": 3, "SOJ": 10}
    table, _ = make_class_table(pixels, "crop", background=True, pixels=pixels, min_pixels=10)
    assert table.names == ("Hors parcelles", "BTH Blé tendre d’hiver", "MIS Maïs", "SOJ Soja", OTHER_NAME)
    assert table.codes[-1] == ("JAC", "PPH") and table.class_of("PPH") == table.class_of("JAC") == 4
    levels = coarser_levels(table)
    assert list(levels) == ["crop", "group", "coarse"]
    # the folded class mixes groups 11 and 18: its own name at the group level, "Autres" at the coarse level
    assert levels["group"][0][-1] == OTHER_NAME and levels["coarse"][0][-1] == "Autres"
    names, m = levels["coarse"]
    assert names[np.argmax(m[1])] == "Cultures d'hiver" and m.sum(axis=1).tolist() == [1] * 5
    # folded codes of a single group keep that group as parent
    table, _ = make_class_table(pixels, "crop", pixels={**pixels, "JAC": 500}, min_pixels=10)
    assert table.codes[-1] == ("PPH",) and coarser_levels(table)["group"][0][-1] == "Prairies permanentes"
    assert make_class_table(pixels, "crop")[0].num_classes == 5  # no threshold: no folding


def _scheme(tmp_path, text, name="classes.csv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_custom_scheme(tmp_path):
    path = _scheme(tmp_path, "# PASTIS-like\ncode,class,color\nBTH,Wheat,#ff0000\nBDH,Wheat,\n"
                             "PPH,Meadow,\nPTR,Meadow,\nMIS,Corn,\nSOG,Sorghum,#00ff00\n")
    scheme = read_class_scheme(path)
    assert scheme.names == ("Wheat", "Meadow", "Corn", "Sorghum") and scheme.codes[1] == ("PPH", "PTR")
    table, unknown = make_class_table(["PPH", "BTH", "MIS", "ORH", "ORH"], "custom", background=True, scheme=scheme)
    assert table.level == "custom" and unknown == ["ORH"]  # not in the file: unlabelled, reported
    assert table.names == ("Hors parcelles", "Wheat", "Meadow", "Corn")  # Sorghum has no parcel here
    assert table.colors[1] == (255, 0, 0) and table.class_of("PTR") == 2 and table.class_of("ORH") == -1
    levels = coarser_levels(table)
    # Meadow mixes groups 18 and 19, so no group level; every class has one coarse parent
    assert list(levels) == ["custom", "coarse"]
    assert levels["coarse"][0] == ("Hors parcelles", "Cultures d'hiver", "Prairies et fourrages", "Cultures de printemps et d'été")
    own = make_class_table(["BTH", "MIS"], "custom", scheme=read_class_scheme(
        _scheme(tmp_path, "class,code\nA,BTH\nB,MIS\nB,XYZ\n", "b.csv")))[0]
    assert list(coarser_levels(own)) == ["custom"]  # XYZ is no RPG code: nothing coarser


@pytest.mark.parametrize("text, message", [
    ("code;class\nBTH;Wheat\n", "expected a header with columns code,class"),
    ("", "expected a header"),
    ("code,class\nBTH,Wheat\nMIS,Corn\nBTH,Barley\n", "line 4: code BTH is already mapped on line 2"),
    ("code,class\nBTH,\n", "line 2: empty code or class"),
    ("code,class,color\nBTH,Wheat,red\n", "line 2: colour 'red' is not #rrggbb"),
    ("code,class,color\nBTH,W,#ff0000\nBTP,W,#00ff00\n", "class 'W' already has another colour"),
    ("code,class\nBTH,Hors parcelles\n", "reserved"),
    ("code,class\n", "no code -> class row"),
])
def test_bad_scheme_files(tmp_path, text, message):
    path = _scheme(tmp_path, text)
    with pytest.raises(CropmapError, match=message) as e:
        read_class_scheme(path)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)


def test_unreadable_scheme_file(tmp_path):
    with pytest.raises(CropmapError, match="cannot read the class file"):
        read_class_scheme(tmp_path / "missing.csv")
    (tmp_path / "latin1.csv").write_bytes("code,class\nBTH,Blé\n".encode("latin-1"))
    with pytest.raises(CropmapError, match="cannot read"):
        read_class_scheme(tmp_path / "latin1.csv")


def test_group_level_unchanged():
    table, _ = make_class_table(["BTH", "BTP", "MIS", "PPH"], "group", background=True)
    assert table.codes == ((), ("BTH", "BTP"), ("MIS",), ("PPH",))
    assert list(coarser_levels(table)) == ["group", "coarse"]
    with pytest.raises(ValueError, match="unknown label level"):
        make_class_table(["BTH"], "parcel")

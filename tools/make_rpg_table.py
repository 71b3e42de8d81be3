"""Write cropmap's own RPG crop-code table, ``src/cropmap/data_files/rpg_codes.csv``, from the staged sources.

Run once by hand (the package reads only the CSV it writes, never ``../shared``):

    python tools/make_rpg_table.py ../shared/data/nomenclature

Sources (see that folder's PROVENANCE.txt): the official IGN/ASP table REF_CULTURES_GROUPES_CULTURES,
edition 2020 (351 codes, 24 groups); the official REF_CULTURES_2020 validity table, for the codes valid
since 2019-2021 that the groups table lacks (CNA, ACP); and the fiboa supplement of 11 codes introduced
since 2022. Neither of the last two gives a CODE_GROUP: ``NEW_GROUP`` below assigns one by meaning, next
to the 2020 code each one continues.

The coarse class is per code (:func:`coarse_class`), by sowing season and life cycle: winter crops,
spring/summer crops, grassland and forage, permanent crops, other. The season comes from the official
label where it says so (d'hiver / de printemps / d'été / semé tardivement), else from the crop's usual
sowing in metropolitan France (our assignment, listed below); codes whose season the code does not tell
(a faba bean "sown before 31/05" may be winter or spring) go to "Autres".
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from cropmap.nomenclature import COARSE_COLORS, OTHER, PERMANENT, GRASSLAND, SPRING, WINTER

OFFICIAL = "ign_rpg_official_2020/REF_CULTURES_GROUPES_CULTURES_2020.csv"
VALIDITY = "ign_rpg_official_2020/REF_CULTURES_2020.csv"
SUPPLEMENT = "fiboa/fr_supplement.csv"
OUT = Path(__file__).resolve().parents[1] / "src/cropmap/data_files/rpg_codes.csv"

# New code -> CODE_GROUP. Our assignment (the sources have none): the group of the 2020 code each one
# replaces, splits or sits beside.
NEW_GROUP = {
    "CNA": "28",  # chestnut grove not grazed, beside CAE / CNE (group 28)
    "ACP": "28",  # other perennial crop, beside ACA (group 28)
    "JAC": "11",  # fallow on arable land, like J5M / J6P
    "FVP": "8",  # spring faba bean, like FVL / FVT
    "AAR": "24",  # aromatic plants: PAR, PPA, PPP, PMD, PPF are group 24
    "ARP": "24",
    "AME": "24",
    "PME": "24",
    "PRF": "24",
    "PEV": "28",  # nursery, like PEP
    "SAG": "28",  # reed bed, like ROS
    "CAH": "4",  # other winter / spring cereals, like CHA, CPA...
    "MCS": "4",
}

# Coarse class by group where the label does not tell (see coarse_class).
GROUP_COARSE = {
    **dict.fromkeys(["16", "17", "18", "19"], GRASSLAND),  # forage crops, pastures, meadows
    **dict.fromkeys(["20", "21", "22", "23", "26"], PERMANENT),  # orchards, vines, nuts, olives, sugar cane
    **dict.fromkeys(["11", "28"], OTHER),  # fallow, miscellaneous (field margins, woodland, nurseries...)
    **dict.fromkeys(["1", "3", "5"], WINTER),  # wheat, barley, rapeseed: the labels name the spring ones
    "4": WINTER,  # other cereals: spelt, mixed cereals and the "d'hiver" ones; spring-sown listed below
    **dict.fromkeys(["2", "6", "7", "9", "14", "15", "24", "25"], SPRING),  # maize, sunflower, soy, hemp, rice...
    "8": OTHER,  # protein crops: winter or spring unless the label says
}
# Codes whose usual sowing season or life cycle the label does not give (our assignment).
CODE_COARSE = {
    # spring/summer-sown cereals: millet, sorghum, buckwheat, canary grass, other Zea
    **dict.fromkeys(["MLT", "SOG", "SRS", "CGF", "CGO", "CGP", "CGS", "CGH", "CPZ", "MCS"], SPRING),
    # protein crops whose season the label gives only as "de printemps" / "d'hiver" are caught by the label
    "AIL": WINTER,  # garlic: planted in autumn
    # perennial aromatic, medicinal and industrial plants
    **dict.fromkeys(["HBL", "LAV", "ROM", "THY", "SGE", "VNB", "VNL", "VNV", "YLA", "ART", "FLP"], PERMANENT),
    # perennial woody crops in the miscellaneous group
    **dict.fromkeys(["MCT", "TCR", "TRU", "ACP"], PERMANENT),
    # crops under glass or soil-less: no field phenology to see
    **dict.fromkeys(["CSS", "HSA", "LSA"], OTHER),
}
_PERENNIAL_WORDS = ("pérenne", "arbustive ou arborée")


def coarse_class(code: str, label: str, group: str) -> str:
    """The coarse class of one code (see the module docstring)."""
    low = label.lower().replace("’", "'")
    if code in CODE_COARSE:
        return CODE_COARSE[code]
    if GROUP_COARSE[group] in (GRASSLAND, PERMANENT) or group in ("11", "28"):
        return GROUP_COARSE[group]
    if "non pérenne" in low or "annuel" in low:
        return SPRING
    if any(w in low for w in _PERENNIAL_WORDS):
        return PERMANENT
    if "d'hiver" in low:
        return WINTER
    if "de printemps" in low or "d'été" in low or "tardivement (après le 31/05)" in low:
        return SPRING
    return GROUP_COARSE[group]

HEADER = """\
# cropmap RPG crop-code table: CODE_CULTU -> label, CODE_GROUP, group label, coarse class.
# Written by tools/make_rpg_table.py; do not edit by hand.
# Official codes: IGN/ASP REF_CULTURES_GROUPES_CULTURES, edition 2020, as copied in
#   AgenceBio/cartobio-front docs/pac/REF_CULTURES_GROUPES_CULTURES_2020.csv @ f2c2e50555b664ed79fc13129608baa6028cc6dd
# Codes introduced since (2022-2023): fiboa/fiboa.github.io code/fr/fr_supplement.csv @ 61f40fff1f23e8c3f496d851b2bc73059db72dd8
#   (labels from there; their CODE_GROUP is cropmap's assignment by meaning: {supp})
# Codes valid since 2019-2021 absent from the groups table: IGN/ASP REF_CULTURES (validity years), edition 2020, same copy:
#   AgenceBio/cartobio-front docs/pac/REF_CULTURES_2020.csv @ f2c2e50555b664ed79fc13129608baa6028cc6dd ({valid})
# coarse: per code, by sowing season and life cycle (tools/make_rpg_table.py, coarse_class): the official label's
#   season where it gives one, else cropmap's assignment.
"""


def main(folder: str) -> None:
    root = Path(folder)
    rows: list[tuple[str, str, str, str]] = []
    group_label: dict[str, str] = {}
    with open(root / OFFICIAL, encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f, delimiter=";"):
            code, group = r["CODE_CULTURE"].strip(), r["CODE_GROUPE_CULTURE"].strip()
            rows.append((code, r["LIBELLE_CULTURE"].strip(), group, r["LIBELLE_GROUPE_CULTURE"].strip()))
            group_label[group] = r["LIBELLE_GROUPE_CULTURE"].strip()
    official = {r[0] for r in rows}
    valid_new = []
    with open(root / VALIDITY, encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f, delimiter=";"):
            code = r["CODE"].strip()
            if code not in official and r["CAMPAGNE_FIN"].strip() in ("NA", ""):  # still valid
                group = NEW_GROUP[code]  # KeyError: a new code needs a group here
                rows.append((code, r["LIBELLE_CULTURE"].strip(), group, group_label[group]))
                valid_new.append(code)
    with open(root / SUPPLEMENT, encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            code = r["original_code"].strip()
            if code in official or code in valid_new:
                sys.exit(f"{code}: in both the 2020 tables and the supplement")
            group = NEW_GROUP[code]  # KeyError: a new supplement code needs a group here
            rows.append((code, r["original_name"].strip(), group, group_label[group]))
    if len(official) != 351 or len(rows) != len({r[0] for r in rows}):
        sys.exit(f"unexpected table: {len(official)} official codes, {len(rows)} rows")

    buf = io.StringIO()
    supp = [c for c in NEW_GROUP if c not in valid_new]
    buf.write(HEADER.format(supp=", ".join(f"{c}->{NEW_GROUP[c]}" for c in supp),
                            valid=", ".join(f"{c}->{NEW_GROUP[c]}" for c in valid_new)))
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["code", "label", "group", "group_label", "coarse"])
    for code, label, group, glabel in sorted(rows, key=lambda r: (int(r[2]), r[0])):
        coarse = coarse_class(code, label, group)
        assert coarse in COARSE_COLORS, coarse
        w.writerow([code, label, group, glabel, coarse])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(buf.getvalue(), encoding="utf-8")
    print(f"{OUT}: {len(rows)} codes, {len(group_label)} groups")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/nomenclature")

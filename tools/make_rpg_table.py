"""Write cropmap's own RPG crop-code table, ``src/cropmap/data_files/rpg_codes.csv``, from the staged sources.

Run once by hand (the package reads only the CSV it writes, never ``../shared``):

    python tools/make_rpg_table.py ../shared/data/nomenclature

Sources (see that folder's PROVENANCE.txt): the official IGN/ASP table REF_CULTURES_GROUPES_CULTURES,
edition 2020 (351 codes, 24 groups), and the fiboa supplement of 11 codes introduced since 2022. The
supplement gives no CODE_GROUP: ``SUPPLEMENT_GROUP`` below assigns one by meaning, next to the 2020
code it continues. The coarse class of each group is ``COARSE_OF_GROUP`` in ``cropmap.nomenclature``.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from cropmap.nomenclature import COARSE_OF_GROUP

OFFICIAL = "ign_rpg_official_2020/REF_CULTURES_GROUPES_CULTURES_2020.csv"
SUPPLEMENT = "fiboa/fr_supplement.csv"
OUT = Path(__file__).resolve().parents[1] / "src/cropmap/data_files/rpg_codes.csv"

# Supplement code -> CODE_GROUP. Our assignment (the supplement has none): the group of the 2020 code
# each one replaces or splits.
SUPPLEMENT_GROUP = {
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

HEADER = """\
# cropmap RPG crop-code table: CODE_CULTU -> label, CODE_GROUP, group label, coarse class.
# Written by tools/make_rpg_table.py; do not edit by hand.
# Official codes: IGN/ASP REF_CULTURES_GROUPES_CULTURES, edition 2020, as copied in
#   AgenceBio/cartobio-front docs/pac/REF_CULTURES_GROUPES_CULTURES_2020.csv @ f2c2e50555b664ed79fc13129608baa6028cc6dd
# Codes introduced since (2022-2023): fiboa/fiboa.github.io code/fr/fr_supplement.csv @ 61f40fff1f23e8c3f496d851b2bc73059db72dd8
#   (labels from there; their CODE_GROUP is cropmap's assignment by meaning: {supp})
# coarse: cropmap's grouping of CODE_GROUP by season and land use (cropmap.nomenclature.COARSE_OF_GROUP).
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
    with open(root / SUPPLEMENT, encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            code = r["original_code"].strip()
            if code in official:
                sys.exit(f"{code}: in both the 2020 table and the supplement")
            group = SUPPLEMENT_GROUP[code]  # KeyError: a new supplement code needs a group here
            rows.append((code, r["original_name"].strip(), group, group_label[group]))
    if len(official) != 351 or len(rows) != len({r[0] for r in rows}):
        sys.exit(f"unexpected table: {len(official)} official codes, {len(rows)} rows")

    buf = io.StringIO()
    buf.write(HEADER.format(supp=", ".join(f"{c}->{g}" for c, g in SUPPLEMENT_GROUP.items())))
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["code", "label", "group", "group_label", "coarse"])
    for code, label, group, glabel in sorted(rows, key=lambda r: (int(r[2]), r[0])):
        w.writerow([code, label, group, glabel, COARSE_OF_GROUP[group]])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(buf.getvalue(), encoding="utf-8")
    print(f"{OUT}: {len(rows)} codes, {len(group_label)} groups")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/nomenclature")

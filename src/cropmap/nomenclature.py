"""RPG crop codes, their groups, and the class tables that turn codes into model classes.

The codes and group numbers below are the official IGN/ASP reference (REF_CULTURES_GROUPES_CULTURES,
edition 2020), plus JAC (fallow on arable land), introduced in 2023 (fiboa fr_supplement).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

# CODE_CULTU -> (label, CODE_GROUP)
RPG_CODES: dict[str, tuple[str, str]] = {
    "BTH": ("Blé tendre d'hiver", "1"),
    "BTP": ("Blé tendre de printemps", "1"),
    "MIS": ("Maïs", "2"),
    "MIE": ("Maïs ensilage", "2"),
    "ORH": ("Orge d'hiver", "3"),
    "ORP": ("Orge de printemps", "3"),
    "TTH": ("Triticale d'hiver", "4"),
    "BDH": ("Blé dur d'hiver", "4"),
    "CZH": ("Colza d'hiver", "5"),
    "TRN": ("Tournesol", "6"),
    "SOJ": ("Soja", "7"),
    "FVL": ("Féverole semée avant le 31/05", "8"),
    "JAC": ("Jachère (terre arable)", "11"),
    "J6S": ("Jachère de 6 ans ou plus déclarée comme SIE", "11"),
    "PPH": ("Prairie permanente - herbe prédominante", "18"),
    "PTR": ("Autre prairie temporaire de 5 ans ou moins", "19"),
    "VRC": ("Vigne : raisins de cuve", "21"),
    "BTN": ("Betterave non fourragère / Bette", "24"),
    "PTC": ("Pomme de terre de consommation", "25"),
}

# CODE_GROUP -> label
RPG_GROUPS: dict[str, str] = {
    "1": "Blé tendre",
    "2": "Maïs grain et ensilage",
    "3": "Orge",
    "4": "Autres céréales",
    "5": "Colza",
    "6": "Tournesol",
    "7": "Autres oléagineux",
    "8": "Protéagineux",
    "11": "Gel (surfaces gelées sans production)",
    "18": "Prairies permanentes",
    "19": "Prairies temporaires",
    "21": "Vignes",
    "24": "Autres cultures industrielles",
    "25": "Légumes ou fleurs",
}

# Map colours per group, chosen so that neighbouring crops are told apart on a map.
GROUP_COLORS: dict[str, tuple[int, int, int]] = {
    "1": (230, 180, 30),
    "2": (255, 127, 14),
    "3": (190, 140, 60),
    "4": (140, 86, 75),
    "5": (255, 240, 0),
    "6": (214, 39, 40),
    "7": (148, 103, 189),
    "8": (227, 119, 194),
    "11": (188, 189, 34),
    "18": (44, 160, 44),
    "19": (152, 223, 138),
    "21": (120, 30, 90),
    "24": (23, 190, 207),
    "25": (247, 182, 210),
}

# CODE_GROUP -> coarse class: the top of the hierarchy crop -> group -> coarse (Turkoglu et al. 2021
# predict such a hierarchy). Groups are the official list (IGN 2020, DERIVED_groups_2020.csv); the
# assignment to a coarse class, by season and land use, is ours.
COARSE_OF_GROUP: dict[str, str] = {
    **dict.fromkeys(["1", "3", "4", "5"], "Cultures d'hiver"),  # wheat, barley, other cereals, rapeseed
    **dict.fromkeys(["2", "6", "7", "14", "15", "24", "25", "26"], "Cultures d'été"),  # maize, sunflower, soy, beet...
    **dict.fromkeys(["16", "17", "18", "19"], "Prairies et fourrages"),
    **dict.fromkeys(["20", "21", "22", "23"], "Cultures permanentes"),  # orchards, vines, nuts, olives
    **dict.fromkeys(["8", "9", "11", "28"], "Autres"),  # protein crops (winter and spring), fibre, fallow, misc.
}
COARSE_COLORS: dict[str, tuple[int, int, int]] = {
    "Cultures d'hiver": (230, 180, 30),
    "Cultures d'été": (255, 127, 14),
    "Prairies et fourrages": (44, 160, 44),
    "Cultures permanentes": (120, 30, 90),
    "Autres": (188, 189, 34),
}

LEVELS = ("group", "crop")
HIERARCHY = ("crop", "group", "coarse")  # finest to coarsest
IGNORE_INDEX = -1  # label value for unlabelled, border and other-split pixels
BACKGROUND_NAME = "Hors parcelles"  # class 0 when the table has a background class
BACKGROUND_COLOR = (170, 170, 170)


@dataclass(frozen=True)
class ClassTable:
    """Model classes: class ``i`` is ``names[i]`` and covers the RPG codes ``codes[i]``.

    With ``background``, class 0 is land outside any declared parcel (roads, woods, water, towns):
    it has no code, and it lets the map say "not a crop" instead of forcing a crop everywhere.
    """

    level: str
    names: tuple[str, ...]
    codes: tuple[tuple[str, ...], ...]
    colors: tuple[tuple[int, int, int], ...]
    background: bool = False
    _lookup: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (len(self.names) == len(self.codes) == len(self.colors)):
            raise ValueError("class table: names, codes and colors differ in length")
        for i, cs in enumerate(self.codes):
            for c in cs:
                self._lookup[c] = i

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def class_of(self, code: str) -> int:
        """Class index of an RPG code, or IGNORE_INDEX when the table does not cover it."""
        return self._lookup.get(code, IGNORE_INDEX)

    def to_dict(self) -> dict:
        return {"level": self.level, "names": list(self.names), "codes": [list(c) for c in self.codes],
                "colors": [list(c) for c in self.colors], "background": self.background}

    @classmethod
    def from_dict(cls, d: dict) -> "ClassTable":
        return cls(level=d["level"], names=tuple(d["names"]), codes=tuple(tuple(c) for c in d["codes"]),
                   colors=tuple(tuple(int(v) for v in c) for c in d["colors"]),
                   background=bool(d.get("background", False)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls, s: str) -> "ClassTable":
        return cls.from_dict(json.loads(s))


def group_of(code: str) -> str | None:
    entry = RPG_CODES.get(code)
    return entry[1] if entry else None


def make_class_table(codes: Iterable[str], level: str = "group", background: bool = False) -> tuple[ClassTable, list[str]]:
    """Class table covering ``codes`` at ``level``; also returns the codes it could not place.

    ``group``: one class per RPG group present; ``crop``: one class per code present;
    ``background`` puts a class for land outside the parcels first.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown label level {level!r}; expected one of {', '.join(LEVELS)}")
    present = sorted(set(codes))
    unknown = [c for c in present if c not in RPG_CODES]
    known = [c for c in present if c in RPG_CODES]
    if level == "crop":
        names = tuple(f"{c} {RPG_CODES[c][0]}" for c in known)
        members = tuple((c,) for c in known)
        colors = tuple(_crop_color(c, known) for c in known)
    else:
        groups = sorted({RPG_CODES[c][1] for c in known}, key=int)
        names = tuple(RPG_GROUPS.get(g, f"Groupe {g}") for g in groups)
        members = tuple(tuple(c for c in known if RPG_CODES[c][1] == g) for g in groups)
        colors = tuple(GROUP_COLORS.get(g, (128, 128, 128)) for g in groups)
    if background:
        names, members, colors = (BACKGROUND_NAME,) + names, ((),) + members, (BACKGROUND_COLOR,) + colors
    return ClassTable(level=level, names=names, codes=members, colors=colors, background=background), unknown


def _crop_color(code: str, known: list[str]) -> tuple[int, int, int]:
    # Codes of one group share its hue, lightened by their rank inside the group.
    group = RPG_CODES[code][1]
    siblings = [c for c in known if RPG_CODES[c][1] == group]
    r, g, b = GROUP_COLORS.get(group, (128, 128, 128))
    k = siblings.index(code) / max(len(siblings), 1) * 0.5
    return (int(r + (255 - r) * k), int(g + (255 - g) * k), int(b + (255 - b) * k))


def coarser_levels(table: ClassTable) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """The table's own level and every coarser one: ``{level: (names, M)}`` with ``M [K, K_level]``
    a 0/1 matrix sending each class to its parent, so that ``probabilities @ M`` are the parent
    level's probabilities. The background class, if any, stays its own class at every level.
    """
    levels = HIERARCHY[HIERARCHY.index(table.level):]
    out: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}
    for level in levels:
        parents = [_parent(table, i, level) for i in range(table.num_classes)]
        names = tuple(dict.fromkeys(parents))
        m = np.zeros((table.num_classes, len(names)), dtype=np.float32)
        m[np.arange(table.num_classes), [names.index(p) for p in parents]] = 1
        out[level] = (names, m)
    return out


def _parent(table: ClassTable, i: int, level: str) -> str:
    codes = table.codes[i]
    if level == table.level or not codes:  # itself, or the background class
        return table.names[i]
    group = group_of(codes[0]) or "?"
    if level == "group":
        return RPG_GROUPS.get(group, f"Groupe {group}")
    return COARSE_OF_GROUP.get(group, "Autres")

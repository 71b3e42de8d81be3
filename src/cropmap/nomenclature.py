"""RPG crop codes, their groups, and the class tables that turn codes into model classes.

The code table is the official IGN/ASP reference (REF_CULTURES_GROUPES_CULTURES, edition 2020) plus the
codes introduced since (fiboa fr_supplement), shipped as data_files/rpg_codes.csv.
"""

from __future__ import annotations

import csv
import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from .errors import CropmapError

# The RPG code table ships with the package (data_files/rpg_codes.csv, written by tools/make_rpg_table.py
# from the official tables, sources in its header); read on first use so that the tool can import the
# coarse class names below before the file exists.
_TABLE_FILE = ("data_files", "rpg_codes.csv")


@functools.cache
def _rpg_table() -> tuple[dict[str, tuple[str, str]], dict[str, str], dict[str, str]]:
    """``(codes, groups, coarse)``: CODE_CULTU -> (label, CODE_GROUP), CODE_GROUP -> group label and
    CODE_CULTU -> coarse class."""
    text = resources.files("cropmap").joinpath(*_TABLE_FILE).read_text(encoding="utf-8")
    codes: dict[str, tuple[str, str]] = {}
    groups: dict[str, str] = {}
    coarse: dict[str, str] = {}
    for r in csv.DictReader(line for line in text.splitlines() if not line.startswith("#")):
        codes[r["code"]] = (r["label"], r["group"])
        groups.setdefault(r["group"], r["group_label"])
        coarse[r["code"]] = r["coarse"]
    return codes, dict(sorted(groups.items(), key=lambda kv: int(kv[0]))), coarse


def __getattr__(name: str) -> dict:
    # RPG_CODES (CODE_CULTU -> (label, CODE_GROUP)) and RPG_GROUPS (CODE_GROUP -> label), loaded lazily
    if name == "RPG_CODES":
        return _rpg_table()[0]
    if name == "RPG_GROUPS":
        return _rpg_table()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

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
    # groups absent from the demo
    "9": (174, 199, 232),
    "14": (158, 218, 229),
    "15": (197, 176, 213),
    "16": (90, 170, 90),
    "17": (160, 190, 120),
    "20": (200, 60, 120),
    "22": (150, 100, 60),
    "23": (110, 130, 50),
    "26": (60, 120, 200),
    "28": (127, 127, 127),
}

# The coarse classes, the top of the hierarchy crop -> group -> coarse (Turkoglu et al. 2021 predict such a
# hierarchy): by sowing season and life cycle, one per code (the coarse column of rpg_codes.csv), since a
# group mixes seasons (spring barley, spring rapeseed and millet are in winter-cereal groups).
WINTER = "Cultures d'hiver"
SPRING = "Cultures de printemps et d'été"
GRASSLAND = "Prairies et fourrages"
PERMANENT = "Cultures permanentes"
OTHER = "Autres"
COARSE_COLORS: dict[str, tuple[int, int, int]] = {
    WINTER: (230, 180, 30),
    SPRING: (255, 127, 14),
    GRASSLAND: (44, 160, 44),
    PERMANENT: (120, 30, 90),
    OTHER: (188, 189, 34),
}

LEVELS = ("group", "crop", "custom")  # label schemes: RPG group, RPG code, a user's own code -> class file
HIERARCHY = ("crop", "group", "coarse")  # finest to coarsest
IGNORE_INDEX = -1  # label value for unlabelled, border and other-split pixels
BACKGROUND_NAME = "Hors parcelles"  # class 0 when the table has a background class
BACKGROUND_COLOR = (170, 170, 170)
OTHER_NAME = "Autres cultures"  # crop level: the codes too rare to be a class of their own
OTHER_COLOR = (128, 128, 128)
# Colours of a user's classes that come without one and mix groups (tab20, dark shades first).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
    (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (199, 199, 199),
    (219, 219, 141), (158, 218, 229),
)


@dataclass(frozen=True)
class ClassTable:
    """Model classes: class ``i`` is ``names[i]`` and covers the RPG codes ``codes[i]``.

    ``level`` is the label scheme: "group", "crop" or "custom" (a user's file). With ``background``,
    class 0 is land outside any declared parcel (roads, woods, water, towns): it has no code, and it
    lets the map say "not a crop" instead of forcing a crop everywhere.
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


@dataclass(frozen=True)
class ClassScheme:
    """A user's label scheme read from a ``code,class[,color]`` CSV: classes in order of first appearance."""

    names: tuple[str, ...]
    codes: tuple[tuple[str, ...], ...]
    colors: tuple[tuple[int, int, int] | None, ...]  # None: not given in the file


def group_of(code: str) -> str | None:
    entry = _rpg_table()[0].get(code)
    return entry[1] if entry else None


def coarse_of(code: str) -> str | None:
    return _rpg_table()[2].get(code)


def read_class_scheme(path: Path | str) -> ClassScheme:
    """Read a user's ``code,class[,color]`` CSV (header row; ``#`` lines are comments; color ``#rrggbb``).

    Every problem is a one-line CropmapError naming the file: unreadable, missing columns, an empty code
    or class, a code given twice, a bad or conflicting colour, a reserved class name, no rows.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise CropmapError(f"{path}: cannot read the class file ({e.__class__.__name__}: {e})") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.startswith("#")]
    try:  # one row per line, so that errors name the right line
        rows = [next(csv.reader([line])) for _, line in lines]
    except csv.Error as e:
        raise CropmapError(f"{path}: not a valid CSV ({e})") from None
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if "code" not in header or "class" not in header:
        found = ",".join(header) or "nothing"
        raise CropmapError(f"{path}: expected a header with columns code,class[,color]; found {found}")
    ic, ik, icol = header.index("code"), header.index("class"), header.index("color") if "color" in header else None
    where: dict[str, int] = {}  # code -> line, to name both lines of a duplicate
    members: dict[str, list[str]] = {}
    colors: dict[str, tuple[int, int, int] | None] = {}
    for (n, _), row in zip(lines[1:], rows[1:]):
        code, name, color = (row[i].strip() if i is not None and i < len(row) else "" for i in (ic, ik, icol))
        if not code or not name:
            raise CropmapError(f"{path}: line {n}: empty code or class")
        if code in where:
            raise CropmapError(f"{path}: line {n}: code {code} is already mapped on line {where[code]}")
        if name == BACKGROUND_NAME:
            raise CropmapError(f"{path}: line {n}: class name {name!r} is reserved for land outside the parcels")
        rgb = _parse_color(color, path, n) if color else None
        if rgb is not None and colors.get(name) not in (None, rgb):
            raise CropmapError(f"{path}: line {n}: class {name!r} already has another colour")
        where[code] = n
        members.setdefault(name, []).append(code)
        colors[name] = rgb if rgb is not None else colors.get(name)
    if not members:
        raise CropmapError(f"{path}: no code -> class row")
    return ClassScheme(tuple(members), tuple(tuple(cs) for cs in members.values()), tuple(colors[k] for k in members))


def _parse_color(s: str, path: Path, line: int) -> tuple[int, int, int]:
    h = s.removeprefix("#")
    if len(h) != 6 or any(ch not in "0123456789abcdefABCDEF" for ch in h):
        raise CropmapError(f"{path}: line {line}: colour {s!r} is not #rrggbb")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def make_class_table(codes: Iterable[str], level: str = "group", background: bool = False, *,
                     pixels: Mapping[str, int] | None = None, min_pixels: int = 0,
                     scheme: ClassScheme | None = None) -> tuple[ClassTable, list[str]]:
    """Class table covering ``codes`` at ``level``; also returns the codes it could not place.

    ``group``: one class per RPG group present; ``crop``: one class per code present, except that
    codes with fewer than ``min_pixels`` labelled ``pixels`` (code -> count) are folded into one last
    class, OTHER_NAME; ``custom``: the ``scheme``'s classes that have a code present, each covering all
    the codes the scheme gives it. Unplaced codes are those not in the RPG table (group, crop) or not in
    the scheme (custom). ``background`` puts a class for land outside the parcels first.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown label level {level!r}; expected one of {', '.join(LEVELS)}")
    if (scheme is not None) != (level == "custom"):
        raise ValueError("a class scheme goes with the custom level, and only with it")
    if min_pixels > 0 and (level != "crop" or pixels is None):
        raise ValueError("min_pixels applies to the crop level and needs the pixel count of each code")
    rpg = _rpg_table()[0]
    present = sorted(set(codes))
    if level == "custom":
        assert scheme is not None
        covered = {c for cs in scheme.codes for c in cs}
        unknown = [c for c in present if c not in covered]
        keep = [i for i, cs in enumerate(scheme.codes) if set(cs) & set(present)]
        names = tuple(scheme.names[i] for i in keep)
        members = tuple(scheme.codes[i] for i in keep)
        colors = tuple(scheme.colors[i] or _scheme_color(scheme.codes[i], k) for k, i in enumerate(keep))
    else:
        unknown = [c for c in present if c not in rpg]
        known = [c for c in present if c in rpg]
        if level == "crop":
            rare = [c for c in known if min_pixels > 0 and pixels.get(c, 0) < min_pixels]  # type: ignore[union-attr]
            kept = [c for c in known if c not in rare]
            names = tuple(f"{c} {rpg[c][0]}" for c in kept) + ((OTHER_NAME,) if rare else ())
            members = tuple((c,) for c in kept) + ((tuple(rare),) if rare else ())
            colors = tuple(_crop_color(c, kept) for c in kept) + ((OTHER_COLOR,) if rare else ())
        else:
            groups = sorted({rpg[c][1] for c in known}, key=int)
            names = tuple(_rpg_table()[1].get(g, f"Groupe {g}") for g in groups)
            members = tuple(tuple(c for c in known if rpg[c][1] == g) for g in groups)
            colors = tuple(GROUP_COLORS.get(g, (128, 128, 128)) for g in groups)
    if background:
        names, members, colors = (BACKGROUND_NAME,) + names, ((),) + members, (BACKGROUND_COLOR,) + colors
    return ClassTable(level=level, names=names, codes=members, colors=colors, background=background), unknown


def _crop_color(code: str, known: list[str]) -> tuple[int, int, int]:
    # Codes of one group share its hue, lightened by their rank inside the group.
    group = group_of(code)
    siblings = [c for c in known if group_of(c) == group]
    r, g, b = GROUP_COLORS.get(group or "", (128, 128, 128))
    k = siblings.index(code) / max(len(siblings), 1) * 0.5
    return (int(r + (255 - r) * k), int(g + (255 - g) * k), int(b + (255 - b) * k))


def _scheme_color(codes: tuple[str, ...], k: int) -> tuple[int, int, int]:
    # A user's class without a colour: its group's when all its codes share one, else the palette's k-th.
    groups = {group_of(c) for c in codes}
    g = groups.pop() if len(groups) == 1 else None
    return GROUP_COLORS.get(g, PALETTE[k % len(PALETTE)]) if g else PALETTE[k % len(PALETTE)]


def coarser_levels(table: ClassTable) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """The table's own level and every coarser one: ``{level: (names, M)}`` with ``M [K, K_level]``
    a 0/1 matrix sending each class to its parent, so that ``probabilities @ M`` are the parent
    level's probabilities. The background class, if any, stays its own class at every level.

    A class whose codes have different parents (the crop level's OTHER_NAME) keeps its own name at the
    group level and goes to "Autres" at the coarse level. A custom table has the group or coarse level
    only where each of its classes has a single parent there (e.g. a "Prairies" class of PPH and PTR has
    a coarse parent but no group parent).
    """
    if table.level == "custom":
        levels = ("custom",) + tuple(lv for lv in ("group", "coarse")
                                     if all(_shared_parent(cs, lv) is not None for cs in table.codes if cs))
    else:
        levels = HIERARCHY[HIERARCHY.index(table.level):]
    out: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}
    for level in levels:
        parents = [_parent(table, i, level) for i in range(table.num_classes)]
        names = tuple(dict.fromkeys(parents))
        m = np.zeros((table.num_classes, len(names)), dtype=np.float32)
        m[np.arange(table.num_classes), [names.index(p) for p in parents]] = 1
        out[level] = (names, m)
    return out


def _shared_parent(codes: Iterable[str], level: str) -> str | None:
    """The one group (by name) or coarse class of all ``codes``; None if they have several or one is unknown."""
    parents = set()
    for c in codes:
        g = group_of(c)
        if g is None:
            return None
        parents.add(_rpg_table()[1].get(g, f"Groupe {g}") if level == "group" else _rpg_table()[2].get(c, OTHER))
    return parents.pop() if len(parents) == 1 else None


def _parent(table: ClassTable, i: int, level: str) -> str:
    codes = table.codes[i]
    if level == table.level or not codes:  # itself, or the background class
        return table.names[i]
    shared = _shared_parent(codes, level)
    if shared is not None:
        return shared
    return table.names[i] if level == "group" else OTHER

"""Seeded synthetic Sentinel-2 + RPG demo scene, written in the formats the real sources give.

It lets the whole pipeline (and its tests) run offline: an RPG 2.2 GeoPackage plus per-date 5-band GeoTIFFs.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import rasterio
import rasterio.features
import shapely
import shapely.affinity
import shapely.ops
from affine import Affine
from shapely.geometry import LineString, Point, Polygon, box

from ..atomic import atomic_path
from ..nomenclature import RPG_CODES
from .phenology_table import CURVES, STEP_DAYS

__all__ = ["DemoScene", "generate_scene", "acquisition_dates"]

# Imagery grid: UTM 30N in western France; the parcels are written in Lambert-93 so the CRSs differ on purpose.
IMAGE_CRS = "EPSG:32630"
PARCEL_CRS = "EPSG:2154"
ORIGIN_X, ORIGIN_Y = 700_000.0, 5_170_000.0  # top-left corner, metres
PIXEL = 10.0
BANDS = ("B2", "B3", "B4", "B8", "SCL")
PARCEL_LAYER = "PARCELLES_GRAPHIQUES"

# Sentinel-2 L2A scene classification values used here.
SCL_NODATA, SCL_SHADOW, SCL_VEG, SCL_BARE, SCL_WATER = 0, 3, 4, 5, 6
SCL_CLOUD_MED, SCL_CLOUD_HIGH, SCL_CIRRUS = 8, 9, 10

# RPG code -> draw weight (France-west-like frequencies) and typical relative parcel size.
CODE_WEIGHTS: dict[str, float] = {
    "PPH": 0.22, "BTH": 0.16, "MIS": 0.14, "PTR": 0.11, "ORH": 0.06, "CZH": 0.05, "TRN": 0.05,
    "JAC": 0.05, "TTH": 0.04, "SOJ": 0.03, "VRC": 0.04, "ORP": 0.03, "FVL": 0.02,
}
_SIZE_FACTOR = {"PPH": 0.6, "VRC": 0.35, "PTR": 0.8, "JAC": 0.6, "FVL": 0.8, "SOJ": 0.9, "TRN": 1.0,
                "ORP": 1.0, "TTH": 1.0, "ORH": 1.1, "CZH": 1.3, "BTH": 1.3, "MIS": 1.3}
CATCH_CROPS = ("DRG", "DMN", "DPH", "DVS", "DAV")
# Wrong declarations the demo makes, true code -> declared code: confusions farmers and agencies do make
# (a temporary meadow kept long is declared permanent and the reverse; maize and sunflower, wheat and barley).
DECLARATION_ERRORS = {"PTR": "PPH", "PPH": "PTR", "MIS": "TRN", "BTH": "ORH", "ORH": "BTH"}
ERROR_RATE = 0.04  # share of the parcels declared wrongly (the 2023 RPG controls find a few percent)
ERRORS_NAME = "declaration_errors.csv"
_NO_CATCH_CROP = {"PPH", "PTR", "VRC", "JAC"}  # permanent covers carry no catch crop

# Parcel size limits in pixels (1 px = 0.01 ha), a little inside 0.5-20 ha so that the Lambert-93 area
# (which differs from the UTM area by ~0.2 %) stays within the range too.
MIN_PARCEL_PX, MAX_PARCEL_PX = 53.0, 1950.0

# Background kinds (entity codes after the crop codes).
_FOREST, _WATER, _ROAD, _BUILT = "_FOREST", "_WATER", "_ROAD", "_BUILT"
_BACKGROUND_SCL = {_FOREST: SCL_VEG, _WATER: SCL_WATER, _ROAD: SCL_BARE, _BUILT: SCL_BARE}
# Time-constant per-pixel texture, in units of the class spread: tree crowns, roofs and gardens vary most.
_TEXTURE = {_FOREST: 0.5, _WATER: 0.1, _ROAD: 0.3, _BUILT: 1.5}
_CROP_TEXTURE = 0.8
# Within-field variation of crops, in units of the between-parcel spread of the real data: per-date
# noise (sensor, residual atmosphere) and smooth patches (soil, water supply) that last all season.
# Real fields vary within about as much as between, so a single pixel is often ambiguous.
PIXEL_NOISE, WITHIN_FIELD = 0.8, 0.7


@dataclass(frozen=True)
class DemoScene:
    """Where a generated scene lies on disk, and its acquisition dates in order."""

    root: Path  # out_dir
    parcels: Path  # out_dir / "parcels.gpkg"
    imagery: Path  # out_dir / "imagery" (folder of per-date GeoTIFFs S2_YYYY-MM-DD.tif)
    dates: tuple[datetime.date, ...]
    errors: Path | None = None  # out_dir / "declaration_errors.csv": ID_PARCEL, declared code, true code


@dataclass
class _Layout:
    """Everything that does not change between dates.

    ``label`` [H, W] is the entity index of each pixel; entities 0..P-1 are the parcels (rows of ``parcels``),
    the rest background patches. Per-entity arrays have length E.
    """

    parcels: list[Polygon]  # pixel coordinates (x = column, y = row)
    codes: list[str]  # per parcel
    catch_crops: list[tuple[str | None, str | None]]  # per parcel: CULTURE_D1, CULTURE_D2
    label: np.ndarray  # [H, W] int32
    entity_code: np.ndarray  # [E] int index into the curve table
    mix_src: np.ndarray  # [M] flat pixel indices of border pixels ...
    mix_dst: np.ndarray  # [M] ... and the neighbour (other side) they are mixed with, 50/50


def generate_scene(out_dir: Path | str, *, seed: int = 0, size: int = 512, year: int = 2023,
                   revisit_days: int = 5, error_rate: float = ERROR_RATE,
                   progress: Callable[[int, int], None] | None = None) -> DemoScene:
    """Write ``parcels.gpkg``, ``imagery/S2_YYYY-MM-DD.tif`` (one per date) and ``declaration_errors.csv``
    under ``out_dir``. The imagery shows every parcel's true crop; ``error_rate`` of the parcels are declared
    with a plausible wrong code (``DECLARATION_ERRORS``), listed in the CSV, so an audit can be scored.

    Deterministic for a ``seed``; ``progress(done, total)`` is called after each date is written.
    """
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    if revisit_days < 1:
        raise ValueError(f"revisit_days must be >= 1, got {revisit_days}")
    root = Path(out_dir)
    imagery = root / "imagery"
    imagery.mkdir(parents=True, exist_ok=True)
    # independent streams, so that e.g. the number of dates does not change the layout
    layout_seed, ids_seed, static_seed, dates_seed, errors_seed = np.random.SeedSequence(seed).spawn(5)

    layout = _layout_scene(np.random.default_rng(layout_seed), size)
    parcels_path = root / "parcels.gpkg"
    declared = _declare(np.random.default_rng(errors_seed), layout.codes, error_rate)
    ids = _write_parcels(parcels_path, layout, np.random.default_rng(ids_seed), declared)
    errors_path = root / ERRORS_NAME
    with atomic_path(errors_path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write("ID_PARCEL,declared_code,true_code\n")
            for i, d, t in zip(ids, declared, layout.codes):
                if d != t:
                    f.write(f"{i},{d},{t}\n")

    dates = acquisition_dates(year, revisit_days)
    static = _StaticFields.build(np.random.default_rng(static_seed), layout)
    date_seeds = dates_seed.spawn(len(dates))
    written = set()
    for i, (date, ss) in enumerate(zip(dates, date_seeds)):
        rng = np.random.default_rng(ss)
        image = _render_date(rng, date, layout, static)
        path = imagery / f"S2_{date.isoformat()}.tif"
        _write_date(path, image)
        written.add(path.name)
        if progress is not None:
            progress(i + 1, len(dates))
    # a re-run with another revisit or year must not leave stale dates behind for the readers
    for stale in imagery.glob("S2_*.tif"):
        if stale.name not in written:
            stale.unlink()
    return DemoScene(root=root, parcels=parcels_path, imagery=imagery, dates=tuple(dates), errors=errors_path)


def _declare(rng: np.random.Generator, codes: list[str], rate: float) -> list[str]:
    """The declared codes: the true ones, but ``rate`` of all parcels (drawn among those whose crop has a
    plausible confusion) declared as that confusion."""
    candidates = np.flatnonzero([c in DECLARATION_ERRORS for c in codes])
    n = min(len(candidates), int(round(rate * len(codes))))
    wrong = set(rng.choice(candidates, n, replace=False).tolist()) if n else set()
    return [DECLARATION_ERRORS[c] if i in wrong else c for i, c in enumerate(codes)]


def acquisition_dates(year: int, revisit_days: int = 5) -> list[datetime.date]:
    """Every ``revisit_days`` days from January 3 through December 31 of ``year``."""
    start, end = datetime.date(year, 1, 3), datetime.date(year, 12, 31)
    n = (end - start).days // revisit_days + 1
    return [start + datetime.timedelta(days=revisit_days * i) for i in range(n)]


# --------------------------------------------------------------------------------------------- layout


def _layout_scene(rng: np.random.Generator, size: int) -> _Layout:
    """Roads, water, a village, forest patches and fields, rasterised to an entity map."""
    scene = box(0, 0, size, size)
    roads = _roads(rng, size)
    water = _water(rng, size)
    village = _village(rng, size, roads)
    blocks = _polygons(scene.difference(shapely.union_all([roads, water, village])))

    fields: list[Polygon] = []
    forests: list[Polygon] = []
    # blocks -> farm-sized units (some left as woodland) -> fields
    for unit in (u for block in blocks for u in _split(rng, block, rng.uniform(3000, 8000))):
        if unit.area > 300 and rng.random() < 0.12:
            forests.append(unit)
            continue
        scale = math.exp(rng.uniform(math.log(300), math.log(2400)))  # field sizes vary per farm
        for piece in _split(rng, unit, scale):
            if piece.area < MIN_PARCEL_PX or _width(piece) < 4.0 or rng.random() < 0.03:
                forests.append(piece)  # slivers and copses: hedgerows and woodland, not declared
            else:
                fields.append(piece)

    codes = _draw_codes(rng, [f.area for f in fields])
    catch = [_draw_catch_crops(rng, c) for c in codes]
    parcels_n = len(fields)
    # entity list: parcels, then forests, water, roads, village
    kinds = list(codes) + [_FOREST] * len(forests) + [_WATER, _ROAD, _BUILT]
    shapes: list[tuple[object, int]] = [(g, parcels_n + k) for k, g in enumerate(forests)]
    shapes += [(g, i) for i, g in enumerate(fields)]
    e_water, e_road, e_built = parcels_n + len(forests), parcels_n + len(forests) + 1, parcels_n + len(forests) + 2
    shapes += [(g, e) for g, e in ((water, e_water), (roads, e_road), (village, e_built)) if not g.is_empty]
    # pixels that no shape claims (sub-pixel slivers) count as hedge, i.e. the first forest-like entity
    hedge = len(kinds)
    kinds.append(_FOREST)
    label = rasterio.features.rasterize(shapes, out_shape=(size, size), fill=hedge, transform=Affine.identity(),
                                        dtype="int32")
    code_index = {c: i for i, c in enumerate(_curve_codes())}
    entity_code = np.array([code_index[k] for k in kinds], dtype=np.int32)
    mix_src, mix_dst = _border_pairs(fields, label)
    return _Layout(fields, codes, catch, label, entity_code, mix_src, mix_dst)


def _roads(rng: np.random.Generator, size: int) -> Polygon:
    """Slightly irregular roads, 2-3 px wide: a few across the scene each way plus short lanes."""
    lines = []
    for axis in (0, 1):
        n = max(1, round(size / rng.uniform(150, 230)))
        cuts = (np.arange(n) + rng.uniform(0.3, 0.7, n)) * size / n
        for c in cuts:
            lines.append(_wobbly_line(rng, size, c, axis, slant=rng.uniform(-0.12, 0.12)))
    # lanes: short roads from a random point, the far end inside the scene
    for _ in range(rng.poisson(size * size / 60_000)):
        x0, y0 = rng.uniform(0, size, 2)
        angle = rng.uniform(0, math.pi)
        length = rng.uniform(0.15, 0.35) * size
        lines.append(LineString([(x0, y0), (x0 + length * math.cos(angle), y0 + length * math.sin(angle))]))
    width = rng.uniform(2.2, 3.0, len(lines))
    return shapely.union_all([ln.buffer(w / 2, cap_style="flat") for ln, w in zip(lines, width)])


def _wobbly_line(rng: np.random.Generator, size: int, at: float, axis: int, slant: float) -> LineString:
    """A line across the scene (axis 0: west-east, 1: north-south) with a gentle random meander."""
    t = np.linspace(-8, size + 8, max(4, size // 48))
    offset = at + slant * (t - size / 2) + np.cumsum(rng.normal(0, 1.5, t.size))
    return LineString(np.column_stack([t, offset] if axis == 0 else [offset, t]))


def _water(rng: np.random.Generator, size: int) -> Polygon:
    """A meandering river (larger scenes) and a pond."""
    parts = []
    if size >= 192 and rng.random() < 0.75:
        t = np.linspace(-8, size + 8, max(8, size // 16))
        y = rng.uniform(0.2, 0.8) * size + 0.05 * size * np.sin(t / size * rng.uniform(4, 9) + rng.uniform(0, 6))
        y += np.cumsum(rng.normal(0, 0.8, t.size))
        river = LineString(np.column_stack([t, y]))
        if rng.random() < 0.5:
            river = shapely.affinity.affine_transform(river, [0, 1, 1, 0, 0, 0])  # flow north-south instead
        parts.append(river.buffer(rng.uniform(1.5, 2.5), cap_style="flat"))
    parts.append(_blob(rng, rng.uniform(0.15, 0.85, 2) * size, rng.uniform(3, max(4, size / 45))))
    return shapely.union_all(parts)


def _village(rng: np.random.Generator, size: int, roads: Polygon) -> Polygon:
    """A small built-up area on a road, about 0.5-1.5 % of the scene."""
    if size < 96:
        return Polygon()
    centre = roads.representative_point() if rng.random() < 0.5 else shapely.ops.nearest_points(
        roads, Point(rng.uniform(0.2, 0.8, 2) * size))[0]
    return _blob(rng, (centre.x, centre.y), size * rng.uniform(0.04, 0.07))


def _blob(rng: np.random.Generator, centre: Iterable[float], radius: float) -> Polygon:
    """An irregular roundish polygon (pond, village)."""
    cx, cy = centre
    a = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    r = radius * (1 + 0.25 * np.sin(a * 2 + rng.uniform(0, 6)) + rng.normal(0, 0.08, a.size))
    return Polygon(np.column_stack([cx + r * np.cos(a), cy + r * np.sin(a)]))


def _split(rng: np.random.Generator, poly: Polygon, scale: float) -> list[Polygon]:
    """Split a block recursively into fields with slightly slanted straight cuts across the long axis."""
    if poly.area <= MAX_PARCEL_PX and poly.area <= scale * rng.uniform(0.7, 1.4):
        return [poly]
    rect = np.asarray(poly.minimum_rotated_rectangle.exterior.coords)[:4]
    edges = np.diff(np.vstack([rect, rect[:1]]), axis=0)
    long_edge = edges[np.argmax(np.hypot(*edges.T))]
    axis = long_edge / np.hypot(*long_edge)
    tilt = rng.uniform(-0.12, 0.12)  # radians
    axis = np.array([axis[0] * math.cos(tilt) - axis[1] * math.sin(tilt),
                     axis[0] * math.sin(tilt) + axis[1] * math.cos(tilt)])
    # cut position: a fraction of the way along the long axis
    proj = rect @ axis
    at = proj.min() + rng.uniform(0.3, 0.7) * (proj.max() - proj.min())
    normal = np.array([-axis[1], axis[0]])
    far = 4 * (proj.max() - proj.min() + np.abs(rect @ normal).max() + 10)
    base = axis * at
    halves = []
    for sign in (-1, 1):
        half_plane = Polygon([base + far * normal, base - far * normal,
                              base - far * normal + sign * far * axis, base + far * normal + sign * far * axis])
        halves += _polygons(poly.intersection(half_plane))
    if len(halves) < 2:  # degenerate cut; keep as it is rather than loop
        return [poly]
    return [leaf for h in halves for leaf in _split(rng, h, scale)]


def _polygons(geom: object) -> list[Polygon]:
    """The non-trivial polygons of any geometry, cleaned of sub-pixel slivers."""
    parts = shapely.get_parts(shapely.simplify(geom, 0.05))
    return [p for p in parts if isinstance(p, Polygon) and p.area > 1.0]


def _width(poly: Polygon) -> float:
    """Short side of the minimum rotated rectangle: thin strips are not fields."""
    rect = np.asarray(poly.minimum_rotated_rectangle.exterior.coords)[:3]
    return float(np.hypot(*np.diff(rect, axis=0).T).min())


def _draw_codes(rng: np.random.Generator, areas: list[float]) -> list[str]:
    """Draw codes with CODE_WEIGHTS, then give the larger fields the codes that tend to be larger."""
    names = list(CODE_WEIGHTS)
    weights = np.array([CODE_WEIGHTS[c] for c in names])
    drawn = rng.choice(names, size=len(areas), p=weights / weights.sum())
    # rank matching keeps the frequencies exact while correlating size and crop (meadows, vines small)
    code_key = np.log([_SIZE_FACTOR[c] for c in drawn]) + rng.normal(0, 0.5, len(areas))
    area_key = np.log(np.maximum(areas, 1)) + rng.normal(0, 0.3, len(areas))
    out = np.empty(len(areas), dtype=object)
    out[np.argsort(area_key, kind="stable")] = drawn[np.argsort(code_key, kind="stable")]
    return [str(c) for c in out]


def _draw_catch_crops(rng: np.random.Generator, code: str) -> tuple[str | None, str | None]:
    """CULTURE_D1 / D2: mostly none, sometimes one catch crop, rarely two (never on permanent covers)."""
    if code in _NO_CATCH_CROP or rng.random() >= 0.12:
        return None, None
    d1 = CATCH_CROPS[rng.integers(len(CATCH_CROPS))]
    d2 = CATCH_CROPS[rng.integers(len(CATCH_CROPS))] if rng.random() < 0.15 else None
    return d1, d2


def _border_pairs(fields: list[Polygon], label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels crossed by a parcel outline and a 4-neighbour on the other side of it, as flat indices."""
    h, w = label.shape
    if not fields:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    on_edge = rasterio.features.rasterize([(f.boundary, 1) for f in fields], out_shape=(h, w), fill=0,
                                          transform=Affine.identity(), dtype="uint8").astype(bool)
    rows, cols = np.nonzero(on_edge)
    partner = np.full(rows.size, -1, dtype=np.int64)
    for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        r, c = np.clip(r, 0, h - 1), np.clip(c, 0, w - 1)
        other = inside & (label[r, c] != label[rows, cols]) & (partner < 0)
        partner[other] = r[other] * w + c[other]
    keep = partner >= 0
    return (rows * w + cols)[keep], partner[keep]


# --------------------------------------------------------------------------------------------- parcels


def _write_parcels(path: Path, layout: _Layout, rng: np.random.Generator, declared: list[str]) -> list[str]:
    """RPG 2.2 layer PARCELLES_GRAPHIQUES in Lambert-93 with the ``declared`` codes, areas in hectares as the
    registry gives them; returns the parcels' ``ID_PARCEL``."""
    import geopandas as gpd

    n = len(layout.parcels)
    # pixel (column, row) -> UTM metres
    geoms = [shapely.affinity.affine_transform(p, [PIXEL, 0, 0, -PIXEL, ORIGIN_X, ORIGIN_Y]) for p in layout.parcels]
    geoms = [shapely.geometry.polygon.orient(g) for g in geoms]
    # RPG identifiers are sequential-ish 8-digit numbers, not in spatial order
    ids = rng.integers(10_000_000, 80_000_000) + np.cumsum(rng.integers(1, 40, n))
    ids = ids[rng.permutation(n)]
    d1 = np.array([c[0] for c in layout.catch_crops], dtype=object)
    d2 = np.array([c[1] for c in layout.catch_crops], dtype=object)
    gdf = gpd.GeoDataFrame({"ID_PARCEL": [str(i) for i in ids], "SURF_PARC": np.zeros(n),
                            "CODE_CULTU": list(declared), "CODE_GROUP": [RPG_CODES[c][1] for c in declared],
                            "CULTURE_D1": d1, "CULTURE_D2": d2}, geometry=geoms, crs=IMAGE_CRS).to_crs(PARCEL_CRS)
    gdf["SURF_PARC"] = (gdf.geometry.area / 1e4).round(2)
    with atomic_path(path) as tmp:
        gdf.to_file(tmp, layer=PARCEL_LAYER, driver="GPKG", engine="pyogrio")
    return [str(i) for i in ids]


# --------------------------------------------------------------------------------------------- spectra


def _curve_codes() -> list[str]:
    return list(CURVES) + [_FOREST, _WATER, _ROAD, _BUILT]


def _curve_table() -> tuple[np.ndarray, np.ndarray]:
    """Median and spread [K, 4, 36] in DN for every crop code, then the background kinds."""
    doy = 5.0 + STEP_DAYS * np.arange(36)
    # deciduous leaf-on fraction: green-up in late April, leaf fall in late October
    leaf = 1 / (1 + np.exp(-(doy - 115) / 8)) - 1 / (1 + np.exp(-(doy - 300) / 10))
    winter = 0.5 * (1 + np.cos(2 * np.pi * (doy - 15) / 365))  # 1 in mid-January, 0 in mid-July
    flat = np.ones_like(doy)
    background = {
        _FOREST: ([330 - 120 * leaf, 480 - 40 * leaf, 430 - 180 * leaf, 1800 + 1000 * leaf],
                  [40 * flat, 45 * flat, 50 * flat, 260 * flat]),
        _WATER: ([400 + 40 * winter, 360 + 60 * winter, 250 + 60 * winter, 150 + 20 * winter],
                 [40 * flat, 40 * flat, 35 * flat, 35 * flat]),
        _ROAD: ([1250 * flat, 1350 * flat, 1450 * flat, 1650 * flat], [110 * flat] * 4),
        _BUILT: ([1350 * flat, 1450 * flat, 1550 * flat, 1800 * flat], [260 * flat] * 4),
    }
    med = [np.asarray(CURVES[c][0], float) for c in CURVES] + [np.asarray(background[c][0]) for c in background]
    spr = [np.asarray(CURVES[c][1], float) for c in CURVES] + [np.asarray(background[c][1]) for c in background]
    return np.stack(med), np.stack(spr)


@dataclass
class _StaticFields:
    """Per-entity draws and time-constant pixel fields, shared by all dates."""

    med: np.ndarray  # [K, 4, 36]
    spr: np.ndarray  # [K, 4, 36]
    shift: np.ndarray  # [E] phenology shift in days (sowing date, management)
    offset: np.ndarray  # [E, 4] offset in spread units
    drift: np.ndarray  # [E, 4] amplitude of a slow yearly offset drift
    phase: np.ndarray  # [E]
    catch_crop: np.ndarray  # [E] bool: autumn green-up after harvest
    smooth: np.ndarray  # [4, H, W] float32 low-frequency within-field variation (unit std)
    texture: np.ndarray  # [H, W] float32 per-pixel texture times its per-class amplitude
    ground_scl: np.ndarray  # [H, W] uint8: SCL of background pixels, 0 on parcels (set from NDVI)

    @classmethod
    def build(cls, rng: np.random.Generator, layout: _Layout) -> "_StaticFields":
        med, spr = _curve_table()
        codes = _curve_codes()
        n_ent = layout.entity_code.size
        n_parcels = len(layout.parcels)
        kinds = [codes[k] for k in layout.entity_code]
        shift = rng.uniform(-12, 12, n_ent)
        # between-parcel offsets ~ spread x N(0, 0.6), partly shared across bands (overall brightness)
        common = rng.normal(0, 1, (n_ent, 1))
        offset = 0.6 * (math.sqrt(0.5) * common + math.sqrt(0.5) * rng.normal(0, 1, (n_ent, 4)))
        drift = rng.normal(0, 0.25, (n_ent, 4))
        phase = rng.uniform(0, 2 * np.pi, n_ent)
        catch_crop = np.zeros(n_ent, bool)
        catch_crop[:n_parcels] = [d1 is not None for d1, _ in layout.catch_crops]
        h, w = layout.label.shape
        shared = _smooth_noise(rng, (h, w), cells=max(2, h // 24))
        smooth = np.stack([math.sqrt(0.6) * shared + math.sqrt(0.4) * _smooth_noise(rng, (h, w), max(2, h // 24))
                           for _ in range(4)]).astype(np.float32)
        amp = np.array([_TEXTURE.get(k, _CROP_TEXTURE) for k in kinds], np.float32)
        texture = rng.standard_normal((h, w), dtype=np.float32) * amp[layout.label]
        scl = np.array([_BACKGROUND_SCL.get(k, 0) for k in kinds], np.uint8)
        return cls(med, spr, shift, offset, drift, phase, catch_crop, smooth, texture, scl[layout.label])


def _entity_spectra(doy: int, layout: _Layout, st: _StaticFields) -> tuple[np.ndarray, np.ndarray]:
    """Per-entity centre and spread [4, E] at day-of-year ``doy``, with each entity's own time shift."""
    xp = 5.0 + STEP_DAYS * np.arange(36)
    n_ent = layout.entity_code.size
    centre = np.empty((4, n_ent), np.float32)
    spread = np.empty((4, n_ent), np.float32)
    for k in np.unique(layout.entity_code):
        ent = np.nonzero(layout.entity_code == k)[0]
        t = doy - st.shift[ent]
        for b in range(4):
            centre[b, ent] = np.interp(t, xp, st.med[k, b], period=365)
            spread[b, ent] = np.interp(t, xp, st.spr[k, b], period=365)
    z = st.offset + st.drift * np.sin(2 * np.pi * doy / 365 + st.phase)[:, None]  # [E, 4]
    centre += spread * z.T.astype(np.float32)
    # catch crop sown after the summer harvest: greens up from September, destroyed in December
    ramp = float(np.interp(doy, [250, 320, 340, 366], [0, 1, 1, 0]))
    if ramp > 0:
        cc = st.catch_crop
        centre[:, cc] += ramp * np.array([-60, 40, -180, 1200], np.float32)[:, None]
    return np.maximum(centre, 30), spread


def _ground_reflectance(rng: np.random.Generator, doy: int, layout: _Layout,
                        st: _StaticFields) -> tuple[np.ndarray, np.ndarray]:
    """Cloud-free surface DN [4, H, W] float32 and its SCL [H, W] uint8 for one date."""
    centre, spread = _entity_spectra(doy, layout, st)
    lab = layout.label
    sp = spread[:, lab]
    img = centre[:, lab]
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    noise *= PIXEL_NOISE
    noise += WITHIN_FIELD * st.smooth
    noise += st.texture
    img += sp * noise
    # outline pixels see both sides of a field edge
    flat = img.reshape(4, -1)
    flat[:, layout.mix_src] = 0.5 * (flat[:, layout.mix_src] + flat[:, layout.mix_dst])
    np.maximum(img, 1, out=img)
    ndvi = (img[3] - img[2]) / (img[3] + img[2])
    scl = np.where(st.ground_scl > 0, st.ground_scl, np.where(ndvi > 0.3, SCL_VEG, SCL_BARE)).astype(np.uint8)
    return img, scl


# --------------------------------------------------------------------------------------------- clouds


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int, octaves: int = 3) -> np.ndarray:
    """Low-frequency noise [H, W] float32 with unit std: coarse Gaussian grids upsampled with smoothstep."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    for o in range(octaves):
        n = cells * 2 ** o
        grid = rng.standard_normal((n + 1, n + 1)).astype(np.float32)
        out += 0.5 ** o * _upsample(_upsample(grid, h).T, w).T
    return (out - out.mean()) / (out.std() + 1e-6)


def _upsample(grid: np.ndarray, n_out: int) -> np.ndarray:
    """Resample the rows of a coarse grid [cells + 1, N] to [n_out, N] with a smooth (C1) interpolation.

    Written as a gather rather than a matrix product: BLAS thread start-up dominates at these sizes.
    """
    cells = grid.shape[0] - 1
    pos = (np.arange(n_out) + 0.5) / n_out * cells
    i0 = np.minimum(pos.astype(int), cells - 1)
    t = (pos - i0).astype(np.float32)[:, None]
    t = t * t * (3 - 2 * t)
    return (1 - t) * grid[i0] + t * grid[i0 + 1]


def _cloud_cover(rng: np.random.Generator, doy: int) -> float:
    """Fraction of the scene under cloud: more in winter, ~20 % of dates clear, a few overcast."""
    winter = 0.5 * (1 + math.cos(2 * math.pi * (doy - 15) / 365))
    u = rng.random()
    if u < 0.28 - 0.18 * winter:
        return 0.0
    if u > 0.98 - 0.10 * winter:
        return rng.uniform(0.9, 0.99)
    mean = 0.12 + 0.30 * winter
    return float(np.clip(rng.beta(1.3, 1.3 * (1 - mean) / mean), 0.01, 0.8))


def _clouds(rng: np.random.Generator, doy: int, img: np.ndarray, scl: np.ndarray) -> None:
    """Add clouds, thin cirrus, cloud shadows and unflagged haze to ``img`` [4, H, W] and ``scl`` in place."""
    cover = _cloud_cover(rng, doy)
    if cover <= 0:
        return
    h, w = scl.shape
    pad = 32  # shadows of clouds just outside the scene still fall inside it
    # sun from the south-east (morning pass): the shadow is north-west of its cloud
    dist = rng.uniform(10, 30)
    az = rng.uniform(0.2, 0.8)
    dr, dc = int(round(dist * math.cos(az))), int(round(dist * math.sin(az)))
    field = _smooth_noise(rng, (h + pad, w + pad), cells=max(2, (h + pad) // 96), octaves=4)
    thr = float(np.quantile(field[:h, :w], 1 - cover))
    here = field[:h, :w]
    cloud = here > thr
    shadow = (field[dr:dr + h, dc:dc + w] > thr) & ~cloud

    # unflagged haze: the ring just below the threshold, as L2A masks miss cloud edges
    if rng.random() < 0.7:
        lo = thr - rng.uniform(0.15, 0.4)
        ring = (here > lo) & ~cloud
        strength = (here[ring] - lo) / (thr - lo) * rng.uniform(300, 800)
        for b, f in enumerate((1.0, 0.85, 0.7)):
            img[b][ring] += f * strength

    factor = rng.uniform(0.3, 0.5)
    img[:, shadow] *= factor
    scl[shadow] = SCL_SHADOW

    # opacity grows from the rim to the core
    alpha = np.clip(0.45 + 1.2 * (here[cloud] - thr), 0, 1)
    cloud_scl = np.where(alpha > 0.85, SCL_CLOUD_HIGH, SCL_CLOUD_MED).astype(np.uint8)
    if rng.random() < 0.4:
        cirrus = _smooth_noise(rng, (h, w), cells=max(2, h // 128))[cloud] > rng.uniform(0, 1)
        alpha[cirrus] *= 0.4
        cloud_scl[cirrus] = SCL_CIRRUS
    bright = rng.uniform(4500, 8000) * np.array([1.0, 0.97, 0.95, 0.98], np.float32)
    alpha = alpha.astype(np.float32)
    for b in range(4):
        img[b][cloud] = (1 - alpha) * img[b][cloud] + alpha * bright[b]
    scl[cloud] = cloud_scl


def _nodata_strip(rng: np.random.Generator, img: np.ndarray, scl: np.ndarray) -> None:
    """Blank a slanted strip along one side, as at the edge of a swath."""
    h, w = scl.shape
    rows, cols = np.mgrid[0:h, 0:w]
    edge = rng.uniform(0.5, 0.9) * w + rng.uniform(-0.2, 0.2) * (rows - h / 2)
    out = cols > edge if rng.random() < 0.5 else cols < w - edge
    img[:, out] = 0
    scl[out] = SCL_NODATA


# --------------------------------------------------------------------------------------------- per date


def _render_date(rng: np.random.Generator, date: datetime.date, layout: _Layout, st: _StaticFields) -> np.ndarray:
    """One acquisition as uint16 [5, H, W]: B2, B3, B4, B8 in DN and SCL."""
    doy = date.timetuple().tm_yday
    img, scl = _ground_reflectance(rng, doy, layout, st)
    _clouds(rng, doy, img, scl)
    np.clip(img, 1, 20000, out=img)
    if rng.random() < 1 / 15:
        _nodata_strip(rng, img, scl)
    out = np.empty((5, *scl.shape), np.uint16)
    np.rint(img, out=img)
    out[:4] = img
    out[4] = scl
    return out


def _write_date(path: Path, image: np.ndarray) -> None:
    """Write [5, H, W] uint16 as a DEFLATE GeoTIFF on the UTM 30N grid, atomically."""
    _, h, w = image.shape
    # zlevel 1: noisy reflectances hardly compress better at higher levels, and writing dominates the run time
    profile = dict(driver="GTiff", width=w, height=h, count=5, dtype="uint16", nodata=0, crs=IMAGE_CRS,
                   transform=Affine(PIXEL, 0, ORIGIN_X, 0, -PIXEL, ORIGIN_Y),
                   compress="deflate", predictor=2, zlevel=1)
    block = 256 if min(h, w) >= 512 else 128 if min(h, w) >= 256 else None  # tiles smaller than the image
    if block:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(image)
            for i, name in enumerate(BANDS, start=1):
                dst.set_band_description(i, name)
            dst.update_tags(ACQUISITION_DATE=path.stem.removeprefix("S2_"), REFLECTANCE_SCALE="0.0001")

"""The synthetic demo scene: real on-disk formats (RPG 2.2 GeoPackage, per-date S2 GeoTIFFs), seeded, plausible."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.features

from cropmap.demo.scene import DemoScene, generate_scene
from cropmap.nomenclature import RPG_CODES

SIZE, REVISIT, SEED = 96, 15, 0
SCL_VALUES = {0, 3, 4, 5, 6, 8, 9, 10}
RPG_COLUMNS = {"ID_PARCEL", "SURF_PARC", "CODE_CULTU", "CODE_GROUP", "CULTURE_D1", "CULTURE_D2"}


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> DemoScene:
    calls: list[tuple[int, int]] = []
    out = tmp_path_factory.mktemp("demo") / "new-dir"  # must be created
    s = generate_scene(out, seed=SEED, size=SIZE, revisit_days=REVISIT, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i + 1, len(s.dates)) for i in range(len(s.dates))]
    return s


def _read_all(scene: DemoScene) -> np.ndarray:
    """[T, 5, H, W] uint16 stack of every date."""
    return np.stack([rasterio.open(p).read() for p in sorted(scene.imagery.glob("S2_*.tif"))])


def test_paths_and_dates(scene: DemoScene) -> None:
    assert scene.parcels == scene.root / "parcels.gpkg" and scene.parcels.is_file()
    assert scene.imagery == scene.root / "imagery"
    names = sorted(p.name for p in scene.imagery.iterdir())
    assert not [n for n in names if n.startswith(".")], "temporary files left behind"
    dates = [datetime.date.fromisoformat(n.removeprefix("S2_").removesuffix(".tif")) for n in names]
    assert tuple(dates) == scene.dates
    assert dates[0] == datetime.date(2023, 1, 3) and dates[-1].year == 2023
    assert all((b - a).days == REVISIT for a, b in zip(dates, dates[1:]))
    assert len(dates) == 25


def test_geotiff_format(scene: DemoScene) -> None:
    for path in sorted(scene.imagery.glob("S2_*.tif")):
        with rasterio.open(path) as src:
            assert src.count == 5 and src.dtypes == ("uint16",) * 5
            assert src.nodata == 0
            assert src.descriptions == ("B2", "B3", "B4", "B8", "SCL")
            assert src.crs.to_epsg() == 32630
            assert (src.width, src.height) == (SIZE, SIZE)
            t = src.transform
            assert (t.a, t.b, t.d, t.e) == (10.0, 0.0, 0.0, -10.0)
            assert t.c % 10 == 0 and t.f % 10 == 0
            assert src.compression.name.lower() == "deflate"
            a = src.read()
        assert set(np.unique(a[4]).tolist()) <= SCL_VALUES
        nodata = a[4] == 0
        assert (a[:4, nodata] == 0).all(), "nodata pixels must be 0 in every band"
        valid = a[:4, ~nodata]
        assert valid.min() >= 1 and valid.max() <= 20000


def test_parcels_layer(scene: DemoScene) -> None:
    assert [name for name, _ in pyogrio.list_layers(scene.parcels)] == ["PARCELLES_GRAPHIQUES"]
    df = pyogrio.read_dataframe(scene.parcels, layer="PARCELLES_GRAPHIQUES")
    assert df.crs.to_epsg() == 2154
    assert set(df.columns) == RPG_COLUMNS | {"geometry"}
    assert len(df) >= 5
    assert (df.geometry.geom_type == "Polygon").all() and df.geometry.is_valid.all()
    ids = df["ID_PARCEL"]
    assert ids.map(lambda v: isinstance(v, str) and v.isdigit()).all() and ids.is_unique
    assert (df["CODE_GROUP"] == df["CODE_CULTU"].map(lambda c: RPG_CODES[c][1])).all()
    assert np.allclose(df["SURF_PARC"], df.geometry.area / 1e4, atol=0.01)
    assert df["SURF_PARC"].between(0.5, 20).all()
    for col in ("CULTURE_D1", "CULTURE_D2"):
        present = df[col][df[col].notna() & (df[col] != "")]
        assert present.map(lambda v: isinstance(v, str) and len(v) == 3).all()
    assert df["CULTURE_D1"].isna().mean() > 0.5  # catch crops are the exception
    # parcels do not overlap (they may touch)
    geoms = list(df.geometry)
    overlap = sum(a.intersection(b).area for i, a in enumerate(geoms) for b in geoms[i + 1:])
    assert overlap < 1.0  # m², reprojection rounding only


def test_parcels_inside_imagery(scene: DemoScene) -> None:
    df = pyogrio.read_dataframe(scene.parcels).to_crs(32630)
    with rasterio.open(next(scene.imagery.glob("S2_*.tif"))) as src:
        left, bottom, right, top = src.bounds
    x0, y0, x1, y1 = df.total_bounds
    tol = 0.5  # m
    assert x0 >= left - tol and y0 >= bottom - tol and x1 <= right + tol and y1 <= top + tol


def test_deterministic(scene: DemoScene, tmp_path: Path) -> None:
    again = generate_scene(tmp_path / "again", seed=SEED, size=SIZE, revisit_days=REVISIT)
    assert np.array_equal(_read_all(scene), _read_all(again))
    a, b = pyogrio.read_dataframe(scene.parcels), pyogrio.read_dataframe(again.parcels)
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert a.geometry.geom_equals_exact(b.geometry, tolerance=0).all()
    other = generate_scene(tmp_path / "other", seed=SEED + 1, size=SIZE, revisit_days=REVISIT)
    assert not np.array_equal(_read_all(scene), _read_all(other))


def test_clouds_flagged(scene: DemoScene) -> None:
    scl = _read_all(scene)[:, 4]
    cloudy = np.isin(scl, [8, 9, 10]).mean(axis=(1, 2))
    assert (cloudy > 0.01).any()
    assert (cloudy == 0).any(), "some dates should be clear"
    assert (scl == 3).any(), "cloud shadows"


def test_meadow_greener_than_wheat_in_july(scene: DemoScene) -> None:
    df = pyogrio.read_dataframe(scene.parcels).to_crs(32630)
    with rasterio.open(next(scene.imagery.glob("S2_*.tif"))) as src:
        transform, shape = src.transform, src.shape
    assert {"PPH", "BTH"} <= set(df["CODE_CULTU"]), "test seed should give both classes"
    value = {"PPH": 1, "BTH": 2}
    shapes = [(g, value[c]) for g, c in zip(df.geometry, df["CODE_CULTU"]) if c in value]
    cls = rasterio.features.rasterize(shapes, out_shape=shape, transform=transform, fill=0, dtype="uint8")
    ndvi: dict[int, list[np.ndarray]] = {1: [], 2: []}
    for date in scene.dates:
        if date.month != 7:
            continue
        with rasterio.open(scene.imagery / f"S2_{date.isoformat()}.tif") as src:
            b4, b8, scl = src.read(3).astype(float), src.read(4).astype(float), src.read(5)
        clear = np.isin(scl, [4, 5])
        for k in ndvi:
            m = clear & (cls == k)
            ndvi[k].append((b8[m] - b4[m]) / (b8[m] + b4[m]))
    meadow, wheat = np.concatenate(ndvi[1]), np.concatenate(ndvi[2])
    assert meadow.size > 20 and wheat.size > 20
    assert np.median(meadow) > np.median(wheat) + 0.1


@pytest.mark.slow
def test_demo_command_runs_every_stage(tmp_path):
    """The demo end to end on a small scene and one epoch: every output it announces exists."""
    from rich.console import Console

    from cropmap.demo.run import run_demo

    console = Console(record=True, width=200)
    results = run_demo(tmp_path / "demo", size=192, epochs=1, console=console)
    assert set(results) == {"tempcnn-unet", "tempcnn-pixel", "rf"}
    assert all(0 <= r["miou"] <= 1 and r["parameters"] > 0 for r in results.values())
    text = console.export_text()
    assert "test mIoU: tempcnn-unet" in text and "rf " in text and "cropmap compare" in text and "demo finished" in text
    for name in ("map.tif", "map.confidence.tif", "map.quicklook.png", "parcels_pred.gpkg", "audit.csv",
                 "runs/tempcnn-unet/report.html", "runs/tempcnn-pixel/metrics.json", "runs/rf/metrics.json"):
        assert (tmp_path / "demo" / name).exists(), name


def test_known_wrong_declarations(tmp_path) -> None:
    """A few percent of the parcels are declared as a plausible confusion, listed in declaration_errors.csv;
    the imagery is the same as with no error (it shows the true crops)."""
    import pandas as pd

    from cropmap.demo.scene import DECLARATION_ERRORS, ERROR_RATE

    s = generate_scene(tmp_path / "s", seed=1, size=256, revisit_days=30)
    errors = pd.read_csv(s.errors, dtype=str)
    df = pyogrio.read_dataframe(s.parcels).set_index("ID_PARCEL")
    assert len(errors) == round(ERROR_RATE * len(df)) > 0
    assert (df.loc[errors["ID_PARCEL"], "CODE_CULTU"].to_numpy() == errors["declared_code"].to_numpy()).all()
    assert all(DECLARATION_ERRORS[t] == d for t, d in zip(errors["true_code"], errors["declared_code"]))
    clean = generate_scene(tmp_path / "c", seed=1, size=256, revisit_days=30, error_rate=0.0)
    assert np.array_equal(_read_all(s), _read_all(clean))
    ok = pyogrio.read_dataframe(clean.parcels).set_index("ID_PARCEL")
    assert (ok.loc[errors["ID_PARCEL"], "CODE_CULTU"].to_numpy() == errors["true_code"].to_numpy()).all()
    assert pd.read_csv(clean.errors).empty

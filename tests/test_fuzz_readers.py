"""Fuzzing the GeoTIFF-folder and parcels readers with damaged copies of valid files (truncated, bytes
flipped, emptied, another dtype): each read either succeeds or raises CropmapError, never anything
else, and never hangs."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import UTM, parcels_frame, write_date
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.transform import from_origin

from cropmap.errors import CropmapError
from cropmap.sources.imagery import open_imagery
from cropmap.sources.parcels import read_parcels

# CROPMAP_FUZZ_EXAMPLES=2000 for a longer run than the default one of seconds
FUZZ = settings(max_examples=int(os.environ.get("CROPMAP_FUZZ_EXAMPLES", "50")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
LIMIT_S = 20  # one read of a few-kB file takes milliseconds: longer is a hang


@contextlib.contextmanager
def no_hang(what: str):
    def stop(*_):
        raise TimeoutError(f"{what} took over {LIMIT_S} s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(LIMIT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)
    tif = write_date(root / "img", dt.date(2023, 5, 1), rng.integers(1, 4000, (4, 12, 12)),
                     rng.choice([4, 5, 9], (12, 12)))
    gpkg = root / "parcels.gpkg"
    parcels_frame([(0, 0, 4, 4), (4, 4, 9, 12), (0, 6, 3, 12)], ["BTH", "MIS", "PPH"]).to_file(gpkg)
    return {"tif": tif.read_bytes(), "gpkg": gpkg.read_bytes()}


@st.composite
def damage(draw, size: int):
    """A recipe for damaging a file of ``size`` bytes."""
    kind = draw(st.sampled_from(["truncate", "flip", "zero", "splice", "garbage"]))
    if kind == "truncate":
        return kind, draw(st.integers(0, size - 1))
    if kind == "flip":
        return kind, draw(st.lists(st.tuples(st.integers(0, size - 1), st.integers(1, 255)), min_size=1, max_size=8))
    if kind == "splice":  # a run of bytes overwritten, as a bad disk block does
        start = draw(st.integers(0, size - 1))
        return kind, (start, draw(st.integers(1, 512)))
    if kind == "garbage":
        return kind, draw(st.binary(min_size=1, max_size=256))
    return kind, None


def damaged(data: bytes, recipe) -> bytes:
    kind, arg = recipe
    if kind == "truncate":
        return data[:arg]
    if kind == "zero":
        return b""
    if kind == "garbage":
        return arg
    b = bytearray(data)
    if kind == "flip":
        for pos, mask in arg:
            b[pos] ^= mask
    else:
        start, n = arg
        b[start : start + n] = bytes(len(b[start : start + n]))
    return bytes(b)


def read_all(folder: Path) -> None:
    stack = open_imagery(folder)
    for i in range(len(stack)):
        stack.read(i)


@FUZZ
@given(data=st.data())
def test_damaged_geotiff_is_read_or_refused_with_a_clear_error(originals, data):
    raw = originals["tif"]
    recipe = data.draw(damage(len(raw)))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "img"
        folder.mkdir()
        (folder / "S2_2023-05-01.tif").write_bytes(raw)  # one good date beside the damaged one
        (folder / "S2_2023-05-11.tif").write_bytes(damaged(raw, recipe))
        with no_hang(f"reading {recipe[0]}"):
            try:
                read_all(folder)
            except CropmapError as e:
                assert "\n" not in str(e) and str(folder) in str(e)


@FUZZ
@given(dtype=st.sampled_from(["int8", "int16", "uint8", "int32", "float32", "float64", "complex64"]),
       count=st.integers(1, 6), descriptions=st.booleans())
def test_geotiff_of_another_dtype_or_band_count(dtype, count, descriptions):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "img"
        folder.mkdir()
        with rasterio.open(folder / "S2_2023-05-01.tif", "w", driver="GTiff", width=6, height=5, count=count,
                           dtype=dtype, crs=UTM, transform=from_origin(700000.0, 5170000.0, 10, 10)) as dst:
            dst.write(np.ones((count, 5, 6), dtype=dtype))
            if descriptions:
                for i, name in enumerate(["B2", "B3", "B4", "B8", "SCL", "B11"][:count], start=1):
                    dst.set_band_description(i, name)
        with no_hang(f"reading {dtype}"):
            try:
                read_all(folder)
            except CropmapError as e:
                assert "\n" not in str(e) and str(folder) in str(e)
            else:
                assert dtype == "uint16"  # never: every other dtype must be refused


@FUZZ
@given(data=st.data())
def test_damaged_parcels_file_is_read_or_refused_with_a_clear_error(originals, data):
    raw = originals["gpkg"]
    recipe = data.draw(damage(len(raw)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "parcels.gpkg"
        path.write_bytes(damaged(raw, recipe))
        with no_hang(f"reading {recipe[0]}"):
            try:
                gdf = read_parcels(path)
            except CropmapError as e:
                assert "\n" not in str(e) and str(path) in str(e)
            else:
                assert gdf.geometry.is_valid.all() and not gdf.geometry.is_empty.any()
                assert {"ID_PARCEL", "CODE_CULTU"} <= set(gdf.columns)

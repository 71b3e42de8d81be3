"""Sentinel-2 time series as one Zarr cube: the format ``cropmap fetch-imagery`` writes and
``build``/``predict`` read lazily, one date and window at a time.

Layout (an xarray Dataset in a Zarr v2 store with consolidated metadata, what ``write_cube`` writes)::

    dims    time: T acquisitions, band: 4, y: H rows (north to south), x: W columns (west to east)
    dn      (time, band, y, x) uint16   harmonized DN: reflectance = DN / 10000, 0 = nodata
                                        (L2A baseline >= 04.00 offset already removed); no _FillValue
    scl     (time, y, x) uint8          Sentinel-2 scene classification, 0 = no data     [optional]
    written (time, by, bx) bool         True once a block of a step is complete (resumable writes; blocks of
                                        attrs["block"] px, 2048 by default: the unit of fetching)
    time    (time) datetime64[ns]       acquisition time, ascending
    band    (band) str                  "B2", "B3", "B4", "B8"
    y, x    float64                     pixel-centre coordinates in the CRS, evenly spaced
    spatial_ref                         CF grid mapping (scalar) with attrs crs_wkt and GeoTransform;
                                        dn/scl carry grid_mapping = "spatial_ref"
    attrs   crs (WKT), transform (a, b, c, d, e, f as in rasterio's Affine), cropmap_cube = 1
    chunks  dn (1, 4, 512, 512), scl (1, 512, 512), written (1, 1, 1): one chunk per date and tile

Readers also accept the looser forms other tools write: one (time, y, x) variable per band (``B02``
or ``B2``, ``blue``...) instead of ``dn``; a boolean ``valid`` (time, y, x) instead of or besides
``scl``; the CRS only as a grid mapping variable or only as the ``crs`` attribute (WKT or
``EPSG:n``); no ``transform`` attribute (the grid then comes from the x/y coordinates); scaled or
float reflectance (see :class:`cropmap.sources.imagery.XarrayStack`).
"""

from __future__ import annotations

import datetime as dt
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from ..cluster import run_tasks
from ..errors import CropmapError
from .geotiff_folder import BANDS
from .xarray_stack import XarrayStack

CUBE_VERSION = 2  # 2: written per (time, block row, block column); 1 had one flag per time step
CHUNK = 512
# side of the region read and written at once: memory of a fetch follows it (and the workers), not the area
BLOCK = 2048

# read_step(i, window) -> (dn [4, h, w] uint16, scl [h, w] or None) for step i over the rasterio Window
ReadStep = Callable[[int, Window], tuple[np.ndarray, "np.ndarray | None"]]


def is_zarr(path: Path) -> bool:
    """Whether ``path`` is a folder holding a Zarr group (v2 or v3)."""
    return (path / ".zgroup").exists() or (path / "zarr.json").exists()


def blocks(width: int, height: int, block: int) -> list[tuple[int, int, Window]]:
    """The blocks of a ``width`` x ``height`` grid: (block row, block column, window), row by row."""
    return [(by, bx, Window(x, y, min(block, width - x), min(block, height - y)))
            for by, y in enumerate(range(0, height, block)) for bx, x in enumerate(range(0, width, block))]


def write_cube(path: Path | str, times: Sequence[dt.date | dt.datetime | np.datetime64], read_step: ReadStep, *,
               crs: CRS | str, transform: Affine, width: int, height: int, scl: bool = True,
               chunk: int = CHUNK, block: int = BLOCK, workers: int = 1, dask_address: str | None = None,
               progress: Callable[[int], None] | None = None, attrs: dict | None = None) -> Path:
    """Write a cube one time step and block at a time: ``read_step(i, window)`` gives step ``i`` over the
    rasterio ``window`` (at most ``block`` x ``block`` px), as ``(dn [4, h, w] uint16, scl [h, w] or None)``.

    The store is laid out first (metadata and coordinates, no pixels); each block of each step is then
    written and flagged in ``written``. Calling again with the same times and grid resumes: only the blocks
    not flagged are read and written. Another grid or time axis in an existing store is an error.

    Blocks own their chunks (``block`` is a multiple of ``chunk``), so they may be read and written in
    parallel: ``workers`` threads here, or as tasks on the Dask scheduler at ``dask_address`` (whose workers
    must see ``path`` and be able to run ``read_step``). Memory follows ``block`` and the workers, not the
    area. ``progress(n)`` is called with the number of time steps completed. ``attrs`` go into the store's
    attributes (fetch records its provider and cloud mask there).
    """
    path = Path(path)
    crs = CRS.from_user_input(crs)
    stamps = np.array([np.datetime64(t, "ns") for t in times])
    if len(stamps) == 0:
        raise CropmapError(f"{path}: no time step to write")
    if (np.diff(stamps) <= np.timedelta64(0)).any():
        raise CropmapError(f"{path}: times must be strictly increasing")
    if block <= 0 or block % chunk:
        raise CropmapError(f"block {block}: expected a positive multiple of the chunk ({chunk} px)")
    grid = blocks(width, height, block)
    if path.exists():
        written, block = _existing_steps(path, stamps, crs, transform, width, height, scl)  # the store's blocks
        grid = blocks(width, height, block)
    else:
        _lay_out(path, stamps, crs, transform, width, height, scl, chunk, block, attrs or {})
        written = np.zeros((len(stamps), grid[-1][0] + 1, grid[-1][1] + 1), dtype=bool)
    todo = [(int(i), by, bx, w) for i in range(len(stamps)) for by, bx, w in grid if not written[i, by, bx]]
    left = {i: int((~written[i]).sum()) for i in range(len(stamps))}

    def done(i: int) -> None:
        left[i] -= 1
        if progress and left[i] == 0:
            progress(1)

    # absolute path: the workers of a cluster do not share this process's working directory; at most
    # `workers` blocks are in memory at once, whatever the area
    where = path.absolute() if dask_address else path
    tasks = [partial(_write_block, where, i, by, bx, w, read_step, scl) for i, by, bx, w in todo]
    run_tasks(tasks, workers=workers, dask_address=dask_address, on_done=lambda k, _: done(todo[k][0]))
    return path


def _write_block(path: Path, i: int, by: int, bx: int, window: Window, read_step: ReadStep, scl: bool) -> None:
    """Read block (by, bx) of step ``i`` and write it into its region of the cube, then flag it."""
    dn, s = read_step(i, window)
    h, w = int(window.height), int(window.width)
    if dn.shape != (len(BANDS), h, w) or dn.dtype != np.uint16:
        raise CropmapError(f"{path}: step {i} gives {dn.dtype} {dn.shape}; expected uint16 (4, {h}, {w})")
    rows = slice(int(window.row_off), int(window.row_off) + h)
    cols = slice(int(window.col_off), int(window.col_off) + w)
    data = {"dn": (("time", "band", "y", "x"), dn[None])}
    if scl:
        if s is None or s.shape != (h, w):
            raise CropmapError(f"{path}: step {i} has no SCL of shape ({h}, {w})")
        data["scl"] = (("time", "y", "x"), s.astype(np.uint8)[None])
    region = {"time": slice(i, i + 1), "y": rows, "x": cols}
    xr.Dataset(data).to_zarr(path, region=region, consolidated=False, zarr_format=2)
    # flagged only after the pixels are on disk, so an interrupted block is redone
    flag = {"time": slice(i, i + 1), "by": slice(by, by + 1), "bx": slice(bx, bx + 1)}
    xr.Dataset({"written": (("time", "by", "bx"), np.ones((1, 1, 1), bool))}).to_zarr(
        path, region=flag, consolidated=False, zarr_format=2)


def _lay_out(path: Path, stamps: np.ndarray, crs: CRS, transform: Affine, width: int, height: int, scl: bool,
             chunk: int, block: int, attrs: dict) -> None:
    import dask.array as da

    t = len(stamps)
    nby, nbx = -(-height // block), -(-width // block)
    xs = transform.c + transform.a * (np.arange(width) + 0.5)
    ys = transform.f + transform.e * (np.arange(height) + 0.5)
    gm = {"grid_mapping": "spatial_ref"}
    data = {"dn": (("time", "band", "y", "x"), da.zeros((t, 4, height, width), dtype=np.uint16,
                                                        chunks=(1, 4, chunk, chunk)), gm),
            "written": (("time", "by", "bx"), np.zeros((t, nby, nbx), bool))}
    if scl:
        data["scl"] = (("time", "y", "x"), da.zeros((t, height, width), dtype=np.uint8, chunks=(1, chunk, chunk)), gm)
    geo = " ".join(str(v) for v in (transform.c, transform.a, transform.b, transform.f, transform.d, transform.e))
    ds = xr.Dataset(
        data,
        coords={"time": stamps, "band": list(BANDS), "y": ys, "x": xs,
                "spatial_ref": ((), np.int32(0), {"crs_wkt": crs.to_wkt(), "GeoTransform": geo})},
        attrs={**attrs, "crs": crs.to_wkt(), "transform": list(transform)[:6], "cropmap_cube": CUBE_VERSION,
               "block": block},
    )
    # no _FillValue: 0 is nodata by contract, and xarray would otherwise decode the DN to float
    encoding = {"dn": {"chunks": (1, 4, chunk, chunk), "dtype": "uint16", "_FillValue": None},
                "written": {"chunks": (1, 1, 1)}}
    if scl:
        encoding["scl"] = {"chunks": (1, chunk, chunk), "dtype": "uint8", "_FillValue": None}
    ds.to_zarr(path, mode="w-", compute=False, encoding=encoding, consolidated=True, zarr_format=2)


def _existing_steps(path: Path, stamps: np.ndarray, crs: CRS, transform: Affine, width: int, height: int,
                    scl: bool) -> tuple[np.ndarray, int]:
    ds = _open(path)
    same = ("written" in ds and ds["written"].ndim == 3 and ds.sizes.get("time") == len(stamps)
            and (ds["time"].values.astype("datetime64[ns]") == stamps).all()
            and (ds.sizes.get("y"), ds.sizes.get("x")) == (height, width)
            and np.allclose(list(ds.attrs.get("transform", []))[:6], list(transform)[:6])
            and CRS.from_user_input(ds.attrs.get("crs", "")) == crs and ("scl" in ds) == scl)
    if not same:
        raise CropmapError(f"{path}: exists with another time axis or grid (or from an older cropmap); remove it "
                           "or write elsewhere")
    return ds["written"].values.astype(bool), int(ds.attrs.get("block", BLOCK))


def written_flags(path: Path) -> np.ndarray | None:
    """The ``written`` flags (time, block row, block column) of the cube at ``path``; None when it has none."""
    ds = _open(path)
    return ds["written"].values.astype(bool) if "written" in ds else None


def _open(path: Path) -> xr.Dataset:
    try:
        try:
            return xr.open_zarr(path, consolidated=True, chunks=None, mask_and_scale=False)
        except (KeyError, FileNotFoundError, ValueError):
            return xr.open_zarr(path, consolidated=False, chunks=None, mask_and_scale=False)
    except CropmapError:
        raise
    except Exception as e:  # zarr raises several kinds for "not a store"
        raise CropmapError(f"{path}: not a readable Zarr store ({type(e).__name__}: {e})") from e


def open_cube(path: Path | str) -> XarrayStack:
    """Open a Zarr cube lazily (nothing read until ``read``)."""
    path = Path(path)
    ds = _open(path)
    if "written" in ds:
        done = ds["written"].values.astype(bool)
        if not done.all():
            steps = done.reshape(done.shape[0], -1).all(axis=1)
            raise CropmapError(f"{path}: incomplete cube ({int(steps.sum())} of {steps.size} time steps written); "
                               "rerun the write to resume it")
    return XarrayStack(path, ds, stacked="dn" if "dn" in ds.data_vars else None)

"""``cropmap fetch-imagery``: Sentinel-2 L2A of an area and season from any provider (:mod:`.providers`) into
the resumable Zarr cube of :mod:`.zarr_cube`, block by block, so that memory follows the block size and
the number of workers, never the area."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from affine import Affine
from rasterio.crs import CRS

from ..errors import CropmapError
from .grid import target_grid
from .providers import FetchRequest, provider
from .zarr_cube import BLOCK, CHUNK, written_flags

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class FetchImagerySummary:
    path: Path
    dates: list[dt.date]  # one per time step, the solar day of its acquisitions
    n_items: int  # items (tiles x dates) mosaicked into the cube
    crs: CRS
    transform: Affine
    width: int
    height: int
    skipped: int  # time steps already complete from an earlier, interrupted run


def fetch_imagery(bbox: Sequence[float] | None, out: Path | str, *, start: str, end: str, bbox_crs: str = "EPSG:4326",
                  departement: str | None = None, boundaries: str | Path | None = None, wfs_url: str | None = None,
                  source: str = "earth-search", crs: str = "EPSG:2154", max_cloud: float | None = 80.0,
                  stac_url: str | None = None, collection: str | None = None, token_url: str | None = None,
                  overwrite: bool = False, retries: int = 5, backoff: float = 2.0, timeout: float = 60.0,
                  workers: int = 1, dask_address: str | None = None, ee_project: str | None = None,
                  mask: str = "cs", cs_threshold: float = 0.6, block: int = BLOCK) -> FetchImagerySummary:
    """Sentinel-2 L2A over ``bbox`` (in ``bbox_crs``) from ``start`` to ``end`` (YYYY-MM-DD, inclusive) as a
    Zarr cube at ``out``: one time step per solar day, a 10 m grid in ``crs`` (or ``"utm"``).

    The cube is written in blocks of ``block`` px per date; an interrupted fetch resumes block by block when
    run again. A complete cube at ``out`` is refused unless ``overwrite``. Blocks are fetched ``workers`` at a
    time in threads, or as tasks on the Dask scheduler at ``dask_address`` (its workers write to ``out``: a
    path they must share). Peak memory is about ``workers`` x 60 bytes x ``block``², whatever the area.

    ``departement`` (an INSEE code) replaces ``bbox``: its box in Lambert-93 (see
    :func:`cropmap.sources.departements.departement_bbox`). ``source`` names a provider of
    :data:`~cropmap.sources.providers.PROVIDERS`; ``earth-engine`` masks clouds by Cloud Score+ (``mask="cs"``:
    ``cs_cdf < cs_threshold`` becomes nodata) or by SCL, in project ``ee_project``.
    """
    from rasterio.warp import transform_bounds

    from ..progress import progress_bar
    from .zarr_cube import is_zarr, write_cube

    prov = provider(source)
    out = Path(out)
    for name, value in (("--start", start), ("--end", end)):
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            raise CropmapError(f"{name} {value}: expected a date YYYY-MM-DD") from None
    if start > end:
        raise CropmapError(f"--start {start} is after --end {end}")
    if block <= 0 or block % CHUNK:
        raise CropmapError(f"--block {block}: expected a positive multiple of {CHUNK} px")
    flags = None
    if out.exists():
        if not is_zarr(out):
            raise CropmapError(f"{out}: exists and is not a Zarr cube; remove it or write elsewhere")
        if overwrite:
            shutil.rmtree(out)
        else:
            flags = written_flags(out)
            if flags is None or flags.all():  # complete, or a store that cannot be resumed
                raise CropmapError(f"{out}: already exists (pass --overwrite to replace it)")
            log.info("%s: incomplete cube (%d of %d blocks), resuming", out, flags.sum(), flags.size)
    if departement is not None:
        from .departements import LAMBERT93, departement_bbox

        kw = {"wfs_url": wfs_url} if wfs_url else {}
        bbox, bbox_crs = departement_bbox(departement, boundaries, **kw), LAMBERT93
        area = f"département {departement}"
    elif bbox is None:
        raise CropmapError("fetch-imagery: give a bbox or a département")
    else:
        area = f"bbox {tuple(bbox)} ({bbox_crs})"
    dst_crs, transform, width, height = target_grid(bbox, bbox_crs, crs)
    w, s, e, n = transform_bounds(CRS.from_user_input(bbox_crs), "EPSG:4326", *bbox, densify_pts=21)
    done_before = int(flags.reshape(len(flags), -1).all(axis=1).sum()) if flags is not None else 0
    options = {k: v for k, v in dict(stac_url=stac_url, collection=collection, token_url=token_url,
                                     ee_project=ee_project, mask=mask, cs_threshold=cs_threshold).items()
               if v is not None}
    request = FetchRequest((w, s, e, n), start, end, dst_crs, transform, width, height, area, max_cloud=max_cloud,
                           retries=retries, backoff=backoff, timeout=timeout, options=options)
    if dask_address and source == "earth-engine":
        raise CropmapError("--source earth-engine runs its dates in threads here (--workers), not on a Dask "
                           "cluster: drop --dask-address")
    plan = prov.plan(request)
    if dask_address and not plan.cluster:
        raise CropmapError(f"--source {source} runs here only (--workers), not on a Dask cluster: drop --dask-address")
    with progress_bar("fetch imagery", len(plan.dates) - done_before) as advance:
        write_cube(out, plan.times, plan.read, crs=dst_crs, transform=transform, width=width, height=height,
                   scl=plan.scl, block=block, workers=workers, dask_address=dask_address, progress=advance,
                   attrs={"provider": source,
                          "cloud_mask": "scl" if plan.scl else f"cloud score+ cs_cdf >= {cs_threshold:g}"})
    return FetchImagerySummary(out, plan.dates, plan.n_items, dst_crs, transform, width, height, done_before)


"""Running independent tasks — one after the other, on threads here, or on a Dask cluster given on the command
line (``--dask-address tcp://host:port``) — with one function, :func:`run_tasks`, used by build (blocks),
fetch-imagery (blocks of a cube) and predict (tiles)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence, TypeVar

from .errors import CropmapError

DASK_CONNECT_TIMEOUT_S = 30  # seconds; a refused connection is retried until then

T = TypeVar("T")


@contextlib.contextmanager
def dask_client(address: str) -> Iterator:
    """A client of the Dask scheduler at ``address``; an unreachable one is a one-line error."""
    from dask.distributed import Client

    try:
        client = Client(address, timeout=DASK_CONNECT_TIMEOUT_S)
    except OSError as e:
        raise CropmapError(f"{address}: cannot reach the Dask scheduler ({e})") from None
    with client:
        yield client


def run_tasks(tasks: Sequence[Callable[[], T]], *, workers: int = 1, dask_address: str | None = None,
              on_done: Callable[[int, T], None] | None = None) -> list[T]:
    """Call every task (a callable without arguments, e.g. a ``functools.partial``) and return the results
    in the tasks' order.

    ``dask_address``: as tasks on that Dask scheduler, whose workers must see the paths the tasks name (a
    shared file system); else ``workers`` threads here (rasterio, numpy, zarr and torch release the GIL, and
    at most ``workers`` tasks hold memory at once); ``workers`` 1: one after the other in this thread.
    ``on_done(index, result)`` runs here as each task finishes (progress bars, bookkeeping). The first
    failure is raised, and tasks not yet started are cancelled.
    """
    results: list = [None] * len(tasks)

    def finished(i: int, value: T) -> None:
        results[i] = value
        if on_done is not None:
            on_done(i, value)

    if dask_address:
        from dask.distributed import as_completed

        with dask_client(dask_address) as client:
            futures = [client.submit(task, pure=False) for task in tasks]
            index = {f.key: i for i, f in enumerate(futures)}
            try:
                for f in as_completed(futures):
                    finished(index[f.key], f.result())
            finally:
                client.cancel([f for f in futures if not f.done()])
        return results
    if workers <= 1 or len(tasks) <= 1:
        for i, task in enumerate(tasks):
            finished(i, task())
        return results
    from concurrent.futures import ThreadPoolExecutor, as_completed as completed

    pool = ThreadPoolExecutor(min(workers, len(tasks)))
    try:
        futs = {pool.submit(task): i for i, task in enumerate(tasks)}
        for f in completed(futs):
            finished(futs[f], f.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results

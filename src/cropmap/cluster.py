"""Connecting to a Dask scheduler given on the command line (``--dask-address tcp://host:port``)."""

from __future__ import annotations

import contextlib
from typing import Iterator

from .errors import CropmapError

DASK_CONNECT_TIMEOUT_S = 30  # seconds; a refused connection is retried until then


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

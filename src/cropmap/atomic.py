"""Write outputs under a temporary name and rename them into place, so no reader sees half a file."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(final: Path | str, *, overwrite: bool = True, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success rename it to ``final``, on error remove it.

    ``is_dir`` makes the temporary path an (empty) directory, for stores such as Zarr.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        from .errors import CropmapError

        raise CropmapError(f"{final}: already exists (pass --overwrite to replace it)")
    final.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp" + final.suffix, dir=final.parent)
        os.close(fd)
        tmp = Path(name)
        tmp.unlink()  # writers such as GDAL want to create the file themselves
    try:
        yield tmp
        if is_dir and final.exists():
            # a directory cannot be replaced atomically: move the old one aside first
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise

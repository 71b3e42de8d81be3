"""Write outputs under a temporary name and rename them into place, so no reader sees half a file."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def temp_prefix(final: Path) -> str:
    """Prefix of the temporary names beside ``final``; the writer's pid in it tells a stale one from a live one."""
    return f".{final.name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temps(final: Path | str) -> list[Path]:
    """Remove temporaries of ``final`` left by a writer that was killed (its pid is gone); returns them.

    A live writer's temporaries are left alone; a reused pid only means a stale one waits for the next run.
    """
    final = Path(final)
    if not final.parent.is_dir():
        return []
    # several leading dots: the temporary of a temporary (a writer that itself writes atomically)
    pattern = re.compile(rf"\.+{re.escape(final.name)}\.(\d+)\.[^.]+\.tmp(\..*)?")
    removed = []
    for p in final.parent.iterdir():
        m = pattern.fullmatch(p.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def refuse_existing(*paths: Path | str | None, overwrite: bool) -> None:
    """Stop, before any work, when an output exists and ``overwrite`` is not given (one message for all)."""
    if overwrite:
        return
    for p in paths:
        if p is not None and Path(p).exists():
            from .errors import CropmapError

            raise CropmapError(f"{p}: already exists (pass --overwrite to replace it)")


@contextlib.contextmanager
def atomic_path(final: Path | str, *, overwrite: bool = True, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success rename it to ``final``, on error remove it.

    ``is_dir`` makes the temporary path an (empty) directory, for stores such as Zarr.
    """
    final = Path(final)
    refuse_existing(final, overwrite=overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final)  # an earlier run killed mid-write (SIGKILL runs no cleanup)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(final), suffix=".tmp", dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=temp_prefix(final), suffix=".tmp" + final.suffix, dir=final.parent)
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

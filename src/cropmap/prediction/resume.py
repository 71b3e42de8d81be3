"""Resuming a killed ``cropmap predict`` from its last finished block (a strip's row of windows), with the
map still byte-identical to an uninterrupted run's.

Beside the output ``map.tif``, ``.map.tif.partial/`` holds a ``state.json`` (what the run is — checkpoint,
imagery, windows, outputs — and how many blocks are done), each finished block's output pixels
(``block_<n>.npz``, the uint8 values the rasters got) and the parcel statistics after the last one. A rerun
with the same inputs replays the saved blocks into fresh rasters and predicts the rest
(:func:`~cropmap.prediction.windows.stream_probabilities` with ``start_block``); anything else (other
inputs, ``--overwrite``) starts again. The folder is removed once the outputs are in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np

from ..atomic import atomic_path

log = logging.getLogger(__name__)

STATE_NAME = "state.json"


def partial_dir(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


def fingerprint(**facts) -> str:
    """A digest of what makes two runs produce the same outputs (paths, file sizes and times, options)."""
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def file_facts(path: Path | str) -> list:
    """Path, size and modification time of a file, or of every file under a folder (a run, a Zarr cube)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [str(path.resolve())] + [(str(p.relative_to(path)) if p != path else "", p.stat().st_size,
                                     p.stat().st_mtime_ns) for p in files[:10_000]]


class ResumeState:
    """The on-disk progress of one predict run (see the module docstring)."""

    def __init__(self, out: Path, key: str, overwrite: bool) -> None:
        self.dir, self.key = partial_dir(out), key
        self.done, self.class_pixels, self.stats_file = 0, None, None
        state = self._read()
        if state is not None and state.get("key") == key and not overwrite:
            self.done = int(state["done"])
            self.class_pixels = np.asarray(state["class_pixels"], dtype=np.int64)
            self.stats_file = state.get("stats")
            if self.done:
                log.warning("%s: resuming after %d finished block(s) of an interrupted run", out, self.done)
        elif self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)  # another run's, or --overwrite: start again
        self.dir.mkdir(parents=True, exist_ok=True)

    def _read(self) -> dict | None:
        try:
            return json.loads((self.dir / STATE_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def blocks(self) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
        """The finished blocks: ``(row0, col0, {raster: uint8 array})``, in order."""
        for n in range(self.done):
            with np.load(self.dir / f"block_{n:06d}.npz", allow_pickle=False) as z:
                yield int(z["row0"]), int(z["col0"]), {k: z[k] for k in z.files if k not in ("row0", "col0")}

    def stats(self):
        from .parcels import ParcelStats

        return ParcelStats.load(self.dir / self.stats_file) if self.stats_file else None

    def save_block(self, row0: int, col0: int, arrays: dict[str, np.ndarray], class_pixels: np.ndarray,
                   stats) -> None:
        """Record block ``done`` (its pixels, then the parcel stats, then the state: a kill between
        leaves the previous state, and the block is computed again)."""
        n = self.done
        with atomic_path(self.dir / f"block_{n:06d}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, row0=row0, col0=col0, **arrays)
        stats_file = None
        if stats is not None:
            stats_file = f"stats_{n:06d}.npz"
            stats.save(self.dir / stats_file)
        with atomic_path(self.dir / STATE_NAME) as tmp:
            tmp.write_text(json.dumps({"key": self.key, "done": n + 1, "class_pixels": class_pixels.tolist(),
                                       "stats": stats_file}))
        if self.stats_file and self.stats_file != stats_file:
            with contextlib.suppress(OSError):
                os.unlink(self.dir / self.stats_file)
        self.done, self.stats_file = n + 1, stats_file

    @contextlib.contextmanager
    def removed_on_success(self) -> Iterator[None]:
        """Remove the folder when the block exits without an error (the outputs are then in place), or
        with one before any block was finished (nothing to resume: a refused input leaves nothing)."""
        try:
            yield
        except BaseException:
            if self.done == 0:
                shutil.rmtree(self.dir, ignore_errors=True)
            raise
        shutil.rmtree(self.dir, ignore_errors=True)

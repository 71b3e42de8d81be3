"""RPG 7z archives, whole or split into volumes (``.7z.001``, ``.7z.002``, …): each volume downloaded with
HTTP Range resume, the volumes read as one stream, and only the parcels file extracted, safely.

A split 7z is one archive cut into pieces: its start header says where the archive ends, so a missing or
short volume is found before any decompression, and named.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import struct
import urllib.parse
from pathlib import Path, PurePosixPath

from ..errors import CropmapError
from .http import download, redact
from .rpg_schema import is_parcels_member

log = logging.getLogger(__name__)

# The national archives hold 10-42 GB (RPG 3.0: 6.2 GB of parcels among eight GeoPackages). py7zr counts every
# byte it decompresses, the skipped members of a solid block too, so the limit covers a whole archive with room:
# anything announcing more is treated as a decompression bomb.
MAX_EXTRACT_BYTES = 64 * 2**30
_SIGNATURE = b"7z\xbc\xaf\x27\x1c"


class Volumes(io.RawIOBase):
    """The files of a split archive read as one seekable stream (py7zr takes any binary file object)."""

    def __init__(self, paths: list[Path]):
        super().__init__()
        self.paths = list(paths)
        self.sizes = [p.stat().st_size for p in self.paths]
        self.starts = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        self.size = sum(self.sizes)
        self.pos = 0
        self._files = [open(p, "rb") for p in self.paths]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    def readinto(self, b) -> int:
        n, view = 0, memoryview(b)
        while n < len(view) and self.pos < self.size:
            i = max(k for k, s in enumerate(self.starts) if s <= self.pos)
            f = self._files[i]
            f.seek(self.pos - self.starts[i])
            got = f.readinto(view[n: n + min(len(view) - n, self.starts[i] + self.sizes[i] - self.pos)])
            if not got:
                break
            n += got
            self.pos += got
        return n

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def expected_size(first: Path) -> int:
    """The archive's whole size from the start header of its first volume (32 bytes + next header offset +
    next header size)."""
    with open(first, "rb") as f:
        head = f.read(32)
    if len(head) < 32 or head[:6] != _SIGNATURE:
        raise CropmapError(f"{first}: not a 7z archive (no 7z signature)")
    offset, size = struct.unpack("<QQ", head[12:28])
    return 32 + offset + size


def check_volumes(paths: list[Path]) -> None:
    """Every volume is there and whole: the sizes add up to what the first volume's header announces."""
    for p in paths:
        if not p.is_file():
            raise CropmapError(f"{p}: archive volume missing")
    want, have = expected_size(paths[0]), sum(p.stat().st_size for p in paths)
    if have < want:
        nxt = _next_volume(paths[-1]) if len(paths) > 1 or paths[0].suffix == ".001" else None
        raise CropmapError(f"{paths[0]}: the archive is {want:,} bytes but its volumes hold {have:,}"
                           + (f": volume {nxt.name} is missing or short" if nxt else ": the file is truncated"))
    if have > want and len(paths) > 1:
        log.warning("%s: volumes hold %d bytes past the archive's end", paths[0], have - want)


def _next_volume(p: Path) -> Path | None:
    suffix = p.suffix.lstrip(".")
    if suffix.isdigit():
        return p.with_name(f"{p.stem}.{int(suffix) + 1:0{len(suffix)}d}")
    return None


def local_volumes(first: Path) -> list[Path]:
    """A local archive and, for a first volume ``X.7z.001``, its numbered siblings in sequence (``.002``, …,
    up to the first gap; never a glob, which would take a stray ``.md5`` or ``.part``)."""
    if not first.is_file():
        raise CropmapError(f"{first}: archive does not exist")
    paths = [first]
    nxt = _next_volume(first) if first.suffix == ".001" else None
    while nxt is not None and nxt.is_file():
        paths.append(nxt)
        nxt = _next_volume(nxt)
    return paths


def download_volumes(urls: list[str], folder: Path, *, allow_http: bool = False, retries: int = 5,
                     backoff: float = 2.0) -> tuple[list[Path], int]:
    """Download each of ``urls`` (the exact volumes, in order) into ``folder`` unless already whole there;
    returns the local paths and the bytes received now."""
    paths, received = [], 0
    for url in urls:
        name = PurePosixPath(urllib.parse.urlsplit(url).path).name
        local = folder / name
        if not local.exists():
            log.info("downloading %s to %s", redact(url), local)
            try:
                received += download(url, local, allow_http=allow_http, retries=retries, backoff=backoff)
            except CropmapError as e:
                raise CropmapError(f"volume {name} of {len(urls)}: {e}") from None
        paths.append(local)
    return paths, received


def _check_members(archive: Path, infos, max_bytes: int) -> None:
    total = 0
    for i in infos:
        name = i.filename.replace("\\", "/")
        p = PurePosixPath(name)
        if p.is_absolute() or (len(name) > 1 and name[1] == ":") or ".." in p.parts:
            raise CropmapError(f"{archive}: refused, member {i.filename!r} would be written outside the cache")
        if i.is_symlink:
            # a symlink's target is only known after extraction; RPG archives have none, so refuse them all
            raise CropmapError(f"{archive}: refused, member {i.filename!r} is a symbolic link")
        total += i.uncompressed or 0
    if total > max_bytes:
        raise CropmapError(f"{archive}: refused, it announces {total:,} bytes uncompressed "
                           f"(limit {max_bytes:,}; a decompression bomb or not an RPG archive)")



def extract_parcels(volumes: list[Path], into: Path, *, max_bytes: int = MAX_EXTRACT_BYTES) -> Path:
    """Extract the parcels file of the archive made of ``volumes`` (one path, or the volumes in order) into the
    folder ``into`` and return it: ``RPG_Parcelles.gpkg`` or ``PARCELLES_GRAPHIQUES.gpkg`` (or ``.shp`` with its
    sibling files), else the archive's only or largest ``.gpkg``. The other layers are not extracted.

    The folder appears only once extraction is complete (a corrupt archive leaves nothing behind); an existing
    one is reused. Member names, symlinks and the announced size are checked first, and the size again while
    decompressing, since an archive may lie about it.
    """
    import py7zr

    archive = volumes[0]
    if into.is_dir():
        return _find_parcels(into, archive)
    check_volumes(volumes)
    tmp = into.with_name(f".{into.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    stream = Volumes(volumes) if len(volumes) > 1 else None
    try:
        with py7zr.SevenZipFile(stream if stream is not None else archive, "r", max_extract_size=max_bytes) as z:
            infos = z.list()
            _check_members(archive, infos, max_bytes)
            targets = parcels_members([i.filename for i in infos if not i.is_directory])
            if not targets:
                raise CropmapError(f"{archive}: no parcels file (RPG_Parcelles.gpkg, PARCELLES_GRAPHIQUES.gpkg or "
                                   ".shp) in the archive (is it an RPG archive?)")
            z.extract(path=tmp, targets=targets)
        os.replace(tmp, into)
    except CropmapError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except py7zr.exceptions.DecompressionBombError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CropmapError(f"{archive}: refused, it decompresses to more than {max_bytes:,} bytes "
                           f"(a decompression bomb, or the limit is too small)") from None
    except Exception as e:  # py7zr raises Bad7zFile, CrcError, DecompressionBombError, LZMAError, EOFError...
        shutil.rmtree(tmp, ignore_errors=True)
        raise CropmapError(f"{archive}: corrupt or unreadable 7z archive ({type(e).__name__}: {e})") from None
    finally:
        if stream is not None:
            stream.close()
    return _find_parcels(into, archive)


def parcels_members(names: list[str]) -> list[str]:
    """The members to extract: the parcels file (and a shapefile's siblings), else every ``.gpkg``."""
    named = [n for n in names if is_parcels_member(n)]
    gpkg = [n for n in named if n.lower().endswith(".gpkg")]
    if gpkg:
        return gpkg[:1]
    if named:  # a shapefile: .shp with its .dbf, .shx, .prj, .cpg
        stem = named[0].rsplit(".", 1)[0]
        return [n for n in names if n.rsplit(".", 1)[0] == stem]
    return [n for n in names if n.lower().endswith(".gpkg")]


def _find_parcels(folder: Path, archive: Path) -> Path:
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".gpkg", ".shp"))
    if not found:
        raise CropmapError(f"{archive}: no parcels file found after extraction")
    named = [p for p in found if is_parcels_member(p.name)]
    return max(named or found, key=lambda p: p.stat().st_size)

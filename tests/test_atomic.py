import pytest

from cropmap.atomic import atomic_path


def test_success_renames_and_failure_leaves_nothing(tmp_path):
    final = tmp_path / "out.txt"
    with atomic_path(final) as tmp:
        tmp.write_text("new")
        assert not final.exists()
    assert final.read_text() == "new"
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError
    assert final.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_directories_are_replaced_whole(tmp_path):
    final = tmp_path / "store.zarr"
    for content in ("a", "b"):
        with atomic_path(final, is_dir=True) as tmp:
            (tmp / "f").write_text(content)
    assert (final / "f").read_text() == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.zarr"]


def test_stale_temporaries_of_killed_writers_are_removed_live_ones_kept(tmp_path):
    import os

    from cropmap.atomic import remove_stale_temps, temp_prefix

    final = tmp_path / "map.tif"
    dead = os.getpid() + 2**22  # above Linux's largest pid_max: no such process
    stale = [tmp_path / f".map.tif.{dead}.abcd1234.tmp", tmp_path / f".map.tif.{dead}.efgh5678.tmp.tif",
             tmp_path / f"..map.tif.{dead}.ijkl9012.tmp.tif.{dead}.mnop3456.tmp.tif"]  # a temporary's temporary
    stale[0].mkdir()
    (stale[0] / "part.tif").write_bytes(b"x")
    for p in stale[1:]:
        p.write_bytes(b"x")
    kept = [tmp_path / f"{temp_prefix(final)}qrst7890.tmp",  # this (live) process's
            tmp_path / f".map.tif.{os.getppid()}.uvwx1234.tmp",  # another live process's
            tmp_path / f".amap.tif.{dead}.abcd1234.tmp", tmp_path / ".map.tif.old", tmp_path / "map.tif.aux.xml"]
    for p in kept:
        p.write_bytes(b"x")
    assert sorted(remove_stale_temps(final)) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in kept)
    with atomic_path(final) as tmp:  # every atomic write clears them first
        assert tmp.name.startswith(temp_prefix(final))
        tmp.write_bytes(b"map")

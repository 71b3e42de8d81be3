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

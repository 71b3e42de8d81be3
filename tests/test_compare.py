"""``cropmap compare`` on copies of the tiny run, evaluated on the same and on different splits."""

import csv
import json
import shutil

import pytest

from cropmap.cli import main
from cropmap.compare import compare_runs, write_comparison
from cropmap.errors import CropmapError
from cropmap.evaluation import evaluate_run


@pytest.fixture(scope="module")
def runs(tiny_run, tiny_dataset, tmp_path_factory):
    """a: the tiny run (test split); b: the same model evaluated on val; c: never evaluated."""
    root = tmp_path_factory.mktemp("compare")
    for name in "abc":
        shutil.copytree(tiny_run, root / name)
    evaluate_run(root / "b", tiny_dataset, split="val")
    (root / "c" / "metrics.json").unlink()
    return root


def test_compare_rows_match_each_runs_metrics(runs):
    c = compare_runs([runs / "a", runs / "b"])
    m = json.loads((runs / "a" / "metrics.json").read_text(encoding="utf-8"))
    rows = [r for r in c.rows if r["run"] == "a"]
    assert [r["level"] for r in rows] == ["group", "coarse"]
    assert rows[0]["OA"] == pytest.approx(m["overall_accuracy"], abs=1e-4)
    assert rows[1]["mIoU"] == pytest.approx(m["levels"]["coarse"]["miou"], abs=1e-4)
    assert rows[0]["parcel OA"] == pytest.approx(m["parcels"]["overall_accuracy"], abs=1e-4)
    assert rows[0]["parameters"] == m["parameters"] > 0 and rows[0]["best epoch"] is not None
    assert rows[0]["train s"] > 0
    # a on test, b on val: flagged, with the split in each row
    assert any("different datasets or splits" in n for n in c.notes)
    assert {r["evaluated on"] for r in c.rows} == {"dataset.zarr:test", "dataset.zarr:val"}


def test_same_split_is_not_flagged_and_missing_metrics_names_the_command(runs):
    c = compare_runs([runs / "a", runs / "c"])
    assert "evaluated on" not in c.columns
    assert len(c.notes) == 1 and f"cropmap evaluate --run {runs / 'c'} --data " in c.notes[0]
    row_c = [r for r in c.rows if r["run"] == "c"]
    assert len(row_c) == 1 and row_c[0].get("OA") is None and row_c[0]["model"] == "tempcnn-unet"


def test_compare_writes_csv_and_markdown(runs, tmp_path):
    c = compare_runs([runs / "a", runs / "b"])
    rows = list(csv.DictReader(write_comparison(c, tmp_path / "t.csv").open(encoding="utf-8")))
    assert len(rows) == len(c.rows) == 4 and float(rows[0]["OA"]) == c.rows[0]["OA"]
    md = write_comparison(c, tmp_path / "t.md").read_text(encoding="utf-8").splitlines()
    assert md[0].startswith("| run | model | parameters") and len([x for x in md if x.startswith("| a ")]) == 2
    assert md[-1].startswith("- runs were evaluated on different")
    with pytest.raises(CropmapError, match="already exists"):
        write_comparison(c, tmp_path / "t.csv")
    with pytest.raises(CropmapError, match=r"t\.xlsx: unknown table format"):
        write_comparison(c, tmp_path / "t.xlsx")


def test_compare_cli(runs, tmp_path, capsys):
    assert main(["compare", str(runs / "a"), str(runs / "b"), "--out", str(tmp_path / "t.md")]) == 0
    out = capsys.readouterr().out
    assert "coarse" in out and "different datasets or splits" in out and (tmp_path / "t.md").exists()
    assert main(["compare", str(runs / "a"), str(tmp_path)]) == 2  # not a run folder
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a run folder" in err

"""Evaluation per level and per parcel: hand-made cases with known answers, then a tiny run end to end."""

import json

import numpy as np
import pytest

from cropmap.cli import main
from cropmap.evaluation import evaluate_run, summary_lines
from cropmap.metrics import ParcelVotes, coarser_confusion, metrics_from_confusion
from cropmap.nomenclature import coarser_levels, make_class_table

# crop level: 0 background, 1 BTH soft wheat, 2 MIS maize, 3 ORH barley (codes sorted)
TABLE, _ = make_class_table(["BTH", "ORH", "MIS"], "crop", background=True)


def test_parcel_majority_vote_by_hand():
    parcel = np.array([[1, 1, 1, 1, 2, 2, 2, 0],
                       [3, 3, 3, 4, 4, 4, 4, 4]])
    y = np.array([[1, 1, 1, -1, 2, 2, 2, 0],
                  [3, 3, 3, -1, -1, -1, -1, -1]])  # parcel 4 has no labelled pixel
    p = np.array([[1, 2, 1, 2, 2, 1, 3, 0],  # parcel 1: 1,2,1 (the ignored 4th pixel does not vote) -> 1
                  [2, 1, 2, 3, 3, 3, 3, 3]])  # parcel 2: 2,1,3 -> tie, lowest index 1; parcel 3: 2,1,2 -> 2
    v = ParcelVotes(num_parcels=4, num_classes=4)
    v.add(parcel[:, :4], y[:, :4], p[:, :4])  # two batches: a parcel's votes add up across them
    v.add(parcel[:, 4:], y[:, 4:], p[:, 4:])
    cm = v.confusion()
    # parcels: 1 (ref 1 -> 1), 2 (ref 2 -> 1), 3 (ref 3 -> 2); background (parcel 0) and parcel 4 left out
    want = np.zeros((4, 4), int)
    want[1, 1] = want[2, 1] = want[3, 2] = 1
    assert cm.tolist() == want.tolist()
    # coarse level: wheat and barley are winter crops, maize a summer one. Parcel 3 (barley) votes
    # maize, wheat, maize at the crop level -> summer 2, winter 1 -> summer: still wrong.
    names, m = coarser_levels(TABLE)["coarse"]
    assert names == ("Hors parcelles", "Cultures d'hiver", "Cultures de printemps et d'été")
    assert v.confusion(m).tolist() == [[0, 0, 0], [0, 1, 1], [0, 1, 0]]


def test_coarser_confusion_by_hand():
    cm = np.array([[5, 0, 0, 1],    # background
                   [0, 8, 1, 3],    # wheat: 3 predicted barley
                   [1, 2, 6, 0],    # maize
                   [0, 4, 0, 2]])   # barley: 4 predicted wheat
    levels = coarser_levels(TABLE)
    assert list(levels) == ["crop", "group", "coarse"]
    g_names, g = levels["group"]
    assert len(g_names) == 4  # wheat, maize and barley are three RPG groups: same matrix
    assert coarser_confusion(cm, g).tolist() == cm.tolist()
    c_names, c = levels["coarse"]
    # winter = wheat + barley, summer = maize
    assert coarser_confusion(cm, c).tolist() == [[5, 1, 0], [0, 8 + 3 + 4 + 2, 1], [1, 2, 6]]
    m = metrics_from_confusion(coarser_confusion(cm, c), c_names)
    assert m["overall_accuracy"] == pytest.approx((5 + 17 + 6) / cm.sum())


def test_evaluate_writes_levels_and_parcels(tiny_run, tiny_dataset):
    from cropmap.data.patches import PatchDataset
    from cropmap.dataset.store import dataset_info

    m = json.loads((tiny_run / "metrics.json").read_text(encoding="utf-8"))
    for key in ("overall_accuracy", "miou", "macro_f1", "kappa", "per_class", "confusion_matrix", "class_names"):
        assert key in m  # the keys report.py and the demo read
    assert m["level"] == "group" and list(m["levels"]) == ["coarse"]
    names, mat = coarser_levels(dataset_info(tiny_dataset).class_table)["coarse"]
    coarse = m["levels"]["coarse"]
    assert coarse["class_names"] == list(names)
    assert coarse["confusion_matrix"] == coarser_confusion(np.array(m["confusion_matrix"]), mat).tolist()
    assert coarse["overall_accuracy"] >= m["overall_accuracy"]  # merging classes can only fix errors
    # one parcel-level count per test parcel with a labelled pixel
    ds = PatchDataset(tiny_dataset, "test")
    labelled = np.unique(ds.parcel[(ds.parcel > 0) & (ds.y >= 0)])
    assert m["parcels"]["parcels"] == len(labelled) > 0
    assert np.array(m["parcels"]["confusion_matrix"]).sum() == len(labelled)
    assert coarse["parcels"]["parcels"] == len(labelled)
    assert (tiny_run / "confusion.png").exists() and (tiny_run / "confusion_coarse.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_cli_prints_levels_parcels_and_classes(tiny_run, tiny_dataset, tmp_path, capsys):
    assert main(["evaluate", "--run", str(tiny_run), "--data", str(tiny_dataset), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    m = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    lines = summary_lines(m)
    assert len(lines) == 3 and all(line in out for line in lines) and lines[-1].startswith("calibration: temperature")
    assert "group level: OA" in out and "coarse level: OA" in out and "parcels: OA" in out
    for c in m["per_class"]:  # the per-class table names every class, rare ones included
        assert c["class"].split()[0] in out


def test_evaluate_split_without_patches_is_an_error(tiny_run, tiny_dataset, tmp_path):
    from cropmap.errors import CropmapError

    with pytest.raises(CropmapError, match="no patch in split 'nope'"):
        evaluate_run(tiny_run, tiny_dataset, split="nope", out=tmp_path)



def test_training_calibrates_and_evaluate_reports_ece(tiny_run, tiny_dataset):
    from cropmap.checkpoint import load_checkpoint

    c = load_checkpoint(tiny_run).extra["calibration"]
    assert c["split"] == "val" and c["pixels"] > 0 and c["temperature"] > 0
    m = evaluate_run(tiny_run, tiny_dataset, split="test")
    cal = m["calibration"]
    assert cal["temperature"] == c["temperature"] and cal["fitted_on"] == "val"
    assert 0 <= cal["ece_before"] <= 1 and 0 <= cal["ece_after"] <= 1
    assert sum(b["count"] for b in cal["reliability_after"]) == m["pixels"]

import numpy as np
import pytest

from cropmap.metrics import confusion_matrix, metrics_from_confusion


def test_confusion_matrix_skips_ignored_pixels():
    t = np.array([0, 0, 1, 1, 2, -1])
    p = np.array([0, 1, 1, 1, 0, 2])
    assert confusion_matrix(t, p, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    with pytest.raises(ValueError):
        confusion_matrix(np.array([3]), np.array([0]), 3)


def test_metrics_by_hand():
    cm = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    m = metrics_from_confusion(cm, ["a", "b", "c"])
    assert m["overall_accuracy"] == pytest.approx(3 / 5)
    # IoU: a 1/(2+2-1)=1/3, b 2/(2+3-2)=2/3, c 0/(1+0-0)=0
    assert m["miou"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    # F1: a P=1/2 R=1/2 -> 1/2; b P=2/3 R=1 -> 0.8; c 0
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0) / 3)
    # kappa: pe = (2*2 + 2*3 + 1*0) / 25 = 0.4 -> (0.6 - 0.4) / 0.6
    assert m["kappa"] == pytest.approx(1 / 3)
    assert [c["support"] for c in m["per_class"]] == [2, 2, 1]


def test_absent_class_is_left_out_of_the_means():
    cm = np.array([[3, 0, 0], [0, 1, 0], [0, 0, 0]])
    m = metrics_from_confusion(cm, ["a", "b", "c"])
    assert m["miou"] == 1.0 and m["macro_f1"] == 1.0
    assert m["per_class"][2]["iou"] is None

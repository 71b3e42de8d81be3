"""Class weights against hand-computed values; focal loss against cross-entropy and a hand-computed case."""

import math

import numpy as np
import pytest
import torch

from cropmap.config import TrainConfig
from cropmap.errors import CropmapError
from cropmap.losses import FocalLoss, class_weights, label_counts, make_loss

COUNTS = [100, 300, 0, 600]  # class 2 has no training pixel


def test_label_counts_leave_out_the_ignore_index():
    y = np.array([[0, 1, -1], [3, 3, -1]])
    assert label_counts(y, 4).tolist() == [1, 1, 0, 2]


def test_inverse_weights():
    # N / (K' n_c) with N = 1000, K' = 3 present classes
    np.testing.assert_allclose(class_weights(COUNTS, "inverse"), [1000 / 300, 1000 / 900, 0, 1000 / 1800])


def test_median_frequency_weights():
    # frequencies .1 .3 .6, median .3
    np.testing.assert_allclose(class_weights(COUNTS, "median"), [3.0, 1.0, 0.0, 0.5])


def test_effective_number_weights():
    beta = 0.99
    eff = [(1 - beta**n) / (1 - beta) for n in (100, 300, 600)]
    w = [1 / e for e in eff]
    w = [x * 3 / sum(w) for x in w]
    np.testing.assert_allclose(class_weights(COUNTS, "effective", beta), [w[0], w[1], 0.0, w[2]], rtol=1e-12)
    # beta -> 0: every present class weighs the same; beta -> 1: inverse frequency
    np.testing.assert_allclose(class_weights(COUNTS, "effective", 0.0), [1, 1, 0, 1])
    np.testing.assert_allclose(class_weights(COUNTS, "effective", 1 - 1e-9),
                               class_weights(COUNTS, "inverse") * 3 / class_weights(COUNTS, "inverse").sum(), rtol=1e-5)


def test_no_weights_and_bad_input():
    assert class_weights(COUNTS, "none") is None
    with pytest.raises(CropmapError, match="no labelled pixel"):
        class_weights([0, 0], "inverse")
    with pytest.raises(CropmapError, match="class_weights 'sqrt'"):
        class_weights(COUNTS, "sqrt")
    with pytest.raises(CropmapError, match="beta"):
        class_weights(COUNTS, "effective", 1.0)


@pytest.mark.parametrize("weighted", [False, True])
def test_focal_with_gamma_zero_is_cross_entropy(weighted):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, generator=g)
    y = torch.randint(0, 4, (2, 5, 6), generator=g)
    y[0, :2] = -1  # ignored pixels
    w = torch.tensor([0.5, 2.0, 1.0, 3.0]) if weighted else None
    ce = torch.nn.CrossEntropyLoss(weight=w, ignore_index=-1)(logits, y)
    torch.testing.assert_close(FocalLoss(0.0, w)(logits, y), ce, rtol=1e-6, atol=0)


def test_focal_by_hand():
    # one pixel of class 0 with p = 0.8, one ignored: (1 - 0.8)^2 * -log(0.8)
    logits = torch.log(torch.tensor([0.8, 0.2]))[None, :, None, None].expand(1, 2, 1, 2).clone()
    y = torch.tensor([[[0, -1]]])
    assert FocalLoss(2.0)(logits, y).item() == pytest.approx(0.2**2 * -math.log(0.8), rel=1e-6)


def test_make_loss_from_config():
    counts = np.array(COUNTS)
    ce = make_loss(TrainConfig(class_weights="median"), counts)
    assert isinstance(ce, torch.nn.CrossEntropyLoss) and ce.weight.tolist() == [3.0, 1.0, 0.0, 0.5]
    focal = make_loss(TrainConfig(loss="focal", focal_gamma=1.5), counts)
    assert isinstance(focal, FocalLoss) and focal.gamma == 1.5 and focal.weight is None
    with pytest.raises(CropmapError, match="loss 'dice'"):
        make_loss(TrainConfig(loss="dice"), counts)

"""Temperature scaling: fitted on held-out pixels, it lowers the ECE of a known over-confident model."""

import numpy as np
import pytest
import torch

from cropmap.monitoring.calibration import Reliability, calibration_of, fit_temperature, nll, reliability


def _overconfident(n=20_000, k=5, sharpen=3.0, seed=0):
    """Labels drawn from softmax(z), then logits scaled by ``sharpen``: a model ``sharpen`` times too sure."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g) * 1.5
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
    return z * sharpen, y


def test_temperature_recovers_the_overconfidence_and_lowers_ece():
    z, y = _overconfident()
    t = fit_temperature(z, y)
    assert t == pytest.approx(3.0, rel=0.05)
    before = reliability(torch.softmax(z, 1).numpy(), y.numpy())["ece"]
    after = reliability(torch.softmax(z / t, 1).numpy(), y.numpy())["ece"]
    assert before > 0.1 and after < 0.02
    c = calibration_of(z, y, "val")
    assert c["ece_after"] < c["ece_before"] and c["pixels"] == len(y) and c["split"] == "val"


def test_temperature_is_the_nll_minimum():
    z, y = _overconfident(n=3000, sharpen=0.5, seed=1)  # under-confident: T < 1
    t = fit_temperature(z, y)
    assert t < 1
    best = nll(z, y, 1 / t)
    assert best <= nll(z, y, 1 / (t * 1.05)) and best <= nll(z, y, 1 / (t / 1.05))
    assert fit_temperature(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)) == 1.0


def test_reliability_accumulates_like_one_pass_and_matches_a_hand_count():
    prob = np.array([[0.95, 0.05], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 0, 1])
    r = reliability(prob, labels, bins=2)
    # bin (0.5, 1]: all four, confidence mean 0.7875, accuracy 3/4
    assert r["ece"] == pytest.approx(abs(0.7875 - 0.75))
    acc = Reliability(2)
    acc.add(prob[:2], labels[:2])
    acc.add(prob[2:], labels[2:])
    got = acc.result()
    assert got["ece"] == pytest.approx(r["ece"])
    assert [(b["count"], b["accuracy"]) for b in got["bins"]] == [(b["count"], b["accuracy"]) for b in r["bins"]]

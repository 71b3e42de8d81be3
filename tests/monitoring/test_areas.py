"""Stratified area estimates equal the worked example of Olofsson et al. 2014 (section 5, tables 8-9)."""

import numpy as np
import pytest

from cropmap.monitoring.areas import stratified_estimate

# map classes deforestation, forest gain, stable forest, stable non-forest; 30 m pixels (0.09 ha)
MAPPED_PX = np.array([200_000, 150_000, 3_200_000, 6_450_000])
COUNTS = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])


def test_olofsson_worked_example():
    est = stratified_estimate(COUNTS, MAPPED_PX * 0.09, ["def", "gain", "forest", "nonforest"])
    # the paper's published figures, in hectares, rounded as it rounds them
    assert est.estimated_ha.round(-1) == pytest.approx([21_160, 11_690, 285_770, 581_390], abs=10)
    assert est.ci95_ha[0] == pytest.approx(6_158, rel=0.01)
    assert est.ci95_ha[1] == pytest.approx(3_756, rel=0.01)
    assert est.ci95_ha[2] == pytest.approx(15_510, rel=0.01)
    assert est.ci95_ha[3] == pytest.approx(16_282, rel=0.01)
    assert est.users.round(2).tolist() == [0.88, 0.73, 0.93, 0.96]
    assert est.producers.round(2).tolist() == [0.75, 0.85, 0.93, 0.96]
    assert est.overall == pytest.approx(0.95, abs=0.005)
    assert est.estimated_ha.sum() == pytest.approx(est.mapped_ha.sum())

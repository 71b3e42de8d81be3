"""Window layout, blending weights and the band-streaming mosaic, on predictors with known answers."""

import numpy as np
import pytest
import torch
from torch import nn

from cropmap.prediction.windows import (GLOBAL_CONTEXT_OVERLAP, GLOBAL_CONTEXT_WINDOW, MAX_WINDOW, blend_ramp,
                                     column_strips, computed_pixels, plan_context, plan_geometry, receptive_radius,
                                     stream_probabilities, window_origins)


@pytest.mark.parametrize("total, window, stride, multiple", [(96, 48, 24, 1), (100, 48, 24, 4), (1000, 512, 448, 4),
                                                             (30, 48, 24, 1), (97, 32, 16, 8)])
def test_windows_cover_the_axis_on_the_pooling_grid(total, window, stride, multiple):
    wins = window_origins(total, window, stride, multiple)
    covered = np.zeros(total, dtype=int)
    for o, s in wins:
        covered[o : o + s] += 1
        assert o % multiple == 0
        assert s >= min(window, total)
    assert (covered >= 1).all()
    assert wins[-1][0] + wins[-1][1] == total
    assert [o for o, _ in wins] == sorted({o for o, _ in wins})


def test_neighbour_weights_sum_to_one_and_skip_the_context():
    total, window, overlap, context = 200, 80, 30, 8
    w0 = blend_ramp(0, window, total, overlap, context)
    w1 = blend_ramp(50, window, total, overlap, context)  # stride 50: shares pixels 50..79
    assert (w0[:50] == 1).all()  # the scene's own edge gets no ramp
    assert (w0[-context:] == 0).all() and (w1[:context] == 0).all()
    np.testing.assert_allclose(w0[50:80] + w1[:30], 1.0, atol=1e-6)


def _known(r0, c0, h, w, k=3):
    """A smooth field of class probabilities that depends on absolute pixel position only."""
    yy, xx = np.mgrid[r0 : r0 + h, c0 : c0 + w].astype(np.float32)
    logits = np.stack([np.sin(yy / 7 + i) + np.cos(xx / 5 - i) for i in range(k)])
    e = np.exp(logits)
    return (e / e.sum(axis=0)).astype(np.float32)


def assemble(blocks, k, height, width):
    """Paste streamed blocks into a scene; every pixel must come exactly once."""
    out = np.full((k, height, width), np.nan, dtype=np.float32)
    count = np.zeros((height, width), dtype=int)
    for row0, col0, prob, has in blocks:
        rows, cols = has.shape
        assert prob.shape == (k, rows, cols) and has.all()
        out[:, row0 : row0 + rows, col0 : col0 + cols] = prob
        count[row0 : row0 + rows, col0 : col0 + cols] += 1
    assert (count == 1).all()
    return out


@pytest.mark.parametrize("height, width, window, overlap, context, multiple, max_strip",
                         [(70, 90, 32, 12, 3, 1, 4096), (64, 64, 64, 8, 2, 1, 4096), (101, 57, 40, 16, 5, 4, 4096),
                          (20, 300, 64, 24, 0, 2, 4096), (70, 301, 32, 12, 3, 1, 64), (50, 333, 40, 16, 5, 4, 90),
                          (40, 200, 40, 30, 5, 2, 60)])
def test_stream_reassembles_the_scene_exactly(height, width, window, overlap, context, multiple, max_strip):
    """Predictions corrupted near every window edge (as zero padding does) must not reach the mosaic
    when the context covers the corruption, whatever the strips."""

    def predict(win):
        r0, c0, h, w = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
        p = _known(r0, c0, h, w)
        bad = np.ones((h, w), dtype=bool)
        bad[context : h - context, context : w - context] = False
        p[:, bad] = np.float32(0.9)  # wrong values within `context` of the window's edges
        return p, np.ones((h, w), dtype=bool)

    blocks = stream_probabilities(predict, height, width, 3, window=window, overlap=overlap, context=context,
                                  multiple=multiple, max_strip=max_strip)
    mosaic = assemble(blocks, 3, height, width)
    expected = _known(0, 0, height, width)
    # the scene's own edges have no neighbour: there the corrupted values are all there is
    inner = (slice(None), slice(context, height - context), slice(context, width - context))
    np.testing.assert_allclose(mosaic[inner], expected[inner], atol=1e-5)


def test_strips_bound_the_width_and_share_one_window():
    cols = window_origins(10000, 512, 448, 4)
    strips = column_strips(cols, 10000, 4096)
    assert len(strips) == 3
    assert strips[0][2] == 0 and strips[-1][3] == 10000
    for (a0, b0, _, hi0), (a1, _, lo1, _) in zip(strips, strips[1:]):
        assert a1 == b0 and hi0 == lo1  # one shared window column; owned columns tile the width
    for a, b, _, _ in strips[:-1]:
        assert cols[b][0] + cols[b][1] - cols[a][0] <= 4096
    # windows more than half overlapping cannot be split: one strip
    assert len(column_strips(window_origins(1000, 64, 16, 1), 1000, 128)) == 1


def test_overlap_too_small_for_the_context_is_refused():
    with pytest.raises(ValueError, match="no room to blend"):
        list(stream_probabilities(lambda w: None, 64, 64, 2, window=32, overlap=10, context=5))


class _Conv(nn.Module):
    """Two 3x3 convolutions over the time-mean: the receptive radius is 2 pixels."""

    def __init__(self):
        super().__init__()
        self.c = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))

    def forward(self, x, doy, mask=None):
        return self.c(x.mean(dim=2))


class _Global(nn.Module):
    def forward(self, x, doy, mask=None):
        return x.mean(dim=(2, 3, 4), keepdim=True)[:, :, 0].expand(-1, -1, x.shape[3], x.shape[4])


def test_receptive_radius_is_measured():
    torch.manual_seed(0)
    assert receptive_radius(_Conv(), 4) == 2
    assert receptive_radius(_Global(), 4, max_probe=128) is None


def test_plan_context_warns_when_the_overlap_is_too_small(caplog):
    assert plan_context(10, 64, 4) == 10
    assert plan_context(40, 64, 4) == 31
    assert "raise --overlap to 82" in caplog.text


def test_planned_overlap_is_the_least_exact_one_and_given_values_are_kept():
    assert plan_geometry(2048, 2048, 26, 4)[1] == 56  # 2 x 26 + 1 = 53, rounded up to whole pooling cells
    assert plan_geometry(2048, 2048, 0, 1)[1] == 1  # a per-pixel model: windows only touch
    assert plan_geometry(2048, 2048, 26, 4, window=512, overlap=64) == (512, 64)  # the geometry before planning
    assert plan_geometry(2048, 2048, 26, 4, window=512) == (512, 56)
    assert plan_geometry(2048, 2048, None, 4) == (GLOBAL_CONTEXT_WINDOW, GLOBAL_CONTEXT_OVERLAP)
    assert plan_geometry(2048, 2048, None, 4, overlap=96) == (GLOBAL_CONTEXT_WINDOW, 96)


@pytest.mark.parametrize("height,width,radius,multiple", [(2048, 2048, 26, 4), (600, 5000, 26, 4), (96, 96, 11, 2),
                                                          (10980, 10980, 58, 8), (3000, 1500, 0, 1)])
def test_planned_window_computes_the_fewest_pixels(height, width, radius, multiple):
    window, overlap = plan_geometry(height, width, radius, multiple)
    assert overlap >= 2 * radius + 1 and overlap % multiple == 0 and window % multiple == 0
    assert 2 * overlap <= window <= max(MAX_WINDOW, 2 * overlap)

    def work(w: int) -> int:
        return computed_pixels(height, w, overlap, multiple) * computed_pixels(width, w, overlap, multiple)

    smallest = -(-max(2 * overlap, 64) // multiple) * multiple
    assert all(work(window) <= work(w) for w in range(smallest, MAX_WINDOW + 1, multiple))
    # never more than the fixed 512 px windows it replaces, at the same overlap
    fixed = computed_pixels(height, 512, overlap, multiple) * computed_pixels(width, 512, overlap, multiple)
    assert work(window) <= fixed


def test_planned_geometry_on_a_2048_px_scene():
    # 3 x 3 windows of 720 px (stride 664) compute 1.11 x the scene's pixels; 512 px windows with a 64 px overlap
    # (5 x 5, stride 448) computed 1.56 x
    assert plan_geometry(2048, 2048, 26, 4) == (720, 56)
    assert computed_pixels(2048, 720, 56, 4) == 3 * 720
    assert computed_pixels(2048, 512, 64, 4) == 5 * 512
    # one window holds a scene smaller than the least window: no larger one is tried
    assert plan_geometry(96, 96, 11, 2) == (96, 24)

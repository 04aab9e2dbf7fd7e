"""Pixel and boundary metrics (geotiler.metrics) and their torch accumulator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geotiler.metrics import (
    BoundaryCounts,
    Confusion,
    boundary,
    boundary_counts,
    boundary_f_score,
    confusion,
    pixel_scores,
)
from trainer.metrics import SegmentationMeter, building_channel


def square(size: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_pixel_scores_of_known_overlap() -> None:
    truth = square(10, 0, 0, 4, 4)  # 16 px
    pred = square(10, 2, 0, 6, 4)  # 16 px, 8 shared
    s = pixel_scores(pred, truth)
    assert s["iou"] == pytest.approx(8 / 24)
    assert s["precision"] == pytest.approx(0.5)
    assert s["recall"] == pytest.approx(0.5)
    assert s["f1"] == pytest.approx(0.5)
    assert s["accuracy"] == pytest.approx(84 / 100)
    valid = np.ones((10, 10), bool)
    valid[:, 4:] = False  # the false positives lie in nodata
    assert pixel_scores(pred, truth, valid)["precision"] == 1.0


def test_empty_cases() -> None:
    empty = np.zeros((5, 5), bool)
    full = np.ones((5, 5), bool)
    assert pixel_scores(empty, empty)["iou"] == 1.0
    assert pixel_scores(empty, full)["iou"] == 0.0
    assert pixel_scores(full, empty)["f1"] == 0.0
    assert boundary_f_score(empty, empty, 2) == 1.0
    assert boundary_f_score(square(5, 1, 1, 3, 3), empty, 2) == 0.0


def test_counts_add_up_over_tiles() -> None:
    rng = np.random.default_rng(0)
    pred = rng.random((4, 16, 16)) > 0.5
    truth = rng.random((4, 16, 16)) > 0.5
    total = Confusion()
    for p, t in zip(pred, truth, strict=True):
        total = total + confusion(p, t)
    assert total == confusion(pred, truth)
    b = BoundaryCounts()
    for p, t in zip(pred, truth, strict=True):
        b = b + boundary_counts(p, t, 1)
    assert b == boundary_counts(pred, truth, 1)


def test_seed_scores() -> None:
    c = Confusion(tp=30, fp=10, fn=20, tn=40)
    s = c.seed_scores()
    assert s["pixel_accuracy"] == pytest.approx(0.7)
    assert s["mean_accuracy"] == pytest.approx((40 / 50 + 30 / 50) / 2)
    assert s["mean_iou"] == pytest.approx((40 / 70 + 30 / 60) / 2)
    assert s["fw_iou"] == pytest.approx((50 * 40 / 70 + 50 * 30 / 60) / 100)


def test_boundary_f_score_tolerance() -> None:
    truth = square(40, 10, 10, 30, 30)
    shifted = square(40, 12, 10, 32, 30)  # 2 px to the right
    assert boundary_f_score(truth, truth, 0) == 1.0
    assert boundary_f_score(shifted, truth, 0) < 0.6
    assert boundary_f_score(shifted, truth, 2) == 1.0
    assert boundary_f_score(shifted, truth, 1) < 1.0


def test_tile_edges_are_not_boundaries() -> None:
    mask = square(10, 0, 0, 10, 5)  # a building cut by three tile edges
    b = boundary(mask)
    assert b[4].all() and b.sum() == 10


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 12), st.integers(0, 12), st.integers(1, 12), st.integers(1, 12),
       st.integers(0, 3))
def test_a_prediction_equal_to_truth_is_perfect(x: int, y: int, w: int, h: int, tol: int) -> None:
    mask = square(24, x, y, x + w, y + h)
    assert pixel_scores(mask, mask)["iou"] == 1.0
    assert boundary_f_score(mask, mask, tol) == 1.0
    assert 0.0 <= boundary_f_score(mask, ~mask, tol) <= 1.0


def test_meter_building_channel_and_process_sums() -> None:
    truth = torch.zeros(2, 2, 16, 16)
    truth[:, 0, 4:12, 4:12] = 1
    prob = truth.clone()
    prob[1, 0] = 0.4  # below threshold: no building predicted in the second tile
    valid = torch.ones(2, 1, 16, 16)
    meter = SegmentationMeter("masks", 0.5, 1)
    meter.update(prob, truth, valid)
    assert meter.scores()["iou"] == pytest.approx(0.5)
    assert meter.scores()["precision"] == 1.0
    other = SegmentationMeter("masks")
    other.load_tensor(meter.to_tensor() * 2)
    assert other.scores() == meter.scores()
    rgb = torch.stack([truth[:, 0], torch.ones(2, 16, 16), truth[:, 0]], 1)  # green = outline
    assert torch.equal(building_channel(rgb, "seed-rgb") > 0.5, truth[:, 0] > 0.5)

"""One seed-rgb "building" rule: tiling statistics, validation and predict count the same pixels.

A seed-rgb target (white buildings, green outlines, blurred) is made from a known footprint
and contour with :func:`geotiler.tiles.contours.seed_rgb_target`; the tiler's building
statistic (:func:`geotiler.tiles.task.building_pixels`), validation
(:func:`trainer.metrics.building_channel`, torch) and predict's polygons
(:func:`geotiler.polygons.building_channels`, numpy uint8 and float) must all find the
footprint's pixels, because they all read the target through ``seed_rgb_planes``.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from geotiler.polygons import building_channels, foreground
from geotiler.tiles.contours import SEED_RGB_CHANNELS, seed_rgb_target
from geotiler.tiles.task import building_pixels
from trainer.metrics import building_channel

SIZE = 40


def footprint_and_contour() -> tuple[np.ndarray, np.ndarray]:
    """(H,W) uint8 0/255: a rectangle and an L-shaped building, and their 2 px outlines."""
    footprint = np.zeros((SIZE, SIZE), np.uint8)
    footprint[5:15, 4:20] = 255
    footprint[22:36, 24:30] = 255
    footprint[30:36, 14:30] = 255  # the L's foot
    contour = np.zeros_like(footprint)
    found, _ = cv2.findContours(footprint, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(contour, found, -1, 255, thickness=2)
    return footprint, contour


def consumers(target: np.ndarray) -> dict[str, np.ndarray]:
    """The building pixels each consumer reads from a (3,H,W) uint8 seed-rgb target."""
    channels = list(SEED_RGB_CHANNELS)
    as_prob = torch.from_numpy(target.astype(np.float32) / 255)[None]  # (1,3,H,W) in [0, 1]
    fp_uint8, _ = building_channels(target, channels)
    fp_float, _ = building_channels(target.astype(np.float32) / 255, channels)
    return {
        "tiler": building_pixels(target, "seed-rgb"),
        "validation": (building_channel(as_prob, "seed-rgb") > 0.5)[0].numpy(),
        "predict uint8": foreground(fp_uint8, 0.5),
        "predict float": foreground(fp_float, 0.5),
    }


@pytest.mark.parametrize("blur", [0, 3])
def test_every_consumer_finds_the_footprint(blur: int) -> None:
    footprint, contour = footprint_and_contour()
    target = seed_rgb_target(footprint, contour, blur)
    assert target.shape == (3, SIZE, SIZE) and target.dtype == np.uint8
    assert np.count_nonzero(target[1] > target[0]) > 0  # green outlines outside the roofs
    for name, pixels in consumers(target).items():
        np.testing.assert_array_equal(pixels, footprint > 0, err_msg=name)


def test_consumers_agree_where_a_wide_blur_rounds_corners() -> None:
    footprint, contour = footprint_and_contour()
    found = consumers(seed_rgb_target(footprint, contour, 5))
    reference = found.pop("tiler")
    changed = (footprint > 0) != reference  # convex corners lost, the concave one filled
    assert 0 < np.count_nonzero(changed) <= 10
    for name, pixels in found.items():
        np.testing.assert_array_equal(pixels, reference, err_msg=name)

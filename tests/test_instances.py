"""Instance separation in ground units: one polygon per roof, touching houses apart."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import shapely

from geotiler.instances import (
    InstanceOptions,
    components,
    components_of_labels,
    marker_mask,
    separate,
    split_component,
)
from geotiler.polygons import PolygonOptions, polygonize_block
from geotiler.predict.plan import Rect

WALL = 0.95  # contour probability a trained model gives a wall between two houses
RIDGE = 0.6  # ... and a roof ridge or a shadow line inside one roof


def draw(shape_px: tuple[int, int], gsd: float, houses_m: list[tuple[float, ...]],
         lines_m: list[tuple[tuple[float, float], tuple[float, float], float]] = ()
         ) -> tuple[np.ndarray, np.ndarray]:
    """Footprint and contour probability planes (float32) of boxes given in metres.

    Each house (x0, y0, x1, y1) gets its outline drawn ~1 m wide at WALL strength, as the
    tiler's contour enhancement does; ``lines_m`` adds (start, end, strength) lines.
    """
    fp = np.zeros(shape_px, np.float32)
    ct = np.zeros(shape_px, np.float32)
    width = max(1, round(1.0 / gsd))
    for x0, y0, x1, y1 in houses_m:
        c0, r0, c1, r1 = (round(v / gsd) for v in (x0, y0, x1, y1))
        fp[r0:r1, c0:c1] = 1.0
        outline = np.zeros(shape_px, np.uint8)
        cv2.rectangle(outline, (c0, r0), (c1 - 1, r1 - 1), 255, thickness=width)
        ct = np.maximum(ct, (outline > 0) * WALL)
    for (xa, ya), (xb, yb), strength in lines_m:
        line = np.zeros(shape_px, np.uint8)
        cv2.line(line, (round(xa / gsd), round(ya / gsd)), (round(xb / gsd), round(yb / gsd)),
                 255, thickness=width)
        ct = np.maximum(ct, (line > 0) * strength)
    return fp, ct


def polygons(fp: np.ndarray, ct: np.ndarray, gsd: float) -> np.ndarray:
    options = PolygonOptions(instances=InstanceOptions().in_pixels(gsd))
    return polygonize_block(fp, ct, Rect(0, fp.shape[0], 0, fp.shape[1]), options=options).geoms


@pytest.mark.parametrize("gsd", [0.3, 1.0])
def test_a_roof_with_a_ridge_line_is_one_building(gsd):
    # a 12 x 9 m roof with a full-length ridge across it (a weaker line than a wall)
    shape = (round(20 / gsd), round(24 / gsd))
    fp, ct = draw(shape, gsd, [(4, 4, 16, 13)], [((4, 8.5), (16, 8.5), RIDGE)])
    found = polygons(fp, ct, gsd)
    assert len(found) == 1
    assert shapely.area(found[0]) * gsd**2 == pytest.approx(12 * 9, rel=0.15)


@pytest.mark.parametrize("gsd", [0.3, 1.0])
def test_two_touching_houses_stay_two(gsd):
    # two 10 x 9 m houses sharing a wall, each outlined as the tiler draws it
    shape = (round(20 / gsd), round(30 / gsd))
    fp, ct = draw(shape, gsd, [(4, 4, 14, 13), (14, 4, 24, 13)])
    found = polygons(fp, ct, gsd)
    assert len(found) == 2
    areas = sorted(shapely.area(found) * gsd**2)
    assert areas == pytest.approx([90, 90], rel=0.2)
    # the two pieces cover the footprint again and do not overlap
    union = shapely.union_all(found)
    assert union.area * gsd**2 == pytest.approx(180, rel=0.05)
    assert shapely.area(shapely.intersection(found[0], found[1])) == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("gsd", [0.3, 1.0])
def test_a_small_piece_cut_off_by_a_strong_line_rejoins_its_roof(gsd):
    # a wall-strength line cuts a 2 x 3 m corner off a 12 x 9 m roof
    shape = (round(20 / gsd), round(24 / gsd))
    cut = [((14, 4), (14, 7), WALL), ((14, 7), (16, 7), WALL)]
    fp, ct = draw(shape, gsd, [(4, 4, 16, 13)], cut)
    found = polygons(fp, ct, gsd)
    assert len(found) == 1


def test_sizes_are_in_ground_units():
    at_03 = InstanceOptions().in_pixels(0.3)
    at_1 = InstanceOptions().in_pixels(1.0)
    assert at_03.min_marker_area == pytest.approx(at_1.min_marker_area / 0.09)
    assert at_03.min_fragment == pytest.approx(at_1.min_fragment / 0.09)
    with pytest.raises(ValueError):
        InstanceOptions().in_pixels(0)


def test_without_markers_the_foreground_is_kept():
    fg = np.zeros((20, 20), bool)
    fg[5:8, 5:8] = True
    ct = np.ones((20, 20), np.float32)  # everything is outline: no marker at all
    n, labels = separate(fg, ct, InstanceOptions().in_pixels(1.0))
    assert n == 1 and (labels > 0).sum() == 9


def test_components_are_numbered_by_position():
    mask = np.zeros((10, 10), bool)
    mask[6:8, 1:3] = True
    mask[1:3, 6:8] = True
    n, labels = components(mask)
    assert n == 2 and labels[1, 6] == 1 and labels[6, 1] == 2


def street(gsd: float, seed: int, noise: float = 0.08) -> tuple[np.ndarray, np.ndarray]:
    """A 120 x 120 m block of houses, terraces (shared walls) and ridges; ``noise``: the
    standard deviation of Gaussian noise on the contour plane (with noise > 0 no two
    pixels tie in the watershed)."""
    rng = np.random.default_rng(seed)
    houses, lines = [], []
    for row in range(4):
        y0 = 5 + row * 28
        x = 5.0
        while x < 100:
            w = float(rng.uniform(7, 14))
            houses.append((x, y0, x + w, y0 + float(rng.uniform(8, 12))))
            if rng.random() < 0.4:  # a ridge along the roof
                lines.append(((x, y0 + 5), (x + w, y0 + 5), RIDGE))
            x += w + (0 if rng.random() < 0.5 else float(rng.uniform(2, 6)))  # terraced
    shape = (round(120 / gsd), round(120 / gsd))
    fp, ct = draw(shape, gsd, houses, lines)
    ct = np.clip(ct + rng.normal(0, noise, ct.shape).astype(np.float32), 0, 1)
    return fp >= 0.5, ct


@pytest.mark.parametrize("gsd", [0.3, 1.0])
@pytest.mark.parametrize("erosion_m", [0.0, 1.0])
def test_component_by_component_gives_the_whole_block_partition(gsd, erosion_m):
    # separate() floods only the components with two or more markers, each in its box;
    # split_component() floods the whole block at once: the buildings must be the same
    fg, ct = street(gsd, seed=3)
    options = InstanceOptions(marker_erosion_m=erosion_m).in_pixels(gsd)
    n, labels = separate(fg, ct, options)
    m, whole = split_component(fg, ct, marker_mask(fg, ct, options), options)
    assert n == m > 20
    assert np.array_equal(labels, components_of_labels(whole)[1])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_buildings_split_does_not_depend_on_the_rest_of_the_block(seed):
    # Flat uint8 planes tie everywhere; the rest of a block must not change how a building
    # is split, or two overlapping prediction blocks cut the same house differently (the
    # whole-block watershed did, on these seeds: its equal-priority markers are taken in
    # an order set by every marker of the block)
    gsd = 0.5
    fg, ct = street(gsd, seed, noise=0.0)
    ct8 = np.rint(ct * 255).astype(np.uint8)
    options = InstanceOptions().in_pixels(gsd)
    _, full = separate(fg, ct8, options)
    half = fg.copy()
    half[:, fg.shape[1] // 2:] = False
    _, comp = components(half)
    # the components entirely in the left half are the same with or without the right half
    whole_left = np.unique(comp[:, fg.shape[1] // 2 - 1])
    keep = (comp > 0) & ~np.isin(comp, whole_left)
    _, alone = separate(fg & keep, ct8, options)
    assert keep.sum() > 1000
    pairs = np.unique(np.stack([full[keep], alone[keep]]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]

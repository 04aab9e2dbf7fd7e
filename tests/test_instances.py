"""Instance separation in ground units: one polygon per roof, touching houses apart."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import shapely

from geotiler.instances import InstanceOptions, components, separate
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

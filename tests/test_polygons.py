"""Masks and probabilities back to building polygons, once per building across blocks."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import rasterio.features
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from geotiler.polygons import (
    PolygonOptions,
    building_channels,
    crowded_labels,
    crowding_radius,
    label_buildings,
    polygonize_block,
    polygonize_tiled,
    regularize,
    simplify_coverage,
    to_map,
)
from geotiler.predict.plan import Rect


def burn(polys, shape) -> np.ndarray:
    """Footprint (0/255) of pixel-coordinate polygons."""
    return rasterio.features.rasterize(((p, 255) for p in polys), out_shape=shape,
                                       dtype="uint8", transform=Affine.identity())


def contours(polys, shape, width: int = 3) -> np.ndarray:
    """The tiler's contour channel: each polygon's outline drawn on its own."""
    out = np.zeros(shape, np.uint8)
    for p in polys:
        single = burn([p], shape)
        found, _ = cv2.findContours(single, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, found, -1, 255, width)
    return out


def whole(shape) -> Rect:
    return Rect(0, shape[0], 0, shape[1])


def best_iou(poly, candidates) -> float:
    return max(poly.intersection(c).area / poly.union(c).area for c in candidates)


KNOWN = [
    shapely.box(10, 10, 50, 40),
    shapely.Polygon([(70, 10), (120, 10), (120, 30), (95, 30), (95, 60), (70, 60)]),  # L
    shapely.box(20, 70, 80, 130).difference(shapely.box(40, 90, 60, 110)),  # courtyard
    shapely.Polygon([(140, 20), (170, 50), (150, 70), (120, 40)]),  # rotated rectangle
]


def test_known_polygons_come_back():
    shape = (150, 190)
    fp = burn(KNOWN, shape)
    found = polygonize_block(fp, contours(KNOWN, shape), whole(shape))
    assert len(found) == len(KNOWN)
    for poly in KNOWN:
        assert best_iou(poly, found.geoms) >= 0.95
    courtyard = [g for g in found.geoms if len(g.interiors)]
    assert len(courtyard) == 1
    assert np.allclose(found.score, 1.0)
    assert np.allclose(found.area, shapely.area(found.geoms))


def test_probabilities_threshold_and_score():
    probs = np.zeros((40, 40), np.float32)
    probs[5:15, 5:25] = 0.8
    probs[20:30, 5:25] = 0.4  # below the threshold
    found = polygonize_block(probs, None, whole(probs.shape), options=PolygonOptions(0.5))
    assert len(found) == 1 and found.area[0] == 200
    assert found.score[0] == pytest.approx(0.8)
    u8 = (probs * 255).round().astype(np.uint8)
    assert len(polygonize_block(u8, None, whole(u8.shape))) == 1


def test_touching_buildings_are_split_by_the_contour():
    a, b = shapely.box(10, 10, 40, 40), shapely.box(40, 10, 70, 35)  # share an edge
    shape = (60, 90)
    fp = burn([a, b], shape)
    merged = polygonize_block(fp, None, whole(shape))
    assert len(merged) == 1
    split = polygonize_block(fp, contours([a, b], shape), whole(shape),
                             options=PolygonOptions())
    assert len(split) == 2
    for poly in (a, b):
        assert best_iou(poly, split.geoms) >= 0.9
    # grown back over the contour: together they cover the footprint again
    assert shapely.union_all(split.geoms).area == pytest.approx(a.area + b.area, rel=0.03)


def test_labels_do_not_depend_on_where_the_block_starts():
    a, b = shapely.box(10, 10, 40, 40), shapely.box(40, 12, 70, 38)
    shape = (80, 100)
    fp, ct = burn([a, b], shape), contours([a, b], shape)
    n0, lab0 = label_buildings(fp, ct, 0.5)
    n1, lab1 = label_buildings(fp[5:, 3:], ct[5:, 3:], 0.5)
    assert n0 == n1 == 2
    assert np.array_equal(lab0[5:, 3:], lab1)


def scene(rng: np.random.Generator, shape, count: int):
    polys: list[shapely.Polygon] = []
    while len(polys) < count:
        h, w = rng.integers(6, 40, 2)
        r, c = rng.integers(0, shape[0] - h), rng.integers(0, shape[1] - w)
        box = shapely.box(c, r, c + w, r + h)
        if not any(box.buffer(2).intersects(p) for p in polys):
            polys.append(box)
    return polys


def test_a_building_across_block_borders_comes_back_once():
    rng = np.random.default_rng(5)
    shape = (300, 420)
    polys = scene(rng, shape, 60)
    fp = burn(polys, shape)
    ct = contours(polys, shape)
    options = PolygonOptions(simplify=0.5, min_area=10)
    one_pass = polygonize_block(fp, ct, whole(shape), options=options)

    def read(rect: Rect):
        return (fp[rect.row0:rect.row1, rect.col0:rect.col1],
                ct[rect.row0:rect.row1, rect.col0:rect.col1])

    tiled = polygonize_tiled(read, *shape, block=64, halo=48, options=options)
    crossing = [p for p in polys
                if any(p.bounds[0] < e < p.bounds[2] or p.bounds[1] < e < p.bounds[3]
                       for e in range(64, 420, 64))]
    assert len(crossing) >= 10, "the scene must have buildings on block borders"
    assert len(tiled) == len(one_pass) == len(polys)
    assert np.allclose(np.sort(tiled.area), np.sort(one_pass.area))
    key = lambda g: tuple(np.round(g.bounds, 6))  # noqa: E731
    assert sorted(map(key, tiled.geoms)) == sorted(map(key, one_pass.geoms))


@settings(max_examples=60, deadline=None)
@given(x=st.floats(2, 60), y=st.floats(2, 60), w=st.floats(4, 50), h=st.floats(4, 50),
       angle=st.floats(0, 90))
def test_rasterized_polygon_keeps_its_area(x, y, w, h, angle):
    poly = shapely.affinity.rotate(shapely.box(x, y, x + w, y + h), angle)
    poly = shapely.affinity.translate(poly, 40 - poly.bounds[0], 40 - poly.bounds[1])
    shape = (int(poly.bounds[3]) + 40, int(poly.bounds[2]) + 40)
    found = polygonize_block(burn([poly], shape), None, whole(shape))
    assert len(found) == 1
    # pixel outline vs true outline: within half a pixel along the perimeter
    assert abs(found.area[0] - poly.area) <= 0.5 * poly.length + 2


def test_simplify_min_area_and_regularize():
    jagged = shapely.Polygon([(10, 10), (40, 10), (40, 25), (41, 25), (41, 26), (40, 26),
                              (40, 40), (10, 40)])
    small = shapely.box(60, 60, 63, 63)
    shape = (80, 80)
    fp = burn([jagged, small], shape)
    raw = polygonize_block(fp, None, whole(shape))
    assert len(raw) == 2
    opts = PolygonOptions(simplify=1.5, min_area=20, regularize=True)
    done = polygonize_block(fp, None, whole(shape), options=opts)
    assert len(done) == 1  # the 9 px square is dropped
    assert len(done.geoms[0].exterior.coords) == 5  # a rectangle
    lshape = KNOWN[1]
    assert regularize(np.array([lshape], dtype=object))[0].equals(lshape)  # not rectangular


def test_simplify_coverage_keeps_neighbours_apart_and_touching():
    """Traced buildings: two sharing a staircase wall, a third one pixel to their right
    and a fourth standing alone, both with a staircase edge. After simplification the two
    still share their border, none overlaps another, and all have fewer vertices; the
    lone one is simplified on its own."""
    labels = np.zeros((40, 120), np.int32)
    for row in range(2, 38):
        wall = 12 + row // 3  # a diagonal wall, traced as a staircase
        labels[row, 2:wall] = 1
        labels[row, wall:30] = 2
        labels[row, 31:44 + row // 2] = 3  # one pixel apart from house 2
        labels[row, 80:90 + row // 2] = 4  # far from every other house
    from geotiler.polygons import trace
    geoms, _, values = trace(labels, 4, (labels > 0).astype(np.float32))
    order = np.argsort(values)
    geoms, values = geoms[order], values[order]
    assert values.tolist() == [1, 2, 3, 4]
    assert shapely.touches(geoms[0], geoms[1]) and shapely.distance(geoms[1], geoms[2]) == 1
    crowded = crowded_labels(labels, 4, crowding_radius(1.5))[values]
    assert crowded.tolist() == [True, True, True, False]  # house 3 is a pixel from house 2
    out = simplify_coverage(geoms, 1.5, crowded)
    assert all(shapely.is_valid(out)) and all(shapely.get_type_id(out) == 3)
    assert shapely.touches(out[0], out[1])  # one shared border, simplified once
    for i in range(4):
        for j in range(i + 1, 4):
            assert shapely.area(shapely.intersection(out[i], out[j])) < 1e-9
    assert (shapely.get_num_coordinates(out) < shapely.get_num_coordinates(geoms)).all()
    lone = shapely.simplify(geoms[3], 1.5, preserve_topology=False)
    assert out[3].equals(lone)  # Douglas-Peucker on its own
    # each outline moves by at most about the tolerance
    assert np.all(np.abs(shapely.area(out) - shapely.area(geoms))
                  <= 1.5 * shapely.length(geoms))


def test_crowded_labels_finds_neighbours_within_the_radius():
    labels = np.zeros((30, 60), np.int32)
    labels[5:15, 5:15] = 1
    labels[5:15, 18:25] = 2  # 3 px right of label 1 (columns 15, 16, 17 empty)
    labels[5:15, 45:55] = 3  # 20 px from label 2
    labels[20:22, 56:58] = 4  # diagonal neighbour of 3, 6 px away
    assert crowded_labels(labels, 4, 3).tolist() == [False, False, False, False, False]
    assert crowded_labels(labels, 4, 4).tolist() == [False, True, True, False, False]
    assert crowded_labels(labels, 4, 6).tolist() == [False, True, True, True, True]
    assert not crowded_labels(labels, 4, 0).any()
    # neighbours on either side of a strip border (crowded_labels works in row strips)
    tall = np.zeros((600, 20), np.int32)
    tall[240:254, 2:10] = 1
    tall[256:270, 2:10] = 2  # 3 rows below label 1 (rows 254, 255 empty), past row 256
    tall[300:310, 2:10] = 3
    assert crowded_labels(tall, 3, 3).tolist() == [False, True, True, False]
    assert crowded_labels(tall, 3, 2).tolist() == [False, False, False, False]


def test_seed_rgb_channels():
    rgb = np.zeros((3, 10, 10), np.uint8)
    rgb[:, 2:6, 2:6] = 255  # white building
    rgb[1, 6, 2:6] = 255  # green outline outside it
    fp, ct = building_channels(rgb, ["red", "green", "blue"])
    assert ct is not None
    assert fp[3, 3] == 255 and fp[6, 3] == 0 and ct[6, 3] == 255 and ct[3, 3] == 0
    masks = np.zeros((2, 4, 4), np.float32)
    fp, ct = building_channels(masks, ["footprint", "contour"])
    assert np.shares_memory(fp, masks[0]) and ct is not None and np.shares_memory(ct, masks[1])


def test_to_map_applies_the_grid_transform():
    t = Affine(0.5, 0, 500000, 0, -0.5, 5000000)
    out = to_map(np.array([shapely.box(0, 0, 10, 4)], dtype=object), t)
    assert out[0].bounds == (500000, 4999998, 500005, 5000000)
    assert out[0].area == pytest.approx(10)


def terraces(seed: int) -> list[shapely.Polygon]:
    """Rows of 4-house terraces with crooked party walls (random 4-point lines), ~120 px
    long, a gap between terraces."""
    rng = np.random.default_rng(seed)
    polys = []
    for top in range(6, 240, 42):
        start = 4
        while start < 330:
            xs = start + np.cumsum(np.r_[0, rng.integers(20, 36, 4)])
            walls = [[(x + int(rng.integers(-6, 7)), top + f * 33) for f in (0, 0.33, 0.66, 1)]
                     for x in xs]
            for a, b in itertools.pairwise(walls):
                house = shapely.Polygon(a + b[::-1])
                if house.is_valid and house.area > 50:
                    polys.append(house)
            start = int(xs[-1]) + 14
    return polys


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_neighbours_owned_by_different_blocks_never_overlap_after_simplification(seed):
    """A party wall between a house one block owns and one its neighbour owns is
    simplified alike in both blocks (simplified apart, the two sides overlapped: 38 pairs on
    a 16384² prediction, and some in each of these scenes)."""
    shape = (260, 400)
    polys = terraces(seed)
    fp = burn(polys, shape)
    ct = contours(polys, shape)

    def read(rect: Rect):
        return (fp[rect.row0:rect.row1, rect.col0:rect.col1],
                ct[rect.row0:rect.row1, rect.col0:rect.col1])

    options = PolygonOptions(simplify=1.5, min_area=10)
    tiled = polygonize_tiled(read, *shape, block=64, halo=128, options=options)
    assert len(tiled) == len(polys) >= 60
    geoms = tiled.geoms
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pairs = left < right
    assert pairs.sum() >= 40  # the party walls
    overlap = shapely.area(shapely.intersection(geoms[left[pairs]], geoms[right[pairs]]))
    assert overlap.max() < 1e-9

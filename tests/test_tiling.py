"""Grid, split, mask and contour properties of the tiler (library level)."""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest
import rasterio
import shapely
import shapely.affinity
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.crs import CRS
from rasterio.enums import Resampling

from geotiler.errors import ConfigError
from geotiler.io import RasterInfo, ground_gsd, read_window
from geotiler.tiles.config import TileConfig
from geotiler.tiles.contours import draw_contours
from geotiler.tiles.grid import assign_splits, guard_raster_overlaps, make_grid
from geotiler.tiles.masks import rasterize_labels, strip_masks, tile_masks
from geotiler.tiles.task import tile_strips

from conftest import write_raster


def fake_info(width: int, height: int, res: float = 0.5) -> RasterInfo:
    transform = Affine(res, 0, 1000.0, 0, -res, 2000.0)
    return RasterInfo(
        path=__import__("pathlib").Path("x.tif"),
        name="x",
        crs=CRS.from_epsg(32633),
        transform=transform,
        width=width,
        height=height,
        bands=(1,),
        band_names=("gray",),
        dtype="uint8",
        nodata=None,
        gsd=(res, res),
    )


@settings(max_examples=200, deadline=None)
@given(
    width=st.integers(1, 3000),
    height=st.integers(1, 3000),
    size=st.sampled_from([16, 64, 256]),
    overlap_frac=st.sampled_from([0, 0.25, 0.5]),
    scale=st.sampled_from([None, 0.5, 1.0, 2.64]),
)
def test_tiles_cover_the_raster_exactly_with_fewest_tiles(width, height, size, overlap_frac, scale):
    overlap = int(size * overlap_frac)
    config = TileConfig(size=size, overlap=overlap, scale=scale)
    info = fake_info(width, height)
    try:
        grid = make_grid(info, config)
    except ConfigError:
        assert (scale or 1) > min(width, height)  # raster smaller than one target pixel
        return
    extent_x = width / (scale or 1)
    extent_y = height / (scale or 1)
    for count, extent in ((grid.cols, extent_x), (grid.rows, extent_y)):
        # the last tile reaches the far edge, and one tile fewer would not
        assert (count - 1) * grid.stride + size >= extent - 1e-6
        if count > 1:
            assert (count - 2) * grid.stride + size < extent
        # no tile starts past the edge
        assert (count - 1) * grid.stride < max(extent, 1)
    # the union of tile bounds covers the raster bounds
    left, bottom, _, _ = grid.bounds(grid.rows - 1, 0)
    _, _, right, top = grid.bounds(0, grid.cols - 1)
    rl, rb, rr, rt = info.bounds
    assert left <= rl + 1e-6 and top >= rt - 1e-6 and right >= rr - 1e-6 and bottom <= rb + 1e-6


@settings(max_examples=25, deadline=None)
@given(row=st.integers(0, 3), col=st.integers(0, 3), overlap=st.sampled_from([0, 8, 16]))
def test_tile_transform_maps_tile_pixels_to_source_pixels(tmp_path_factory, row, col, overlap):
    tmp = tmp_path_factory.mktemp("grid")
    h, w = 150, 170
    data = np.arange(h * w, dtype=np.uint32).reshape(1, h, w)
    path = write_raster(tmp / "ramp.tif", data)
    info = fake_info(w, h)
    config = TileConfig(size=48, overlap=overlap)
    grid = make_grid(info, config)
    if row >= grid.rows or col >= grid.cols:
        return
    with rasterio.open(path) as src:
        image, valid = read_window(src, (1,), grid.bounds(row, col), 48, Resampling.nearest)
        transform = grid.transform(row, col)
        for i, j in [(0, 0), (5, 7), (47, 47), (20, 33)]:
            x, y = transform * (j + 0.5, i + 0.5)
            src_row, src_col = src.index(x, y)
            if 0 <= src_row < h and 0 <= src_col < w:
                assert valid[i, j]
                assert image[0, i, j] == data[0, src_row, src_col]
            else:
                assert not valid[i, j]  # padding past the edge is marked invalid


@settings(max_examples=60, deadline=None)
@given(
    cx=st.floats(20, 108),
    cy=st.floats(20, 108),
    w=st.floats(6, 60),
    h=st.floats(6, 60),
    angle=st.floats(0, 90),
)
def test_rasterized_area_matches_polygon_area(cx, cy, w, h, angle):
    poly = shapely.affinity.rotate(
        shapely.box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), angle, origin="centroid"
    )
    transform = Affine(1, 0, 0, 0, -1, 128)
    labels = rasterize_labels(np.array([poly], dtype=object), transform, (128, 128))
    inside = poly.intersection(shapely.box(0, 0, 128, 128)).area
    # pixel-centre rule: the error is bounded by about half the perimeter's pixels
    assert abs(np.count_nonzero(labels) - inside) <= 0.5 * poly.length + 2


@settings(max_examples=40, deadline=None)
@given(
    boxes=st.lists(
        st.tuples(st.integers(5, 100), st.integers(5, 100), st.integers(4, 30), st.integers(4, 30)),
        min_size=1,
        max_size=5,
    ),
    width=st.sampled_from([1, 2, 3, 5]),
)
def test_contour_pixels_lie_on_footprint_boundaries(boxes, width):
    labels = np.zeros((140, 140), dtype=np.int32)
    for k, (x, y, w, h) in enumerate(boxes, start=1):
        labels[y : y + h, x : x + w] = k
    contour = draw_contours(labels, width) > 0
    # distance of every pixel to the nearest label boundary (pixels whose 4-neighbour differs)
    boundary = np.zeros_like(contour)
    boundary[:-1] |= labels[:-1] != labels[1:]
    boundary[1:] |= labels[:-1] != labels[1:]
    boundary[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    boundary[:, 1:] |= labels[:, :-1] != labels[:, 1:]
    distance = cv2.distanceTransform((~boundary).astype(np.uint8), cv2.DIST_L2, 3)
    assert contour.any()
    assert distance[contour].max() <= width / 2 + 1.5
    # and every building's boundary is drawn
    for k in np.unique(labels[labels > 0]):
        edge = (labels == k) & boundary
        assert contour[edge].mean() > 0.9


def _outlines_building_by_building(labels: np.ndarray, width: int) -> np.ndarray:
    """The seed's way: trace each building's own binary mask, draw its outline."""
    canvas = np.zeros(labels.shape, np.uint8)
    for k in np.unique(labels[labels > 0]):
        region = (labels == k).astype(np.uint8)
        contours, _ = cv2.findContours(region, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, 255, thickness=width)
    return canvas


@settings(max_examples=60, deadline=None)
@given(
    boxes=st.lists(
        st.tuples(st.integers(-10, 60), st.integers(-10, 60), st.integers(2, 40),
                  st.integers(2, 40)),
        min_size=1,
        max_size=8,
    ),
    holes=st.booleans(),
    width=st.sampled_from([1, 2, 3, 5]),
)
def test_contours_equal_tracing_each_building_alone(boxes, holes, width):
    """One flood-fill trace of the label image draws what tracing building by building
    does: touching, overlapping, holed and edge-cut buildings included."""
    labels = np.zeros((56, 64), dtype=np.int32)
    for k, (x, y, w, h) in enumerate(boxes, start=1):
        labels[max(y, 0) : y + h, max(x, 0) : x + w] = k
        if holes and w > 6 and h > 6:
            labels[max(y, 0) + 3 : y + h - 3, max(x, 0) + 3 : x + w - 3] = 0
    np.testing.assert_array_equal(
        draw_contours(labels, width), _outlines_building_by_building(labels, width)
    )


def test_touching_buildings_keep_a_contour_line_between_them():
    geoms = np.array([shapely.box(10, 10, 50, 40), shapely.box(50, 10, 80, 40)], dtype=object)
    mask, count = tile_masks(geoms, Affine(1, 0, 0, 0, -1, 64), 64, contour_width=2, target="masks")
    assert count == 2
    row = 64 - 25
    assert mask[0, row, 20:70].min() == 255  # one merged footprint...
    assert mask[1, row, 48:52].max() == 255  # ...with the shared wall outlined


def test_building_cut_by_tile_edge_gets_no_outline_along_the_edge():
    geoms = np.array([shapely.box(-20, 10, 30, 40)], dtype=object)
    mask, _ = tile_masks(geoms, Affine(1, 0, 0, 0, -1, 64), 64, contour_width=3, target="masks")
    assert mask[1, 64 - 25, 0:3].max() == 0
    assert mask[1, 64 - 25, 28:32].max() == 255


def test_seed_rgb_target_is_white_buildings_green_outlines_blurred():
    geoms = np.array([shapely.box(16, 16, 48, 48)], dtype=object)
    rgb, _ = tile_masks(
        geoms, Affine(1, 0, 0, 0, -1, 64), 64, contour_width=3, target="seed-rgb", seed_blur=3
    )
    assert rgb.shape == (3, 64, 64)
    assert tuple(rgb[:, 32, 32]) == (255, 255, 255)  # roof centre white
    assert tuple(rgb[:, 2, 2]) == (0, 0, 0)  # background black
    outside_edge = rgb[:, 32, 14]  # just outside the wall: green only
    assert outside_edge[1] > 100 and outside_edge[0] < outside_edge[1]
    values = np.unique(rgb)
    assert len(values) > 3  # blurred, not binary


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 12),
    cols=st.integers(1, 12),
    overlap=st.sampled_from([0, 64, 128, 200]),
    seed=st.integers(0, 5),
    block=st.integers(1, 4),
)
def test_overlapping_tiles_never_fall_in_different_splits(rows, cols, overlap, seed, block):
    config = TileConfig(size=256, overlap=overlap, seed=seed, block_tiles=block)
    grid = make_grid(fake_info(cols * 200 + 60, rows * 200 + 60), config)
    (labels,) = assign_splits([("a", grid)], config)
    kept = [(r, c) for r in range(grid.rows) for c in range(grid.cols) if labels[r, c]]
    for r, c in kept:
        b1 = shapely.box(*grid.bounds(r, c))
        for r2, c2 in kept:
            if labels[r2, c2] != labels[r, c]:
                assert b1.intersection(shapely.box(*grid.bounds(r2, c2))).area < 1e-6


def _kept_boxes(grid, labels, to_crs=None):
    boxes = []
    for r in range(grid.rows):
        for c in range(grid.cols):
            if labels[r, c]:
                box = shapely.box(*grid.bounds(r, c))
                if to_crs is not None:
                    box = shapely.transform(shapely.segmentize(box, 10.0), to_crs)
                boxes.append((labels[r, c], box))
    return boxes


@settings(max_examples=40, deadline=None)
@given(
    dx=st.integers(-900, 900),
    dy=st.integers(-900, 900),
    overlap=st.sampled_from([0, 128]),
    seed=st.integers(0, 5),
)
def test_overlapping_rasters_never_share_ground_across_splits(dx, dy, overlap, seed):
    """Two rasters covering some of the same ground (clips of one scene): no kept tile of
    one overlaps a kept tile of the other in another split (the README's 'no pixel is in
    two splits'), and nothing is dropped where they do not overlap."""
    config = TileConfig(size=256, overlap=overlap, seed=seed, block_tiles=1)
    a = make_grid(fake_info(1200, 1100), config)
    info_b = fake_info(1000, 900)
    info_b = dataclasses.replace(info_b, transform=info_b.transform * Affine.translation(dx, dy))
    b = make_grid(info_b, config)
    crs = CRS.from_epsg(32633)
    labels = assign_splits([("a", a), ("b", b)], config)
    guarded = guard_raster_overlaps([(a, crs), (b, crs)], labels)
    kept_a, kept_b = _kept_boxes(a, guarded[0]), _kept_boxes(b, guarded[1])
    for split_a, box_a in kept_a:
        for split_b, box_b in kept_b:
            if split_a != split_b:
                assert box_a.intersection(box_b).area <= 1e-3 * box_a.area
    if abs(dx) >= 1200 * 2 or abs(dy) >= 1100 * 2:  # 0.5 m pixels: apart on the ground
        assert all((g == lab).all() for g, lab in zip(guarded, labels, strict=True))


def test_overlapping_rasters_in_two_crs_are_guarded():
    """The same check when the second raster is in another CRS (compared after
    reprojection): a UTM raster and a web-mercator copy of the same ground."""
    from pyproj import Transformer

    config = TileConfig(size=128, seed=1, block_tiles=1)
    info_a = fake_info(800, 800)
    utm, merc = CRS.from_epsg(32633), CRS.from_epsg(3857)
    to_merc = Transformer.from_crs(utm, merc, always_xy=True)
    x0, y0 = to_merc.transform(info_a.transform.c + 100, info_a.transform.f - 100)
    info_b = dataclasses.replace(info_a, crs=merc, transform=Affine(0.7, 0, x0, 0, -0.7, y0))
    a, b = make_grid(info_a, config), make_grid(info_b, config)
    labels = assign_splits([("a", a), ("b", b)], config)
    guarded = guard_raster_overlaps([(a, utm), (b, merc)], labels)
    to_utm = Transformer.from_crs(merc, utm, always_xy=True)
    kept_b = _kept_boxes(b, guarded[1], lambda xy: np.column_stack(
        to_utm.transform(xy[:, 0], xy[:, 1])))
    assert kept_b  # the guard drops some tiles, not all
    for split_a, box_a in _kept_boxes(a, guarded[0]):
        for split_b, box_b in kept_b:
            if split_a != split_b:
                assert box_a.intersection(box_b).area <= 2e-3 * box_a.area


def test_split_is_deterministic_and_follows_fractions():
    config = TileConfig(size=64, block_tiles=1, split=(0.6, 0.2, 0.2), seed=3)
    grid = make_grid(fake_info(64 * 10, 64 * 10), config)
    (a,) = assign_splits([("a", grid)], config)
    (b,) = assign_splits([("a", grid)], config)
    assert (a == b).all()
    counts = {s: int((a == s).sum()) for s in ("train", "val", "test")}
    assert counts == {"train": 60, "val": 20, "test": 20}
    (c,) = assign_splits(
        [("a", grid)], TileConfig(size=64, block_tiles=1, split=(0.6, 0.2, 0.2), seed=4)
    )
    assert (a != c).any()


def test_ground_gsd_geographic_and_web_mercator():
    # 1e-5 degree pixels at the equator are ~1.11 m east-west
    gx, gy = ground_gsd(CRS.from_epsg(4326), Affine(1e-5, 0, 30.0, 0, -1e-5, 0.0005), 100, 100)
    assert gx == pytest.approx(1.113, rel=1e-3) and gy == pytest.approx(1.106, rel=1e-3)
    # Web Mercator at 60 degrees north: nominal 1 m pixels are 0.5 m on the ground
    y60 = 8399737.89
    gx, _ = ground_gsd(CRS.from_epsg(3857), Affine(1, 0, 0, 0, -1, y60), 10, 10)
    assert gx == pytest.approx(0.5, rel=1e-3)
    # UTM stays nominal
    assert ground_gsd(CRS.from_epsg(32633), Affine(0.5, 0, 5e5, 0, -0.5, 5e6), 10, 10) == (0.5, 0.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 8},
        {"size": 64, "overlap": 64},
        {"gsd": -1.0},
        {"gsd": 1.0, "scale": 2.0},
        {"split": (0.5, 0.5, 0.5)},
        {"bands": (0,)},
        {"contour_width": -1},
        {"keep_empty": 2.0},
        {"seed_blur": 4},
    ],
)
def test_bad_settings_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        TileConfig(**kwargs)


def test_config_round_trips_through_json():
    config = TileConfig(size=128, bands=(3, 2, 1), split=(0.7, 0.2, 0.1), gsd=0.3)
    assert TileConfig.from_dict(config.to_dict()) == config
    assert config.fingerprint() == TileConfig.from_dict(config.to_dict()).fingerprint()
    assert math.isclose(sum(config.split), 1)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), ntiles=st.integers(2, 5), overlap=st.sampled_from([0, 8, 20]))
def test_strip_masks_equal_tile_by_tile_masks(seed: int, ntiles: int, overlap: int) -> None:
    """Masks made a strip at a time are the masks made one tile at a time."""
    rng = np.random.default_rng(seed)
    size, stride = 48, 48 - overlap
    width = (ntiles - 1) * stride + size
    geoms = []
    for _ in range(12):
        x, y = rng.uniform(-10, width + 10), rng.uniform(-10, size + 10)
        w, h = rng.uniform(3, 30, size=2)
        geoms.append(shapely.affinity.rotate(shapely.box(x, y, x + w, y + h), rng.uniform(0, 90)))
    geoms_arr = np.array(geoms, dtype=object)
    first = Affine(1, 0, 0, 0, -1, size)
    strip = strip_masks(geoms_arr, first, size, stride, ntiles, contour_width=3, target="masks")
    for k, (mask, count) in enumerate(strip):
        alone, alone_count = tile_masks(
            geoms_arr,
            first * Affine.translation(k * stride, 0),
            size,
            contour_width=3,
            target="masks",
        )
        np.testing.assert_array_equal(mask, alone)
        assert count == alone_count


def test_tile_strips_are_runs_of_adjacent_tiles() -> None:
    positions = [(0, 0), (0, 1), (0, 2), (0, 5), (0, 6), (1, 0), (1, 1)]
    assert list(tile_strips(positions, max_tiles=2)) == [
        (0, [0, 1]),
        (0, [2]),
        (0, [5, 6]),
        (1, [0, 1]),
    ]

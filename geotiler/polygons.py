"""Probability or mask blocks -> building polygons, each building once across block borders.

Everything here works in *pixel* coordinates of the grid (x = column, y = row, both
counted from the grid's top-left corner), so tolerances are in pixels and areas in square
pixels; :func:`to_map` places the result on the map with the grid's affine transform.

Steps for one block (:func:`polygonize_block`):

1. Foreground: ``footprint >= threshold``; blocks without foreground stop here.
2. Touching buildings are split with the contour channel: the seeds are the foreground
   pixels off the contour (``footprint >= t and contour < t``), labelled in connected
   components; each seed grows back over the foreground by about ``grow`` pixels (the
   contour width; 4-neighbour dilation restricted to the foreground, up to ``2 grow + 2``
   steps so corners are reached too) so the building regains the outline the contour took
   from it. Foreground no seed reaches becomes a building of its own.
3. ``rasterio.features.shapes`` traces each labelled region (background masked out).
4. A polygon is kept only by the block whose core holds its representative point, so a
   building crossing a border comes back once; the block is read with a halo larger than
   the largest building so that the owner sees it whole.
5. Simplify (:func:`simplify_coverage`: crowded buildings as one coverage, the others
   by Douglas-Peucker, so that no two overlap), optionally square corners (the minimum
   rotated rectangle where the polygon fills enough of it), and drop those below
   ``min_area`` (regions with fewer pixels are dropped before tracing, the rest once more
   after simplification, so every polygon kept has at least that area).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import rasterio.features
import shapely
from affine import Affine

from geotiler.instances import PixelInstanceOptions, components, separate
from geotiler.predict.blend import threshold_uint8
from geotiler.predict.plan import BLOCK_PX, HALO_PX, Rect, plan_blocks
from geotiler.tiles.contours import SEED_RGB_CHANNELS, seed_rgb_planes

Reader = Callable[[Rect], tuple[np.ndarray, np.ndarray | None]]


@dataclass(frozen=True)
class PolygonOptions:
    """How a block becomes polygons; lengths in pixels, areas in square pixels."""

    threshold: float = 0.5
    instances: PixelInstanceOptions = field(default_factory=PixelInstanceOptions)
    simplify: float = 0.0
    min_area: float = 0.0
    regularize: bool = False
    rectangularity: float = 0.85


@dataclass
class PixelPolygons:
    """Polygons in grid pixel coordinates with their area (px²) and mean probability."""

    geoms: np.ndarray  # shapely Polygons, object array
    area: np.ndarray  # float64, square pixels
    score: np.ndarray  # float64 in [0, 1]

    @classmethod
    def empty(cls) -> PixelPolygons:
        return cls(np.empty(0, dtype=object), np.empty(0), np.empty(0))

    def __len__(self) -> int:
        return len(self.geoms)

    @classmethod
    def concat(cls, parts: Sequence[PixelPolygons]) -> PixelPolygons:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.geoms for p in parts]),
                   np.concatenate([p.area for p in parts]),
                   np.concatenate([p.score for p in parts]))


def building_channels(probs: np.ndarray, channels: Sequence[str]
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """The footprint and contour planes of a (K, H, W) block, whatever the model's target.

    ``footprint``/``contour`` channels are taken as they are. The seed's RGB target (white
    buildings, green outlines) is read by :func:`geotiler.tiles.contours.seed_rgb_planes`.
    Anything else: the first channel, no contour.
    """
    names = list(channels)
    if "footprint" in names:
        footprint = probs[names.index("footprint")]
        contour = probs[names.index("contour")] if "contour" in names else None
        return footprint, contour
    if {"red", "green", "blue"} <= set(names):
        fp, ct = seed_rgb_planes(*(probs[names.index(c)].astype(np.float32)
                                   for c in SEED_RGB_CHANNELS))
        if probs.dtype == np.uint8:
            return np.rint(fp).astype(np.uint8), np.rint(ct).astype(np.uint8)
        return fp, ct
    return probs[0], None


def foreground(plane: np.ndarray, threshold: float) -> np.ndarray:
    """``plane >= threshold`` for probabilities in [0, 1], uint8 0..255 or booleans."""
    if plane.dtype == np.bool_:
        return plane
    if plane.dtype == np.uint8:
        return plane >= threshold_uint8(threshold)
    return plane >= threshold


_ONE = Affine.translation(1, 1)


def label_buildings(footprint: np.ndarray, contour: np.ndarray | None, threshold: float,
                    instances: PixelInstanceOptions | None = None, min_pixels: float = 0.0
                    ) -> tuple[int, np.ndarray]:
    """Label each building of a block (int32, 0 = background); returns (count, labels).

    Foreground specks of fewer than ``min_pixels`` pixels are dropped first: no building
    that large can come out of them, and on noisy maps they are most of the work. With a
    contour plane, touching buildings are separated by :func:`geotiler.instances.separate`.
    """
    fg = foreground(footprint, threshold)
    if not fg.any():
        return 0, np.zeros(fg.shape, dtype=np.int32)
    if min_pixels > 1:
        _, specks, stats, _ = cv2.connectedComponentsWithStats(
            fg.view(np.uint8), connectivity=4, ltype=cv2.CV_32S)
        small = stats[:, cv2.CC_STAT_AREA] < min_pixels
        small[0] = False
        if small.any():
            fg = fg & ~small[specks]
            if not fg.any():
                return 0, np.zeros(fg.shape, dtype=np.int32)
    if contour is None:
        return components(fg)
    return separate(fg, contour, instances or PixelInstanceOptions())


def trace(labels: np.ndarray, count: int, score_plane: np.ndarray,
          offset: tuple[int, int] = (0, 0), min_pixels: float = 0.0,
          within: tuple[slice, slice] | None = None, also: np.ndarray | None = None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Polygons of every labelled region (pixel coordinates shifted by ``offset`` = (row,
    col)), each polygon's mean of ``score_plane`` (scaled to [0, 1] for uint8) and its
    label.

    Regions of fewer than ``min_pixels`` pixels are dropped before tracing (noise costs
    nothing then); a region's pixel count is its traced polygon's area. With ``within``
    (a row and a column slice of ``labels``), only regions with a pixel there are traced,
    and those where ``also`` ((count + 1,) bool by label) is true: a block's halo holds
    many buildings it does not own, and tracing is the costly part.
    """
    none = np.empty(0, dtype=object), np.empty(0), np.empty(0, dtype=np.int64)
    if count == 0:
        return none
    flat = labels.ravel()
    inside = np.flatnonzero(flat)  # statistics over building pixels only
    ids = flat[inside]
    counts = np.bincount(ids, minlength=count + 1)
    sums = np.bincount(ids, weights=score_plane.ravel()[inside], minlength=count + 1)
    means = sums / np.maximum(counts, 1)
    if score_plane.dtype == np.uint8:
        means /= 255.0
    drop = counts < min_pixels
    if within is not None:
        outside = np.bincount(labels[within].ravel(), minlength=count + 1) == 0
        drop |= outside & ~also if also is not None else outside
    drop[0] = False
    if drop.any():
        lut = np.arange(count + 1, dtype=np.int32)
        lut[drop] = 0
        labels = lut[labels]
    row0, col0 = offset
    rings: list[list[tuple[float, float]]] = []
    ring_owner: list[int] = []
    scores: list[float] = []
    values: list[int] = []
    # Traced one pixel off (an identity transform would make rasterio warn), shifted back.
    shift = Affine.translation(col0 - 1, row0 - 1)
    for k, (geom, value) in enumerate(rasterio.features.shapes(
            labels, mask=labels > 0, connectivity=4, transform=_ONE)):
        for ring in geom["coordinates"]:  # exterior first, then holes
            rings.append(ring)
            ring_owner.append(k)
        scores.append(float(means[int(value)]))
        values.append(int(value))
    if not scores:
        return none
    # Built in two vectorized calls: ~5x faster than shapely.geometry.shape per polygon.
    lengths = np.fromiter((len(r) for r in rings), dtype=np.intp, count=len(rings))
    coords = np.array([xy for ring in rings for xy in ring], dtype=np.float64)
    coords += (shift.c, shift.f)
    linear = shapely.linearrings(coords, indices=np.repeat(np.arange(len(rings)), lengths))
    geoms = shapely.polygons(linear, indices=np.asarray(ring_owner))
    return np.asarray(geoms, dtype=object), np.array(scores), np.array(values, dtype=np.int64)


def crowded_labels(labels: np.ndarray, count: int, radius: int) -> np.ndarray:
    """(count + 1,) bool: which labels have another label within ``radius`` px
    (Chebyshev distance, 8-neighbours at 1), from the label image alone.

    Two max/min filters (OpenCV, float32: exact for labels below 2**24); on a 2560² block
    ~40 ms, where testing the traced polygons against each other in GEOS took minutes and
    ~24 GB on one blob of 184,000 holes (the seed recipe's Otsu mask).
    """
    if count >= 2**24:
        raise ValueError(f"{count} labels: too many for a float32 filter")
    crowded = np.zeros(count + 1, dtype=bool)
    if count < 2 or radius < 1:
        return crowded
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    rows = labels.shape[0]
    for top in range(0, rows, _CROWD_STRIP):  # strips: a few MB at a time, not 100 per block
        lo, hi = max(top - radius, 0), min(top + _CROWD_STRIP + radius, rows)
        part = labels[lo:hi]
        value = part.astype(np.float32)
        near = cv2.dilate(value, kernel) != value
        near |= cv2.erode(np.where(part > 0, value, np.float32(np.inf)), kernel) != value
        keep = slice(top - lo, top - lo + min(_CROWD_STRIP, rows - top))
        inside = part[keep]
        crowded[inside[near[keep] & (inside > 0)]] = True
    return crowded


_CROWD_STRIP = 256  # rows per strip of crowded_labels


def finish(geoms: np.ndarray, scores: np.ndarray, options: PolygonOptions,
           crowded: np.ndarray | None = None, kept: np.ndarray | None = None
           ) -> PixelPolygons:
    """Simplify, square and filter traced polygons (``crowded``: which ones have a
    neighbour within :func:`crowding_radius`, see :func:`simplify_coverage`; None: all of
    them, so everything is simplified as one coverage). ``kept``: which ones to return
    after the simplification (the others only took part in the coverage; default all)."""
    if len(geoms) == 0:
        return PixelPolygons.empty()
    if options.simplify > 0:
        if crowded is None:
            crowded = np.ones(len(geoms), dtype=bool)
        geoms = simplify_coverage(geoms, options.simplify, crowded)
    if kept is not None:
        geoms, scores = geoms[kept], scores[kept]
    if options.regularize:
        geoms = regularize(geoms, options.rectangularity)
    areas = shapely.area(geoms)
    keep = (areas >= options.min_area) & (areas > 0)
    return PixelPolygons(geoms[keep], areas[keep], scores[keep])


def _unusable(geoms: np.ndarray) -> np.ndarray:
    """Where a simplified shape is not a valid, non-empty Polygon."""
    return ~shapely.is_valid(geoms) | (shapely.get_type_id(geoms) != 3) | shapely.is_empty(geoms)


def crowding_radius(tolerance: float) -> int:
    """Pixels within which a neighbour makes a polygon part of the coverage: Douglas-
    Peucker moves an outline by at most ``tolerance``, so two outlines farther apart than
    twice that cannot meet after simplification (one pixel more for rounding)."""
    return math.ceil(2 * tolerance) + 1


def simplify_coverage(geoms: np.ndarray, tolerance: float, crowded: np.ndarray
                      ) -> np.ndarray:
    """Simplify traced polygons (pixel outlines that never overlap) so that they still
    never overlap and neighbours still share their borders; ``tolerance`` in the polygons'
    units (px here).

    Polygons with a neighbour within :func:`crowding_radius` (``crowded``, one bool per
    polygon, from :func:`crowded_labels`) are simplified together as one coverage
    (``shapely.coverage_simplify``, GEOS: each shared border once, so neighbours keep
    touching and never overlap). The others are simplified on their own by Douglas-Peucker
    (``shapely.simplify``), ~40x cheaper per polygon than the coverage simplifier on the
    staircase outlines of a probability map (`benchmarks/bench_predict.py`); they are too
    far from any other polygon to meet it. One that Douglas-Peucker makes invalid or
    empty joins the coverage; shapes the coverage simplifier cannot simplify are kept as
    traced.
    """
    geoms = np.asarray(geoms, dtype=object)
    out = np.asarray(shapely.simplify(geoms, tolerance, preserve_topology=False), dtype=object)
    joint = np.asarray(crowded, dtype=bool) | _unusable(out)
    if joint.any():
        together = np.asarray(shapely.coverage_simplify(geoms[joint], tolerance), dtype=object)
        bad = _unusable(together)
        together[bad] = geoms[joint][bad]
        out[joint] = together
    return out


def regularize(geoms: np.ndarray, rectangularity: float = 0.85) -> np.ndarray:
    """Replace each polygon that fills at least ``rectangularity`` of its minimum rotated
    rectangle by that rectangle (square corners); keep the others as they are."""
    if len(geoms) == 0:
        return geoms
    rects = shapely.oriented_envelope(geoms)
    rect_area = shapely.area(rects)
    fill = np.divide(shapely.area(geoms), rect_area, out=np.zeros(len(geoms)),
                     where=rect_area > 0)
    is_poly = shapely.get_type_id(rects) == 3  # degenerate inputs give lines or points
    out = geoms.copy()
    swap = (fill >= rectangularity) & is_poly
    out[swap] = rects[swap]
    return out


def polygonize_block(footprint: np.ndarray, contour: np.ndarray | None, region: Rect,
                     core: Rect | None = None, options: PolygonOptions | None = None
                     ) -> PixelPolygons:
    """Polygons of the buildings of ``core`` from planes covering ``region`` (core + halo).

    ``footprint``/``contour`` cover ``region`` of the grid; coordinates in the result are
    grid pixels. A polygon is kept when its representative point lies in ``core`` (the
    whole region when None).
    """
    options = options or PolygonOptions()
    if footprint.shape != region.shape:
        raise ValueError(f"planes {footprint.shape} do not match region {region.shape}")
    count, labels = label_buildings(footprint, contour, options.threshold, options.instances,
                                    options.min_area)
    simplify = options.simplify > 0 and count > 0
    crowded = (crowded_labels(labels, count, crowding_radius(options.simplify)) if simplify
               else None)
    within = None
    if core is not None:
        within = (slice(core.row0 - region.row0, core.row1 - region.row0),
                  slice(core.col0 - region.col0, core.col1 - region.col0))
    # The halo's crowded buildings are traced too: they join the owned ones' coverage, so
    # a border shared with a building another block owns is simplified there and here
    # alike (simplified apart, the two sides overlapped: 38 pairs on a 16384² raster).
    geoms, scores, values = trace(labels, count, footprint, (region.row0, region.col0),
                                  min_pixels=options.min_area, within=within,
                                  also=crowded)
    owned = np.ones(len(geoms), dtype=bool)
    if core is not None and len(geoms):
        points = shapely.get_coordinates(shapely.point_on_surface(geoms))
        cols, rows = points[:, 0], points[:, 1]
        owned = ((rows >= core.row0) & (rows < core.row1)
                 & (cols >= core.col0) & (cols < core.col1))
    keep = owned | (crowded[values] if crowded is not None else False)
    return finish(geoms[keep], scores[keep], options,
                  crowded[values[keep]] if crowded is not None else None, owned[keep])


def polygonize_tiled(read: Reader, height: int, width: int, *, block: int = BLOCK_PX,
                     halo: int = HALO_PX, options: PolygonOptions | None = None) -> PixelPolygons:
    """Polygonize a ``height`` x ``width`` grid block by block; memory bounded by a block.

    ``read(rect)`` returns the footprint and contour planes (contour may be None) of a
    rectangle of the grid. Each block is read grown by ``halo`` and keeps the polygons it
    owns, so the result equals a one-pass polygonization of the grid as long as no
    building is larger than the halo.
    """
    plan = plan_blocks(height, width, 1, 0, block)
    parts = []
    for i, j in plan.indexes:
        core = plan.core(i, j)
        region = core.grow(halo, height, width)
        fp, ct = read(region)
        parts.append(polygonize_block(fp, ct, region, core, options))
    return PixelPolygons.concat(parts)


def to_map(geoms: np.ndarray, transform: Affine) -> np.ndarray:
    """Pixel-coordinate geometries -> map coordinates of the grid's affine transform."""
    if len(geoms) == 0:
        return geoms
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f

    def apply(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([a * x + b * y + c, d * x + e * y + f])

    return shapely.transform(geoms, apply)

"""Building masks rasterized straight onto a tile's grid (never resized from another grid)."""

from __future__ import annotations

import numpy as np
import rasterio.features
import shapely
from affine import Affine

from geotiler.contours import draw_contours, seed_rgb_target


def rasterize_labels(geoms: np.ndarray, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Burn each polygon with its own id (1..n, int32) so touching buildings stay apart.

    A pixel belongs to a polygon when its centre falls inside it (GDAL's default rule),
    which keeps the rasterized area unbiased. Later polygons win where two overlap.
    """
    if len(geoms) == 0:
        return np.zeros(shape, dtype=np.int32)
    shapes = ((geom, index + 1) for index, geom in enumerate(geoms))
    return rasterio.features.rasterize(
        shapes, out_shape=shape, transform=transform, fill=0, dtype="int32"
    )


def _pixel_boxes(geoms: np.ndarray, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """(id, row0, row1, col0, col1) pixel boxes of the polygons, clipped to the grid."""
    if len(geoms) == 0:
        return np.zeros((0, 5), dtype=np.int64)
    bounds = shapely.bounds(geoms)  # minx, miny, maxx, maxy
    inverse = ~transform
    c0, r0 = inverse * (bounds[:, 0], bounds[:, 3])
    c1, r1 = inverse * (bounds[:, 2], bounds[:, 1])
    boxes = np.stack(
        [
            np.arange(1, len(geoms) + 1),
            np.floor(r0) - 1,
            np.ceil(r1) + 1,
            np.floor(c0) - 1,
            np.ceil(c1) + 1,
        ],
        axis=1,
    )
    boxes[:, 1:3] = np.clip(boxes[:, 1:3], 0, shape[0])
    boxes[:, 3:5] = np.clip(boxes[:, 3:5], 0, shape[1])
    boxes = boxes.astype(np.int64)
    return boxes[(boxes[:, 2] > boxes[:, 1]) & (boxes[:, 4] > boxes[:, 3])]


def tile_masks(
    geoms: np.ndarray,
    transform: Affine,
    size: int,
    *,
    contour_width: int,
    target: str,
    seed_blur: int = 5,
) -> tuple[np.ndarray, int]:
    """Target channels (uint8, 0..255) of one tile and the number of buildings in it.

    ``target="masks"`` gives (footprint, contour); ``"seed-rgb"`` the seed method's RGB image.
    Labels are rasterized on a grid padded by the contour width so that buildings cut by the
    tile edge get no false outline along the edge.
    """
    return strip_masks(
        geoms,
        transform,
        size,
        size,
        1,
        contour_width=contour_width,
        target=target,
        seed_blur=seed_blur,
    )[0]


def strip_masks(
    geoms: np.ndarray,
    transform: Affine,
    size: int,
    stride: int,
    ntiles: int,
    *,
    contour_width: int,
    target: str,
    seed_blur: int = 5,
) -> list[tuple[np.ndarray, int]]:
    """:func:`tile_masks` of ``ntiles`` tiles side by side in one grid row, done at once.

    ``transform`` is the first tile's; tile k starts ``k * stride`` pixels to its right.
    Rasterizing and tracing outlines once per strip instead of once per tile saves the
    per-call overhead and the repeated work on buildings that straddle tile borders; the
    masks are the same as tile by tile, because every tile's slice keeps its padding.
    """
    pad = contour_width + 1
    width = (ntiles - 1) * stride + size
    shape = (size + 2 * pad, width + 2 * pad)
    padded = Affine(
        transform.a,
        0,
        transform.c - pad * transform.a,
        0,
        transform.e,
        transform.f - pad * transform.e,
    )
    labels = rasterize_labels(geoms, padded, shape)
    contour = draw_contours(labels, contour_width, _pixel_boxes(geoms, padded, shape))
    result = []
    for k in range(ntiles):
        cols = slice(pad + k * stride, pad + k * stride + size)
        inner = labels[pad:-pad, cols]
        footprint = np.where(inner > 0, 255, 0).astype(np.uint8)
        count = int(np.count_nonzero(np.bincount(inner.ravel())[1:]))
        edges = contour[pad:-pad, cols]
        if target == "seed-rgb":
            result.append((seed_rgb_target(footprint, edges, seed_blur), count))
        else:
            result.append((np.stack([footprint, edges]), count))
    return result

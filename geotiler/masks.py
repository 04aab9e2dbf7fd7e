"""Building masks rasterized straight onto a tile's grid (never resized from another grid)."""

from __future__ import annotations

import numpy as np
import rasterio.features
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
    pad = contour_width + 1
    padded = Affine(transform.a, 0, transform.c - pad * transform.a,
                    0, transform.e, transform.f - pad * transform.e)
    labels = rasterize_labels(geoms, padded, (size + 2 * pad, size + 2 * pad))
    contour = draw_contours(labels, contour_width)[pad:-pad, pad:-pad]
    inner = labels[pad:-pad, pad:-pad]
    footprint = np.where(inner > 0, 255, 0).astype(np.uint8)
    count = int(np.count_nonzero(np.unique(inner)))
    if target == "seed-rgb":
        return seed_rgb_target(footprint, contour, seed_blur), count
    return np.stack([footprint, contour]), count

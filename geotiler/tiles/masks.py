"""Building masks rasterized straight onto a tile's grid (never resized from another grid)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import rasterio.features
import shapely
from affine import Affine

from geotiler.tiles.contours import draw_contours, seed_rgb_target

POLYGON = int(shapely.GeometryType.POLYGON)
MULTIPOLYGON = int(shapely.GeometryType.MULTIPOLYGON)


def rasterize_labels(geoms: np.ndarray, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Burn each polygon with its own id (1..n, int32) so touching buildings stay apart.

    A pixel belongs to a polygon when its centre falls inside it (GDAL's default rule),
    which keeps the rasterized area unbiased. Later polygons win where two overlap.
    """
    shapes = _geojson_shapes(geoms)
    if not shapes:
        return np.zeros(shape, dtype=np.int32)
    return rasterio.features.rasterize(
        shapes, out_shape=shape, transform=transform, fill=0, dtype="int32"
    )


def _geojson_shapes(geoms: np.ndarray) -> list[tuple[dict[str, Any], int]]:
    """(GeoJSON-like polygon, id) pairs for :func:`rasterio.features.rasterize`.

    rasterio would ask every shapely geometry for ``__geo_interface__``, which walks its
    coordinates in Python: about half the cost of rasterizing a strip of tiles. One
    ``shapely.to_ragged_array`` call dumps all coordinates in C instead. Ids follow the
    input order (1..n); empty geometries are left out.
    """
    if len(geoms) == 0:
        return []
    kinds = shapely.get_type_id(geoms)
    if not np.isin(kinds, (POLYGON, MULTIPOLYGON)).all():  # not footprints: the slow path
        return [(geom, index + 1) for index, geom in enumerate(geoms) if not geom.is_empty]
    kind, coords, offsets = shapely.to_ragged_array(geoms, include_z=False)
    xy = coords.tolist()
    rings = offsets[0].tolist()
    polys = offsets[1].tolist()

    def rings_of(polygon: int) -> list[list[list[float]]]:
        return [xy[rings[r] : rings[r + 1]] for r in range(polys[polygon], polys[polygon + 1])]

    if kind == shapely.GeometryType.POLYGON:
        shapes = [({"type": "Polygon", "coordinates": rings_of(i)}, i + 1)
                  for i in range(len(polys) - 1)]
    else:
        multis = offsets[2].tolist()
        shapes = [
            ({"type": "MultiPolygon",
              "coordinates": [rings_of(j) for j in range(multis[i], multis[i + 1])]}, i + 1)
            for i in range(len(multis) - 1)
        ]
    return [(shape, value) for shape, value in shapes if shape["coordinates"]]


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
    valid: Sequence[np.ndarray] | None = None,
) -> list[tuple[np.ndarray, int]]:
    """:func:`tile_masks` of ``ntiles`` tiles side by side in one grid row, done at once.

    ``transform`` is the first tile's; tile k starts ``k * stride`` pixels to its right.
    ``valid``: per tile, a bool (size, size) array of the pixels with imagery; a building
    is then counted only if it has a pixel there (not one lying wholly in the padding
    beyond the raster's edge, or under nodata).
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
    contour = draw_contours(labels, contour_width)
    footprints = (labels > 0).view(np.uint8)
    footprints *= 255
    result = []
    for k in range(ntiles):
        cols = slice(pad + k * stride, pad + k * stride + size)
        inner = labels[pad:-pad, cols]
        if valid is not None and not valid[k].all():
            inner = inner[valid[k]]
        count = int(np.count_nonzero(np.bincount(inner.ravel())[1:]))
        footprint, edges = footprints[pad:-pad, cols], contour[pad:-pad, cols]
        if target == "seed-rgb":
            result.append((seed_rgb_target(footprint, edges, seed_blur), count))
        else:
            result.append((np.stack([footprint, edges]), count))
    return result

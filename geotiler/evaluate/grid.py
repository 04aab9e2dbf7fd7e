"""Raster-side scoring: the pixel grid, and pixel and boundary counts over it block by block.

The grid is either the prediction mask itself (non-zero = building; its nodata, if any, left
out) or, for a polygon prediction, a raster whose grid and validity the scores use. Blocks of
``block`` px are read with a halo for the boundary tolerance, so memory stays bounded.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
import rasterio.transform
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from geotiler.errors import InputError
from geotiler.io import open_raster
from geotiler.metrics import BoundaryCounts, Confusion, boundary_counts, confusion, edge_band
from geotiler.polygons import BLOCK_PX, HALO_PX, PolygonOptions, polygonize_tiled, to_map
from geotiler.predict.job import MASK_SUFFIX, PROB_SUFFIX
from geotiler.predict.plan import Rect, plan_blocks


@dataclass(frozen=True)
class Grid:
    """A raster's pixel grid, and how to read a prediction mask or validity from it."""

    path: Path | str  # a file, or a remote raster's GDAL path (geotiler.io.raster_source)
    crs: CRS
    transform: Affine
    width: int
    height: int
    nodata: float | None
    is_mask: bool  # the prediction itself (else only its grid and validity are used)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS."""
        return rasterio.transform.array_bounds(self.height, self.width, self.transform)[:4]

    def rect_bounds(self, rect: Rect) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of a rectangle of pixels."""
        t = self.transform * Affine.translation(rect.col0, rect.row0)
        return rasterio.transform.array_bounds(rect.height, rect.width, t)

    def read(self, src: rasterio.DatasetReader, rect: Rect) -> tuple[np.ndarray, np.ndarray]:
        """(building, valid): (H, W) booleans of a rectangle of the grid."""
        window = Window(rect.col0, rect.row0, rect.width, rect.height)
        if self.is_mask:
            data = src.read(1, window=window)
            valid = (data != self.nodata) if self.nodata is not None else np.ones(
                data.shape, dtype=bool)
            return (data != 0) & valid, valid
        valid = src.dataset_mask(window=window) > 0
        return np.zeros(valid.shape, dtype=bool), valid


def open_grid(path: Path | str, is_mask: bool) -> Grid:
    """The grid of the raster ``path``.

    Raises:
        InputError: the raster is missing, unreadable, has no CRS or a rotated grid, or
            (``is_mask``) has more than one band.
    """
    with open_raster(path) as src:
        if src.crs is None:
            raise InputError(f"raster {path} has no CRS; assign one with gdal_edit.py -a_srs")
        if src.transform.b != 0 or src.transform.d != 0:
            raise InputError(f"raster {path} has a rotated grid; warp it north-up first")
        if is_mask and src.count != 1:
            raise not_a_mask(path, f"it has {src.count} bands")
        return Grid(path, src.crs, src.transform, src.width, src.height,
                    src.nodata if is_mask else None, is_mask)


def not_a_mask(path: Path | str, why: str) -> InputError:
    """The error for a PRED raster that is not a building mask, suggesting predict's."""
    path = Path(path)
    mask = path.with_name(f"{path.stem.removesuffix(PROB_SUFFIX)}{MASK_SUFFIX}.tif")
    which = (f"the mask geotiler predict wrote beside it, {mask}," if mask.exists()
             else f"the mask geotiler predict writes ({{stem}}{MASK_SUFFIX}.tif)")
    return InputError(
        f"PRED {path} is not a single-band binary building mask ({why}); give {which} "
        "or its polygons (.gpkg)"
    )


def check_binary_mask(grid: Grid, block: int = BLOCK_PX) -> None:
    """InputError unless every valid pixel of the mask ``grid`` is 0 or one same other value
    (1 as predict writes, or 255...): probabilities and images are refused, not scored as
    if every non-zero pixel were building. Reads the mask block by block."""
    building_value: float | None = None
    with open_raster(grid.path) as src:
        for core in _blocks(grid, block):
            data = src.read(1, window=Window(core.col0, core.row0, core.width, core.height))
            if grid.nodata is not None:
                data = data[data != grid.nodata]
            values = np.unique(data[data != 0])
            if building_value is not None:
                values = np.union1d(values, [building_value])
            if len(values) > 1:
                shown = ", ".join(f"{v:g}" for v in values[:4])
                raise not_a_mask(grid.path, f"it holds the values 0, {shown}...")
            if len(values):
                building_value = float(values[0])


def _rasterize(tree: shapely.STRtree, geoms: np.ndarray, grid: Grid, rect: Rect) -> np.ndarray:
    bounds = grid.rect_bounds(rect)
    hits = tree.query(shapely.box(*bounds))
    if len(hits) == 0:
        return np.zeros(rect.shape, dtype=bool)
    t = grid.transform * Affine.translation(rect.col0, rect.row0)
    burnt = rasterio.features.rasterize(((g, 1) for g in geoms[hits]), out_shape=rect.shape,
                                        transform=t, fill=0, dtype="uint8")
    return burnt > 0


def _blocks(grid: Grid, block: int) -> Iterator[Rect]:
    plan = plan_blocks(grid.height, grid.width, 1, 0, block)
    for i, j in plan.indexes:
        yield plan.core(i, j)


def pixel_counts(grid: Grid, truth: np.ndarray, pred: np.ndarray | None, tolerance_px: float,
                 block: int = BLOCK_PX) -> tuple[Confusion, BoundaryCounts, int]:
    """Confusion and boundary counts over the grid, block by block (with a halo for the
    boundary tolerance), and the wrong pixels within ``tolerance_px`` of a true outline
    (:func:`geotiler.metrics.edge_band`). ``pred`` polygons are rasterized unless the grid
    is the mask.

    ``truth``, ``pred``: object arrays of shapely polygons in the grid's CRS.
    """
    truth_tree = shapely.STRtree(truth)
    pred_tree = shapely.STRtree(pred) if pred is not None else None
    halo = math.ceil(tolerance_px) + 2
    total, edges, edge_errors = Confusion(), BoundaryCounts(), 0
    with open_raster(grid.path) as src:
        for core in _blocks(grid, block):
            region = core.grow(halo, grid.height, grid.width)
            building, valid = grid.read(src, region)
            if pred_tree is not None and pred is not None:
                building = _rasterize(pred_tree, pred, grid, region)
            truth_mask = _rasterize(truth_tree, truth, grid, region)
            in_core = np.zeros(region.shape, dtype=bool)
            in_core[core.row0 - region.row0:core.row1 - region.row0,
                    core.col0 - region.col0:core.col1 - region.col0] = True
            counted = in_core & valid
            total = total + confusion(building, truth_mask, counted)
            edges = edges + boundary_counts(building, truth_mask, tolerance_px, counted)
            wrong = (building != truth_mask) & counted
            if wrong.any():
                edge_errors += int(np.count_nonzero(wrong & edge_band(truth_mask,
                                                                      tolerance_px)))
    return total, edges, edge_errors


def mask_polygons(grid: Grid, block: int = BLOCK_PX, halo: int = HALO_PX) -> np.ndarray:
    """The buildings of a mask GeoTIFF as polygons on the map (object array, the grid's
    CRS), polygonized block by block with a ``halo`` px overlap (touching buildings merge)."""
    with open_raster(grid.path) as src:

        def read(rect: Rect) -> tuple[np.ndarray, None]:
            building, _ = grid.read(src, rect)
            return building, None

        found = polygonize_tiled(read, grid.height, grid.width, block=block, halo=halo,
                                 options=PolygonOptions())
    return to_map(found.geoms, grid.transform)

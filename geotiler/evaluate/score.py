"""The whole evaluation: read both sides, pick the grid, count, match, report.

See :mod:`geotiler.evaluate` for what is measured and on which extent.
"""

from __future__ import annotations

import math
from pathlib import Path

import shapely

from geotiler.errors import InputError
from geotiler.evaluate.config import UNIT_SLIP_TOLERANCE_M, EvalConfig
from geotiler.evaluate.grid import (
    Grid,
    check_binary_mask,
    mask_polygons,
    open_grid,
    pixel_counts,
)
from geotiler.evaluate.matching import building_metrics
from geotiler.evaluate.report import BoundaryMetrics, EvalReport, PixelMetrics
from geotiler.evaluate.vectors import inside, polygons_only, read_polygons, recorded_mask
from geotiler.io import ground_gsd, raster_source, source_label
from geotiler.polygons import BLOCK_PX, HALO_PX
from geotiler.predict.job import MASK_SUFFIX
from geotiler.vectors import load_footprints

#: A PRED with one of these suffixes is a mask raster; anything else a polygon layer.
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")


def evaluate(pred: Path | str, truth: Path | str, raster: Path | str | None = None,
             config: EvalConfig | None = None, *, block: int = BLOCK_PX,
             halo: int = HALO_PX, truth_layer: str | None = None,
             truth_where: str | None = None, pred_layer: str | None = None) -> EvalReport:
    """Score ``pred`` (mask GeoTIFF or polygon layer) against the footprints ``truth``.

    ``raster``: the grid for pixel scores when ``pred`` is polygons (a file, or a remote
    ``https://``/``s3://`` raster). ``truth_layer``/``truth_where``: the truth's layer and
    OGR SQL filter (:func:`geotiler.vectors.load_footprints`); ``pred_layer``: a polygon
    PRED's layer (:func:`geotiler.evaluate.vectors.read_polygons`). ``config``: boundary
    tolerance (m) and matching IoU threshold (default :class:`EvalConfig`'s).
    ``block``/``halo``: px per block (bounds memory) and the polygonization halo (px) when a
    mask has to be polygonized.

    Raises:
        InputError: an input is missing, unreadable or without CRS, a PRED raster is not
            a single-band binary mask, the grid has no valid pixel, or no truth footprint
            lies on the prediction's extent.
    """
    config = config if config is not None else EvalConfig()
    pred_path, truth_path = Path(pred), Path(truth)
    notes: list[str] = []
    is_mask = pred_path.suffix.lower() in RASTER_SUFFIXES
    grid: Grid | None
    if is_mask:
        grid = open_grid(pred_path, is_mask=True)
        check_binary_mask(grid, block)
        crs = grid.crs
        pred_geoms = mask_polygons(grid, block, halo)
        polygons = pred_path.with_name(f"{pred_path.stem.removesuffix(MASK_SUFFIX)}.gpkg")
        notes.append("building scores count the mask's connected components (touching "
                     "buildings are one)" + (f"; {polygons} holds predict's separated "
                                             "buildings: evaluate it for theirs"
                                             if polygons.exists() else ""))
        if raster is not None:
            notes.append("PRED is a mask: --raster is not needed and was ignored")
    else:
        predicted = read_polygons(pred_path, pred_layer)
        sibling = pred_path.with_name(f"{pred_path.stem}{MASK_SUFFIX}.tif")
        if raster is not None:
            grid = open_grid(raster_source(raster), is_mask=False)
        elif sibling.exists():
            grid = open_grid(sibling, is_mask=False)
            notes.append(f"pixel scores on the grid of {sibling.name}")
        elif (recorded := recorded_mask(pred_path)) is not None:
            grid = open_grid(recorded, is_mask=False)
            notes.append(f"pixel scores on the grid of {recorded} (the mask predict wrote "
                         "with these polygons)")
        else:
            grid = None
            notes.append("no raster grid (give --raster): pixel and boundary scores skipped")
        crs = grid.crs if grid is not None else predicted.crs
        pred_geoms = predicted.to_crs(crs)

    footprints = load_footprints(truth_path, layer=truth_layer, where=truth_where,
                                 what="truth footprints", layer_option="--truth-layer")
    truth_geoms = polygons_only(footprints.to_crs(crs))
    if footprints.repaired:
        notes.append(f"{footprints.repaired} invalid truth polygon(s) repaired")
    if grid is not None:
        extent = grid.bounds
    elif len(pred_geoms):
        extent = tuple(shapely.total_bounds(pred_geoms))
    else:
        extent = tuple(shapely.total_bounds(truth_geoms))
    truth_all = truth_geoms  # pixels: everything on the grid counts, even cut buildings
    n_all = len(truth_geoms)
    truth_geoms = inside(truth_geoms, extent)
    if n_all and not len(truth_geoms):
        raise InputError(
            f"no footprint of {truth_path} lies on {pred_path} (after reprojecting to "
            f"{crs.to_string()}); are they of the same area?"
        )
    if n_all > len(truth_geoms):
        notes.append(f"{n_all - len(truth_geoms)} truth polygon(s) outside the extent ignored")

    if config.tolerance > UNIT_SLIP_TOLERANCE_M:
        notes.append(f"--tolerance {config.tolerance:g} m counts an outline up to "
                     f"{config.tolerance:g} m off as right (houses are 5-20 m across); it is "
                     "in metres (e.g. 1)")
    pixels = boundary = None
    if grid is not None:
        gsd = math.sqrt(math.prod(ground_gsd(grid.crs, grid.transform, grid.width,
                                             grid.height)))
        tolerance_px = config.tolerance / gsd
        conf, edges, edge_errors = pixel_counts(
            grid, truth_all, None if grid.is_mask else pred_geoms, tolerance_px, block)
        if conf.tp + conf.fp + conf.fn + conf.tn == 0:  # the scores would read 1.0
            raise InputError(f"{source_label(grid.path)} has no valid pixel (nodata "
                             "everywhere): there is nothing to score")
        pixels = PixelMetrics.from_confusion(conf, edge_errors)
        boundary = BoundaryMetrics.from_counts(edges, config.tolerance, round(tolerance_px, 3))
    pred_geoms = inside(pred_geoms, extent)
    buildings = building_metrics(pred_geoms, truth_geoms, config.iou_threshold)
    return EvalReport(str(pred_path), str(truth_path), crs.to_string(),
                      source_label(grid.path) if grid is not None else None,
                      pixels, boundary, buildings, notes)

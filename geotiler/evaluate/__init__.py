"""Compare predicted buildings with reference footprints.

``PRED`` is a mask GeoTIFF (non-zero = building; its nodata, if any, is left out) or a
polygon layer (``buildings`` if the file has it, else its first layer). ``TRUTH`` is any
footprint layer in any CRS: it is reprojected to the prediction's CRS and repaired.

Metrics (counts are summed over the grid block by block, then scored once; the pixel and
boundary helpers are :mod:`geotiler.metrics`, shared with training):

* pixel IoU, precision, recall, F1 of the building class, on the mask's grid, or for a
  polygon layer on ``raster``'s grid (default: the ``{stem}_mask.tif`` that ``predict``
  wrote beside it; without any grid the pixel scores are skipped);
* per-building precision, recall and F1: predicted and true polygons matched one to one,
  greedily by IoU descending, pairs with IoU >= ``EvalConfig.iou_threshold`` (the SpaceNet
  metric, :mod:`geotiler.evaluate.matching`). A mask is polygonized first (touching
  buildings merge);
* boundary F-score at ``EvalConfig.tolerance`` metres (converted to pixels with the grid's
  GSD);
* the seed's four scores: pixel accuracy, mean accuracy, mean IoU and frequency-weighted
  IoU over the two classes.

Only the evaluated extent counts: truth polygons whose representative point falls outside
the grid (or, without a grid, outside the prediction layer's bounds) are ignored.

Layout, one job per module:

* :mod:`~geotiler.evaluate.config` -- :class:`EvalConfig`, the settings and their defaults
  (no heavy imports: the CLI reads its option defaults from it);
* :mod:`~geotiler.evaluate.report` -- the metric records, :class:`EvalReport` (its table)
  and :func:`save_report` (its JSON file);
* :mod:`~geotiler.evaluate.vectors` -- the prediction layer's polygons, the extent filter;
* :mod:`~geotiler.evaluate.grid` -- the pixel grid, pixel and boundary counts block by block,
  a mask's polygons;
* :mod:`~geotiler.evaluate.matching` -- one-to-one building matching and its scores;
* :mod:`~geotiler.evaluate.score` -- :func:`evaluate`, which runs the above.

Importing this package is cheap; :func:`evaluate`, :func:`match_buildings`,
:func:`building_metrics` (rasterio, shapely, cv2 underneath) load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from geotiler.evaluate.config import EvalConfig
from geotiler.evaluate.report import (
    BoundaryMetrics,
    BuildingMetrics,
    EvalReport,
    PixelMetrics,
    save_report,
)

if TYPE_CHECKING:
    from geotiler.evaluate.matching import building_metrics, match_buildings
    from geotiler.evaluate.score import evaluate

__all__ = [
    "BoundaryMetrics",
    "BuildingMetrics",
    "EvalConfig",
    "EvalReport",
    "PixelMetrics",
    "building_metrics",
    "evaluate",
    "match_buildings",
    "save_report",
]

_LAZY = {"evaluate": "score", "match_buildings": "matching", "building_metrics": "matching"}


def __getattr__(name: str) -> Any:
    """Load the scoring functions (and their heavy imports) on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

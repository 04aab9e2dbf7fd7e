"""The instance step on the sample scene's own truth: one polygon per house, terraced rows
included, and no two neighbours overlapping after the default simplification."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
import shapely

from geotiler.instances import InstanceOptions
from geotiler.polygons import PolygonOptions, polygonize_block
from geotiler.predict import PredictConfig
from geotiler.predict.plan import Rect
from geotiler.tiles.config import TileConfig
from geotiler.tiles.contours import draw_contours

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def test_sample_truth_comes_back_one_polygon_per_house_without_overlaps():
    with rasterio.open(SAMPLE / "area.tif") as src:
        shape, transform, gsd = (src.height, src.width), src.transform, src.res[0]
    truth = gpd.read_file(SAMPLE / "buildings.gpkg")
    geoms = [g for g in truth.geometry if g is not None and not g.is_empty]
    labels = rasterio.features.rasterize(
        ((g, i + 1) for i, g in enumerate(geoms)), out_shape=shape, transform=transform,
        dtype="int32")
    present = len(np.unique(labels)) - 1
    footprint = (labels > 0).astype(np.uint8) * 255
    contour = draw_contours(labels, TileConfig().contour_width)  # as the tiler draws it
    config = PredictConfig()
    options = PolygonOptions(
        simplify=config.simplify / gsd, min_area=config.min_area / gsd**2,
        instances=InstanceOptions().in_pixels(gsd))
    found = polygonize_block(footprint, contour, Rect(0, shape[0], 0, shape[1]),
                             options=options).geoms
    # terraced rows are the hard part: every house of the scene is one polygon
    assert abs(len(found) - present) <= 0.02 * present, (len(found), present)
    tree = shapely.STRtree(found)
    left, right = tree.query(found, predicate="intersects")
    pairs = [(a, b) for a, b in zip(left, right, strict=True) if a < b]
    overlaps = [p for p in pairs
                if shapely.area(shapely.intersection(found[p[0]], found[p[1]])) > 1e-6]
    assert overlaps == []

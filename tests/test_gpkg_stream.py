"""predict's buildings.gpkg is streamed through one open dataset: same layer as before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio
import pyproj
import shapely

from geotiler.predict.blocks import MapPolygons
from geotiler.predict.outputs import LAYER, stream_polygons

WKT = pyproj.CRS("EPSG:32633").to_wkt()


def _block(n: int, x0: float) -> MapPolygons:
    geoms = np.array([shapely.box(x0 + 20 * i, 5_330_000, x0 + 20 * i + 10, 5_330_012)
                      for i in range(n)], dtype=object)
    return MapPolygons(geoms, shapely.area(geoms) + 0.00049, np.linspace(0.5, 0.99999, n))


def test_streamed_gpkg_holds_every_polygon_with_its_attributes(tmp_path: Path) -> None:
    blocks = [_block(300, 600_000), _block(0, 0), _block(1200, 700_000)]
    path = tmp_path / "buildings.gpkg"
    written = stream_polygons(path, iter(blocks), WKT, {"model": "m.pt"})
    assert written == 1500
    assert [list(x) for x in pyogrio.list_layers(path)] == [[LAYER, "Polygon"]]
    info = pyogrio.read_info(path, layer=LAYER)
    assert info["features"] == 1500
    assert list(info["fields"]) == ["area_m2", "score"]
    assert list(info["dtypes"]) == ["float64", "float64"]
    assert info["crs"] == "EPSG:32633"
    assert json.loads(info["layer_metadata"]["geotiler_predict"]) == {"model": "m.pt"}
    frame = pyogrio.read_dataframe(path, layer=LAYER)
    geoms = np.concatenate([b.geoms for b in blocks])
    assert shapely.equals(frame.geometry.values, geoms).all()
    expected_area = np.round(np.concatenate([b.area_m2 for b in blocks]), 3)
    np.testing.assert_array_equal(frame["area_m2"].to_numpy(), expected_area)
    expected_score = np.round(np.concatenate([b.score for b in blocks]), 4)
    np.testing.assert_array_equal(frame["score"].to_numpy(), expected_score)


def test_no_polygons_give_a_valid_empty_layer(tmp_path: Path) -> None:
    path = tmp_path / "buildings.gpkg"
    assert stream_polygons(path, iter([_block(0, 0)]), WKT) == 0
    info = pyogrio.read_info(path, layer=LAYER)
    assert info["features"] == 0
    assert info["geometry_type"] == "Polygon"
    assert list(info["fields"]) == ["area_m2", "score"]
    assert info["crs"] == "EPSG:32633"

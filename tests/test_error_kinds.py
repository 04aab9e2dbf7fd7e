"""benchmarks/error_kinds.py sorts true footprints by what the prediction did to them; the
README's dense-town and tree-cover findings rest on its counts."""

from __future__ import annotations

import sys
from pathlib import Path

import geopandas as gpd
from shapely import box

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from error_kinds import error_kinds

CRS = "EPSG:32633"


def test_each_footprint_gets_the_kind_a_user_would_see():
    x = 500_000.0
    truth = gpd.GeoDataFrame(geometry=[
        box(x, 0, x + 10, 10),            # found as is
        box(x + 20, 0, x + 30, 10),       # these two neighbours come back as one polygon
        box(x + 30, 0, x + 40, 10),
        box(x + 60, 0, x + 80, 10),       # cut in two
        box(x + 100, 0, x + 110, 10),     # a third of it found
        box(x + 200, 0, x + 210, 10),     # nothing there
    ], crs=CRS)
    pred = gpd.GeoDataFrame(geometry=[
        box(x + 0.5, 0, x + 10.5, 10),
        box(x + 19.5, 0, x + 40.5, 10),
        box(x + 60, 0, x + 69, 10), box(x + 71, 0, x + 80, 10),
        box(x + 100, 0, x + 103, 10),
    ], crs=CRS)
    kinds, areas = error_kinds(pred, truth)
    assert kinds == ["matched", "merged", "merged", "split", "partial", "missed"]
    assert list(areas) == [100, 100, 100, 200, 100, 100]

"""The tile index, ``index.gpkg``: where every tile of a dataset lies, for QGIS.

Written by :func:`geotiler.tiles.plan.finish_dataset` once the shards are done; one
polygon per tile, styled by split (:mod:`geotiler.styles`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely

from geotiler.atomic import atomic_path
from geotiler.io import RasterInfo
from geotiler.styles import add_layer_style, index_qml, index_sld
from geotiler.vectors import GPKG_OPTIONS


def write_index(path: Path, rasters: Sequence[RasterInfo], records: list[dict[str, Any]]
                ) -> None:
    """``index.gpkg``: layer ``tiles``, one polygon per tile record (its key, shard, split,
    building fraction and count, nodata fraction, source raster, row, col) in the first
    raster's CRS, with a QGIS style by split; written under a temporary name, then renamed.
    """
    target_crs = rasters[0].crs
    frames = []
    for info in rasters:
        rows = [r for r in records if r["source"] == info.name]
        if not rows:
            continue
        frame = gpd.GeoDataFrame(
            {
                "key": [r["key"] for r in rows],
                "shard": [r["shard"] for r in rows],
                "split": [r["split"] for r in rows],
                "building_fraction": [r["building_fraction"] for r in rows],
                "building_count": [r["building_count"] for r in rows],
                "nodata_fraction": [r["nodata_fraction"] for r in rows],
                "source": [info.name for _ in rows],
                "row": [r["row"] for r in rows],
                "col": [r["col"] for r in rows],
            },
            geometry=[shapely.box(*r["bounds"]) for r in rows],
            crs=info.crs.to_wkt(),
        )
        frames.append(frame.to_crs(target_crs.to_wkt()))
    if frames:
        index = gpd.GeoDataFrame(
            pd.concat(frames, ignore_index=True), crs=target_crs.to_wkt()
        )
    else:
        index = gpd.GeoDataFrame(
            {k: [] for k in ("key", "shard", "split", "source")}, geometry=[],
            crs=target_crs.to_wkt(),
        )
    with atomic_path(path, keep_suffix=True) as tmp:
        index.to_file(tmp, layer="tiles", driver="GPKG", **GPKG_OPTIONS)
        add_layer_style(tmp, "tiles", index_qml(), index_sld(), "geotiler tiles by split",
                        "tiles coloured by split: train blue, val orange, test red")

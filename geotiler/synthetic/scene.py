"""``make_scene``: plan the scene, render and write the GeoTIFF block by block, and write the
footprints.

The GeoTIFF goes through :func:`geotiler.atomic.atomic_path` (written under a temporary name,
renamed into place when done); the footprints are written after it, in the format their
extension names. A failed or interrupted run leaves neither file behind.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.windows import Window

from geotiler.atomic import atomic_path
from geotiler.errors import ConfigError, OutputError
from geotiler.synthetic.plan import Plan, make_plan
from geotiler.synthetic.render import render_block
from geotiler.synthetic.shapes import HALO
from geotiler.synthetic.spec import ROOF_SHAPES, SceneSpec, SceneSummary
from geotiler.vectors import GPKG_OPTIONS

log = logging.getLogger(__name__)

#: Vector formats by file extension: (pyogrio driver or "parquet", layer name or None).
VECTOR_FORMATS: Mapping[str, tuple[str, str | None]] = MappingProxyType({
    ".gpkg": ("GPKG", "buildings"),
    ".geojson": ("GeoJSON", None),
    ".json": ("GeoJSON", None),
    ".shp": ("ESRI Shapefile", None),
    ".fgb": ("FlatGeobuf", None),
    ".parquet": ("parquet", None),
    ".geoparquet": ("parquet", None),
})


def _profile(spec: SceneSpec) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": spec.width, "height": spec.height, "count": 3,
        "dtype": "uint8", "crs": CRS.from_user_input(spec.crs), "transform": spec.transform,
        "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
        "predictor": 2, "photometric": "RGB", "interleave": "pixel", "BIGTIFF": "IF_SAFER",
    }
    if spec.nodata_border > 0:
        profile["nodata"] = 0
    return profile


def _write_vector(frame: gpd.GeoDataFrame, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix not in VECTOR_FORMATS:
        raise ConfigError(f"cannot tell the vector format of {path.name!r}: use one of "
                          f"{', '.join(sorted(VECTOR_FORMATS))}")
    driver, layer = VECTOR_FORMATS[suffix]
    if driver == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError("writing GeoParquet needs pyarrow: pip install pyarrow "
                              "(or write .gpkg instead)") from None
        frame.to_parquet(path)
        return
    options = GPKG_OPTIONS if driver == "GPKG" else {}
    frame.to_file(path, driver=driver, layer=layer, engine="pyogrio", **options)


def _remove(path: Path) -> None:
    """Delete ``path`` and, for a shapefile, its sidecar files."""
    sidecars = (".shx", ".dbf", ".prj", ".cpg") if path.suffix.lower() == ".shp" else ()
    for p in [path, *(path.with_suffix(s) for s in sidecars)]:
        p.unlink(missing_ok=True)


def _footprints_frame(plan: Plan) -> gpd.GeoDataFrame:
    """The planned footprints as a GeoDataFrame (id, kind, roof, roof_shape, height_m)."""
    return gpd.GeoDataFrame(
        {
            "id": np.arange(1, len(plan.kinds) + 1, dtype=np.int64),
            "kind": plan.kinds,
            "roof": plan.roofs,
            "roof_shape": [ROOF_SHAPES[x] for x in plan.shapes],
            "height_m": np.round(plan.heights.astype(np.float64), 1),
        },
        geometry=plan.footprints, crs=plan.spec.crs,
    )


def make_scene(tif_path: str | os.PathLike[str], vector_path: str | os.PathLike[str],
               spec: SceneSpec) -> SceneSummary:
    """Generate a synthetic aerial scene: an RGB GeoTIFF and its building footprints.

    The raster is 3-band uint8, tiled 256 px, deflate + horizontal predictor; the
    footprints go to ``vector_path`` in the raster's CRS, format chosen by extension
    (.gpkg with layer ``buildings``, .geojson, .shp, .fgb, .parquet). Existing files are
    replaced; a failed or interrupted run removes what it had written.

    Raises:
        ConfigError: the vector extension is not one of :data:`VECTOR_FORMATS` (or
            GeoParquet without pyarrow).
        OutputError: an output folder does not exist, or the GeoTIFF cannot be renamed
            into place.
    """
    tif_path, vector_path = Path(tif_path), Path(vector_path)
    if vector_path.suffix.lower() not in VECTOR_FORMATS:
        raise ConfigError(f"cannot tell the vector format of {vector_path.name!r}: use one "
                          f"of {', '.join(sorted(VECTOR_FORMATS))}")
    for p in (tif_path, vector_path):
        if not p.parent.is_dir():
            raise OutputError(f"output folder {p.parent} does not exist; create it first")
    start = time.perf_counter()
    plan = make_plan(spec)
    log.info("planned %d buildings, %d trees in %.1fs", len(plan.kinds), len(plan.trees),
             time.perf_counter() - start)
    try:
        # the raster is renamed into place only once the footprints are written too
        with atomic_path(tif_path, keep_suffix=True) as partial:
            _write_raster(plan, partial)
            _remove(vector_path)
            _write_vector(_footprints_frame(plan), vector_path)
    except BaseException:  # Ctrl-C included: leave no half-written output behind
        _remove(vector_path)
        raise
    log.info("wrote %s and %s in %.1fs", tif_path, vector_path, time.perf_counter() - start)
    return SceneSummary(
        tif_path=tif_path, vector_path=vector_path, n_buildings=len(plan.kinds),
        n_trees=len(plan.trees), width=spec.width, height=spec.height, crs=spec.crs,
        bounds=spec.bounds,
    )


def _write_raster(plan: Plan, path: Path) -> None:
    spec = plan.spec
    bs = spec.block_size
    # Bounded GDAL block cache (bytes; rasterio takes an int): the written tiles are
    # flushed as it fills instead of piling up in memory. rasterize() also uses it, and
    # slows down badly when it is smaller than one block.
    cache = max(128 << 20, 16 * bs * bs * 4)
    valid_w = spec.width - spec.nodata_border
    n_blocks = math.ceil(spec.height / bs) * math.ceil(spec.width / bs)
    done = 0
    with rasterio.Env(GDAL_CACHEMAX=cache), rasterio.open(path, "w", **_profile(spec)) as dst:
        # Say how the raster was made (the spec regenerates it).
        dst.update_tags(GEOTILER_SYNTHETIC=json.dumps(dataclasses.asdict(spec), sort_keys=True))
        for r0 in range(0, spec.height, bs):
            r1 = min(spec.height, r0 + bs)
            for c0 in range(0, spec.width, bs):
                c1 = min(spec.width, c0 + bs)
                hr0, hc0 = max(0, r0 - HALO), max(0, c0 - HALO)
                hr1, hc1 = min(spec.height, r1 + HALO), min(spec.width, c1 + HALO)
                rgb, _ = render_block(plan, hr0, hr1, hc0, hc1)
                block = rgb[r0 - hr0:r1 - hr0, c0 - hc0:c1 - hc0]
                if c1 > valid_w:
                    block[:, max(0, valid_w - c0):] = 0
                dst.write(np.ascontiguousarray(block.transpose(2, 0, 1)),
                          window=Window(c0, r0, c1 - c0, r1 - r0))
                done += 1
                log.debug("block %d/%d rendered", done, n_blocks)

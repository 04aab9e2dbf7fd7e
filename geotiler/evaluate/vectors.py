"""Vector-side inputs: the prediction layer's polygons, split into single polygons and
limited to the evaluated extent.

Layers are read through :func:`geotiler.vectors.read_vector`; truth footprints go through
:func:`geotiler.vectors.load_footprints` (see :mod:`geotiler.evaluate.score`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely
from rasterio.crs import CRS

from geotiler.errors import InputError
from geotiler.io import first_line
from geotiler.vectors import Footprints, choose_layer, read_vector, repair_geometries

#: The layer :mod:`geotiler.predict` writes; read when the file has it, else the first layer.
DEFAULT_LAYER = "buildings"
_WHOLE_FILE_SUFFIXES = (".parquet", ".geoparquet")  # no layers: read_vector reads it whole


def recorded_mask(path: Path) -> Path | None:
    """The mask GeoTIFF that ``geotiler predict`` wrote with the GeoPackage ``path``, as
    recorded in its layer metadata (``geotiler_predict`` JSON, key ``mask``, relative to
    the GeoPackage), if it is recorded and still there; else None. Never raises."""
    import json

    import pyogrio

    try:
        meta = pyogrio.read_info(path, layer=DEFAULT_LAYER).get("layer_metadata") or {}
        mask = json.loads(meta.get("geotiler_predict", "{}")).get("mask")
    except Exception:  # not ours, another format, no such layer: nothing recorded
        return None
    if not isinstance(mask, str):
        return None
    found = path.parent / mask
    return found if found.is_file() else None


def read_polygons(path: Path, layer: str | None = None) -> Footprints:
    """Polygons of a prediction layer (``layer``; default ``buildings``, else the file's
    only polygon layer: :func:`geotiler.vectors.choose_layer`), repaired and split into
    single polygons, in the file's CRS (an empty layer gives an empty array).

    Raises:
        InputError: the file is missing, unreadable, has no CRS, has no such layer or
            several polygon layers and none named, or holds features none of which is a
            polygon.
    """
    if not path.exists():
        raise InputError(f"prediction {path} does not exist")
    layer = choose_layer(path, layer, "predicted buildings", "--pred-layer",
                         prefer=DEFAULT_LAYER)
    try:
        frame = read_vector(path, layer=layer)
    except Exception as err:  # pyogrio raises several types; the message is what matters
        raise InputError(f"cannot read prediction {path}: {first_line(err)}") from None
    if frame.crs is None:
        raise InputError(f"prediction {path} has no CRS; set one with ogr2ogr -a_srs")
    geoms, repaired, dropped = repair_geometries(frame.geometry.values)
    polygons = polygons_only(geoms)
    if len(frame) and not len(polygons):  # points or lines would score as "nothing found"
        raise InputError(f"prediction {path} holds {len(frame)} feature(s) but no polygons "
                         f"(layer {layer or path.stem!r})")
    return Footprints(path=path, geoms=polygons,
                      crs=CRS.from_user_input(frame.crs.to_wkt()), repaired=repaired,
                      dropped=dropped)


def polygons_only(geoms: np.ndarray) -> np.ndarray:
    """Single polygons: multipolygons split, non-polygonal parts dropped (object array)."""
    if len(geoms) == 0:
        return np.empty(0, dtype=object)
    parts = shapely.get_parts(geoms)
    parts = shapely.get_parts(parts)  # collections inside make_valid results
    kind = shapely.get_type_id(parts)
    polys = parts[kind == 3]
    multi = parts[kind == 6]
    if len(multi):
        polys = np.concatenate([polys, shapely.get_parts(multi)])
    return np.asarray(polys[~shapely.is_empty(polys)], dtype=object)


def inside(geoms: np.ndarray, bounds: tuple[float, float, float, float]) -> np.ndarray:
    """The geometries whose representative point lies in ``bounds`` (left, bottom, right,
    top; left and top edges included)."""
    if len(geoms) == 0:
        return geoms
    pts = shapely.get_coordinates(shapely.point_on_surface(geoms))
    x, y = pts[:, 0], pts[:, 1]
    left, bottom, right, top = bounds
    return geoms[(x >= left) & (x < right) & (y > bottom) & (y <= top)]

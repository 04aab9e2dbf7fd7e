"""Vector inputs: footprints and polygon layers from any OGR source or GeoParquet.

A layer is chosen by name or, where a file holds several polygon layers, the user is asked
to name one (one line listing them); an OGR SQL filter can select features; OpenStreetMap
extracts (``.osm``, ``.osm.pbf``) are read through GDAL's OSM driver, buildings being its
``multipolygons`` layer with a ``building`` tag. Invalid polygons are repaired
(``shapely.make_valid``) and counted; a layer without a CRS that places it on the Earth
("Undefined Cartesian SRS" included) is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyproj
import shapely
from rasterio.crs import CRS

from geotiler.errors import ConfigError, InputError, reason
from geotiler.io import first_line

if TYPE_CHECKING:
    import geopandas as gpd

log = logging.getLogger(__name__)


@dataclass
class Footprints:
    """Building polygons of one vector file, repaired, in the file's own CRS."""

    path: Path
    geoms: np.ndarray  # shapely geometries
    crs: CRS
    repaired: int
    dropped: int

    def to_crs(self, crs: CRS) -> np.ndarray:
        """The polygons in another CRS (a new array; the original is kept).

        Raises:
            InputError: PROJ cannot transform between the two CRSs (naming the file).
        """
        if CRS.from_user_input(crs) == self.crs:
            return self.geoms
        import geopandas as gpd  # heavy (pandas): imported only where vectors are read

        try:
            series = gpd.GeoSeries(self.geoms, crs=self.crs.to_wkt()).to_crs(crs.to_wkt())
        except (pyproj.exceptions.ProjError, pyproj.exceptions.CRSError, ValueError) as err:
            raise InputError(
                f"cannot reproject {self.path} from {crs_name(self.crs)} to "
                f"{crs_name(crs)}: {reason(err)}"
            ) from None
        return np.asarray(series.values, dtype=object)


def has_georeferenced_crs(crs: Any) -> bool:
    """Whether a vector layer's CRS places it on the Earth: geographic or projected.

    A GeoPackage layer with srs_id -1 ("Undefined Cartesian SRS") or 0 ("Undefined
    geographic SRS" without datum) reads as an engineering CRS, which PROJ cannot
    transform to any other: for the user that is no CRS at all.
    """
    try:
        pcrs = pyproj.CRS.from_user_input(crs)
    except pyproj.exceptions.CRSError:
        return False
    if pcrs.is_compound:
        pcrs = pcrs.sub_crs_list[0]
    return bool(pcrs.is_geographic or pcrs.is_projected) and "undefined" not in pcrs.name.lower()


def crs_name(crs: Any) -> str:
    """A CRS as a short name for messages (``EPSG:32633``, ``Undefined Cartesian SRS``)."""
    if crs is None:
        return "none"
    try:
        pcrs = pyproj.CRS.from_user_input(crs)
    except pyproj.exceptions.CRSError:
        return str(crs)[:60]
    code = pcrs.to_epsg()
    return f"EPSG:{code}" if code else pcrs.name


#: GeoPackage dataset options of every GeoPackage geotiler writes: version 1.2, which
#: GDAL 3.6 and QGIS 3.28 LTR open without the "v1.4.0 ... may only be partially
#: supported" warning that GDAL's newer default brings; geotiler uses nothing of 1.3/1.4.
GPKG_OPTIONS = {"VERSION": "1.2"}

#: Suffixes read by GDAL's OSM driver (OpenStreetMap XML and PBF extracts).
OSM_SUFFIXES = (".osm", ".pbf")
#: The OSM driver's layer of closed ways and multipolygon relations, and the filter that
#: keeps buildings: the defaults for an OSM extract.
OSM_LAYER = "multipolygons"
OSM_BUILDINGS = "building IS NOT NULL"
_PARQUET_SUFFIXES = (".parquet", ".geoparquet")


def is_osm(path: Path) -> bool:
    """Whether GDAL's OSM driver reads ``path`` (``.osm``, ``.osm.pbf``)."""
    return path.suffix.lower() in OSM_SUFFIXES


def osm_defaults(path: Path, layer: str | None, where: str | None
                 ) -> tuple[str | None, str | None]:
    """The layer and filter an extract of OpenStreetMap is read with: with no ``layer``
    given, :data:`OSM_LAYER` filtered by ``where`` or else :data:`OSM_BUILDINGS`. Other
    files, or a layer given, keep ``layer`` and ``where`` as they are."""
    if is_osm(path) and layer is None:
        return OSM_LAYER, OSM_BUILDINGS if where is None else where
    return layer, where


def read_vector(path: Path,
                within: tuple[CRS, tuple[float, float, float, float]] | None = None,
                *, layer: str | None = None, where: str | None = None) -> gpd.GeoDataFrame:
    """A vector file as a GeoDataFrame, in the file's CRS.

    GeoParquet (by its suffix) is read whole; any other format goes through OGR, and with
    ``within`` (a CRS and bounds in it) only the features meeting those bounds are read.
    ``layer``: the layer to read (OGR formats with several; default: the first, or for an
    OpenStreetMap extract :data:`OSM_LAYER`). ``where``: an OGR SQL filter
    (``"building IS NOT NULL"``; default for an OSM extract read in its
    :data:`OSM_LAYER`: :data:`OSM_BUILDINGS`). Errors are the readers' own, except
    ConfigError for ``layer``/``where`` on GeoParquet: callers word them for their input.
    """
    import geopandas as gpd  # heavy (pandas): imported only where vectors are read
    import pyogrio
    import rasterio.warp

    if path.suffix.lower() in _PARQUET_SUFFIXES:
        if layer is not None or where is not None:
            raise ConfigError(f"{path} is GeoParquet (one table, no SQL filter): a layer or "
                              "filter applies only to OGR formats (GPKG, OSM, ...)")
        return gpd.read_parquet(path)
    layer, where = osm_defaults(path, layer, where)
    if layer is None:  # the first layer, never QGIS's style table (geotiler.styles)
        names = [str(name) for name, _ in pyogrio.list_layers(path) if name != "layer_styles"]
        layer = names[0] if names else None
    bbox = None
    if within is not None:
        file_crs = pyogrio.read_info(path, layer=layer)["crs"]
        if file_crs is not None:
            crs, bounds = within
            bbox = rasterio.warp.transform_bounds(crs, CRS.from_user_input(file_crs),
                                                  *bounds, densify_pts=21)
    return gpd.read_file(path, bbox=bbox, layer=layer, where=where)


def choose_layer(path: Path, layer: str | None, what: str = "footprints",
                 option: str = "--footprints-layer", prefer: str | None = None
                 ) -> str | None:
    """The layer of ``path`` to read polygons from: ``layer`` if given (checked), else
    ``prefer`` where the file has it (predict's ``buildings``), else the only polygon
    layer; None where the reader's default applies (one layer, GeoParquet, OpenStreetMap
    extracts).

    Raises:
        InputError: ``layer`` is not in the file, or the file has several polygon layers
            and none was named (the message lists them and names ``option``).
    """
    import pyogrio

    if path.suffix.lower() in _PARQUET_SUFFIXES or (is_osm(path) and layer is None):
        return layer
    try:
        layers = [(str(name), str(kind or "")) for name, kind in pyogrio.list_layers(path)]
    except Exception as err:  # pyogrio raises several types; the message is what matters
        if _is_raster(path):
            raise InputError(f"{what} {path} is a raster; {what} must be a vector file of "
                             "polygons (GeoPackage, GeoJSON, Shapefile, GeoParquet, ...)"
                             ) from None
        raise InputError(f"cannot read {what} {path}: {first_line(err)}") from None
    layers = [(name, kind) for name, kind in layers if name != "layer_styles"]  # QGIS styles
    names = [name for name, _ in layers]
    if layer is not None:
        if layer not in names:
            raise InputError(f"{what} {path} have no layer {layer!r}; its layers: "
                             f"{', '.join(names)}")
        return layer
    if prefer is not None and prefer in names:
        return prefer
    if len(layers) <= 1:
        return None
    polygonal = [name for name, kind in layers
                 if "POLYGON" in kind.upper() or kind.upper() in ("UNKNOWN", "GEOMETRY")]
    if len(polygonal) == 1:
        return polygonal[0]
    if len(polygonal) > 1:
        raise InputError(f"{what} {path} hold {len(polygonal)} polygon layers "
                         f"({', '.join(polygonal)}); choose one with {option} NAME")
    return None


def _is_raster(path: Path) -> bool:
    """Whether GDAL opens ``path`` as a raster (for a message that says so)."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path):
            return True
    except (RasterioIOError, OSError, ValueError):
        return False


def load_footprints(path: Path | str, *, layer: str | None = None, where: str | None = None,
                    what: str = "footprints",
                    layer_option: str = "--footprints-layer") -> Footprints:
    """Read every polygon of a vector file (GPKG, GeoJSON, Shapefile, GeoParquet, an
    OpenStreetMap ``.osm``/``.osm.pbf`` extract, ...).

    ``layer``: which layer (default :func:`choose_layer`'s: the only polygon layer; an
    OSM extract's ``multipolygons``); ``where``: an OGR SQL filter on its attributes (an OSM
    extract's default keeps ``building IS NOT NULL``). ``what``/``layer_option`` name the
    input and its layer option in messages. Invalid polygons are repaired with
    ``shapely.make_valid`` (polygonal parts kept) and counted; empty and non-polygonal
    features are dropped and counted.

    Raises:
        InputError: the file is missing, unreadable, without CRS, has no such layer,
            several polygon layers and none named, or no polygons.
        ConfigError: ``layer``/``where`` given for GeoParquet, or a ``where`` that OGR's
            SQL parser rejects (exit 2, like any bad option).
    """

    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {path} do not exist")
    layer = choose_layer(path, layer, what, layer_option)
    try:
        frame = read_vector(path, layer=layer, where=where)
    except ConfigError:
        raise
    except Exception as err:  # pyogrio/fiona raise many types; the message is what matters
        text = first_line(err)
        if where and "SQL" in text:  # OGR's own statement is noise: keep its complaint
            option = layer_option.removesuffix("-layer") + "-where"
            raise ConfigError(f"{option} {where!r} is not an OGR SQL filter of {path}: "
                              f"{text.partition(f'{where}: ')[2] or text}") from None
        hint = f" (filter {where!r})" if where else ""
        raise InputError(f"cannot read {what} {path}{hint}: {text}") from None
    if frame.crs is None or not has_georeferenced_crs(frame.crs):
        raise InputError(
            f"{what} {path} have no CRS ({crs_name(frame.crs)}); set one, e.g. "
            f"ogr2ogr -a_srs EPSG:XXXX fixed.gpkg {path}"
        )
    if len(frame) == 0:
        chosen = (f" matching {where!r}" if where
                  else (f" matching {OSM_BUILDINGS!r}" if is_osm(path) else ""))
        raise InputError(f"{what} {path} hold no features{chosen}")
    geoms, repaired, missing = repair_geometries(frame.geometry.values)
    polygonal = np.array([_polygonal_part(g) for g in geoms], dtype=object)
    keep = np.array([g is not None and not g.is_empty for g in polygonal], dtype=bool)
    if not keep.any():
        raise InputError(f"{what} {path} hold no polygons")
    return Footprints(
        path=path,
        geoms=polygonal[keep],
        crs=CRS.from_user_input(frame.crs.to_wkt()),
        repaired=repaired,
        dropped=missing + int((~keep).sum()),
    )


def repair_geometries(values: Any) -> tuple[np.ndarray, int, int]:
    """Drop missing and empty geometries and repair invalid ones (``shapely.make_valid``).

    Returns (geometries as an object array, how many were repaired, how many dropped).
    """
    geoms = np.asarray(values, dtype=object)
    present = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
    geoms = geoms[present]
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        geoms = geoms.copy()
        geoms[invalid] = shapely.make_valid(geoms[invalid])
    return geoms, int(invalid.sum()), int((~present).sum())


def _polygonal_part(geom: shapely.Geometry) -> shapely.Geometry | None:
    if geom is None:
        return None
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    if geom.geom_type == "GeometryCollection":
        parts = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
        return shapely.union_all(parts) if parts else None
    return None

"""Raster and vector inputs: open, check, measure, read by window.

Nothing here reads a whole raster: callers ask for one window at a time, resampled onto the
target grid, together with its validity mask (nodata, alpha and internal masks honoured,
non-finite values invalid whether or not a nodata value is declared, and pixels past the
raster's edge marked invalid). Rasters are opened without their overviews unless asked
(``tile --overviews``), so a resampled read resamples the full-resolution pixels and the
result does not depend on what overviews a file carries. Read failures (a truncated file, a
damaged block) become an :class:`~geotiler.errors.InputError` naming the raster. Rasters
may be local files or remote (``https://``, ``s3://``: :mod:`geotiler.remote`), where GDAL
fetches only the byte ranges a window needs. Vector files are read through OGR (any layer,
an SQL filter, OpenStreetMap extracts through GDAL's OSM driver) or GeoParquet.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyproj
import rasterio
import shapely
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.windows import Window

from geotiler.errors import ConfigError, InputError, reason
from geotiler.remote import RemoteStat, gdal_path, is_remote, remote_error, remote_stem, url_of

if TYPE_CHECKING:
    import geopandas as gpd

log = logging.getLogger(__name__)

SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")


@dataclass(frozen=True)
class RasterInfo:
    """What the tiler needs to know about one source raster (opened and checked once)."""

    path: Path | str  # a local file, or a remote raster's GDAL path (str, see raster_source)
    name: str
    crs: CRS
    transform: Affine
    width: int
    height: int
    bands: tuple[int, ...]
    band_names: tuple[str, ...]
    dtype: str
    nodata: float | None
    gsd: tuple[float, float]  # ground metres per pixel (x, y) at the raster's centre
    all_valid: bool = False  # no nodata, alpha or mask band: every pixel inside is valid

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        left, top = self.transform * (0, 0)
        right, bottom = self.transform * (self.width, self.height)
        return (min(left, right), min(top, bottom), max(left, right), max(top, bottom))

    @property
    def mean_gsd(self) -> float:
        return math.sqrt(self.gsd[0] * self.gsd[1])


def open_raster_info(path: Path | str, bands: tuple[int, ...] | None = None) -> RasterInfo:
    """Open a raster, check it can be tiled, and return its description.

    ``path``: a file, or a remote raster (``https://...``, ``s3://bucket/key``).
    Raises InputError for a missing file, a file GDAL cannot read as a raster, a raster
    without CRS or geotransform, a rotated grid, or band numbers it does not have; for a
    remote raster, a one-line error with the HTTP status (403, 404) or the timeout.
    """
    path = raster_source(path)
    label = source_label(path)
    with open_raster(path) as src:
        if src.crs is None:
            raise InputError(
                f"raster {label} has no CRS; assign one first, e.g. "
                f"gdal_edit.py -a_srs EPSG:XXXX {label}"
            )
        transform = src.transform
        if transform.is_identity or src.gcps[0]:
            raise InputError(
                f"raster {label} has no geotransform (pixel grid not placed on the map); "
                "georeference it first (gdalwarp with GCPs, or gdal_edit.py -a_ullr)"
            )
        if transform.b != 0 or transform.d != 0:
            raise InputError(
                f"raster {label} has a rotated grid; warp it north-up first: "
                f"gdalwarp {label} north_up.tif"
            )
        if transform.e > 0:
            raise InputError(f"raster {label} is stored south-up; warp it north-up with gdalwarp")
        if bands is None:
            interps = src.colorinterp
            bands = tuple(i + 1 for i in range(src.count) if interps[i] != ColorInterp.alpha)
            if not bands:
                bands = tuple(range(1, src.count + 1))
        missing = [b for b in bands if b > src.count]
        if missing:
            raise InputError(
                f"raster {label} has {src.count} band(s); --bands asks for {list(bands)}"
            )
        dtypes = {src.dtypes[b - 1] for b in bands}
        if len(dtypes) != 1:
            raise InputError(f"raster {label}: selected bands mix dtypes {sorted(dtypes)}")
        dtype = dtypes.pop()
        if dtype not in SUPPORTED_DTYPES:
            raise InputError(f"raster {label}: dtype {dtype} is not supported")
        names = tuple(
            (src.descriptions[b - 1] or src.colorinterp[b - 1].name) for b in bands
        )
        return RasterInfo(
            path=path,
            name=remote_stem(path) if isinstance(path, str) else path.stem,
            crs=src.crs,
            transform=transform,
            width=src.width,
            height=src.height,
            bands=tuple(bands),
            band_names=names,
            dtype=dtype,
            nodata=src.nodata,
            gsd=ground_gsd(src.crs, transform, src.width, src.height),
            all_valid=all(flags == [MaskFlags.all_valid] for flags in src.mask_flag_enums),
        )


# Open option of GDAL's raster drivers: never serve a read from an overview. GDAL otherwise
# answers a decimated read (out_shape smaller than the window) from the closest overview,
# made with whatever resampling its author chose (nearest turns 1-px stripes 0/200 into
# all 0 where the documented average is 100).
NO_OVERVIEWS = {"OVERVIEW_LEVEL": "NONE"}

# What rasterio raises for GDAL failures: its own errors and GDAL's CPLE_* classes.
GDAL_ERRORS: tuple[type[BaseException], ...] = (
    rasterio.errors.RasterioError, CPLE_BaseError, OSError,
)


def raster_source(path: Path | str) -> Path | str:
    """A raster argument as geotiler keeps it: a local ``Path``, or for a remote raster
    (``http(s)://``, ``s3://``, ``/vsicurl/``, ``/vsis3/``) its GDAL path as a ``str``
    (``/vsicurl/https://...``, ``/vsis3/bucket/key``), which ``rasterio.open`` reads in
    place. Raises InputError for an ``s3://`` URL without a key."""
    if isinstance(path, str) and is_remote(path):
        return gdal_path(path)
    return Path(path)


def source_label(path: Path | str) -> str:
    """How messages and ``dataset.json`` name a source: the path, or a remote raster's URL."""
    return url_of(path) if isinstance(path, str) else str(path)


def open_raster(path: Path | str, *, overviews: bool = False) -> rasterio.DatasetReader:
    """Open a raster (file or remote, see :func:`raster_source`) for reading, without its
    overviews (:data:`NO_OVERVIEWS`) unless ``overviews``.

    Raises:
        InputError: (one line) the file is missing or not a raster GDAL can read; for a
            remote raster the line names the HTTP status (403 access denied, 404 not
            found) or the timeout.
    """
    path = raster_source(path)
    options = {} if overviews else NO_OVERVIEWS
    if isinstance(path, str):
        try:
            return rasterio.open(path, **options)
        except rasterio.errors.RasterioIOError as err:
            raise remote_error(path, str(err)) from None
    if not path.exists():
        raise InputError(f"raster {path} does not exist")
    try:
        return rasterio.open(path, **options)
    except GDAL_ERRORS as err:
        raise InputError(f"{path} is not a raster GDAL can read: {first_line(err)}") from None


def describe_remote(path: str) -> RemoteStat:
    """URL, size and ETag of a remote raster (one HEAD request); where the server does not
    answer HEAD (a URL signed for GET only), the URL alone, with a warning."""
    from geotiler.remote import stat_remote

    try:
        return stat_remote(path)
    except InputError as err:
        log.warning("%s; dataset.json records the URL only", err)
        return RemoteStat(url_of(path), None, None)


def ground_gsd(crs: CRS, transform: Affine, width: int, height: int) -> tuple[float, float]:
    """Ground size of one pixel in metres (x, y), measured at the raster's centre.

    Geographic CRSs: the geodesic length of a one-pixel step on the WGS 84 ellipsoid.
    Projected CRSs: the pixel size in the CRS's linear unit converted to metres, as GIS
    software reports it; only where the projection's scale at the centre is off by more than
    1 % (Web Mercator away from the equator) is it divided out, so a 0.5 m UTM raster stays
    exactly 0.5 m while Web Mercator pixels get their true ground size.
    """
    px, py = abs(transform.a), abs(transform.e)
    cx, cy = transform * (width / 2, height / 2)
    pcrs = pyproj.CRS.from_user_input(crs.to_wkt())
    if pcrs.is_geographic:
        to_lonlat = pyproj.Transformer.from_crs(pcrs, pcrs.geodetic_crs, always_xy=True)
        lon, lat = to_lonlat.transform(cx, cy)
        lon_e, lat_e = to_lonlat.transform(cx + px, cy)
        lon_n, lat_n = to_lonlat.transform(cx, cy + py)
        geod = pyproj.Geod(ellps="WGS84")
        gx = geod.inv(lon, lat, lon_e, lat_e)[2]
        gy = geod.inv(lon, lat, lon_n, lat_n)[2]
        return (float(gx), float(gy))
    unit = pcrs.axis_info[0].unit_conversion_factor if pcrs.axis_info else 1.0
    gx, gy = px * unit, py * unit
    try:
        to_lonlat = pyproj.Transformer.from_crs(pcrs, pcrs.geodetic_crs, always_xy=True)
        lon, lat = to_lonlat.transform(cx, cy)
        factors = pyproj.Proj(pcrs).get_factors(lon, lat)
        scale = math.sqrt(factors.meridional_scale * factors.parallel_scale)
        if math.isfinite(scale) and scale > 0 and abs(scale - 1) > 0.01:
            gx, gy = gx / scale, gy / scale
    except (pyproj.exceptions.ProjError, pyproj.exceptions.CRSError):  # pragma: no cover
        log.debug("no projection factors for %s; using nominal pixel size", crs)
    return (float(gx), float(gy))


def read_window(
    src: rasterio.DatasetReader,
    bands: tuple[int, ...],
    bounds: tuple[float, float, float, float],
    size: int | tuple[int, int],
    resampling: Resampling,
    *,
    all_valid: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Read the map rectangle ``bounds`` as a (bands, H, W) array plus validity mask.

    ``size`` is the output's side in pixels, or its (height, width). Windows that run past
    the raster's edge are padded (nodata, marked invalid) instead of failing, so edge tiles
    are kept. Non-finite values (NaN, inf) are invalid whether or not the raster declares
    a nodata value, and are replaced by the nodata value (0 if it is none or not finite),
    so no NaN reaches statistics, tiles or a model. Open ``src`` with :func:`open_raster`
    so that no overview stands in for the pixels.

    Raises:
        InputError: GDAL cannot read the window (a truncated file, a damaged block).
    """
    try:
        image, valid = _read_window(src, bands, bounds, size, resampling, all_valid)
    except GDAL_ERRORS as err:
        raise InputError.reading(src.name, err, "raster") from None
    if image.dtype.kind == "f":
        finite = np.isfinite(image).all(axis=0)
        if not finite.all():
            fill = src.nodata if src.nodata is not None and math.isfinite(src.nodata) else 0
            image[:, ~finite] = fill
            valid &= finite
    return image, valid


def _read_window(
    src: rasterio.DatasetReader,
    bands: tuple[int, ...],
    bounds: tuple[float, float, float, float],
    size: int | tuple[int, int],
    resampling: Resampling,
    all_valid: bool,
) -> tuple[np.ndarray, np.ndarray]:
    shape = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    window = rasterio.windows.from_bounds(*bounds, transform=src.transform)
    inside = (
        window.col_off >= -1e-6
        and window.row_off >= -1e-6
        and window.col_off + window.width <= src.width + 1e-6
        and window.row_off + window.height <= src.height + 1e-6
    )
    fill = src.nodata if src.nodata is not None else 0
    if inside:
        window = _snap(window)
        image = src.read(bands, window=window, out_shape=(len(bands), *shape),
                         resampling=resampling)
        if all_valid:  # no nodata, alpha or mask band: skip reading a mask of 255s
            return image, np.ones(shape, dtype=bool)
        valid = src.dataset_mask(window=window, out_shape=shape,
                                 resampling=Resampling.nearest) > 0
    else:
        image = src.read(bands, window=window, out_shape=(len(bands), *shape),
                         resampling=resampling, boundless=True, fill_value=fill)
        valid = src.dataset_mask(window=window, out_shape=shape, boundless=True,
                                 resampling=Resampling.nearest) > 0
    return image, valid


def _snap(window: Window, eps: float = 1e-6) -> Window:
    """Round window offsets that are integers up to float noise, so GDAL copies exactly."""
    vals = [window.col_off, window.row_off, window.width, window.height]
    snapped = [round(v) if abs(v - round(v)) < eps else v for v in vals]
    return Window(*snapped)


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
    if is_osm(path) and layer is None:
        layer = OSM_LAYER
        where = OSM_BUILDINGS if where is None else where
    elif layer is None:  # the first layer, never QGIS's style table (geotiler.styles)
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
                 option: str = "--footprints-layer") -> str | None:
    """The layer of ``path`` to read polygons from: ``layer`` if given (checked), else the
    only polygon layer; None where the reader's default applies (one layer, GeoParquet,
    OpenStreetMap extracts).

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
        raise InputError(f"cannot read {what} {path}: {first_line(err)}") from None
    layers = [(name, kind) for name, kind in layers if name != "layer_styles"]  # QGIS styles
    names = [name for name, _ in layers]
    if layer is not None:
        if layer not in names:
            raise InputError(f"{what} {path} have no layer {layer!r}; its layers: "
                             f"{', '.join(names)}")
        return layer
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
            several polygon layers and none named, a filter OGR rejects, or no polygons.
        ConfigError: ``layer``/``where`` given for GeoParquet.
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
        hint = f" (filter {where!r})" if where else ""
        raise InputError(f"cannot read {what} {path}{hint}: {first_line(err)}") from None
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


def source_digest(path: Path | str) -> str | None:
    """SHA-256 of a local source; None for a remote one (identified by its ETag instead,
    :func:`describe_remote`, so that nothing is downloaded to hash it)."""
    return None if isinstance(path, str) else file_digest(path)


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file, read in chunks (sources are recorded in dataset.json)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__

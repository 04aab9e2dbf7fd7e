"""Raster and vector inputs: open, check, measure, read by window.

Nothing here reads a whole raster: callers ask for one window at a time, resampled onto the
target grid, together with its validity mask (nodata, alpha and internal masks honoured,
non-finite values invalid whether or not a nodata value is declared, and pixels past the
raster's edge marked invalid). Rasters are opened without their overviews, so a resampled
read always resamples the full-resolution pixels and the result does not depend on what
overviews a file carries. Read failures (a truncated file, a damaged block) become an
:class:`~geotiler.errors.InputError` naming the raster.
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

from geotiler.errors import InputError, reason

if TYPE_CHECKING:
    import geopandas as gpd

log = logging.getLogger(__name__)

SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")


@dataclass(frozen=True)
class RasterInfo:
    """What the tiler needs to know about one source raster (opened and checked once)."""

    path: Path
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

    Raises InputError for a missing file, a file GDAL cannot read as a raster, a raster
    without CRS or geotransform, a rotated grid, or band numbers it does not have.
    """
    path = Path(path)
    with open_raster(path) as src:
        if src.crs is None:
            raise InputError(
                f"raster {path} has no CRS; assign one first, e.g. "
                f"gdal_edit.py -a_srs EPSG:XXXX {path}"
            )
        transform = src.transform
        if transform.is_identity or src.gcps[0]:
            raise InputError(
                f"raster {path} has no geotransform (pixel grid not placed on the map); "
                "georeference it first (gdalwarp with GCPs, or gdal_edit.py -a_ullr)"
            )
        if transform.b != 0 or transform.d != 0:
            raise InputError(
                f"raster {path} has a rotated grid; warp it north-up first: "
                f"gdalwarp {path} north_up.tif"
            )
        if transform.e > 0:
            raise InputError(f"raster {path} is stored south-up; warp it north-up with gdalwarp")
        if bands is None:
            interps = src.colorinterp
            bands = tuple(i + 1 for i in range(src.count) if interps[i] != ColorInterp.alpha)
            if not bands:
                bands = tuple(range(1, src.count + 1))
        missing = [b for b in bands if b > src.count]
        if missing:
            raise InputError(
                f"raster {path} has {src.count} band(s); --bands asks for {list(bands)}"
            )
        dtypes = {src.dtypes[b - 1] for b in bands}
        if len(dtypes) != 1:
            raise InputError(f"raster {path}: selected bands mix dtypes {sorted(dtypes)}")
        dtype = dtypes.pop()
        if dtype not in SUPPORTED_DTYPES:
            raise InputError(f"raster {path}: dtype {dtype} is not supported")
        names = tuple(
            (src.descriptions[b - 1] or src.colorinterp[b - 1].name) for b in bands
        )
        return RasterInfo(
            path=path,
            name=path.stem,
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


def open_raster(path: Path | str) -> rasterio.DatasetReader:
    """Open a raster for reading, without its overviews (:data:`NO_OVERVIEWS`).

    Raises:
        InputError: (one line) the file is missing or not a raster GDAL can read.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"raster {path} does not exist")
    try:
        return rasterio.open(path, **NO_OVERVIEWS)
    except GDAL_ERRORS as err:
        raise InputError(f"{path} is not a raster GDAL can read: {first_line(err)}") from None


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


def read_vector(path: Path,
                within: tuple[CRS, tuple[float, float, float, float]] | None = None,
                *, layer: str | None = None) -> gpd.GeoDataFrame:
    """A vector file as a GeoDataFrame, in the file's CRS.

    GeoParquet (by its suffix) is read whole; any other format goes through OGR, and with
    ``within`` (a CRS and bounds in it) only the features meeting those bounds are read.
    ``layer``: the layer to read (OGR formats with several; default: the first).
    Errors are the readers' own: callers word them for their input.
    """
    import geopandas as gpd  # heavy (pandas): imported only where vectors are read
    import pyogrio
    import rasterio.warp

    if path.suffix.lower() in (".parquet", ".geoparquet"):
        return gpd.read_parquet(path)
    bbox = None
    if within is not None:
        file_crs = pyogrio.read_info(path)["crs"]
        if file_crs is not None:
            crs, bounds = within
            bbox = rasterio.warp.transform_bounds(crs, CRS.from_user_input(file_crs),
                                                  *bounds, densify_pts=21)
    return gpd.read_file(path, bbox=bbox, layer=layer)


def load_footprints(path: Path | str) -> Footprints:
    """Read every polygon of a vector file (GPKG, GeoJSON, Shapefile, GeoParquet, ...).

    Invalid polygons are repaired with ``shapely.make_valid`` (polygonal parts kept) and
    counted; empty and non-polygonal features are dropped and counted.
    """

    path = Path(path)
    if not path.exists():
        raise InputError(f"footprints {path} do not exist")
    try:
        frame = read_vector(path)
    except Exception as err:  # pyogrio/fiona raise many types; the message is what matters
        raise InputError(f"cannot read footprints {path}: {first_line(err)}") from None
    if frame.crs is None or not has_georeferenced_crs(frame.crs):
        raise InputError(
            f"footprints {path} have no CRS ({crs_name(frame.crs)}); set one, e.g. "
            f"ogr2ogr -a_srs EPSG:XXXX fixed.gpkg {path}"
        )
    if len(frame) == 0:
        raise InputError(f"footprints {path} hold no features")
    geoms, repaired, missing = repair_geometries(frame.geometry.values)
    polygonal = np.array([_polygonal_part(g) for g in geoms], dtype=object)
    keep = np.array([g is not None and not g.is_empty for g in polygonal], dtype=bool)
    if not keep.any():
        raise InputError(f"footprints {path} hold no polygons")
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

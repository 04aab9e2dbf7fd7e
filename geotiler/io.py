"""Raster inputs: open, check, measure, read by window; input digests.

Nothing here reads a whole raster: callers ask for one window at a time, resampled onto the
target grid, together with its validity mask (nodata, alpha and internal masks honoured,
non-finite values invalid whether or not a nodata value is declared, and pixels past the
raster's edge marked invalid). Rasters are opened without their overviews unless asked
(``tile --overviews``), so a resampled read resamples the full-resolution pixels and the
result does not depend on what overviews a file carries. Read failures (a truncated file, a
damaged block) become an :class:`~geotiler.errors.InputError` naming the raster. Rasters
may be local files or remote (``https://``, ``s3://``: :mod:`geotiler.remote`), where GDAL
fetches only the byte ranges a window needs. Vector inputs are :mod:`geotiler.vectors`'.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyproj
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.windows import Window

from geotiler.errors import InputError
from geotiler.remote import RemoteStat, gdal_path, is_remote, remote_error, remote_stem, url_of

if TYPE_CHECKING:
    pass

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


def source_digest(path: Path | str) -> str | None:
    """SHA-256 of a local source; None for a remote one (identified by its ETag instead,
    :func:`describe_remote`, so that nothing is downloaded to hash it)."""
    return None if isinstance(path, str) else file_digest(path)


def given_twice(paths: Sequence[Path | str]) -> str | None:
    """The first of several inputs named twice (local paths compared resolved: ``a.tif``
    and ``./a.tif`` are one), or None."""
    seen: set[str] = set()
    for path in paths:
        key = str(path) if is_remote(path) else str(Path(path).resolve())
        if key in seen:
            return str(path)
        seen.add(key)
    return None


def replaced_input(outputs: Sequence[Path | str], inputs: Sequence[Path | str | None]
                   ) -> tuple[str, str] | None:
    """(output, input) for the first output that would write over an input: the input file
    itself, or a file inside an input folder (a tile dataset, a shapefile folder); paths
    compared resolved, URLs and ``None`` skipped. None when every output is elsewhere."""
    local = [(str(i), Path(i).resolve()) for i in inputs
             if i is not None and not is_remote(i)]
    for out in outputs:
        target = Path(out).resolve()
        for name, source in local:
            if target == source or (source.is_dir() and source in target.parents):
                return str(out), name
    return None


def _source_files(path: Path) -> list[Path]:
    """A local source's files: itself, or a folder's files in sorted order (OGR reads a
    shapefile folder as one source)."""
    path = Path(path)
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def source_size(path: Path) -> int:
    """Bytes of a local source: a file's size, or the sum over a folder's files."""
    return sum(p.stat().st_size for p in _source_files(path))


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file, read in chunks (sources are recorded in dataset.json). A folder
    (OGR reads a shapefile folder as one source) hashes each file in it, by name, in
    sorted order."""
    digest = hashlib.sha256()
    for file in _source_files(path):
        if file != Path(path):
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__

"""Quick-look PNGs: a raster, decimated, with truth and predicted outlines drawn on it.

Why: a picture answers "is the model finding the buildings, and is the truth layer where the
imagery is?" faster than any table of numbers.

How: the raster is read once, decimated by GDAL to at most ``max_side`` pixels on its longest
side (average resampling, overviews used when the file has them), so memory stays bounded
whatever the raster's size. Bands become display RGB (uint8 as is, other types stretched
between their 2nd and 98th percentiles over valid pixels; nodata and alpha shown dark grey).
Polygons are read only where they meet the raster, reprojected to its CRS, clipped, and their
rings (holes and every part of a MultiPolygon included) drawn with ``cv2.polylines`` on the
decimated grid: truth 2 px wide, predicted 1 px on top, so both show where they agree. A
legend strip below names the colours, the raster and the picture's scale.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

import cv2
import geopandas as gpd
import numpy as np
import rasterio
import rasterio.warp
import shapely
from affine import Affine
from numpy.typing import NDArray
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling

from geotiler.atomic import atomic_path
from geotiler.errors import ConfigError, InputError, OutputError
from geotiler.io import first_line, ground_gsd, open_raster
from geotiler.vectors import read_vector

log = logging.getLogger(__name__)

#: Polygons to draw: a vector file any GDAL/pyogrio driver reads (or GeoParquet), or a
#: GeoDataFrame / GeoSeries with a CRS.
PolygonSource: TypeAlias = str | os.PathLike[str] | gpd.GeoDataFrame | gpd.GeoSeries

#: Outline and swatch colours, RGB.
TRUTH_COLOUR: tuple[int, int, int] = (255, 255, 0)  # yellow
PREDICTED_COLOUR: tuple[int, int, int] = (255, 0, 255)  # magenta
NODATA_COLOUR: tuple[int, int, int] = (48, 48, 48)  # dark grey
LEGEND_HEIGHT = 22  # px, added below the picture
TRUTH_WIDTH = 2  # px
PREDICTED_WIDTH = 1  # px

_LEGEND_BG = (24, 24, 24)
_LEGEND_FG = (235, 235, 235)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_SCALE = 0.42
_SHIFT = 4  # cv2 fixed-point bits: vertices placed to 1/16 px
_STRETCH = (2.0, 98.0)  # percentiles


def render_quicklook(
    raster: str | os.PathLike[str],
    out_png: str | os.PathLike[str],
    *,
    truth: PolygonSource | None = None,
    predicted: PolygonSource | None = None,
    max_side: int = 1024,
    bands: Sequence[int] | None = None,
) -> Path:
    """Write a PNG of ``raster`` (longest side at most ``max_side``) with outlines drawn on it.

    ``bands`` are 1-based; one band is shown grey, three as RGB (default: the first three
    non-alpha bands, or the first band if there are fewer). ``truth`` and ``predicted`` may be
    in any CRS. The picture is ``max_side`` or less on its longest side, plus a
    :data:`LEGEND_HEIGHT` px legend strip below. The file is written atomically.

    Raises InputError for a missing or unreadable raster or vector input, ConfigError for a
    ``max_side`` below 16 or a band count other than 1 or 3, OutputError when the output
    folder does not exist.
    """
    raster, out = Path(raster), Path(out_png)
    if max_side < 16:
        raise ConfigError(f"max_side is {max_side}; use 16 or more (e.g. 1024)")
    if not out.parent.is_dir():
        raise OutputError(f"output folder {out.parent} does not exist; create it first")
    image, valid, crs, transform = _read_decimated(raster, max_side, bands)
    rgb = _display_rgb(image, valid)
    height, width = valid.shape
    layers: list[tuple[str, tuple[int, int, int], int]] = []
    for name, source, colour, thickness in (
        ("truth", truth, TRUTH_COLOUR, TRUTH_WIDTH),
        ("predicted", predicted, PREDICTED_COLOUR, PREDICTED_WIDTH),
    ):
        if source is None:
            continue
        if crs is None:
            raise InputError(f"raster {raster} has no CRS, so {name} polygons cannot be "
                             f"placed on it; assign one with gdal_edit.py -a_srs EPSG:XXXX")
        geoms = _polygons_on_grid(source, name, crs, transform, width, height)
        _draw_outlines(rgb, geoms, transform, colour, thickness)
        layers.append((name, colour, len(geoms)))
    scale = _scale_text(crs, transform, width, height)
    picture = np.concatenate([rgb, _legend(width, layers, f"{raster.name}  {scale}")])
    _write_png(picture, out)
    log.info("wrote quick-look %s (%d x %d px, %s)", out, width, height, scale)
    return out


def decimated_shape(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(height, width) of the picture: the raster scaled so its longest side fits max_side."""
    factor = max(1.0, max(width, height) / max_side)
    return max(1, round(height / factor)), max(1, round(width / factor))


def _read_decimated(path: Path, max_side: int, bands: Sequence[int] | None
                    ) -> tuple[np.ndarray, NDArray[np.bool_], CRS | None, Affine]:
    """The chosen bands and validity mask at the picture's size, never at full resolution."""
    with open_raster(path) as src:
        chosen = _choose_bands(src, path, bands)
        out_h, out_w = decimated_shape(src.width, src.height, max_side)
        try:
            image = src.read(chosen, out_shape=(len(chosen), out_h, out_w),
                             resampling=Resampling.average)
            valid = src.dataset_mask(out_shape=(out_h, out_w),
                                     resampling=Resampling.nearest) > 0
        except rasterio.errors.RasterioIOError as err:
            raise InputError(f"cannot read raster {path}: {first_line(err)}") from None
        transform = src.transform * Affine.scale(src.width / out_w, src.height / out_h)
        crs = src.crs
    if image.dtype.kind == "f":
        valid &= np.isfinite(image).all(axis=0)
    return image, valid, crs, transform


def _choose_bands(src: rasterio.DatasetReader, path: Path, bands: Sequence[int] | None
                  ) -> list[int]:
    if bands is None:
        colour = [i + 1 for i in range(src.count) if src.colorinterp[i] != ColorInterp.alpha]
        colour = colour or [1]
        return colour[:3] if len(colour) >= 3 else colour[:1]
    chosen = [int(b) for b in bands]
    if len(chosen) not in (1, 3):
        raise ConfigError(f"bands {chosen}: give one band (grey) or three (RGB)")
    if any(b < 1 or b > src.count for b in chosen):
        raise InputError(f"raster {path} has {src.count} band(s); bands asks for {chosen}")
    return chosen


def _display_rgb(image: np.ndarray, valid: NDArray[np.bool_]) -> NDArray[np.uint8]:
    """(bands, H, W) -> (H, W, 3) uint8: uint8 as is, others stretched 2-98 % per band."""
    stretch = image.dtype != np.uint8
    planes = [_stretch(band, valid) if stretch else band for band in image]
    if len(planes) == 1:
        planes = planes * 3
    rgb = np.ascontiguousarray(np.stack(planes, axis=-1))
    rgb[~valid] = NODATA_COLOUR
    return rgb


def _stretch(band: np.ndarray, valid: NDArray[np.bool_]) -> NDArray[np.uint8]:
    values = band[valid]
    if values.size == 0:
        return np.zeros(band.shape, np.uint8)
    lo, hi = (float(v) for v in np.percentile(values, _STRETCH))
    if not hi > lo:
        hi = lo + 1.0
    scaled = (band.astype(np.float32) - lo) * np.float32(255.0 / (hi - lo))
    return np.clip(np.nan_to_num(scaled), 0, 255).round().astype(np.uint8)


def _polygons_on_grid(source: PolygonSource, name: str, crs: CRS, transform: Affine,
                      width: int, height: int) -> NDArray[np.object_]:
    """The polygons that meet the picture, in the raster's CRS, clipped just outside it."""
    left, top = transform * (0, 0)
    right, bottom = transform * (width, height)
    bounds = (min(left, right), min(top, bottom), max(left, right), max(top, bottom))
    series = _read_polygons(source, name, crs, bounds)
    geoms = np.asarray(series.values, dtype=object)
    geoms = geoms[~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)]
    geoms = geoms[np.isin(shapely.get_type_id(geoms), (3, 6, 7))]  # (Multi)Polygon, collection
    pad = 4 * max(abs(transform.a), abs(transform.e))  # clipped edges fall off the picture
    box = (bounds[0] - pad, bounds[1] - pad, bounds[2] + pad, bounds[3] + pad)
    geoms = geoms[shapely.intersects(geoms, shapely.box(*box))]
    geoms = shapely.clip_by_rect(geoms, *box)
    return np.asarray(geoms[~shapely.is_empty(geoms)], dtype=object)


def _read_polygons(source: PolygonSource, name: str, crs: CRS,
                   bounds: tuple[float, float, float, float]) -> gpd.GeoSeries:
    """``source`` as a GeoSeries in ``crs``; a file is read only where it meets ``bounds``."""
    if isinstance(source, gpd.GeoDataFrame | gpd.GeoSeries):
        if source.crs is None:
            raise InputError(f"{name} polygons have no CRS; set one with .set_crs(...)")
        series = source.geometry if isinstance(source, gpd.GeoDataFrame) else source
        return series.to_crs(crs.to_wkt())
    path = Path(source)
    if not path.exists():
        raise InputError(f"{name} polygons {path} do not exist")
    try:
        frame = read_vector(path, within=(crs, bounds))
    except Exception as err:  # pyogrio raises many types; the message is what matters
        raise InputError(f"cannot read {name} polygons {path}: {first_line(err)}") from None
    if frame.crs is None:
        raise InputError(f"{name} polygons {path} have no CRS; set one, e.g. "
                         f"ogr2ogr -a_srs EPSG:XXXX fixed.gpkg {path}")
    return frame.geometry.to_crs(crs.to_wkt())


def _draw_outlines(rgb: NDArray[np.uint8], geoms: NDArray[np.object_], transform: Affine,
                   colour: tuple[int, int, int], thickness: int) -> None:
    """Draw every ring (exteriors and holes of every part) of ``geoms`` into ``rgb``."""
    if len(geoms) == 0:
        return
    parts = shapely.get_parts(geoms)
    parts = parts[shapely.get_type_id(parts) == 3]  # polygons from collections too
    rings = shapely.get_rings(parts)
    xy, index = shapely.get_coordinates(rings, return_index=True)
    if len(xy) == 0:
        return
    inv = ~transform
    col = inv.a * xy[:, 0] + inv.b * xy[:, 1] + inv.c
    row = inv.d * xy[:, 0] + inv.e * xy[:, 1] + inv.f
    # Pixel (i, j) covers [i, i + 1); cv2 puts pixel centres on integers.
    pts = np.round((np.stack([col, row], axis=1) - 0.5) * (1 << _SHIFT)).astype(np.int32)
    splits = np.flatnonzero(np.diff(index)) + 1
    polylines = [p.reshape(-1, 1, 2) for p in np.split(pts, splits)]
    cv2.polylines(rgb, polylines, isClosed=True, color=colour, thickness=thickness,
                  lineType=cv2.LINE_8, shift=_SHIFT)


def _scale_text(crs: CRS | None, transform: Affine, width: int, height: int) -> str:
    if crs is None:
        return "no CRS"
    metres = math.sqrt(math.prod(ground_gsd(crs, transform, width, height)))
    return f"{metres:.2f} m/px" if metres < 100 else f"{metres:,.0f} m/px"


def _legend(width: int, layers: list[tuple[str, tuple[int, int, int], int]],
            caption: str) -> NDArray[np.uint8]:
    strip = np.empty((LEGEND_HEIGHT, width, 3), np.uint8)
    strip[:] = _LEGEND_BG
    baseline = LEGEND_HEIGHT - 7
    x = 6
    for name, colour, count in layers:
        cv2.rectangle(strip, (x, 6), (x + 13, LEGEND_HEIGHT - 7), colour, thickness=-1)
        x += 18
        x = _text(strip, f"{name} ({count})", x, baseline) + 12
    _text(strip, caption, x, baseline)
    return strip


def _text(strip: NDArray[np.uint8], text: str, x: int, baseline: int) -> int:
    """Draw ASCII text at x; return where the next item may start."""
    text = text.encode("ascii", "replace").decode("ascii")
    cv2.putText(strip, text, (x, baseline), _FONT, _FONT_SCALE, _LEGEND_FG, 1, cv2.LINE_AA)
    (w, _), _ = cv2.getTextSize(text, _FONT, _FONT_SCALE, 1)
    return x + w


def _write_png(rgb: NDArray[np.uint8], out: Path) -> None:
    """Encode and write next to ``out``, then rename over it (readers never see half)."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - cv2 fails only on absurd sizes
        raise OutputError(f"cannot encode {out} as PNG")
    with atomic_path(out) as tmp:
        try:
            tmp.write_bytes(data.tobytes())
        except OSError as err:
            raise OutputError(f"cannot write {out}: {err.strerror or err}") from None

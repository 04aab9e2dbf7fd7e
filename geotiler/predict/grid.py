"""The model grid: where prediction's pixels lie on the map, and how the raster is read onto it.

Windows are cut at the model's GSD, exactly as the tiler made the training tiles (the same
rule, :mod:`geotiler.tiles.grid`): the target pixel size in the raster's CRS units is the
native pixel size x ``model.gsd / ground GSD`` (ground GSD in metres, measured
geodesically at the raster's centre, so geographic CRSs work). Within 0.1 % of the
model's GSD the raster is read as it is. The outputs are written **on this model grid**
(same CRS and origin as the raster; the pixel size is the model's), not resampled back to
the source grid: resampling probabilities twice would blur them, and GIS software
overlays both grids anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import rasterio
from affine import Affine
from rasterio.enums import MaskFlags

from geotiler.io import RasterInfo
from geotiler.predict.config import ModelInfo
from geotiler.predict.plan import Rect
from geotiler.tiles.grid import gsd_factor, resampling_for_scale, scaled_pixel

NATIVE_TOLERANCE = 1e-3  # read the raster as it is when within 0.1 % of the model's GSD


@dataclass(frozen=True)
class PredictGrid:
    """The model grid over one raster and how to read it (small, picklable)."""

    path: str
    crs_wkt: str
    transform: Affine  # of the model grid
    width: int  # px
    height: int  # px
    bands: tuple[int, ...]
    resampling: str  # rasterio.enums.Resampling name
    native: bool  # model grid == raster grid
    has_nodata: bool  # the model's bands have nodata, an alpha band or a mask
    dtype: str

    def block_transform(self, rect: Rect) -> Affine:
        """The affine transform of a rectangle of the grid (its pixel (0, 0) at its corner)."""
        return self.transform * Affine.translation(rect.col0, rect.row0)

    def map_bounds(self, rect: Rect) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of a rectangle of the grid, in the raster's CRS."""
        left, top = self.transform * (rect.col0, rect.row0)
        right, bottom = self.transform * (rect.col1, rect.row1)
        return (min(left, right), min(top, bottom), max(left, right), max(top, bottom))


def model_grid(info: RasterInfo, model: ModelInfo) -> PredictGrid:
    """The model grid over a raster: same CRS and origin, pixel at the model's GSD.

    Its size is the raster's extent in model pixels, rounded (at least 1 x 1).
    """
    factor = gsd_factor(info, model.gsd)
    native = abs(factor - 1.0) < NATIVE_TOLERANCE
    if native:
        factor = 1.0
        transform, width, height = info.transform, info.width, info.height
    else:
        px, py = scaled_pixel(info, factor)
        transform = Affine(px, 0.0, info.transform.c, 0.0, -py, info.transform.f)
        width = max(1, round(info.width / factor))
        height = max(1, round(info.height / factor))
    with rasterio.open(info.path) as src:
        flags = [src.mask_flag_enums[b - 1] for b in info.bands]
        has_nodata = any(MaskFlags.all_valid not in f for f in flags)
    return PredictGrid(str(info.path), info.crs.to_wkt(), transform, width, height,
                       info.bands, resampling_for_scale(factor).name, native, has_nodata,
                       info.dtype)

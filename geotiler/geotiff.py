"""Small in-memory GeoTIFFs for tile shards: fast encode and decode with tifffile.

Tile members are tiny (256² px), so opening a GDAL dataset per member costs more than the
pixels do (~1 ms per member uncompressed, measured). Here GDAL is asked once per CRS for
the GeoTIFF keys it would write (GeoKeyDirectory and its parameter tags), and every tile
is then written by tifffile with those keys plus its own pixel scale and tie point: the
same georeferencing GDAL produces, at a fraction of the cost. Invalid pixels go into an
internal 1-bit mask page (NewSubfileType 4, Photometric MASK), which is how GDAL stores
``write_mask`` itself, so GDAL and QGIS see the nodata mask.

Compression goes through imagecodecs: zstd level 1 (the default) compresses aerial RGB as
well as deflate does while encoding ~4x and decoding ~2x faster (benchmarks/bench_tile.py).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tifffile
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import MemoryFile

from geotiler.config import COMPRESSIONS

# TIFF tag codes (GeoTIFF 1.1 and GDAL's private nodata tag)
MODEL_PIXEL_SCALE = 33550
MODEL_TIEPOINT = 33922
MODEL_TRANSFORMATION = 34264
GEO_KEY_DIRECTORY = 34735
GEO_DOUBLE_PARAMS = 34736
GEO_ASCII_PARAMS = 34737
GDAL_NODATA = 42113
_GEOKEY_TAGS = (GEO_KEY_DIRECTORY, GEO_DOUBLE_PARAMS, GEO_ASCII_PARAMS)

_CODEC: dict[str, tuple[str | None, dict[str, Any]]] = {
    "zstd": ("zstd", {"level": 1}),
    "deflate": ("zlib", {"level": 1}),  # level 1: ~2x faster than 6, files ~1% larger
    "lzw": ("lzw", {}),
    "none": (None, {}),
}


def geokey_tags(crs: CRS) -> list[tuple[int, int, int, Any, bool]]:
    """The GeoKey tags GDAL writes for ``crs``, as tifffile ``extratags``.

    Found by letting GDAL write a 1×1 GeoTIFF: whatever GDAL can express (EPSG codes, or
    user-defined projections with their parameters) is copied exactly.
    """
    with MemoryFile() as memfile:
        with memfile.open(
            driver="GTiff",
            width=1,
            height=1,
            count=1,
            dtype="uint8",
            crs=crs,
            transform=Affine(1, 0, 0, 0, -1, 1),
        ) as dst:
            dst.write(np.zeros((1, 1, 1), dtype=np.uint8))
        data = bytes(memfile.read())
    tags = []
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        for code in _GEOKEY_TAGS:
            tag = tif.pages.first.tags.get(code)
            if tag is not None:
                value = tag.value
                count = len(value) if isinstance(value, tuple) else len(value) + 1
                tags.append((code, int(tag.dtype), count, value, True))
    return tags


@dataclass
class GeoTiffEncoder:
    """Encode (bands, H, W) arrays as GeoTIFF bytes in one CRS, with one compression.

    Make one per raster (or per CRS) and reuse it: the GeoKeys (and the nodata tag) are
    made once.
    """

    crs: CRS
    compress: str = "zstd"
    nodata: float | None = None
    _fixed_tags: list[tuple[int, int, int, Any, bool]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.compress not in _CODEC:
            raise ValueError(
                f"unknown compression {self.compress!r}; choose one of {', '.join(COMPRESSIONS)}"
            )
        self._fixed_tags = geokey_tags(self.crs)
        if self.nodata is not None:
            text = _nodata_text(self.nodata)
            self._fixed_tags.append((GDAL_NODATA, 2, len(text) + 1, text, True))

    def encode(
        self, array: np.ndarray, transform: Affine, valid: np.ndarray | None = None
    ) -> bytes:
        """GeoTIFF bytes of ``array`` placed by ``transform``; ``valid`` (H, W) bool, if
        given and not all true, becomes an internal mask."""
        count, height, _ = array.shape
        codec, args = _CODEC[self.compress]
        options: dict[str, Any] = {"metadata": None, "software": False}
        if codec is not None:
            options.update(compression=codec, compressionargs=args)
            if array.dtype.kind in "ui":
                options["predictor"] = 2
        if count > 1:
            options["planarconfig"] = "separate"
        photometric = "rgb" if count == 3 and array.dtype == np.uint8 else "minisblack"
        buffer = io.BytesIO()
        with tifffile.TiffWriter(buffer) as tif:
            tif.write(
                np.ascontiguousarray(array[0] if count == 1 else array),
                photometric=photometric,
                rowsperstrip=height,
                extratags=[*self._fixed_tags, *_placement_tags(transform)],
                **options,
            )
            if valid is not None and not valid.all():
                tif.write(
                    np.ascontiguousarray(valid, dtype=bool),
                    photometric="mask",
                    subfiletype=4,
                    rowsperstrip=height,
                    metadata=None,
                    software=False,
                    compression="zlib" if codec else None,
                )
        return buffer.getvalue()


def _placement_tags(transform: Affine) -> list[tuple[int, int, int, Any, bool]]:
    """Pixel scale + tie point for north-up grids, a full transformation matrix otherwise."""
    if transform.b == 0 and transform.d == 0:
        return [
            (MODEL_PIXEL_SCALE, 12, 3, (transform.a, -transform.e, 0.0), True),
            (MODEL_TIEPOINT, 12, 6, (0.0, 0.0, 0.0, transform.c, transform.f, 0.0), True),
        ]
    matrix = (
        transform.a,
        transform.b,
        0.0,
        transform.c,
        transform.d,
        transform.e,
        0.0,
        transform.f,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        1.0,
    )
    return [(MODEL_TRANSFORMATION, 12, 16, matrix, True)]


def _nodata_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def decode(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (bands, H, W) and validity (H, W) bool of GeoTIFF bytes.

    Reads the internal mask page (GDAL's or ours) when there is one; a file without one
    is valid everywhere. Georeferencing is not decoded here: tile records carry it.
    """
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        pages = tif.pages
        first = pages.first
        array = first.asarray()
        if first.samplesperpixel == 1:
            array = array[None]
        elif first.planarconfig != 2:  # interleaved (H, W, bands); separate is (bands, H, W)
            array = np.moveaxis(array, -1, 0)
        valid = None
        if len(pages) > 1:
            page = pages[1]
            if (isinstance(page, tifffile.TiffPage) and page.photometric == 4
                    and page.subfiletype & 4):
                valid = page.asarray().astype(bool, copy=False)
    if valid is None:
        valid = np.ones(array.shape[1:], dtype=bool)
    return np.ascontiguousarray(array), valid


"""Tile members written by tifffile must read back in GDAL exactly as GDAL's own would."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import MemoryFile

from geotiler.tiles.config import COMPRESSIONS
from geotiler.tiles.geotiff import GeoTiffEncoder, decode
from geotiler.tiles.task import band_moments

CUSTOM_TM = (
    'PROJCS["custom",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],'
    'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],'
    'PARAMETER["latitude_of_origin",10],PARAMETER["central_meridian",12.5],'
    'PARAMETER["scale_factor",0.9996],PARAMETER["false_easting",500000],'
    'PARAMETER["false_northing",0],UNIT["metre",1]]'
)
# Mollweide has no GeoTIFF projection code: GDAL stores it as an ESRI PE string, which the
# copied GeoAsciiParams carry too.
CRSS = [CRS.from_epsg(32633), CRS.from_epsg(4326), CRS.from_epsg(3857), CRS.from_wkt(CUSTOM_TM),
        CRS.from_user_input("ESRI:54009")]
KINDS = [(np.uint8, 3, None), (np.uint16, 4, 0), (np.float32, 1, -9999.5)]


@pytest.mark.parametrize("crs", CRSS, ids=["utm", "wgs84", "webmercator", "custom-tm", "mollweide"])
@pytest.mark.parametrize("compress", COMPRESSIONS)
def test_gdal_reads_georeferencing_pixels_and_mask(crs: CRS, compress: str) -> None:
    transform = Affine(0.5, 0, 500000.25, 0, -0.5, 4000000.75)
    rng = np.random.default_rng(0)
    for dtype, bands, nodata in KINDS:
        array = (rng.random((bands, 64, 48)) * 200).astype(dtype)
        valid = np.ones((64, 48), bool)
        valid[:, :7] = False
        data = GeoTiffEncoder(crs, compress=compress, nodata=nodata).encode(array, transform, valid)
        with MemoryFile(data) as memfile, memfile.open() as src:
            assert src.crs == crs
            assert src.transform.almost_equals(transform)
            assert src.nodata == nodata
            np.testing.assert_array_equal(src.read(), array)
            np.testing.assert_array_equal(src.dataset_mask() > 0, valid)
            if bands == 3:
                assert [c.name for c in src.colorinterp] == ["red", "green", "blue"]
        pixels, got_valid = decode(data)
        np.testing.assert_array_equal(pixels, array)
        np.testing.assert_array_equal(got_valid, valid)


def test_band_names_are_gdal_band_descriptions() -> None:
    """Mask members name their channels (QGIS and rasterio show footprint / contour);
    names needing XML escapes survive."""
    encoder = GeoTiffEncoder(CRS.from_epsg(32633), band_names=("footprint", "contour <&>"))
    data = encoder.encode(np.zeros((2, 16, 16), np.uint8), Affine(1, 0, 0, 0, -1, 0))
    with MemoryFile(data) as memfile, memfile.open() as src:
        assert src.descriptions == ("footprint", "contour <&>")
    assert decode(data)[0].shape == (2, 16, 16)


def test_all_valid_tiles_carry_no_mask_and_decode_valid() -> None:
    encoder = GeoTiffEncoder(CRS.from_epsg(32633))
    array = np.full((2, 32, 32), 9, np.uint8)
    data = encoder.encode(array, Affine(1, 0, 0, 0, -1, 0), np.ones((32, 32), bool))
    with MemoryFile(data) as memfile, memfile.open() as src:
        assert src.mask_flag_enums[0][0].name == "all_valid"
    pixels, valid = decode(data)
    assert valid.all() and pixels.shape == (2, 32, 32)


def test_decode_reads_gdal_written_files() -> None:
    """Shards written by other tools (GDAL with an internal mask) decode the same way."""
    array = np.arange(3 * 16 * 16, dtype=np.uint16).reshape(3, 16, 16)
    valid = np.ones((16, 16), np.uint8) * 255
    valid[:4] = 0
    with MemoryFile() as memfile:
        with memfile.open(
            driver="GTiff",
            width=16,
            height=16,
            count=3,
            dtype="uint16",
            crs="EPSG:32633",
            transform=Affine(1, 0, 0, 0, -1, 0),
            compress="deflate",
        ) as dst:
            dst.write(array)
            dst.write_mask(valid)
        data = bytes(memfile.read())
    pixels, got_valid = decode(data)
    np.testing.assert_array_equal(pixels, array)
    np.testing.assert_array_equal(got_valid, valid > 0)


def test_unknown_compression_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown compression"):
        GeoTiffEncoder(CRS.from_epsg(32633), compress="jpeg2000")


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "uint32"])
def test_band_moments_match_numpy(dtype: str) -> None:
    rng = np.random.default_rng(1)
    image = (rng.random((3, 40, 50)) * 1000).astype(dtype)
    valid = rng.random((40, 50)) > 0.3
    sums, sqsums, count = band_moments(image, valid)
    values = image[:, valid].astype(np.float64)
    assert count == valid.sum()
    np.testing.assert_allclose(sums, values.sum(axis=1), rtol=1e-9)
    np.testing.assert_allclose(sqsums, (values**2).sum(axis=1), rtol=1e-9)

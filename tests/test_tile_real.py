"""Tiling the real scenes of ../shared/data (skipped when absent)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner

from geotiler.cli import main
from geotiler.io import open_raster_info
from geotiler.tiles.schema import load_dataset_info
from geotiler.tiles.shards import iter_tiles
from geotiler.tiles.task import source_key
from geotiler.vectors import load_footprints

from conftest import shared_scene

pytestmark = pytest.mark.shared_data

SCENES = {
    # folder: (raster globs, footprint file, extra args)
    "massachusetts-22978945": (["22978945_15.tif"], "22978945_15.gpkg", []),
    "kampala-a": (["DERIVED_kampala_A_z20_mosaic.tif"], "labels.geojson", ["--gsd", "0.3"]),
    "spacenet-atlanta-pan": (["sample_geotiff.tif"], "geotiff_labels.geojson", []),
    "spacenet-atlanta-rgba": (
        [
            "SN4_buildings_train_AOI_6_Atlanta_nadir10_catid_1030010003993E00_PS-RGBNIR_732701_3729639_clipped.tif"
        ],
        "SN4_buildings_train_AOI_6_Atlanta_geojson_buildings_732701_3729639.geojson",
        [],
    ),
    "tanzania": (["DERIVED_ds1_part0_*.tif", "DERIVED_ds1_part1_*.tif"], "labels.geojson", []),
    "philippines": (["DERIVED_ds4_part0_*.tif", "DERIVED_ds4_part1_*.tif"], "labels.geojson", []),
}


@pytest.mark.parametrize("name", sorted(SCENES))
def test_real_scene_tiles_match_footprints(name, tmp_path):
    folder = shared_scene(name)
    patterns, vector_name, extra = SCENES[name]
    rasters = [next(iter(folder.glob(p))) for p in patterns]
    vector = folder / vector_name
    out = tmp_path / "tiles"
    result = CliRunner().invoke(
        main,
        [
            "-q",
            "tile",
            *map(str, rasters),
            "-f",
            str(vector),
            "-o",
            str(out),
            "--keep-empty",
            "1",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.stderr
    info = load_dataset_info(out)
    infos = [open_raster_info(r) for r in rasters]
    assert info.bands == list(infos[0].bands)
    assert info.dtype == infos[0].dtype
    if "--gsd" in extra:
        assert info.gsd == pytest.approx(float(extra[extra.index("--gsd") + 1]), rel=1e-3)
    else:
        assert info.gsd == pytest.approx(infos[0].mean_gsd, rel=1e-6)
    total = sum(info.counts.values())
    assert total > 0 and info.counts["train"] > 0
    assert len(info.std) == len(info.bands) and all(s > 0 for s in info.std)

    footprints = load_footprints(vector)
    building_pixels = 0
    truth_pixels = 0.0
    for tile in iter_tiles(out):
        src = next(i for i in infos if tile.key.startswith(source_key(i.name)))
        assert tile.crs == src.crs
        assert tile.image.shape[1:] == (info.tile_size, info.tile_size)
        truth = shapely.union_all(footprints.to_crs(src.crs))
        bounds = shapely.box(
            *rasterio.transform.array_bounds(info.tile_size, info.tile_size, tile.transform)
        )
        # footprint pixels agree with the footprints' area inside the valid part of the tile
        pixel_area = abs(tile.transform.a * tile.transform.e)
        inside = truth.intersection(bounds).area / pixel_area
        got = np.count_nonzero(tile.mask[0])
        if tile.valid.all():
            assert abs(got - inside) <= 0.05 * inside + 0.5 * tile.record["building_count"] * 8 + 10
        building_pixels += got
        truth_pixels += inside
        # contours are drawn only near footprints (away from the tile edge, where the outline
        # of a building just outside the tile may reach in,
        # or from nodata, where a building's mask was cleared)
        stray = tile.mask[1] & ~_dilate(tile.mask[0], 3)
        stray[_dilate((~tile.valid).astype(np.uint8) * 255, 2) > 0] = 0
        assert np.count_nonzero(stray[2:-2, 2:-2]) == 0
    assert building_pixels > 0.8 * truth_pixels * 0.8  # nodata areas may hold footprints
    # one member read straight from the shard through GDAL's /vsitar/
    # (a tile with invalid pixels, where there is one, so that the mask is checked too)
    tiles = list(iter_tiles(out))
    tile = next((t for t in tiles if not t.valid.all()), tiles[0])
    shard = out / "shards" / tile.record["shard"]
    with rasterio.open(f"/vsitar/{shard}/{tile.key}.image.tif") as member:
        # the member's own georeferencing and mask agree with the tile record's
        assert member.crs == tile.crs
        assert member.transform.almost_equals(tile.transform)
        assert member.count == len(info.bands)
        np.testing.assert_array_equal(member.read(), tile.image)
        np.testing.assert_array_equal(member.dataset_mask() > 0, tile.valid)


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    import cv2

    kernel = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return cv2.dilate(mask, kernel)


def test_overlapping_real_clips_keep_their_splits_apart(tmp_path):
    """gdl-new-brunswick's two clips cover some of the same ground: with 128 px tiles a
    train tile of one clip once covered half of the other's only val tile. No kept tile may
    now share ground with a tile of another split."""
    import geopandas as gpd

    folder = shared_scene("gdl-new-brunswick")
    rasters = sorted(folder.glob("23322E759967N_clipped_1m_*of2.tif"))
    out = tmp_path / "tiles"
    result = CliRunner().invoke(main, [
        "-q", "tile", *map(str, rasters), "-f",
        str(folder / "DERIVED_BakerLake_2017_buildings_only.gpkg"), "-o", str(out),
        "--size", "128", "--keep-empty", "1"])
    assert result.exit_code == 0, result.output
    index = gpd.read_file(out / "index.gpkg", layer="tiles")
    assert index["source"].nunique() == 2
    boxes = list(zip(index["split"], index.geometry, strict=True))
    for split_a, a in boxes:
        for split_b, b in boxes:
            if split_a != split_b:
                assert a.intersection(b).area <= 1e-3 * a.area, (split_a, split_b)

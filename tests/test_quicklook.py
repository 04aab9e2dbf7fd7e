"""Quick-look PNGs: size, outline placement and colours, stretching, decimation, errors."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import cv2
import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.enums import Resampling

from geotiler.errors import ConfigError, InputError, OutputError
from geotiler.quicklook import (
    LEGEND_HEIGHT,
    NODATA_COLOUR,
    PREDICTED_COLOUR,
    TRUTH_COLOUR,
    render_quicklook,
)
from geotiler.synthetic import SceneSpec, make_scene

from conftest import ORIGIN, write_raster


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("quicklook")
    tif, gpkg = folder / "scene.tif", folder / "scene.gpkg"
    make_scene(tif, gpkg, SceneSpec(width=256, height=256, seed=1))
    return tif, gpkg


def read_png(path: Path) -> np.ndarray:
    """The PNG as (H, W, 3) RGB."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def colour_mask(rgb: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(rgb == np.array(colour, np.uint8), axis=-1)


def boundary_samples(geoms: np.ndarray, per_ring: int = 12) -> np.ndarray:
    """(N, 2) map points spread along every ring of ``geoms``."""
    rings = shapely.get_rings(shapely.get_parts(geoms))
    fractions = (np.arange(per_ring) + 0.5) / per_ring
    points = [shapely.line_interpolate_point(r, fractions, normalized=True) for r in rings]
    return shapely.get_coordinates(np.concatenate(points))


def hit_rate(mask: np.ndarray, xy: np.ndarray, transform: Affine, radius: int = 1) -> float:
    """Share of map points with a True pixel of ``mask`` within ``radius`` px."""
    inv = ~transform
    hits = 0
    for x, y in xy:
        col, row = inv * (x, y)
        r, c = int(np.floor(row)), int(np.floor(col))
        window = mask[max(r - radius, 0):r + radius + 1, max(c - radius, 0):c + radius + 1]
        hits += bool(window.any())
    return hits / len(xy)


def max_distance(mask: np.ndarray, geoms: np.ndarray, transform: Affine) -> float:
    """Largest distance (map units) from a True pixel's centre to the rings of ``geoms``."""
    rows, cols = np.nonzero(mask)
    xs, ys = transform * (cols + 0.5, rows + 0.5)
    lines = shapely.union_all(shapely.boundary(geoms))
    return float(shapely.distance(shapely.points(xs, ys), lines).max())


def test_outlines_drawn_on_polygon_boundaries(scene: tuple[Path, Path], tmp_path: Path) -> None:
    tif, gpkg = scene
    truth = gpd.read_file(gpkg)
    predicted = truth.copy()
    predicted["geometry"] = truth.translate(6.0, -4.0)  # 12 px right, 8 px down
    out = render_quicklook(tif, tmp_path / "look.png", truth=gpkg, predicted=predicted)

    assert out == tmp_path / "look.png"
    rgb = read_png(out)
    assert rgb.shape == (256 + LEGEND_HEIGHT, 256, 3)
    picture = rgb[:256]
    with rasterio.open(tif) as src:
        transform = src.transform
        assert not colour_mask(np.moveaxis(src.read(), 0, -1), TRUTH_COLOUR).any()
        assert not colour_mask(np.moveaxis(src.read(), 0, -1), PREDICTED_COLOUR).any()

    truth_px, pred_px = colour_mask(picture, TRUTH_COLOUR), colour_mask(picture, PREDICTED_COLOUR)
    view = shapely.box(*rasterio.transform.array_bounds(256, 256, transform))
    for geoms, mask, min_hits in ((truth.geometry.values, truth_px, 0.9),
                                  (predicted.geometry.values, pred_px, 0.98)):
        inside = np.asarray(shapely.clip_by_rect(geoms, *view.bounds), dtype=object)
        inside = inside[~shapely.is_empty(inside)]
        samples = boundary_samples(inside)
        samples = samples[shapely.contains_xy(view.buffer(-1.0), samples[:, 0], samples[:, 1])]
        assert len(samples) > 50
        assert hit_rate(mask, samples, transform) >= min_hits
        # ...and nowhere else: every outline pixel sits on a ring (2 px lines, 0.5 m px).
        assert max_distance(mask, np.asarray(geoms), transform) <= 1.3
    # The legend strip holds both swatches.
    legend = rgb[256:]
    assert colour_mask(legend, TRUTH_COLOUR).sum() > 50
    assert colour_mask(legend, PREDICTED_COLOUR).sum() > 50


def test_holes_and_multipolygons_are_outlined(tmp_path: Path) -> None:
    tif = write_raster(tmp_path / "grey.tif", np.full((3, 100, 100), 90, np.uint8))
    x0, y0 = ORIGIN  # 0.5 m px, north-up: pixel (c, r) at (x0 + c / 2, y0 - r / 2)
    outer = shapely.box(x0 + 5, y0 - 45, x0 + 45, y0 - 5)
    hole = shapely.box(x0 + 15, y0 - 35, x0 + 35, y0 - 15)
    other = shapely.box(x0 + 10, y0 - 48, x0 + 20, y0 - 40)
    multi = shapely.MultiPolygon([shapely.Polygon(outer.exterior, [hole.exterior]), other])
    truth = gpd.GeoDataFrame(geometry=[multi], crs="EPSG:32633")
    rgb = read_png(render_quicklook(tif, tmp_path / "q.png", truth=truth))
    mask = colour_mask(rgb[:100], TRUTH_COLOUR)
    transform = Affine(0.5, 0, x0, 0, -0.5, y0)
    for ring in (outer, hole, other):
        assert hit_rate(mask, boundary_samples(np.array([ring])), transform) == 1.0
    assert not mask[50, 50]  # inside the hole: picture, not outline
    assert max_distance(mask, np.array([multi]), transform) <= 1.3


def test_footprints_in_another_crs_land_in_place(scene: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    tif, gpkg = scene
    lonlat = tmp_path / "lonlat.geojson"
    gpd.read_file(gpkg).to_crs("EPSG:4326").to_file(lonlat)
    same = colour_mask(read_png(render_quicklook(tif, tmp_path / "a.png", truth=gpkg)),
                       TRUTH_COLOUR)
    other = colour_mask(read_png(render_quicklook(tif, tmp_path / "b.png", truth=lonlat)),
                        TRUTH_COLOUR)
    frame = colour_mask(read_png(render_quicklook(
        tif, tmp_path / "c.png", predicted=gpd.read_file(lonlat))), PREDICTED_COLOUR)
    assert same.sum() > 500
    assert (same & other).sum() / (same | other).sum() > 0.95
    # predicted is 1 px wide, truth 2 px: it lies within the truth outline.
    assert (frame & same).sum() / frame.sum() > 0.95


def test_uint16_one_band_is_stretched_grey(tmp_path: Path) -> None:
    data = np.tile(np.linspace(1000, 5000, 300), (200, 1)).astype(np.uint16)[None]
    data[:, :50, :50] = 0
    tif = write_raster(tmp_path / "dem.tif", data, nodata=0)
    rgb = read_png(render_quicklook(tif, tmp_path / "dem.png"))
    assert rgb.shape == (200 + LEGEND_HEIGHT, 300, 3)
    picture = rgb[:200]
    assert (picture[..., 0] == picture[..., 1]).all()
    assert (picture[..., 1] == picture[..., 2]).all()
    assert colour_mask(picture[:50, :50], NODATA_COLOUR).all()
    valid = picture[60:, :, 0]
    assert valid.min() == 0 and valid.max() == 255  # 2-98 % stretch saturates both ends
    assert 100 < np.median(valid) < 155
    assert (np.diff(valid[0].astype(int)) >= 0).all()  # order of values kept


@pytest.mark.parametrize("overviews", [False, True])
def test_big_raster_is_decimated_without_full_read(tmp_path: Path, overviews: bool) -> None:
    height, width = 1500, 3000
    data = np.full((1, height, width), 1000, np.uint16)
    data[:, :, width // 2:] = 3000
    data[:, :100, :100] = 2000  # a few % so the stretch has a middle
    tif = write_raster(tmp_path / "big.tif", data)
    if overviews:
        with rasterio.open(tif, "r+") as dst:
            dst.build_overviews([2, 4, 8], Resampling.average)
    full_bytes = data.nbytes
    del data
    tracemalloc.start()
    try:
        out = render_quicklook(tif, tmp_path / "big.png", max_side=200)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < full_bytes / 8  # a full-resolution read alone would be full_bytes
    rgb = read_png(out)
    assert rgb.shape == (100 + LEGEND_HEIGHT, 200, 3)
    assert rgb[50, 10, 0] < 40 and rgb[50, 190, 0] > 215  # left dark, right bright


def test_bands_choose_the_display_channels(scene: tuple[Path, Path], tmp_path: Path) -> None:
    tif, _ = scene
    rgb = read_png(render_quicklook(tif, tmp_path / "bgr.png", bands=(3, 2, 1)))
    grey = read_png(render_quicklook(tif, tmp_path / "g.png", bands=[2]))
    with rasterio.open(tif) as src:
        image = src.read()
    assert (rgb[:256, :, 0] == image[2]).all()
    assert (grey[:256, :, 0] == image[1]).all() and (grey[:256, :, 2] == image[1]).all()
    with pytest.raises(ConfigError, match="one band"):
        render_quicklook(tif, tmp_path / "x.png", bands=(1, 2))
    with pytest.raises(InputError, match="3 band"):
        render_quicklook(tif, tmp_path / "x.png", bands=(4,))


def test_write_is_atomic_and_replaces(scene: tuple[Path, Path], tmp_path: Path) -> None:
    tif, _ = scene
    out = tmp_path / "look.png"
    out.write_bytes(b"old")
    render_quicklook(tif, out, max_side=64)
    assert read_png(out).shape == (64 + LEGEND_HEIGHT, 64, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["look.png"]


def test_missing_or_unreadable_inputs(scene: tuple[Path, Path], tmp_path: Path) -> None:
    tif, _ = scene
    missing = tmp_path / "nope.tif"
    with pytest.raises(InputError, match=r"nope\.tif does not exist") as info:
        render_quicklook(missing, tmp_path / "x.png")
    assert "\n" not in str(info.value)
    text = tmp_path / "notes.tif"
    text.write_text("not a raster\n")
    with pytest.raises(InputError, match="not a raster GDAL can read") as info:
        render_quicklook(text, tmp_path / "x.png")
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match=r"truth polygons .*gone\.gpkg do not exist"):
        render_quicklook(tif, tmp_path / "x.png", truth=tmp_path / "gone.gpkg")
    broken = tmp_path / "broken.geojson"
    broken.write_text("{ not json")
    with pytest.raises(InputError, match="cannot read predicted polygons") as info:
        render_quicklook(tif, tmp_path / "x.png", predicted=broken)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="no CRS"):
        render_quicklook(tif, tmp_path / "x.png",
                         truth=gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)]))
    with pytest.raises(OutputError, match="does not exist"):
        render_quicklook(tif, tmp_path / "no" / "x.png")
    assert not (tmp_path / "x.png").exists()

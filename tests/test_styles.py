"""Outputs that look right in QGIS: default styles in the GeoPackages' ``layer_styles``
table, QML sidecars of the GeoTIFFs, band descriptions and version tags, read back with
SQLite, OGR and GDAL."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET

import numpy as np
import pyogrio
import rasterio
from click.testing import CliRunner

from geotiler import __version__
from geotiler.cli import main
from geotiler.predict.config import ModelInfo, PredictConfig
from geotiler.predict.job import prepare
from geotiler.styles import SCORE_CLASSES, SPLIT_COLOURS
from geotiler.vectors import read_vector
from pipelines.predict import run_job

from conftest import write_raster

MODEL = ModelInfo(bands=(1, 2, 3), band_names=("red", "green", "blue"), dtype="uint8",
                  tile_size=64, gsd=0.5, channels=("footprint", "contour"), contour_width=3,
                  name="tiny.pt")


def _bright_boxes(path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 80, size=(3, 256, 320)).astype(np.uint8)
    for r in range(10, 220, 60):
        for c in range(10, 290, 70):
            data[:, r:r + 25, c:c + 30] = 230
    return write_raster(path, data)


class Brightness:
    def __call__(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        fp = image.astype(np.float32).mean(axis=1) / 255.0
        return np.stack([fp, np.zeros_like(fp)], axis=1)


def _style_rows(gpkg):
    with sqlite3.connect(gpkg) as db:
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute("SELECT * FROM layer_styles")]
        kind = db.execute("SELECT data_type FROM gpkg_contents WHERE table_name = "
                          "'layer_styles'").fetchone()[0]
    return rows, kind


def test_predict_outputs_carry_qgis_styles_band_names_and_versions(tmp_path):
    raster = _bright_boxes(tmp_path / "scene.tif")
    out = tmp_path / "b.gpkg"
    config = PredictConfig(block=128, halo=32, overlap=16, device="cpu", min_area=1.0)
    report = run_job(prepare(raster, MODEL, out, config), Brightness(), workers=2)
    assert report.buildings > 0

    rows, kind = _style_rows(out)
    assert kind == "attributes"  # registered as QGIS (through OGR) registers it
    assert len(rows) == 1
    row = rows[0]
    assert row["f_table_name"] == "buildings" and row["f_geometry_column"] == "geom"
    assert row["useAsDefault"] == 1 and row["styleName"]
    qml = ET.fromstring(row["styleQML"].split("\n", 1)[1])  # after the DOCTYPE line
    renderer = qml.find("renderer-v2")
    assert renderer is not None and renderer.get("type") == "graduatedSymbol"
    assert renderer.get("attr") == "score"
    assert len(renderer.findall("ranges/range")) == len(SCORE_CLASSES)
    fills = renderer.findall(".//layer[@class='SimpleFill']/Option/Option[@name='style']")
    assert {f.get("value") for f in fills} == {"no"}  # outlines only
    assert ET.fromstring(row["styleSLD"]).tag.endswith("StyledLayerDescriptor")
    # the style table does not get in the way of reading the buildings
    assert pyogrio.read_info(out, layer="buildings")["features"] == report.buildings
    assert len(read_vector(out)) == report.buildings

    for name, bands in (("b_prob.tif", ("footprint", "contour")), ("b_mask.tif", ("building",))):
        with rasterio.open(tmp_path / name) as src:
            assert src.descriptions == bands
            tags = src.tags()
            assert tags["GEOTILER_VERSION"] == __version__ and tags["MODEL"] == "tiny.pt"
            assert tags["TIFFTAG_SOFTWARE"] == f"geotiler {__version__}"
            assert "geotiler_predict" in tags
    prob_qml = ET.parse(tmp_path / "b_prob.qml").getroot()
    ramp = prob_qml.find(".//rasterrenderer")
    assert ramp is not None and ramp.get("type") == "singlebandpseudocolor"
    assert ramp.get("band") == "1"
    items = prob_qml.findall(".//colorrampshader/item")
    assert items[0].get("alpha") == "0" and items[-1].get("value") == "255"
    mask_qml = ET.parse(tmp_path / "b_mask.qml").getroot()
    assert mask_qml.find(".//rasterrenderer").get("type") == "paletted"
    assert not list(tmp_path.glob("*.partial*"))


def test_index_gpkg_is_styled_by_split(tmp_path):
    raster = _bright_boxes(tmp_path / "scene.tif")
    footprints = tmp_path / "fp.gpkg"
    import geopandas as gpd
    import shapely

    gpd.GeoDataFrame(geometry=[shapely.box(500010, 4999900, 500020, 4999910)],
                     crs="EPSG:32633").to_file(footprints)
    result = CliRunner().invoke(main, ["-q", "tile", str(raster), "-f", str(footprints), "-o",
                                       str(tmp_path / "tiles"), "--size", "64"])
    assert result.exit_code == 0, result.stderr
    rows, _ = _style_rows(tmp_path / "tiles" / "index.gpkg")
    assert [r["f_table_name"] for r in rows] == ["tiles"] and rows[0]["useAsDefault"] == 1
    qml = ET.fromstring(rows[0]["styleQML"].split("\n", 1)[1])
    renderer = qml.find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "split"
    assert [c.get("value") for c in renderer.findall("categories/category")] == list(
        SPLIT_COLOURS)
    assert len(gpd.read_file(tmp_path / "tiles" / "index.gpkg", layer="tiles")) > 0

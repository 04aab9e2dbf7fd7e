"""The whole chain on sample_data through the real CLI: tile -> train -> predict -> evaluate."""

from __future__ import annotations

import json
import shutil
import subprocess

import geopandas as gpd
import pytest
import rasterio
from click.testing import CliRunner

from geotiler.cli import main

from conftest import SAMPLE_FOOTPRINTS, SAMPLE_RASTER


def cli(*args: str):
    result = CliRunner().invoke(main, ["-q", *args])
    assert result.exit_code == 0, result.output + result.stderr
    return result


@pytest.mark.slow
def test_sample_data_tile_train_predict_evaluate(tmp_path):
    tiles, model, out = tmp_path / "tiles", tmp_path / "model.pt", tmp_path / "pred" / "b.gpkg"
    cli("tile", str(SAMPLE_RASTER), "-f", str(SAMPLE_FOOTPRINTS), "-o", str(tiles),
        "--size", "128")
    cli("train", str(tiles), "--out", str(model), "--arch", "unet", "--epochs", "1",
        "--max-steps", "3", "--ngf", "8", "--num-downs", "3", "--batch-size", "2",
        "--workers", "0")
    cli("predict", str(SAMPLE_RASTER), "--model", str(model), "--out", str(out),
        "--min-area", "0", "--no-progress")
    metrics = tmp_path / "metrics.json"
    result = cli("evaluate", str(out), str(SAMPLE_FOOTPRINTS), "--out", str(metrics))
    assert "pixel IoU" in result.output

    with rasterio.open(SAMPLE_RASTER) as src:
        crs, bounds = src.crs, src.bounds
    layer = gpd.read_file(out, layer="buildings")
    assert layer.crs == crs
    assert {"area_m2", "score"} <= set(layer.columns)
    for name in ("b_prob.tif", "b_mask.tif"):
        with rasterio.open(out.parent / name) as tif:
            assert tif.crs == crs
            assert tif.bounds.left == pytest.approx(bounds.left)
            assert tif.bounds.top == pytest.approx(bounds.top)
            assert tif.overviews(1), "cloud-optimized layout has overviews"
    report = json.loads(metrics.read_text())
    text = json.dumps(report)
    for key in ("iou", "f1", "boundary"):
        assert key in text
    if shutil.which("gdalinfo"):
        info = subprocess.run(["gdalinfo", str(out.parent / "b_mask.tif")],
                              capture_output=True, text=True, check=True).stdout
        assert "32633" in info
    if shutil.which("ogrinfo"):
        info = subprocess.run(["ogrinfo", "-so", str(out), "buildings"], capture_output=True,
                              text=True, check=True).stdout
        assert "Feature Count" in info and "32633" in info

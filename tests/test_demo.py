"""`geotiler demo` runs the whole chain on the sample scene and says where everything is."""

from __future__ import annotations

import hashlib
import json

import geopandas as gpd
import pytest
import rasterio
from click.testing import CliRunner

import pipelines.demo as demo
from geotiler.cli import main

from conftest import SAMPLE_FOOTPRINTS, SAMPLE_RASTER, interrupt_geotiler


@pytest.mark.slow
def test_demo_writes_every_output_and_a_summary(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["-q", "demo", "--out", str(out), "--minutes", "0.05"])
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads((out / "demo.json").read_text())
    for key in ("tiles", "model", "buildings", "probabilities", "mask", "metrics", "quicklook"):
        assert report[key] in result.output  # the user is told where each output is
    assert report["epochs"] >= 1 and report["tile_count"] > 0
    assert "demo done" in result.output.splitlines()[-1]
    png = (out / "quicklook.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    with rasterio.open(report["mask"]) as src, rasterio.open(report["raster"]) as scene:
        assert src.crs == scene.crs
    assert gpd.read_file(report["buildings"], layer="buildings").crs is not None
    metrics = json.loads((out / "metrics.json").read_text())
    assert "buildings" in metrics

    # a second run refuses to clobber the first one...
    again = CliRunner().invoke(main, ["demo", "--out", str(out), "--minutes", "0.05"])
    assert again.exit_code != 0
    assert "--overwrite" in again.stderr and "Traceback" not in again.output + again.stderr


def test_demo_never_deletes_a_folder_that_is_not_a_demo(tmp_path):
    keep = tmp_path / "thesis"
    keep.mkdir()
    (keep / "chapter1.tex").write_text("precious")
    result = CliRunner().invoke(main, ["demo", "--out", str(keep), "--overwrite"])
    assert result.exit_code != 0
    assert "not a geotiler demo" in result.stderr
    assert (keep / "chapter1.tex").read_text() == "precious"


def test_demo_needs_raster_and_footprints_together(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "d"), "--raster", "x.tif"])
    assert result.exit_code == 2
    assert "--footprints" in result.stderr


def test_sample_scene_is_regenerated_where_the_repository_is_not_at_hand(tmp_path, monkeypatch):
    """An installed package has no sample_data/ beside it: the demo makes the same scene."""
    monkeypatch.setattr(demo, "REPO_SAMPLE", tmp_path / "nowhere")
    raster, footprints = demo.sample_scene(tmp_path / "work")
    assert raster.parent == tmp_path / "work" / "sample_data"
    with rasterio.open(raster) as made, rasterio.open(SAMPLE_RASTER) as committed:
        assert made.crs == committed.crs and made.transform == committed.transform
        assert hashlib.sha256(made.read().tobytes()).digest() == hashlib.sha256(
            committed.read().tobytes()).digest()
    assert len(gpd.read_file(footprints)) == len(gpd.read_file(SAMPLE_FOOTPRINTS))


def test_an_interrupted_demo_leaves_its_folder_as_the_same_command_needs_it(tmp_path):
    """Ctrl-C while training: exit 130, and the folder is left empty, so the advice on the
    last line (rerun the same command) works; a half-made demo had no demo.json, and
    the rerun, with or without --overwrite, refused it."""
    out = tmp_path / "demo"
    code, stderr, _ = interrupt_geotiler(
        ["-q", "demo", "--out", str(out), "--minutes", "2"],
        ready=lambda: (out / "model.checkpoints").exists())
    assert code == 130, stderr
    assert stderr.strip().splitlines()[-1] == (
        "Interrupted: partial outputs were removed; rerun the same command to start again.")
    assert not out.exists()

"""Prediction: stitching, bounded reads, grids and CRSs, outputs, failures, and the CLI.

Most tests run the real pipeline (``pipelines.predict.run_job``, threaded scheduler) with
synthetic predictors (pure functions of the pixels), so they test the windowing, blending,
writing and polygonizing without torch; the end-to-end tests save a tiny random model with
``trainer.modelfile.save_model`` and run ``geotiler predict``.
"""

from __future__ import annotations

import math
import shutil
import sqlite3
import subprocess
import sys
import time

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from rasterio.enums import MaskFlags

from geotiler.cli import main
from geotiler.errors import InputError, ModelFileError, OutputError
from geotiler.predict import blocks
from geotiler.predict.blend import threshold_uint8
from geotiler.predict.blocks import (
    finalize_block,
    infer_block,
    otsu_threshold,
    polygonize_job_block,
    settle,
)
from geotiler.predict.config import ModelInfo, PredictConfig
from geotiler.predict.job import prepare
from geotiler.predict.outputs import finish
from pipelines.predict import run_job

from conftest import ORIGIN, pixel_box, write_footprints, write_raster

MODEL = ModelInfo(bands=(1, 2, 3), band_names=("red", "green", "blue"), dtype="uint8",
                  tile_size=64, gsd=0.5, channels=("footprint", "contour"), contour_width=3,
                  name="synthetic")


class Brightness:
    """Per-pixel predictor: footprint = mean brightness, contour = 0."""

    def __call__(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        fp = image.astype(np.float32).mean(axis=1) / 255.0
        return np.stack([fp, np.zeros_like(fp)], axis=1)


def boxes_raster(path, height=330, width=460, *, res=0.5, nodata=None, crs="EPSG:32633",
                 origin=ORIGIN, seed=0):
    """Dark noise with bright (230) rectangles; returns (path, boxes in pixels)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 90, size=(3, height, width)).astype(np.uint8)
    boxes = []
    for r in range(8, height - 30, 47):
        for c in range(6, width - 30, 53):
            h, w = (int(v) for v in rng.integers(10, 28, 2))
            data[:, r:r + h, c:c + w] = 230
            boxes.append((c, r, c + w, r + h))
    if nodata is not None:
        data[:, :, : width // 4] = nodata
    return write_raster(path, data, res=res, nodata=nodata, crs=crs, origin=origin), boxes


def config(**kw):
    base = {"block": 128, "halo": 48, "overlap": 16, "batch_size": 4, "simplify": 0.0,
            "min_area": 1.0, "device": "cpu"}
    return PredictConfig(**{**base, **kw})


def predict(raster, predictor, model, out, cfg):
    """``geotiler predict``'s pipeline (threaded scheduler) with a synthetic predictor."""
    return run_job(prepare(raster, model, out, cfg), predictor, workers=2)


def predict_step_by_step(raster, predictor, model, out, cfg):
    """The block steps one after another, without Dask: what the graph must reproduce."""
    job = prepare(raster, model, out, cfg)
    own = {index: infer_block(job, index, predictor) for index in job.plan.indexes}
    stats = [finalize_block(job, (i, j), *own[i, j][:3], own[i, j].valid,
                            own[i, j].windows_run,
                            own[i, j - 1].right if j else None,
                            own[i - 1, j].bottom if i else None,
                            own[i - 1, j - 1].corner if i and j else None)
             for i, j in job.plan.indexes]
    job, stats = settle(job, stats)
    for index in job.plan.indexes:
        polygonize_job_block(job, index)
    return finish(job, stats, time.perf_counter())


def to_uint8(probs):
    """Probabilities -> stored 0..255 levels (rounded to nearest)."""
    return np.clip(np.rint(np.asarray(probs, np.float64) * 255), 0, 255).astype(np.uint8)


def test_stitched_probabilities_equal_the_whole_map_and_polygons_match(tmp_path):
    raster, boxes = boxes_raster(tmp_path / "a.tif")
    report = predict(raster, Brightness(), MODEL, tmp_path / "b.gpkg", config())
    assert report.blocks > 4 and report.windows_run == report.windows
    with rasterio.open(raster) as src:
        expected = to_uint8(src.read().astype(np.float32).mean(axis=0) / 255.0)
    with rasterio.open(tmp_path / "b_prob.tif") as src:
        probs = src.read()
        assert src.descriptions == ("footprint", "contour")
    assert np.abs(probs[0].astype(int) - expected.astype(int)).max() <= 1
    assert probs[1].max() == 0
    with rasterio.open(tmp_path / "b_mask.tif") as src:
        mask = src.read(1)
    assert np.array_equal(mask == 1, expected >= 128)
    frame = gpd.read_file(tmp_path / "b.gpkg", layer="buildings")
    assert len(frame) == len(boxes) == report.buildings
    truth = [pixel_box(*b) for b in boxes]
    for poly in truth:
        best = max(poly.intersection(g).area / poly.union(g).area for g in frame.geometry)
        assert best >= 0.99
    assert np.allclose(sorted(frame.area_m2), sorted(p.area for p in truth))
    assert frame.score.between(0.85, 0.95).all()
    assert [p.name for p in tmp_path.iterdir()
            if p.name.startswith(".") or ".partial" in p.name] == []


def test_block_reader_never_reads_more_than_a_block_and_its_spill(tmp_path, monkeypatch):
    raster, _ = boxes_raster(tmp_path / "a.tif", 700, 610)
    seen: list[tuple[int, int]] = []
    original = blocks.read_window

    def spy(src, bands, bounds, size, resampling, **kwargs):
        seen.append(size)
        return original(src, bands, bounds, size, resampling, **kwargs)

    monkeypatch.setattr(blocks, "read_window", spy)
    cfg = config(block=128, overlap=16)
    report = predict(raster, Brightness(), MODEL, tmp_path / "b.gpkg", cfg)
    assert len(seen) == report.blocks
    stride = MODEL.tile_size - cfg.overlap
    core = round(cfg.block / stride) * stride
    limit = core + MODEL.tile_size + cfg.overlap  # a short last block merges (< one window)
    assert max(max(s) for s in seen) <= limit
    assert sum(h * w for h, w in seen) < 1.25 * 700 * 610  # each pixel read about once


def test_dask_graph_gives_the_serial_result(tmp_path):
    raster, _ = boxes_raster(tmp_path / "a.tif")
    serial = predict_step_by_step(raster, Brightness(), MODEL, tmp_path / "s.gpkg", config())
    job = prepare(raster, MODEL, tmp_path / "d.gpkg", config())
    report = run_job(job, Brightness(), workers=3)
    assert report.buildings == serial.buildings
    for kind in ("prob", "mask"):
        with rasterio.open(tmp_path / f"s_{kind}.tif") as a, \
                rasterio.open(tmp_path / f"d_{kind}.tif") as b:
            assert np.array_equal(a.read(), b.read())
    s = gpd.read_file(tmp_path / "s.gpkg")
    d = gpd.read_file(tmp_path / "d.gpkg")
    assert np.allclose(sorted(s.area_m2), sorted(d.area_m2))


def test_raster_finer_than_the_model_is_resampled_to_its_gsd(tmp_path):
    raster, boxes = boxes_raster(tmp_path / "fine.tif", 400, 500, res=0.25)
    report = predict(raster, Brightness(), MODEL, tmp_path / "b.gpkg", config())
    assert report.grid == (250, 200)
    with rasterio.open(tmp_path / "b_mask.tif") as src:
        assert src.res == (0.5, 0.5) and src.crs.to_epsg() == 32633
        with rasterio.open(raster) as full:
            assert src.bounds == full.bounds
    frame = gpd.read_file(tmp_path / "b.gpkg")
    assert len(frame) == len(boxes)
    truth = sorted(pixel_box(*b, res=0.25).area for b in boxes)
    assert np.allclose(sorted(frame.area_m2), truth, rtol=0.25, atol=1.0)


def test_geographic_raster(tmp_path):
    lat = 45.0
    deg_y = 0.5 / 111_132.0  # about 0.5 m
    deg_x = 0.5 / (111_320.0 * math.cos(math.radians(lat)))
    from affine import Affine

    rng = np.random.default_rng(0)
    data = rng.integers(0, 90, size=(3, 200, 240)).astype(np.uint8)
    data[:, 50:90, 60:120] = 230  # 20 m x 30 m
    raster = write_raster(tmp_path / "geo.tif", data, crs="EPSG:4326",
                          transform=Affine(deg_x, 0, 10.0, 0, -deg_y, lat))
    report = predict(raster, Brightness(), MODEL, tmp_path / "b.gpkg", config())
    assert abs(report.grid[0] - 240) <= 3 and abs(report.grid[1] - 200) <= 3
    frame = gpd.read_file(tmp_path / "b.gpkg")
    assert frame.crs.to_epsg() == 4326 and len(frame) == 1
    assert frame.area_m2[0] == pytest.approx(600, rel=0.05)


def test_nodata_is_skipped_and_marked(tmp_path):
    raster, _ = boxes_raster(tmp_path / "nd.tif", 300, 460, nodata=0)
    report = predict(raster, Brightness(), MODEL, tmp_path / "b.gpkg", config())
    assert report.windows_run < report.windows
    with rasterio.open(tmp_path / "b_mask.tif") as src:
        assert src.nodata == 255
        mask = src.read(1)
    assert (mask[:, : 460 // 4] == 255).all() and (mask[:, 460 // 4:] != 255).all()
    # the probabilities (0..255, no value free for nodata) carry GDAL's internal mask
    with rasterio.open(tmp_path / "b_prob.tif") as src:
        assert src.nodata is None and src.mask_flag_enums[0] == [MaskFlags.per_dataset]
        valid = src.dataset_mask()
        assert (valid[:, : 460 // 4] == 0).all() and (valid[:, 460 // 4:] == 255).all()


def test_a_building_larger_than_the_halo_is_warned_about(tmp_path, caplog, monkeypatch):
    # one 150 x 150 px roof across four 128 px blocks: with a 16 px halo no block sees it
    # whole (its pieces may overlap); with a 160 px halo every block does
    import logging

    # a CLI test run before this one stops "pipelines" records at its own handler
    monkeypatch.setattr(logging.getLogger("pipelines"), "propagate", True)
    data = np.full((3, 256, 256), 20, np.uint8)
    data[:, 50:200, 50:200] = 240
    raster = write_raster(tmp_path / "big.tif", data)
    with caplog.at_level("WARNING"):
        predict(raster, Brightness(), MODEL, tmp_path / "a.gpkg", config(halo=16))
    assert "reach past their block's --halo (16 px)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        predict(raster, Brightness(), MODEL, tmp_path / "b.gpkg", config(halo=160))
    assert "--halo" not in caplog.text
    assert len(gpd.read_file(tmp_path / "b.gpkg")) == 1


def test_a_simplify_far_above_building_scale_is_warned_about(tmp_path, caplog, monkeypatch):
    """``--simplify 50`` (50 m, perhaps meant as cm) turns houses into triangles: a warning
    says so; the default 0.5 m says nothing."""
    import logging

    monkeypatch.setattr(logging.getLogger("geotiler"), "propagate", True)
    raster, _ = boxes_raster(tmp_path / "r.tif")
    with caplog.at_level("WARNING"):
        predict(raster, Brightness(), MODEL, tmp_path / "a.gpkg", config(simplify=50))
    assert "--simplify 50 m moves outlines up to 50 m" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        predict(raster, Brightness(), MODEL, tmp_path / "b.gpkg", config())
    assert "--simplify" not in caplog.text


def test_a_raster_of_nodata_only_is_refused_and_writes_nothing(tmp_path):
    raster = write_raster(tmp_path / "nd.tif", np.zeros((3, 200, 300), np.uint8), nodata=0)
    with pytest.raises(InputError, match="has no valid pixel"):
        predict(raster, Brightness(), MODEL, tmp_path / "out" / "new" / "b.gpkg", config())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nd.tif"]  # nor the folders


def test_empty_prediction_writes_a_valid_empty_layer(tmp_path):
    raster, _ = boxes_raster(tmp_path / "a.tif")

    def nothing(image, valid):
        return np.zeros((image.shape[0], 2, 64, 64), np.float32)

    report = predict(raster, nothing, MODEL, tmp_path / "b.gpkg", config())
    assert report.buildings == 0
    frame = gpd.read_file(tmp_path / "b.gpkg", layer="buildings")
    assert len(frame) == 0 and frame.crs.to_epsg() == 32633
    assert pyogrio.read_info(tmp_path / "b.gpkg", layer="buildings")["geometry_type"] == "Polygon"


def test_raster_smaller_than_a_window_and_no_probabilities(tmp_path):
    data = np.full((3, 40, 50), 20, np.uint8)
    data[:, 10:30, 5:25] = 240
    raster = write_raster(tmp_path / "tiny.tif", data)
    report = predict(raster, Brightness(), MODEL, tmp_path / "b.gpkg",
                     config(probabilities=False))
    assert (report.windows, report.buildings) == (1, 1)
    assert not (tmp_path / "b_prob.tif").exists()
    with rasterio.open(tmp_path / "b_mask.tif") as src:
        assert src.shape == (40, 50) and src.read(1).sum() == 400
    frame = gpd.read_file(tmp_path / "b.gpkg")
    assert frame.area_m2[0] == pytest.approx(100)
    # --overwrite with probabilities, then without: the first run's do not stay beside
    predict(raster, Brightness(), MODEL, tmp_path / "b.gpkg", config(overwrite=True))
    assert (tmp_path / "b_prob.tif").exists()
    predict(raster, Brightness(), MODEL, tmp_path / "b.gpkg",
            config(overwrite=True, probabilities=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "b.gpkg", "b_mask.qml", "b_mask.tif", "tiny.tif"]


def test_existing_outputs_need_overwrite(tmp_path):
    raster, _ = boxes_raster(tmp_path / "a.tif")
    predict(raster, Brightness(), MODEL, tmp_path / "b.gpkg", config())
    before = (tmp_path / "b_mask.tif").stat().st_mtime_ns
    with pytest.raises(OutputError, match="--overwrite"):
        predict(raster, Brightness(), MODEL, tmp_path / "b.gpkg", config())
    assert (tmp_path / "b_mask.tif").stat().st_mtime_ns == before
    predict(raster, Brightness(), MODEL, tmp_path / "b.gpkg", config(overwrite=True))


def test_overwrite_never_replaces_the_input_raster(tmp_path):
    # predicting on an earlier run's probabilities, into the same names, with --overwrite
    raster, _ = boxes_raster(tmp_path / "b_prob.tif")
    before = raster.read_bytes()
    with pytest.raises(OutputError, match="is the input raster"):
        predict(raster, Brightness(), MODEL, tmp_path / "b.gpkg", config(overwrite=True))
    assert raster.read_bytes() == before


def test_bad_inputs_raise_our_errors(tmp_path):
    gray = write_raster(tmp_path / "gray.tif", np.zeros((1, 100, 100), np.uint8))
    with pytest.raises(ModelFileError) as err:
        predict(gray, Brightness(), MODEL, tmp_path / "b.gpkg", config())
    assert "1:red" in str(err.value) and "gray" in str(err.value).lower()
    nocrs = write_raster(tmp_path / "nocrs.tif", np.zeros((3, 100, 100), np.uint8), crs=None)
    with pytest.raises(InputError, match="no CRS"):
        predict(nocrs, Brightness(), MODEL, tmp_path / "b.gpkg", config())
    with pytest.raises(InputError, match="does not exist"):
        predict(tmp_path / "missing.tif", Brightness(), MODEL, tmp_path / "b.gpkg", config())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    raster, _ = boxes_raster(tmp_path / "a.tif")
    with pytest.raises(OutputError, match=r"cannot write .*Not a directory"):
        predict(raster, Brightness(), MODEL, blocker / "sub" / "b.gpkg", config())
    assert not any(tmp_path.glob("b*"))


def test_a_failure_midway_leaves_nothing_behind(tmp_path):
    raster, _ = boxes_raster(tmp_path / "a.tif")
    calls = []

    def flaky(image, valid):
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("boom")
        return Brightness()(image, valid)

    with pytest.raises(RuntimeError):
        predict(raster, flaky, MODEL, tmp_path / "b.gpkg", config())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]


# --- with a real (tiny, untrained) model file -----------------------------------------------

def run_cli(*args: str):
    return CliRunner().invoke(main, ["-q", *args])


def assert_one_line_error(result, *words: str) -> None:
    assert result.exit_code == 1, result.output + result.stderr
    assert "Traceback" not in result.stderr + result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]


def test_cli_end_to_end_with_a_model_file(tmp_path, model_file):
    raster, boxes = boxes_raster(tmp_path / "a.tif", 600, 640)
    out = tmp_path / "out" / "b.gpkg"
    result = run_cli("predict", str(raster), "--model", str(model_file), "--out", str(out),
                     "--raster-out", str(tmp_path / "rasters"), "--block", "256",
                     "--device", "cpu", "--batch-size", "8")
    assert result.exit_code == 0, result.stderr
    assert "buildings" in result.output
    frame = gpd.read_file(out, layer="buildings")
    assert frame.crs.to_epsg() == 32633
    assert {"area_m2", "score"} <= set(frame.columns)
    assert (frame.area_m2 >= PredictConfig().min_area - 1e-6).all()
    for name, count in (("b_prob.tif", 2), ("b_mask.tif", 1)):
        with rasterio.open(tmp_path / "rasters" / name) as src:
            assert src.crs.to_epsg() == 32633 and src.count == count
            assert src.profile["tiled"] and src.block_shapes[0] == (512, 512)
            assert src.compression.name == "zstd"
            assert src.overviews(1), "overviews are present"
            with rasterio.open(raster) as full:
                assert src.transform == full.transform
    if shutil.which("gdalinfo"):
        info = subprocess.run(["gdalinfo", str(tmp_path / "rasters" / "b_prob.tif")],
                              capture_output=True, text=True, check=True).stdout
        assert "Overviews" in info and "LAYOUT=COG" in info
    if shutil.which("ogrinfo"):  # Debian's GDAL 3.6, as old as QGIS 3.28 LTR's: no warning
        done = subprocess.run(["ogrinfo", "-so", str(out), "buildings"], capture_output=True,
                              text=True, check=True)
        assert "Geometry: Polygon" in done.stdout and "area_m2" in done.stdout
        assert "partially supported" not in done.stderr
    with sqlite3.connect(out) as db:  # GeoPackage 1.2 (PRAGMA user_version 10200)
        assert db.execute("PRAGMA user_version").fetchone() == (10200,)
    again = run_cli("predict", str(raster), "--model", str(model_file), "--out", str(out),
                    "--raster-out", str(tmp_path / "rasters"))
    assert_one_line_error(again, "already exist", "--overwrite")
    # evaluate finds the mask through the GeoPackage, wherever --raster-out put it
    truth = write_footprints(tmp_path / "truth.gpkg", [pixel_box(*b) for b in boxes],
                             "EPSG:32633")
    scored = run_cli("evaluate", str(out), str(truth))
    assert scored.exit_code == 0, scored.stderr
    assert "pixel IoU" in scored.output and "b_mask.tif" in scored.output + scored.stderr


def test_cli_bad_inputs_are_one_line_errors(tmp_path, model_file):
    raster, _ = boxes_raster(tmp_path / "a.tif", 100, 100)
    out = str(tmp_path / "b.gpkg")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a model at all" * 10)
    assert_one_line_error(run_cli("predict", str(raster), "-m", str(corrupt), "-o", out),
                          "corrupt.pt")
    assert_one_line_error(run_cli("predict", str(raster), "-m", str(raster), "-o", out),
                          "a.tif")
    gray = write_raster(tmp_path / "gray.tif", np.zeros((1, 80, 80), np.uint8))
    assert_one_line_error(run_cli("predict", str(gray), "-m", str(model_file), "-o", out),
                          "1:red", "1 band")
    nocrs = write_raster(tmp_path / "nocrs.tif", np.zeros((3, 80, 80), np.uint8), crs=None)
    assert_one_line_error(run_cli("predict", str(nocrs), "-m", str(model_file), "-o", out),
                          "no CRS")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(run_cli("predict", str(raster), "-m", str(model_file), "-o",
                                  str(blocker / "b.gpkg")), "cannot write", "a file is in the way")
    bad_ext = run_cli("predict", str(raster), "-m", str(model_file), "-o",
                      str(tmp_path / "b.shp"))
    assert bad_ext.exit_code == 2 and ".gpkg" in bad_ext.stderr  # a usage error
    assert "Traceback" not in bad_ext.stderr
    usage = run_cli("predict", str(raster), "-m", str(model_file), "-o", out,
                    "--threshold", "2")
    assert usage.exit_code == 2 and "Traceback" not in usage.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.tif", "corrupt.pt", "file", "gray.tif", "model.pt", "nocrs.tif"]


def test_the_model_is_loaded_once_per_run(tmp_path, model_file, monkeypatch):
    import trainer.modelfile
    from pipelines import predict as pipeline

    calls = []
    original = trainer.modelfile.load_model

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer.modelfile, "load_model", counting)
    raster, _ = boxes_raster(tmp_path / "a.tif", 300, 400)
    report = pipeline.run_predict(raster, model_file, tmp_path / "b.gpkg",
                                  config(block=64, device="cpu"), workers=2)
    assert report.blocks >= 12 and len(calls) == 1


def test_distributed_client_loads_the_model_once_per_worker(tmp_path, model_file,
                                                             monkeypatch):
    distributed = pytest.importorskip("distributed")
    import trainer.modelfile
    from pipelines.predict import run_predict

    calls = []
    original = trainer.modelfile.load_model

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer.modelfile, "load_model", counting)
    raster, _ = boxes_raster(tmp_path / "a.tif", 200, 260)
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1,
                            dashboard_address=None) as client:
        report = run_predict(raster, model_file, tmp_path / "b.gpkg",
                             config(block=64, device="cpu"), client=client)
        left = client.run(lambda dask_worker: [name for name in dask_worker.plugins
                                               if name.startswith("geotiler-predictor")])
    assert report.blocks >= 4 and len(calls) == 1 + 2  # the driver's, one per worker
    assert all(names == [] for names in left.values())  # each worker's model let go
    assert report.windows_run == report.windows
    assert (tmp_path / "b.gpkg").exists() and (tmp_path / "b_mask.tif").exists()
    _ = shapely  # imported for the fixtures' geometry helpers


def test_otsu_threshold_matches_opencv():
    import cv2

    rng = np.random.default_rng(4)
    values = np.concatenate([rng.normal(60, 15, 5000), rng.normal(190, 20, 2000)])
    image = np.clip(values, 0, 255).astype(np.uint8).reshape(1, -1)
    level, _ = cv2.threshold(image, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    threshold = otsu_threshold(np.bincount(image.ravel(), minlength=256))
    assert threshold_uint8(threshold) == int(level) + 1  # cv2 keeps > level
    assert otsu_threshold(np.zeros(256)) == 0.5  # nothing valid: the default


def test_otsu_picks_the_threshold_over_the_whole_raster(tmp_path):
    """A threshold far too high finds nothing; --otsu finds the bright boxes regardless,
    the same step by step and with the Dask graph."""
    raster, boxes = boxes_raster(tmp_path / "a.tif")
    fixed = predict(raster, Brightness(), MODEL, tmp_path / "f.gpkg", config(threshold=0.97))
    assert fixed.buildings == 0
    serial = predict_step_by_step(raster, Brightness(), MODEL, tmp_path / "s.gpkg",
                                  config(threshold=0.97, otsu=True))
    assert 90 / 255 <= serial.threshold < 230 / 255  # above the noise, below the roofs
    assert serial.buildings == len(boxes)
    job = prepare(raster, MODEL, tmp_path / "d.gpkg", config(threshold=0.97, otsu=True))
    dask_report = run_job(job, Brightness(), workers=2)
    assert dask_report.threshold == serial.threshold
    assert dask_report.buildings == serial.buildings
    assert dask_report.building_fraction == pytest.approx(serial.building_fraction)
    with rasterio.open(tmp_path / "s_mask.tif") as a, rasterio.open(tmp_path / "d_mask.tif") as b:
        assert np.array_equal(a.read(), b.read())
        assert (a.read(1) == 1).sum() > 0


@pytest.mark.parametrize(("block", "otsu"), [(256, False), (256, True), (250, False)])
def test_block_built_overviews_equal_gdals(tmp_path, block, otsu):
    """Overviews made block by block (and rebuilt after --otsu rewrites the mask) are the
    ones GDAL makes from the whole output; blocks that do not start on a multiple of the
    largest factor (250 px) leave them to GDAL."""
    from rasterio.enums import Resampling
    from rasterio.io import MemoryFile

    raster, _ = boxes_raster(tmp_path / "a.tif", height=1100, width=1300)
    predict(raster, Brightness(), MODEL, tmp_path / "b.gpkg",
            config(block=block, otsu=otsu, threshold=0.97 if otsu else 0.5))
    for kind, resampling in (("prob", Resampling.average), ("mask", Resampling.nearest)):
        path = tmp_path / f"b_{kind}.tif"
        with rasterio.open(path) as src:
            assert src.overviews(1) == [2, 4]
            profile = {k: src.profile[k] for k in ("driver", "width", "height", "count",
                                                    "dtype", "crs", "transform")}
            full = src.read()
        with MemoryFile() as memfile:
            with memfile.open(**{**profile, "driver": "GTiff"}) as ref:
                ref.write(full)
                ref.build_overviews([2, 4], resampling)
            for level in (0, 1):
                with rasterio.open(path, overview_level=level) as ours, \
                        memfile.open(overview_level=level) as theirs:
                    np.testing.assert_array_equal(ours.read(), theirs.read())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_forward_pass_keeps_its_priority_while_the_other_work_steps_back(
        tmp_path, model_file, monkeypatch):
    """The forward pass runs on its own thread at the caller's priority; polygonizing
    runs on the scheduler's threads, niced, so it cannot stall torch's threads."""
    import os
    import threading

    from pipelines import predict as pipeline
    from trainer.inference import ModelPredictor

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    if niceness() >= 19:
        pytest.skip("already at the lowest priority")
    seen: dict[str, set[int]] = {"forward": set(), "polygonize": set()}
    forward, polygonize = ModelPredictor._forward, pipeline._polygonize

    def record_forward(self, *args):
        seen["forward"].add(niceness())
        return forward(self, *args)

    def record_polygonize(*args):
        seen["polygonize"].add(niceness())
        return polygonize(*args)

    monkeypatch.setattr(ModelPredictor, "_forward", record_forward)
    monkeypatch.setattr(pipeline, "_polygonize", record_polygonize)
    raster, _ = boxes_raster(tmp_path / "a.tif", 200, 260)
    pipeline.run_predict(raster, model_file, tmp_path / "b.gpkg", config(block=64))
    base = niceness()
    assert seen["forward"] == {base}
    assert seen["polygonize"] and min(seen["polygonize"]) > base


def test_importing_the_package_for_the_cli_loads_neither_torch_nor_opencv():
    code = ("import sys, geotiler.predict, geotiler.cli; "
            "print('cv2' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False"]


def test_model_info_defaults_come_from_the_tiler():
    from types import SimpleNamespace

    from geotiler.tiles.config import TileConfig

    spec = SimpleNamespace(bands=[1, 2, 3], band_names=["r", "g", "b"], dtype="uint8",
                           tile_size=64, gsd=0.5, mask_channels=["footprint", "contour"],
                           tiling={})
    assert ModelInfo.from_spec(spec).contour_width == TileConfig().contour_width
    spec.tiling = {"contour_width": 5}
    assert ModelInfo.from_spec(spec, name="m").contour_width == 5
    from geotiler.polygons import BLOCK_PX, HALO_PX

    assert (PredictConfig().block, PredictConfig().halo) == (BLOCK_PX, HALO_PX)


@pytest.mark.parametrize("res", [0.25, 0.5, 0.5004, 2.0])
def test_the_model_grid_is_the_tilers_grid_at_the_models_gsd(tmp_path, res):
    """Prediction reads a raster at the model's GSD exactly as the tiler cut the model's
    tiles: same pixel size and resampling (snapped to the raster's own within 0.1 %)."""
    from geotiler.io import open_raster_info
    from geotiler.predict.grid import model_grid
    from geotiler.tiles.config import TileConfig
    from geotiler.tiles.grid import make_grid, resampling_for

    raster = write_raster(tmp_path / "r.tif", np.zeros((3, 80, 90), np.uint8), res=res)
    info = open_raster_info(raster, bands=MODEL.bands)
    grid = model_grid(info, MODEL)
    tiles = make_grid(info, TileConfig(gsd=MODEL.gsd, size=64))
    if grid.native:
        assert res == 0.5004 or res == 0.5
        assert grid.transform == info.transform and grid.resampling == "nearest"
    else:
        assert grid.transform.a == pytest.approx(tiles.pixel[0])
        assert grid.resampling == resampling_for(tiles, info).name
        assert (grid.width, grid.height) == (round(90 * res / 0.5), round(80 * res / 0.5))

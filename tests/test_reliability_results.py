"""No silent wrong result and no file left behind (issue 11, kinds 2 and 3): one test per
case of the issue, with the value a user should get. Inputs are written here, in tmp dirs.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from rasterio.enums import ColorInterp, Resampling

from geotiler.cli import main
from geotiler.errors import DatasetError
from geotiler.tiles.schema import DATASET_FILE, load_dataset_info
from geotiler.tiles.shards import iter_shard, iter_tiles, list_shards

from conftest import pixel_box, write_footprints, write_raster


def run(*args: str):
    return CliRunner().invoke(main, ["-q", *args])


def error_line(result, code: int) -> str:
    assert result.exit_code == code, result.output + result.stderr
    assert "Traceback" not in result.output + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def strict_json(path: Path):
    def refuse(value: str):
        raise ValueError(f"{path} holds {value}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def boxes_scene(tmp_path: Path, width: int, height: int, **kw) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    data = rng.integers(30, 90, size=(3, height, width)).astype(np.uint8)
    boxes = [(c, r, c + 20, r + 16) for r in range(5, height - 16, 40)
             for c in range(5, width - 20, 45)]
    for c0, r0, c1, r1 in boxes:
        data[:, r0:r1, c0:c1] = 220
    raster = write_raster(tmp_path / "scene.tif", data, **kw)
    vector = write_footprints(tmp_path / "scene.gpkg", [pixel_box(*b) for b in boxes],
                              "EPSG:32633")
    return raster, vector


# --- NaN without a nodata tag ----------------------------------------------------------------

def test_nan_pixels_are_invalid_without_a_nodata_value(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.uniform(10, 20, size=(3, 128, 128)).astype(np.float32)
    data[:, 20:60, 30:90] = np.nan  # a NaN block, no nodata declared
    raster = write_raster(tmp_path / "f.tif", data)
    vector = write_footprints(tmp_path / "b.gpkg", [pixel_box(5, 5, 20, 20)], "EPSG:32633")
    out = tmp_path / "tiles"
    result = run("tile", str(raster), "-f", str(vector), "-o", str(out), "--size", "64",
                 "--keep-empty", "1", "--split", "1,0,0")
    assert result.exit_code == 0, result.stderr
    info = strict_json(out / DATASET_FILE)  # valid JSON: no NaN anywhere
    finite = data[:, np.isfinite(data[0])].astype(np.float64)
    assert info["mean"] == pytest.approx(finite.mean(axis=1).tolist(), abs=1e-3)
    invalid = 0
    for tile in iter_tiles(out):
        assert np.isfinite(tile.image).all()
        invalid += int((~tile.valid).sum())
    assert invalid == 40 * 60


def test_training_stops_when_the_loss_is_not_finite(tmp_path):
    """A dataset (written by hand, as an older geotiler could) with NaN pixels marked valid:
    the loss is NaN from the first step; train stops with one line and writes no model."""
    from affine import Affine
    from trainer_fixtures import CRS_UTM

    from geotiler.tiles.geotiff import GeoTiffEncoder
    from geotiler.tiles.schema import DatasetInfo
    from geotiler.tiles.shards import ShardWriter

    encoder = GeoTiffEncoder(CRS_UTM, compress="none")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        with ShardWriter(tmp_path / "t" / "shards" / f"{split}-000000.tar") as writer:
            for i in range(4):
                image = rng.uniform(0, 1, (3, 32, 32)).astype(np.float32)
                image[:, :8] = np.nan
                mask = np.zeros((2, 32, 32), np.uint8)
                mask[:, 10:20, 10:20] = 255
                transform = Affine(0.5, 0, 500000 + 16 * i, 0, -0.5, 9000000)
                record = {"key": f"{split}{i}", "split": split, "building_count": 1,
                          "transform": list(transform)[:6], "crs": CRS_UTM.to_string()}
                writer.add(f"{split}{i}", {"image.tif": encoder.encode(image, transform),
                                           "mask.tif": encoder.encode(mask, transform)}, record)
    info = DatasetInfo(tile_size=32, gsd=0.5, bands=[1, 2, 3], band_names=["a", "b", "c"],
                       dtype="float32", mean=[0.5] * 3, std=[0.3] * 3,
                       mask_channels=["footprint", "contour"], target="masks",
                       counts={"train": 4, "val": 4})
    (tmp_path / "t" / DATASET_FILE).write_text(json.dumps(info.to_json()))
    model = tmp_path / "m.pt"
    result = run("train", str(tmp_path / "t"), "-o", str(model), "--epochs", "2",
                 "--num-downs", "3", "--device", "cpu")
    line = error_line(result, 1)
    assert "not" in line or "nan" in line.lower()
    assert "epoch 1" in line
    assert not model.exists()


# --- edge tiles on rasters without nodata -----------------------------------------------------

def test_edge_padding_does_not_count_as_nodata(tmp_path):
    """600 x 600 px, no nodata, 256 px tiles: all 9 tiles kept (4 before), and every
    building pixel of the raster is in a tile."""
    raster, vector = boxes_scene(tmp_path, 600, 600)
    out = tmp_path / "tiles"
    result = run("tile", str(raster), "-f", str(vector), "-o", str(out), "--keep-empty", "1")
    assert result.exit_code == 0, result.stderr
    tiles = list(iter_tiles(out))
    assert len(tiles) == 9
    with rasterio.open(raster) as src:
        expected = int((src.read(1) == 220).sum())
    assert sum(int((t.mask[0] > 0).sum()) for t in tiles) == expected
    assert max(t.record["nodata_fraction"] for t in tiles) == 0.0


def test_a_raster_smaller_than_a_tile_gives_one_tile(tmp_path):
    raster, vector = boxes_scene(tmp_path, 100, 70)
    out = tmp_path / "tiles"
    result = run("tile", str(raster), "-f", str(vector), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert sum(load_dataset_info(out).counts.values()) == 1


def test_a_run_that_keeps_no_tile_is_an_error_naming_why(tmp_path):
    data = np.zeros((3, 300, 300), np.uint8)  # all nodata
    raster = write_raster(tmp_path / "dark.tif", data, nodata=0)
    vector = write_footprints(tmp_path / "b.gpkg", [pixel_box(5, 5, 20, 20)], "EPSG:32633")
    out = tmp_path / "tiles"
    line = error_line(run("tile", str(raster), "-f", str(vector), "-o", str(out)), 1)
    assert "--max-nodata" in line and "dark.tif" in line
    assert not out.exists()


# --- overviews --------------------------------------------------------------------------------

def stripes(tmp_path: Path, overviews: bool) -> Path:
    """0.25 m px, 1-px columns 0/200; with nearest-neighbour overviews if asked."""
    data = np.zeros((3, 256, 256), np.uint8)
    data[:, :, 1::2] = 200
    path = write_raster(tmp_path / f"stripes{int(overviews)}.tif", data, res=0.25)
    if overviews:
        with rasterio.open(path, "r+") as dst:
            dst.build_overviews([2, 4], Resampling.nearest)
    return path


def test_tiles_do_not_depend_on_overviews(tmp_path):
    for overviews in (False, True):
        raster = stripes(tmp_path, overviews)
        vector = write_footprints(tmp_path / "b.gpkg", [pixel_box(5, 5, 20, 20, res=0.25)],
                                  "EPSG:32633")
        out = tmp_path / f"tiles{int(overviews)}"
        result = run("tile", str(raster), "-f", str(vector), "-o", str(out), "--gsd", "0.5",
                     "--size", "64", "--keep-empty", "1")
        assert result.exit_code == 0, result.stderr
        for tile in iter_tiles(out):
            assert (tile.image == 100).all(), (overviews, np.unique(tile.image))


def test_predictions_do_not_depend_on_overviews(tmp_path):
    from conftest import write_tiny_model

    model = tmp_path / "model.pt"
    write_tiny_model(model)  # 0.5 m per px: reads the 0.25 m raster at half its resolution
    probs = []
    for overviews in (False, True):
        raster = stripes(tmp_path, overviews)
        out = tmp_path / f"p{int(overviews)}" / "b.gpkg"
        result = run("predict", str(raster), "-m", str(model), "-o", str(out), "--device",
                     "cpu")
        assert result.exit_code == 0, result.stderr
        with rasterio.open(out.with_name("b_prob.tif"), OVERVIEW_LEVEL="NONE") as src:
            probs.append(src.read())
    assert np.array_equal(probs[0], probs[1])


# --- band count mismatch ----------------------------------------------------------------------

def test_a_band_count_other_than_the_models_is_refused_unless_bands_are_picked(tmp_path):
    from conftest import write_tiny_model

    model = tmp_path / "model.pt"
    write_tiny_model(model)  # RGB
    rng = np.random.default_rng(0)
    raster = write_raster(tmp_path / "bgrn.tif",
                          rng.integers(0, 255, (4, 100, 100)).astype(np.uint8))
    with rasterio.open(raster, "r+") as dst:  # B, G, R, NIR: no alpha band
        dst.colorinterp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red,
                           ColorInterp.undefined]
    out = tmp_path / "p" / "b.gpkg"
    line = error_line(run("predict", str(raster), "-m", str(model), "-o", str(out),
                          "--device", "cpu"), 1)
    # the hint picks the model's bands by the raster's own band names, not the first three
    assert "4 band(s)" in line and "takes 3" in line and "--bands 3,2,1" in line
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
    result = run("predict", str(raster), "-m", str(model), "-o", str(out), "--device", "cpu",
                 "--bands", "3,2,1")  # R, G, B: as the model was trained
    assert result.exit_code == 0, result.stderr
    assert "WARNING" not in result.stderr
    result = run("predict", str(raster), "-m", str(model), "-o", str(out), "--device", "cpu",
                 "--bands", "1,2,3", "--overwrite")  # B, G, R: names differ, a warning
    assert result.exit_code == 0, result.stderr
    assert "WARNING" in result.stderr and "'blue', 'green', 'red'" in result.stderr
    assert "--bands 3,2,1 picks them by name" in result.stderr
    line = error_line(run("predict", str(raster), "-m", str(model), "-o", str(out),
                          "--device", "cpu", "--bands", "1,2", "--overwrite"), 1)
    assert "--bands gives 2" in line
    grey = write_raster(tmp_path / "grey.tif", rng.integers(0, 255, (1, 100, 100)).astype(np.uint8))
    line = error_line(run("predict", str(grey), "-m", str(model), "-o", str(out), "--device",
                          "cpu", "--overwrite"), 1)
    # fewer bands than the model takes: no --bands can help, so none is suggested
    assert "1 band(s)" in line and "cannot be used" in line and "--bands" not in line


# --- corrupt or incomplete datasets -----------------------------------------------------------

@pytest.fixture
def small_dataset(tmp_path):
    raster, vector = boxes_scene(tmp_path, 256, 256)
    out = tmp_path / "tiles"
    result = run("tile", str(raster), "-f", str(vector), "-o", str(out), "--size", "64",
                 "--keep-empty", "1", "--compress", "none", "--split", "0.5,0.5,0")
    assert result.exit_code == 0, result.stderr
    return out


def test_flipped_bytes_inside_a_member_make_a_skipped_tile(small_dataset, tmp_path):
    shard = list_shards(small_dataset, "train")[0]
    with tarfile.open(shard) as tar:
        member = next(m for m in tar if m.name.endswith(".image.tif"))
    offset = member.offset_data + member.size - 2000  # inside the (uncompressed) strip
    blob = bytearray(shard.read_bytes())
    blob[offset:offset + 64] = bytes(255 - b for b in blob[offset:offset + 64])
    shard.write_bytes(bytes(blob))
    keys = [t.key for t in iter_shard(shard)]
    assert member.name.split(".")[0] not in keys
    with pytest.raises(DatasetError, match="fails its checksum"):
        list(iter_shard(shard, skip_corrupt=False))
    result = run("train", str(small_dataset), "-o", str(tmp_path / "m.pt"), "--epochs", "1",
                 "--num-downs", "3", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert "1 corrupt tile(s) skipped" in result.output


def test_a_missing_shard_stops_training(small_dataset, tmp_path):
    shard = list_shards(small_dataset, "train")[0]
    shard.unlink()
    line = error_line(run("train", str(small_dataset), "-o", str(tmp_path / "m.pt"),
                          "--epochs", "1", "--num-downs", "3", "--device", "cpu"), 1)
    assert shard.name in line and "missing" in line


# --- stale shards ----------------------------------------------------------------------------

def test_footprints_edited_in_place_are_not_reused(tmp_path):
    raster, vector = boxes_scene(tmp_path, 256, 256)
    other = write_footprints(tmp_path / "other.gpkg",
                             [pixel_box(100, 100, 140, 130)] * len(
                                 __import__("geopandas").read_file(vector)), "EPSG:32633")
    assert other.stat().st_size == vector.stat().st_size
    out = tmp_path / "tiles"
    args = ["tile", str(raster), "-f", str(vector), "-o", str(out), "--size", "64",
            "--keep-empty", "1"]
    assert run(*args).exit_code == 0
    assert run(*args).exit_code == 0  # an unchanged rerun reuses its shards
    stat = vector.stat()
    shutil.copyfile(other, vector)  # same size, and the mtime put back
    os.utime(vector, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    line = error_line(run(*args), 1)
    assert "scene.gpkg changed" in line and "--overwrite" in line
    assert run(*args, "--overwrite").exit_code == 0
    info = load_dataset_info(out)
    assert info.extra["buildings"] == sum(t.record["building_count"] for t in iter_tiles(out))
    assert all(shapely.box(*t.record["bounds"]).intersects(pixel_box(100, 100, 140, 130))
               for t in iter_tiles(out) if t.record["building_count"])


# --- evaluate scores only masks ---------------------------------------------------------------

def test_evaluate_refuses_a_raster_that_is_not_a_binary_mask(tmp_path):
    raster, vector = boxes_scene(tmp_path, 128, 128)
    line = error_line(run("evaluate", str(raster), str(vector)), 1)  # an RGB image
    # no mask lies beside it: the message names the kind of file, not one that is not there
    assert "3 bands" in line and "{stem}_mask.tif" in line and "scene_mask.tif" not in line
    probs = np.linspace(0, 255, 128 * 128).reshape(1, 128, 128).astype(np.uint8)
    prob = write_raster(tmp_path / "b_prob.tif", probs)  # a one-channel probability map
    mask = write_raster(tmp_path / "b_mask.tif", (probs > 127).astype(np.uint8))
    line = error_line(run("evaluate", str(prob), str(vector)), 1)
    assert "binary" in line and str(mask) in line  # predict's mask beside it is named
    assert run("evaluate", str(mask), str(vector)).exit_code == 0


# --- refused runs create nothing --------------------------------------------------------------

def test_a_bad_scheduler_creates_nothing(tmp_path):
    raster, vector = boxes_scene(tmp_path, 128, 128)
    out = tmp_path / "tiles"
    result = run("tile", str(raster), "-f", str(vector), "-o", str(out), "--scheduler", "bogus")
    assert result.exit_code == 2 and "--scheduler" in result.stderr
    assert not out.exists()


def test_an_unreachable_scheduler_creates_nothing(tmp_path, monkeypatch):
    import pipelines.cluster

    monkeypatch.setattr(pipelines.cluster, "CONNECT_TIMEOUT", "1s")
    raster, vector = boxes_scene(tmp_path, 128, 128)
    out = tmp_path / "tiles"
    line = error_line(run("tile", str(raster), "-f", str(vector), "-o", str(out),
                          "--scheduler", "tcp://127.0.0.1:9"), 2)
    assert "tcp://127.0.0.1:9" in line
    assert not out.exists()

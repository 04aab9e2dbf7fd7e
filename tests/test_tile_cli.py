"""`geotiler tile` through the real CLI: outputs, determinism, resume and bad input."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner

from geotiler.cli import main
from geotiler.tiles.schema import load_dataset_info
from geotiler.tiles.shards import iter_shard, iter_tiles, list_shards

from conftest import interrupt_geotiler, pixel_box, write_footprints, write_raster


def run(*args: str) -> object:
    result = CliRunner().invoke(main, ["-q", *args])
    return result


def assert_one_line_error(result, code: int, *words: str) -> None:
    assert result.exit_code == code, result.output + result.stderr
    assert "Traceback" not in result.stderr + result.output
    message = [line for line in result.stderr.splitlines() if line.strip()]
    assert message, "an error message is printed"
    text = " ".join(message).lower()
    for word in words:
        assert word.lower() in text, text


def digest_shards(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in list_shards(out)}


def test_tile_writes_georeferenced_shards_index_and_dataset(scene, tmp_path):
    raster, vector, polys = scene()
    out = tmp_path / "tiles"
    result = run("tile", str(raster), "--footprints", str(vector), "--out", str(out),
                 "--size", "128", "--keep-empty", "1", "--max-nodata", "1")
    assert result.exit_code == 0, result.stderr
    info = load_dataset_info(out)
    # 600x400 px at 128 -> 5 x 4 tiles (edges padded), all kept
    assert sum(info.counts.values()) == 20
    assert info.mask_channels == ["footprint", "contour"]
    assert info.tile_size == 128 and info.gsd == pytest.approx(0.5)
    assert info.crs == "EPSG:32633"
    assert info.sources[0]["sha256"] == hashlib.sha256(raster.read_bytes()).hexdigest()
    with sqlite3.connect(out / "index.gpkg") as db:  # GeoPackage 1.2: GDAL 3.6 reads it quietly
        assert db.execute("PRAGMA user_version").fetchone() == (10200,)

    index = gpd.read_file(out / "index.gpkg", layer="tiles")
    assert len(index) == 20 and index.crs.to_epsg() == 32633
    assert set(index.columns) >= {"key", "shard", "split", "building_fraction", "building_count"}
    with rasterio.open(raster) as src:
        assert index.union_all().covers(shapely.box(*src.bounds))

    truth = shapely.union_all(polys)
    for tile in iter_tiles(out):
        assert tile.crs.to_epsg() == 32633
        bounds = shapely.box(*rasterio.transform.array_bounds(128, 128, tile.transform))
        expected = truth.intersection(bounds).area / 0.25  # in pixels
        assert abs(np.count_nonzero(tile.mask[0]) - expected) <= 0.02 * expected + 30
        # the image is the source pixels under the tile's transform
        if tile.valid.all():
            with rasterio.open(raster) as src:
                window = rasterio.windows.from_bounds(*bounds.bounds, transform=src.transform)
                assert np.array_equal(src.read(window=window), tile.image)
    # a member opens straight from the shard with GDAL's /vsitar/
    shard = list_shards(out, "train")[0]
    key = json.loads(shard.with_name(shard.stem + ".records.json").read_text())["records"][0]["key"]
    with rasterio.open(f"/vsitar/{shard}/{key}.mask.tif") as member:
        assert member.crs.to_epsg() == 32633 and member.count == 2


def test_footprints_in_another_crs_give_the_same_masks(scene, tmp_path):
    raster, vector, _ = scene(name="a")
    _, vector_geo, _ = scene(name="b", vector_crs="EPSG:4326", vector_ext=".geojson")
    masks = []
    for name, vec in (("same", vector), ("geo", vector_geo)):
        out = tmp_path / name
        result = run("tile", str(raster), "-f", str(vec), "-o", str(out), "--size", "128")
        assert result.exit_code == 0
        masks.append({t.key: t.mask for t in iter_tiles(out)})
    assert masks[0].keys() == masks[1].keys()
    for key in masks[0]:
        differ = np.count_nonzero(masks[0][key][0] != masks[1][key][0])
        assert differ <= 20  # reprojection round-off flips a few edge pixels at most


def test_same_tiles_for_one_or_many_workers(scene, tmp_path):
    raster, vector, _ = scene(width=900, height=700)
    digests = []
    for workers in ("1", "3"):
        out = tmp_path / f"w{workers}"
        result = run("tile", str(raster), "-f", str(vector), "-o", str(out), "--size", "64",
                     "--shard-size", "16", "--workers", workers)
        assert result.exit_code == 0, result.stderr
        digests.append(digest_shards(out))
    assert len(digests[0]) > 4 and digests[0] == digests[1]


def test_rerun_reuses_finished_shards_and_redoes_missing_ones(scene, tmp_path):
    raster, vector, _ = scene(width=700, height=500)
    out = tmp_path / "tiles"
    args = ["tile", str(raster), "-f", str(vector), "-o", str(out), "--size", "64",
            "--shard-size", "8"]
    assert run(*args).exit_code == 0
    before = digest_shards(out)
    victim = sorted(before)[1]
    (out / "shards" / victim).unlink()
    (out / "dataset.json").unlink()
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.stderr
    assert "1 shard(s) written" in result.output and f"{len(before) - 1} reused" in result.output
    assert digest_shards(out) == before
    assert load_dataset_info(out).counts


def test_other_settings_into_existing_dataset_need_overwrite(scene, tmp_path):
    raster, vector, _ = scene()
    out = tmp_path / "tiles"
    result = run("tile", str(raster), "-f", str(vector), "-o", str(out), "--size", "128")
    assert result.exit_code == 0
    result = run("tile", str(raster), "-f", str(vector), "-o", str(out), "--size", "64")
    assert_one_line_error(result, 1, "other settings", "--overwrite", "--size 128 -> 64")
    result = run("tile", str(raster), "-f", str(vector), "-o", str(out), "--size", "128",
                 "--footprints-where", "id >= 0")  # what differs is named, setting by setting
    assert_one_line_error(result, 1, "--footprints-where (none) -> 'id >= 0'")
    assert "--size" not in result.stderr
    result = run("tile", str(raster), "-f", str(vector), "-o", str(out), "--size", "64",
                 "--overwrite")
    assert result.exit_code == 0 and load_dataset_info(out).tile_size == 64


def _truncated(raster: Path, out: Path) -> Path:
    """``raster`` cut short: its header reads, its pixels do not (a copy that broke)."""
    data = raster.read_bytes()
    out.write_bytes(data[: len(data) // 3])
    return out


def test_a_run_without_train_tiles_is_refused_and_empty_held_out_splits_are_said(
        scene, tmp_path, caplog):
    """Val and test are never filtered by content, so a selection that leaves no train
    tile still kept tiles: that dataset can be neither trained on nor normalized. It is
    refused naming the setting, and nothing is left; a scene too small for val and test
    blocks is tiled with a warning that says so."""
    raster, vector, _ = scene(width=600, height=400)
    out = tmp_path / "tiles"
    result = run("tile", str(raster), "-f", str(vector), "-o", str(out), "--size", "64",
                 "--block-tiles", "1", "--keep-empty", "0", "--min-building-fraction", "0.99")
    assert_one_line_error(result, 1, "no train tile", "--min-building-fraction 0.99")
    assert not out.exists()
    result = CliRunner().invoke(main, ["tile", str(raster), "-f", str(vector), "-o",
                                       str(out), "--size", "256", "--block-tiles", "4"])
    assert result.exit_code == 0, result.stderr
    assert "WARNING: no val or test tile was kept" in result.stderr
    assert load_dataset_info(out).counts == {"train": 6, "val": 0, "test": 0}


def _dataset_files(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def test_overwrite_keeps_the_old_dataset_until_the_new_one_is_finished(scene, tmp_path):
    raster, vector, _ = scene(width=600, height=400)
    out = tmp_path / "tiles"
    assert run("tile", str(raster), "-f", str(vector), "-o", str(out), "--size", "64"
               ).exit_code == 0
    before = _dataset_files(out)
    broken = _truncated(raster, tmp_path / "broken.tif")
    result = run("tile", str(broken), "-f", str(vector), "-o", str(out), "--size", "64",
                 "--overwrite", "--workers", "1")
    assert_one_line_error(result, 1, "broken.tif")
    assert _dataset_files(out) == before  # a failed replacement changes nothing
    result = run("tile", str(raster), "-f", str(vector), "-o", str(out), "--size", "64",
                 "--overwrite", "--min-building-fraction", "1", "--split", "1,0,0",
                 "--keep-empty", "0")
    assert_one_line_error(result, 1, "no tile")
    assert _dataset_files(out) == before  # nor does one that keeps no tile
    result = run("tile", str(raster), "-f", str(vector), "-o", str(out), "--size", "128",
                 "--overwrite")
    assert result.exit_code == 0, result.stderr
    info = load_dataset_info(out)
    assert info.tile_size == 128 and sum(info.counts.values()) == len(list(iter_tiles(out)))
    assert {p.name for p in out.iterdir()} == {"shards", "index.gpkg", "config.json",
                                               "dataset.json"}
    assert _dataset_files(out) != before


def test_a_failed_first_run_leaves_nothing_that_blocks_the_rerun(scene, tmp_path):
    raster, vector, _ = scene(width=600, height=400)
    out = tmp_path / "tiles"
    broken = _truncated(raster, tmp_path / "broken.tif")
    result = run("tile", str(broken), "-f", str(vector), "-o", str(out), "--size", "64",
                 "--workers", "1")
    assert_one_line_error(result, 1, "broken.tif")
    assert not out.exists()
    result = run("tile", str(raster), "-f", str(vector), "-o", str(out), "--size", "64")
    assert result.exit_code == 0, result.stderr
    assert load_dataset_info(out).tile_size == 64


def test_raster_smaller_than_a_tile_gives_one_padded_tile(tmp_path):
    data = np.full((3, 50, 70), 120, dtype=np.uint8)
    raster = write_raster(tmp_path / "small.tif", data)
    # one house on the raster, one in the tile's padding below the raster's edge
    vector = write_footprints(tmp_path / "b.gpkg", [pixel_box(10, 10, 30, 30),
                                                    pixel_box(10, 53, 30, 60)], "EPSG:32633")
    out = tmp_path / "tiles"
    result = run("tile", str(raster), "-f", str(vector), "-o", str(out), "--size", "64",
                 "--max-nodata", "0.9")
    assert result.exit_code == 0, result.stderr
    (tile,) = list(iter_tiles(out))
    assert tile.image.shape == (3, 64, 64)
    assert tile.valid[:50, :70].all() and not tile.valid[50:, :].any()
    assert np.count_nonzero(tile.mask[0]) == 400
    # counted where there is imagery: the house in the padding is neither drawn nor counted
    assert gpd.read_file(out / "index.gpkg", layer="tiles")["building_count"].tolist() == [1]
    assert json.loads((out / "dataset.json").read_text())["buildings"] == 1


def test_uint16_single_band_alpha_and_band_selection(tmp_path):
    data = np.random.default_rng(1).integers(0, 4000, size=(4, 100, 100)).astype(np.uint16)
    data[3] = 65535
    data[3, :, 80:] = 0  # alpha: right strip transparent
    raster = write_raster(tmp_path / "rgba.tif", data, alpha=True)
    vector = write_footprints(tmp_path / "b.gpkg", [pixel_box(10, 10, 40, 40)], "EPSG:32633")
    out = tmp_path / "tiles"
    assert run("tile", str(raster), "-f", str(vector), "-o", str(out), "--size", "64",
               "--max-nodata", "1", "--keep-empty", "1").exit_code == 0
    info = load_dataset_info(out)
    assert info.bands == [1, 2, 3] and info.dtype == "uint16"  # alpha left out
    tiles = {t.key: t for t in iter_tiles(out)}
    right = next(t for t in tiles.values() if t.record["col"] == 1 and t.record["row"] == 0)
    assert not right.valid[:, 80 - 64 :].any()  # alpha 0 is nodata
    out2 = tmp_path / "tiles2"
    assert run("tile", str(raster), "-f", str(vector), "-o", str(out2), "--size", "64",
               "--bands", "2", "--max-nodata", "1").exit_code == 0
    tile = next(iter_tiles(out2))
    assert tile.image.shape[0] == 1 and tile.image.dtype == np.uint16
    assert np.array_equal(tile.image[0, :50, :50], data[1, :50, :50])


def test_gsd_resamples_imagery_and_rasterizes_masks_on_the_target_grid(scene, tmp_path):
    raster, vector, polys = scene(width=512, height=512)
    out = tmp_path / "tiles"
    assert run("tile", str(raster), "-f", str(vector), "-o", str(out), "--size", "128",
               "--gsd", "1.0", "--keep-empty", "1").exit_code == 0
    info = load_dataset_info(out)
    assert info.gsd == pytest.approx(1.0)
    assert sum(info.counts.values()) == 4  # 512 px at 0.5 m = 256 px at 1 m = 2 x 2 tiles
    truth = shapely.union_all(polys)
    total = sum(np.count_nonzero(t.mask[0]) for t in iter_tiles(out))
    assert abs(total - truth.area) <= 0.05 * truth.area  # 1 m pixels: area in m2 = pixels


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "Interrupted"),
                                             (signal.SIGTERM, 143, "Terminated")])
def test_interrupted_run_leaves_no_partial_shard(tmp_path, sig, code, word):
    """Ctrl-C (or SIGTERM: kill, docker stop, Slurm) in the middle: exit 130 (143), no
    *.partial file, finished shards complete, and the last line says a rerun continues."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, size=(3, 2048, 2048), dtype=np.uint8)
    raster = write_raster(tmp_path / "big.tif", data)
    polys = [pixel_box(c, r, c + 20, r + 20)
             for r in range(0, 2000, 50) for c in range(0, 2000, 50)]
    vector = write_footprints(tmp_path / "b.gpkg", polys, "EPSG:32633")
    out = tmp_path / "tiles"
    exit_code, stderr, _ = interrupt_geotiler(
        ["tile", str(raster), "-f", str(vector), "-o", str(out), "--size", "32",
         "--shard-size", "64", "--workers", "1", "--no-progress"],
        ready=lambda: bool(list((out / "shards").glob("*.tar"))), sig=sig)
    assert exit_code == code, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"{word}: partial outputs were removed; rerun the same command to continue "
        "(finished shards are reused).")
    assert not [p for p in out.rglob("*") if ".partial" in p.name]
    assert not (out / "dataset.json").exists()
    for shard in list_shards(out):  # whatever finished is whole and readable
        assert len(list(iter_tiles(out, shards=[shard]))) > 0


@pytest.mark.parametrize("case", ["missing", "not_raster", "no_crs", "no_transform"])
def test_bad_rasters_give_one_line_errors(case, tmp_path, scene):
    _, vector, _ = scene()
    path = tmp_path / "bad.tif"
    if case == "not_raster":
        path.write_text("hello")
    elif case == "no_crs":
        write_raster(path, np.zeros((1, 10, 10), np.uint8), crs=None)
    elif case == "no_transform":
        with rasterio.open(path, "w", driver="GTiff", width=10, height=10, count=1,
                           dtype="uint8") as dst:
            dst.write(np.zeros((1, 10, 10), np.uint8))
    result = run("tile", str(path), "-f", str(vector), "-o", str(tmp_path / "o"))
    words = {"missing": ["does not exist"], "not_raster": ["not a raster"],
             "no_crs": ["no crs"], "no_transform": ["no crs"]}[case]
    assert_one_line_error(result, 1, *words)
    assert not (tmp_path / "o" / "dataset.json").exists()


def test_vector_problems(tmp_path, scene):
    raster, _, _ = scene()
    empty = write_footprints(tmp_path / "empty.gpkg", [], "EPSG:32633")
    assert_one_line_error(run("tile", str(raster), "-f", str(empty), "-o", str(tmp_path / "a")),
                          1, "no features")
    nocrs = tmp_path / "nocrs.geojson"
    nocrs.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {},
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}}]}))
    # GeoJSON without "crs" is WGS 84 by spec; use a shapefile without .prj instead
    gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)]).to_file(tmp_path / "nocrs.shp")
    (tmp_path / "nocrs.prj").unlink(missing_ok=True)
    assert_one_line_error(run("tile", str(raster), "-f", str(tmp_path / "nocrs.shp"), "-o",
                              str(tmp_path / "b")), 1, "no CRS")
    far = write_footprints(tmp_path / "far.gpkg", [shapely.box(0, 0, 10, 10)], "EPSG:32633")
    result = run("tile", str(raster), "-f", str(far), "-o", str(tmp_path / "c"),
                 "--require-footprints")
    assert_one_line_error(result, 1, "no footprint", "overlaps")
    # without the flag too: footprints on no raster at all (a wrong CRS, say) made a
    # dataset of empty masks, exit 0, that only train refused
    assert_one_line_error(run("tile", str(raster), "-f", str(far), "-o", str(tmp_path / "d"),
                              "--keep-empty", "1"), 1, "no footprint", "no building to learn")
    assert not (tmp_path / "d").exists()
    # a raster without footprints beside one with them is a warning only
    other, vector, _ = scene()
    both = gpd.pd.concat([gpd.read_file(vector), gpd.read_file(far)])
    both.to_file(tmp_path / "both.gpkg")
    lonely = write_raster(tmp_path / "lonely.tif", np.zeros((3, 64, 64), np.uint8),
                          origin=(600_000.0, 4_100_000.0))
    result = CliRunner().invoke(main, ["tile", str(other), str(lonely), "-f",
                                       str(tmp_path / "both.gpkg"), "-o", str(tmp_path / "e")])
    assert result.exit_code == 0, result.stderr
    assert "overlaps raster" in result.stderr and "lonely" in result.stderr


def test_invalid_polygons_are_repaired_and_counted(tmp_path):
    raster = write_raster(tmp_path / "r.tif", np.zeros((3, 64, 64), np.uint8))
    bowtie = shapely.Polygon([(500005, 4999995), (500025, 4999975), (500025, 4999995),
                              (500005, 4999975)])
    assert not bowtie.is_valid
    vector = write_footprints(tmp_path / "v.gpkg", [bowtie, pixel_box(5, 5, 20, 20)], "EPSG:32633")
    out = tmp_path / "t"
    result = run("tile", str(raster), "-f", str(vector), "-o", str(out), "--size", "64")
    assert result.exit_code == 0
    data = json.loads((out / "dataset.json").read_text())
    assert data["footprints"]["repaired"] == 1
    (tile,) = list(iter_tiles(out))
    assert np.count_nonzero(tile.mask[0]) > 15 * 15


@pytest.mark.parametrize(
    ("flag", "value", "word"),
    [("--size", "8", "--size"), ("--gsd", "-2", "--gsd"), ("--split", "0.5,0.5", "--split"),
     ("--split", "a,b,c", "--split"), ("--overlap", "300", "--overlap"),
     ("--bands", "x", "--bands"),
     # millimetres for metres: refused before planning 10^12 tiles (it took all the memory)
     ("--gsd", "0.0001", "enlarge its 0.5 m pixels 5e+03 times"), ("--scale", "0.01", "100 times")],
)
def test_bad_options_exit_2(flag, value, word, scene, tmp_path):
    raster, vector, _ = scene()
    result = run("tile", str(raster), "-f", str(vector), "-o", str(tmp_path / "o"), flag, value)
    assert_one_line_error(result, 2, word)
    assert not (tmp_path / "o").exists()


def test_output_dir_that_is_not_a_dataset_is_refused(scene, tmp_path):
    raster, vector, _ = scene()
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert_one_line_error(run("tile", str(raster), "-f", str(vector), "-o", str(out)), 1,
                          "not a geotiler")
    assert (out / "precious.txt").read_text() == "keep me"


def test_help_explains_the_options():
    result = CliRunner().invoke(main, ["tile", "--help"])
    assert result.exit_code == 0
    for word in ("--footprints", "--gsd", "--contour-width", "--scheduler", "--split", "Example"):
        assert word in result.output
    assert os.environ.get("NO_SUCH_VAR") is None


def test_readers_sharing_a_shard_decode_only_their_tiles(scene, tmp_path):
    raster, vector, _ = scene()
    out = tmp_path / "tiles"
    result = run("tile", str(raster), "-f", str(vector), "-o", str(out), "--size", "64",
                 "--keep-empty", "1", "--split", "1,0,0")
    assert result.exit_code == 0
    (shard,) = list_shards(out)
    every = [t.key for t in iter_shard(shard)]
    halves = [[t.key for t in iter_shard(shard, select=lambda i, _k, p=p: i % 2 == p)]
              for p in (0, 1)]
    assert halves[0] == every[0::2] and halves[1] == every[1::2]


def test_a_shapefile_folder_is_one_footprint_source(scene, tmp_path):
    """OGR reads a folder of shapefiles as one source (evaluate took it): tile did too,
    then failed hashing it for dataset.json, leaving a half-made dataset behind."""
    raster, vector, _ = scene()
    folder = tmp_path / "footprints"
    folder.mkdir()
    gpd.read_file(vector).to_file(folder / "buildings.shp")
    out = tmp_path / "t"
    result = run("tile", str(raster), "-f", str(folder), "-o", str(out), "--size", "64")
    assert result.exit_code == 0, result.output
    recorded = json.loads((out / "dataset.json").read_text())["footprints"]
    files = sorted(p for p in folder.iterdir())
    assert recorded["size_bytes"] == sum(p.stat().st_size for p in files) > 0
    again = run("tile", str(raster), "-f", str(folder), "-o", str(out), "--size", "64")
    assert again.exit_code == 0 and "reused" in again.output
    (folder / "buildings.dbf").write_bytes((folder / "buildings.dbf").read_bytes() + b" ")
    changed = run("tile", str(raster), "-f", str(folder), "-o", str(out), "--size", "64")
    assert changed.exit_code != 0  # an edited source is not taken for the same one


def test_a_raster_given_twice_is_refused(scene, tmp_path, monkeypatch):
    raster, vector, _ = scene()
    monkeypatch.chdir(tmp_path)
    result = run("tile", str(raster), f"./{raster.name}", "-f", str(vector), "-o", "t")
    assert_one_line_error(result, 2, f"raster ./{raster.name} is given twice")
    assert not (tmp_path / "t").exists()


def test_rasters_of_different_gsds_need_one_gsd(tmp_path):
    """Two rasters at 0.5 and 1 m once made one dataset recording 0.5 m for all its tiles;
    now they need --gsd (one line, nothing created), and with it they are tiled alike."""
    rng = np.random.default_rng(0)
    fine = write_raster(tmp_path / "fine.tif", rng.integers(0, 255, (3, 128, 128), np.uint8))
    coarse = write_raster(tmp_path / "coarse.tif", rng.integers(0, 255, (3, 64, 64), np.uint8),
                          res=1.0, origin=(500_200.0, 4_000_000.0))
    footprints = write_footprints(tmp_path / "f.gpkg", [pixel_box(10, 10, 30, 30)],
                                  "EPSG:32633")
    out = tmp_path / "t"
    args = ["tile", str(fine), str(coarse), "-f", str(footprints), "-o", str(out), "--size",
            "32", "--keep-empty", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("Error")]
    assert len(lines) == 1 and "different GSDs (fine 0.5 m, coarse 1 m)" in lines[0]
    assert "--gsd" in lines[0] and not out.exists()
    result = CliRunner().invoke(main, [*args, "--gsd", "1"])
    assert result.exit_code == 0, result.stderr
    assert load_dataset_info(out).gsd == pytest.approx(1.0)


def test_footprints_given_twice_is_refused_not_the_first_dropped(tmp_path):
    result = CliRunner().invoke(main, ["tile", str(tmp_path / "a.tif"), "-f", "a.gpkg", "-f",
                                       "b.gpkg", "-o", str(tmp_path / "t")])
    assert result.exit_code == 2
    assert "Invalid value for '--footprints': given 2 times" in result.stderr
    assert not (tmp_path / "t").exists()


def test_a_gsd_far_from_the_rasters_own_is_warned_about(tmp_path):
    """``--gsd 50`` meant as 50 cm tiles 0.5 m imagery at 50 m, where the houses vanish; a
    warning says so. Resampling within 10x (the seed method's 2.6x) says nothing."""
    rng = np.random.default_rng(0)
    raster = write_raster(tmp_path / "r.tif", rng.integers(0, 255, (3, 128, 128), np.uint8))
    footprints = write_footprints(tmp_path / "f.gpkg", [pixel_box(10, 10, 30, 30)],
                                  "EPSG:32633")
    args = ["tile", str(raster), "-f", str(footprints), "--size", "32", "--keep-empty", "1"]
    far = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "far"), "--gsd", "50"])
    assert far.exit_code == 0, far.stderr
    assert "tiles at 50 m from a 0.5 m raster (100 x coarser)" in far.stderr
    near = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "near"), "--gsd", "1.3"])
    assert near.exit_code == 0, near.stderr
    assert "is that what you meant" not in near.stderr


def test_footprints_that_are_not_polygons_are_warned_about(scene, tmp_path):
    """Points among the polygons (10 of 60 in a fresh user's file) were dropped silently."""
    raster, vector, _ = scene()
    mixed = gpd.read_file(vector)
    points = mixed.iloc[:3].copy()
    points["geometry"] = points.geometry.centroid
    gpd.GeoDataFrame(gpd.pd.concat([mixed, points]), crs=mixed.crs).to_file(
        tmp_path / "mixed.gpkg")
    result = CliRunner().invoke(main, ["tile", str(raster), "-f", str(tmp_path / "mixed.gpkg"),
                                       "-o", str(tmp_path / "t")])
    assert result.exit_code == 0, result.stderr
    assert "3 footprint feature(s) of" in result.stderr and "not polygons" in result.stderr

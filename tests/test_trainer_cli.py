"""``geotiler train`` end to end on tiny datasets: model file, resume, DDP, bad input."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from trainer_fixtures import make_tile_dataset

from geotiler.cli import main
from trainer.config import DEFAULT_WALL_WEIGHT
from trainer.modelfile import load_model

from conftest import interrupt_geotiler, pixel_box, write_footprints, write_raster

torch.set_num_threads(1)

TINY = ["--ngf", "4", "--ndf", "4", "--num-downs", "3", "--workers", "0", "--device", "cpu",
        "--batch-size", "4"]
PIX2PIX = ["--arch", "pix2pix"]


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["train", *args], catch_exceptions=False)


def assert_one_line_error(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tile_dataset(tmp_path_factory.mktemp("tiles"), splits={"train": 12, "val": 4},
                             shard_size=5, size=32)


def test_one_epoch_writes_a_model_that_predicts(tiles: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    result = run(str(tiles), "--out", str(out), "--epochs", "1", *TINY, *PIX2PIX)
    assert result.exit_code == 0, result.output
    assert "best val IoU" in result.stdout and str(out) in result.stdout
    model = load_model(out)
    assert model.spec.model.arch == "pix2pix"
    assert model.spec.tile_size == 32 and model.spec.gsd == 0.5
    assert model.spec.mask_channels == ["footprint", "contour"]
    assert model.spec.tiling["size"] == 32
    assert model.spec.training["epochs"] == 1 and "best_val_iou" in model.spec.training
    image = np.random.default_rng(0).integers(0, 255, (2, 3, 32, 32)).astype(np.uint8)
    prob = model.predict(model.normalize(image))
    assert prob.shape == (2, 2, 32, 32)
    assert float(prob.min()) >= 0 and float(prob.max()) <= 1
    ckpt = tmp_path / "model.checkpoints"
    assert (ckpt / "last.pt").is_file()
    rows = list(csv.DictReader((ckpt / "metrics.csv").open()))
    assert len(rows) == 1
    assert {"val_iou", "val_f1", "val_boundary_f", "loss_g_recon"} <= set(rows[0])
    resolved = json.loads((ckpt / "train_config.json").read_text())
    assert resolved["model"]["ngf"] == 4 and resolved["config"]["batch_size"] == 4
    # a second run refuses to clobber the first
    again = run(str(tiles), "--out", str(out), "--epochs", "1", *TINY, *PIX2PIX)
    assert_one_line_error(again, 1, "exists", "--overwrite")


def test_max_minutes_stops_after_the_epoch_that_spends_it(tiles: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    result = run(str(tiles), "--out", str(out), "--epochs", "50", "--max-minutes", "0.0001",
                 *TINY)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "model.checkpoints" / "metrics.csv").open()))
    assert len(rows) == 1  # one epoch, not 50
    assert load_model(out).spec.training["epochs"] == 1
    state = torch.load(tmp_path / "model.checkpoints" / "last.pt", weights_only=True)
    assert state["planned"] == 1  # the plan fitted to the budget is kept for --resume


def test_unet_on_seed_rgb_target(tmp_path: Path) -> None:
    tiles = make_tile_dataset(tmp_path / "tiles", splits={"train": 8, "val": 4}, size=32,
                              target="seed-rgb")
    out = tmp_path / "unet.pt"
    result = run(str(tiles), "--out", str(out), "--arch", "unet", "--epochs", "1", *TINY)
    assert result.exit_code == 0, result.output
    model = load_model(out)
    assert model.spec.model.arch == "unet" and model.spec.target == "seed-rgb"
    assert model.predict(model.normalize(np.zeros((1, 3, 32, 32), np.uint8))).shape[1] == 3


def _weights(path: Path) -> dict[str, Any]:
    state = torch.load(path, weights_only=True)
    return {"G": state["G"], "D": state["D"], "opt_G": state["opt_G"]["state"]}


def test_resume_equals_an_uninterrupted_run(tiles: Path, tmp_path: Path) -> None:
    opts = [*TINY, *PIX2PIX, "--seed", "7", "--max-steps", "2"]
    full = run(str(tiles), "--out", str(tmp_path / "a.pt"), "--epochs", "3", *opts)
    assert full.exit_code == 0, full.output
    first = run(str(tiles), "--out", str(tmp_path / "b.pt"), "--epochs", "1", *opts)
    assert first.exit_code == 0, first.output
    ckpt = tmp_path / "b.checkpoints" / "last.pt"
    resumed = run(str(tiles), "--out", str(tmp_path / "b.pt"), "--epochs", "3",
                  "--resume", str(ckpt), *opts)
    assert resumed.exit_code == 0, resumed.output
    a = _weights(tmp_path / "a.checkpoints" / "last.pt")
    b = _weights(ckpt)
    for part in ("G", "D"):
        assert a[part].keys() == b[part].keys()
        for name in a[part]:
            torch.testing.assert_close(a[part][name], b[part][name], rtol=0, atol=0)
    for index, state in a["opt_G"].items():
        torch.testing.assert_close(state["exp_avg"], b["opt_G"][index]["exp_avg"], rtol=0, atol=0)
    rows_a = list(csv.DictReader((tmp_path / "a.checkpoints" / "metrics.csv").open()))
    rows_b = list(csv.DictReader((tmp_path / "b.checkpoints" / "metrics.csv").open()))
    assert [r["loss_g"] for r in rows_a] == [r["loss_g"] for r in rows_b]
    assert [r["lr"] for r in rows_a] == [r["lr"] for r in rows_b]


def test_resume_refuses_a_different_network(tiles: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    assert run(str(tiles), "--out", str(out), "--epochs", "1", "--max-steps", "1",
               *TINY, *PIX2PIX).exit_code == 0
    ckpt = tmp_path / "m.checkpoints" / "last.pt"
    result = run(str(tiles), "--out", str(out), "--epochs", "2", "--resume", str(ckpt),
                 "--arch", "unet", *TINY)
    assert_one_line_error(result, 2, "different network", "arch")
    other = make_tile_dataset(tmp_path / "rgb", splits={"train": 4, "val": 0}, size=32,
                              target="seed-rgb")
    result = run(str(other), "--out", str(out), "--epochs", "2", "--resume", str(ckpt), *TINY)
    assert_one_line_error(result, 2, "different tiles", "mask_channels")
    result = run(str(tiles), "--out", str(out), "--resume", str(tmp_path / "nope.pt"), *TINY)
    assert_one_line_error(result, 2, "does not exist")
    # bad files are exit 1, as for --init: cut short, or the model file instead
    cut = tmp_path / "cut.pt"
    cut.write_bytes(ckpt.read_bytes()[:1000])
    result = run(str(tiles), "--out", str(out), "--resume", str(cut), *TINY)
    assert_one_line_error(result, 1, "truncated or corrupt")
    assert len(result.stderr) < 300  # not torch's paragraph about miniz
    result = run(str(tiles), "--out", str(tmp_path / "n.pt"), "--resume", str(out), *TINY,
                 *PIX2PIX)
    assert_one_line_error(result, 1, "is a model file, not a checkpoint", "last.pt")


def test_resume_reads_a_version_1_checkpoint(tiles: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    assert run(str(tiles), "--out", str(out), "--epochs", "1", "--max-steps", "1",
               *TINY).exit_code == 0
    ckpt = tmp_path / "m.checkpoints" / "last.pt"
    state = torch.load(ckpt, weights_only=True)
    dataset = json.loads(state["dataset"])
    identity = {k: dataset[k] for k in ("bands", "band_names", "dtype", "tile_size",
                                        "mask_channels", "target")}
    state.update(format_version=1, dataset=json.dumps(identity), sched_G={}, sched_D={})
    torch.save(state, ckpt)
    result = run(str(tiles), "--out", str(out), "--epochs", "2", "--max-steps", "1",
                 "--resume", str(ckpt), *TINY)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "m.checkpoints" / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert torch.load(ckpt, weights_only=True)["format_version"] == 2


def test_bad_inputs_give_one_line_errors(tmp_path: Path) -> None:
    out = str(tmp_path / "m.pt")
    assert_one_line_error(run(str(tmp_path / "missing"), "--out", out, *TINY), 1,
                          "does not exist")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run(str(tmp_path / "empty"), "--out", out, *TINY), 1,
                          "no dataset.json")
    twice = run(str(tiles_dir := make_tile_dataset(tmp_path / "t2", splits={"train": 2},
                                                   size=32)),
                f"{tiles_dir}/../t2", "--out", out, *TINY)
    assert_one_line_error(twice, 2, "is given twice: its tiles would count double")
    (tmp_path / "a_file").write_text("x")
    assert_one_line_error(run(str(tmp_path / "a_file"), "--out", out, *TINY), 1,
                          "is a file; give the folder")
    no_train = make_tile_dataset(tmp_path / "no_train", splits={"val": 3}, size=32)
    assert_one_line_error(run(str(no_train), "--out", out, *TINY), 1, "no train tiles")
    newer = make_tile_dataset(tmp_path / "newer", splits={"train": 2}, size=32,
                              format_version=99)
    assert_one_line_error(run(str(newer), "--out", out, *TINY), 1, "newer", "upgrade")
    ok = make_tile_dataset(tmp_path / "ok", splits={"train": 2}, size=32)
    assert_one_line_error(run(str(ok), "--out", out, *TINY[:4], "--num-downs", "6"), 2,
                          "--num-downs 6", "32 px", "--num-downs 5")
    assert_one_line_error(run(str(ok), "--out", out, "--arch", "gan"), 2, "--arch")
    assert_one_line_error(run(str(ok), "--out", str(tmp_path), *TINY), 2, "--out")
    if not torch.cuda.is_available():
        assert_one_line_error(run(str(ok), "--out", out, *TINY[:-4], "--device", "cuda"), 2,
                              "no CUDA")


def test_no_val_tiles_warns_and_corrupt_tiles_are_counted(tmp_path: Path) -> None:
    tiles = make_tile_dataset(tmp_path / "tiles", splits={"train": 6}, size=32, corrupt=2)
    out = tmp_path / "m.pt"
    result = run(str(tiles), "--out", str(out), "--epochs", "1", *TINY)
    assert result.exit_code == 0, result.output
    assert "no val tiles" in result.stderr
    assert "skipping corrupt tile" in result.stderr
    assert "2 corrupt tile(s) skipped" in result.stdout
    assert load_model(out).spec.training["best_val_iou"] is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_ddp_two_processes_write_one_model(tiles: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "geotiler", "-q", "train", str(tiles), "--out", str(out), "--epochs", "2",
           *TINY, *PIX2PIX]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("trained pix2pix") == 1  # rank 0 reports, rank 1 stays quiet
    assert "x2" in proc.stdout
    model = load_model(out)
    assert model.spec.training["world_size"] == 2
    rows = list(csv.DictReader((tmp_path / "ddp.checkpoints" / "metrics.csv").open()))
    assert len(rows) == 2 and 8 <= int(rows[0]["images"]) <= 12  # both ranks trained


def test_trains_one_model_on_two_datasets_with_pooled_normalization(tiles: Path,
                                                                     tmp_path: Path) -> None:
    other = make_tile_dataset(tmp_path / "other", splits={"train": 6, "val": 2}, size=32,
                              seed=1)
    out = tmp_path / "model.pt"
    result = run(str(tiles), str(other), "--out", str(out), "--epochs", "1", *TINY)
    assert result.exit_code == 0, result.output
    spec = load_model(out).spec
    a = json.loads((tiles / "dataset.json").read_text())
    b = json.loads((other / "dataset.json").read_text())
    assert spec.dataset.counts["train"] == a["counts"]["train"] + b["counts"]["train"]
    assert spec.dataset.extra["datasets"] == [str(tiles), str(other)]
    wa, wb = a["counts"]["train"], b["counts"]["train"]
    pooled = (wa * np.array(a["mean"]) + wb * np.array(b["mean"])) / (wa + wb)
    assert np.allclose(spec.mean, pooled)
    assert spec.training["images"] >= wa + wb  # one epoch saw the tiles of both


def test_datasets_with_different_bands_are_refused(tiles: Path, tmp_path: Path) -> None:
    other = make_tile_dataset(tmp_path / "other", splits={"train": 4, "val": 2}, size=32)
    info = json.loads((other / "dataset.json").read_text())
    info.update(bands=[1, 2], band_names=["red", "nir"], mean=info["mean"][:2],
                std=info["std"][:2])
    (other / "dataset.json").write_text(json.dumps(info))
    result = run(str(tiles), str(other), "--out", str(tmp_path / "m.pt"), "--epochs", "1",
                 *TINY)
    assert_one_line_error(result, 1, "band count", str(other))
    assert not (tmp_path / "m.pt").exists()


def test_init_starts_from_another_models_weights(tiles: Path, tmp_path: Path) -> None:
    first = tmp_path / "first.pt"
    assert run(str(tiles), "--out", str(first), "--epochs", "1", *TINY).exit_code == 0
    # zero epochs are not allowed, so compare the first step's starting point instead:
    # with --init and --lr tiny, the fine-tuned weights stay next to the initial ones
    second = tmp_path / "second.pt"
    result = run(str(tiles), "--out", str(second), "--epochs", "1", "--init", str(first),
                 "--lr", "1e-12", *TINY)
    assert result.exit_code == 0, result.output
    a = load_model(first).net.state_dict()
    b = load_model(second).net.state_dict()
    weights = [k for k in a if k.endswith("weight")]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in weights)
    other = run(str(tiles), "--out", str(tmp_path / "x.pt"), "--epochs", "1", "--init",
                str(first), "--ngf", "8", *TINY[2:])
    assert_one_line_error(other, 2, "--init", "ngf")


def test_tiles_without_a_building_are_refused(tmp_path: Path) -> None:
    """Footprints only where the raster is nodata: tile keeps the valid tiles (none with a
    building) and exits 0; train refuses in one line. (Footprints that touch no raster at
    all are refused by tile already.)"""
    data = np.full((3, 128, 128), 120, np.uint8)
    data[:, :, :64] = 0  # the left half is nodata
    raster = write_raster(tmp_path / "r.tif", data, nodata=0)
    far = write_footprints(tmp_path / "f.gpkg", [pixel_box(8, 8, 24, 24)], "EPSG:32633")
    tiles = tmp_path / "tiles"
    tiled = CliRunner().invoke(main, ["tile", str(raster), "-f", str(far), "-o", str(tiles),
                                      "--size", "32", "--block-tiles", "1", "--keep-empty", "1"])
    assert tiled.exit_code == 0, tiled.output
    assert json.loads((tiles / "dataset.json").read_text())["buildings"] == 0
    result = run(str(tiles), "--out", str(tmp_path / "m.pt"), "--epochs", "1", *TINY)
    assert_one_line_error(result, 1, "no building", "CRS")
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "m.checkpoints").exists()


def _trained_config(out: Path) -> dict[str, Any]:
    state = torch.load(out.with_suffix(".checkpoints") / "last.pt", weights_only=True)
    return dict(json.loads(state["config"]))


def test_wall_weight_applies_to_the_unet_on_contour_tiles(tiles: Path, tmp_path: Path) -> None:
    result = run(str(tiles), "--out", str(tmp_path / "w.pt"), "--epochs", "1",
                 "--max-steps", "1", *TINY)
    assert result.exit_code == 0, result.output
    width = json.loads((tiles / "dataset.json").read_text())["config"]["contour_width"]
    used = _trained_config(tmp_path / "w.pt")
    assert used["wall_weight"] == DEFAULT_WALL_WEIGHT and used["wall_reach"] == width
    assert run(str(tiles), "--out", str(tmp_path / "p.pt"), "--epochs", "1", "--max-steps",
               "1", *TINY, *PIX2PIX).exit_code == 0
    assert _trained_config(tmp_path / "p.pt")["wall_weight"] == 0  # pix2pix: the paper's loss
    rgb = make_tile_dataset(tmp_path / "rgb", splits={"train": 4, "val": 0}, size=32,
                            target="seed-rgb")
    result = run(str(rgb), "--out", str(tmp_path / "r.pt"), "--epochs", "1", *TINY)
    assert result.exit_code == 0, result.output  # no contour channel: no wall weight
    assert _trained_config(tmp_path / "r.pt")["wall_weight"] == 0
    result = run(str(rgb), "--out", str(tmp_path / "x.pt"), "--epochs", "1",
                 "--wall-weight", "10", *TINY)
    assert_one_line_error(result, 2, "--wall-weight", "contour")


def test_resume_into_a_new_out_writes_the_model_it_names(tiles: Path, tmp_path: Path) -> None:
    """The checkpoint holds the last weights, not the best: resuming into a new --out must
    still write the model file the summary names (it once named a file never written)."""
    opts = [*TINY, "--max-steps", "1"]
    assert run(str(tiles), "--out", str(tmp_path / "a.pt"), "--epochs", "1", *opts
               ).exit_code == 0
    new = tmp_path / "b.pt"
    resumed = run(str(tiles), "--out", str(new), "--epochs", "2",
                  "--resume", str(tmp_path / "a.checkpoints" / "last.pt"),
                  "--init", "synthetic", *opts)
    assert resumed.exit_code == 0, resumed.output
    assert new.is_file() and f"model: {new}" in resumed.stdout
    # the checkpoint was of the best epoch so far, so the new --out starts with it and
    # holds the best of epochs 1-2: the one the summary names
    best = load_model(new).spec.training["best_epoch"]
    assert f"(epoch {best})" in resumed.stdout
    assert "--init synthetic is ignored with --resume" in resumed.stderr


def test_an_interrupted_run_says_which_checkpoint_continues_it(tiles: Path, tmp_path: Path
                                                                ) -> None:
    """Ctrl-C after some epochs: exit 130 and one line naming the --resume that continues
    (a rerun of the same command would refuse the existing --out)."""
    out = tmp_path / "m.pt"
    last = tmp_path / "m.checkpoints" / "last.pt"
    code, stderr, _ = interrupt_geotiler(
        ["-q", "train", str(tiles), "--out", str(out), "--epochs", "10000", "--no-progress",
         *TINY], ready=last.exists)
    assert code == 130, stderr
    epoch = torch.load(last, weights_only=True)["epoch"]
    assert stderr.strip().splitlines()[-1] == (
        f"Interrupted: partial outputs were removed; continue with --resume {last} (it goes "
        f"on after epoch {epoch}).")
    # metrics.csv holds the epochs of last.pt, not the ones since (checkpoints are spaced)
    rows = (last.parent / "metrics.csv").read_text().splitlines()
    assert len(rows) - 1 == epoch
    # the same command again, without --resume: the refusal says how to go on
    assert_one_line_error(run(str(tiles), "--out", str(out), "--epochs", "1", *TINY), 1,
                          f"continue its run with --resume {last} or pass --overwrite")
    resumed = run(str(tiles), "--out", str(out), "--epochs", "1", "--resume", str(last), *TINY)
    assert resumed.exit_code == 0, resumed.output


def test_a_shard_that_is_not_a_tar_file_is_one_line(tmp_path: Path) -> None:
    tiles = make_tile_dataset(tmp_path / "t", splits={"train": 6, "val": 2}, shard_size=4,
                              size=32)
    shard = sorted((tiles / "shards").glob("*.tar"))[0]
    shard.write_bytes(b"not a tar file at all\n" * 64)
    result = run(str(tiles), "--out", str(tmp_path / "m.pt"), "--epochs", "1", *TINY)
    assert_one_line_error(result, 1, f"cannot open shard {shard}: not a tar archive")
    assert result.stderr.strip().splitlines()[-1].startswith("Error:")  # nothing after it


def test_an_interrupted_overwrite_keeps_the_old_model(tiles: Path, tmp_path: Path) -> None:
    """``--overwrite`` replaces --out only when the new run ends: interrupted after its first
    epochs, the old model file is still there byte for byte (the new best waits in the
    checkpoint folder), and the resumed run puts its best model in place."""
    out = tmp_path / "m.pt"
    first = run(str(tiles), "--out", str(out), "--epochs", "1", "--max-steps", "1",
                "--checkpoint-dir", str(tmp_path / "first"), *TINY)
    assert first.exit_code == 0, first.output
    old = out.read_bytes()
    staged, last = tmp_path / "m.checkpoints" / "best.pt", tmp_path / "m.checkpoints" / "last.pt"
    code, stderr, _ = interrupt_geotiler(
        ["-q", "train", str(tiles), "--out", str(out), "--epochs", "10000", "--no-progress",
         "--overwrite", *TINY], ready=lambda: staged.exists() and last.exists())
    assert code == 130, stderr
    assert out.read_bytes() == old and staged.is_file()
    done = len((tmp_path / "m.checkpoints" / "metrics.csv").read_text().splitlines()) - 1
    resumed = run(str(tiles), "--out", str(out), "--epochs", str(done + 1), "--resume",
                  str(last), *TINY)
    assert resumed.exit_code == 0, resumed.output
    assert out.read_bytes() != old and not staged.exists()
    assert load_model(out).spec.training["epochs"] <= done + 1


def test_the_model_is_never_written_into_a_tile_dataset(tiles: Path, tmp_path: Path) -> None:
    """``-o tiles/dataset.json --overwrite`` once wrote the model over the dataset's file."""
    meta = tiles / "dataset.json"
    before = meta.read_bytes()
    for out in (meta, tiles / "model.pt"):
        result = run(str(tiles), "--out", str(out), "--overwrite", "--epochs", "1", *TINY)
        assert_one_line_error(result, 1, f"{out} is inside the tile dataset {tiles}")
    assert meta.read_bytes() == before and not (tiles / "model.checkpoints").exists()


def test_resume_refuses_other_tiles_and_names_changed_settings(tiles: Path, tmp_path: Path
                                                               ) -> None:
    """--resume continues the same run: other tiles (another normalization) are refused
    with a pointer to --init; other training settings are named in a warning."""
    out = tmp_path / "m.pt"
    assert run(str(tiles), "--out", str(out), "--epochs", "1", "--max-steps", "1",
               *TINY).exit_code == 0
    ckpt = tmp_path / "m.checkpoints" / "last.pt"
    other = make_tile_dataset(tmp_path / "other", splits={"train": 4, "val": 2}, size=32,
                              seed=5)
    result = run(str(other), "--out", str(out), "--epochs", "2", "--resume", str(ckpt), *TINY)
    assert_one_line_error(result, 2, "was trained on different tiles", "--init")
    same = run(str(tiles), "--out", str(out), "--epochs", "2", "--max-steps", "1",
               "--resume", str(ckpt), *TINY)
    assert same.exit_code == 0 and "other settings" not in same.stderr
    result = run(str(tiles), "--out", str(out), "--epochs", "3", "--max-steps", "1",
                 "--resume", str(ckpt), "--lr", "0.05", *TINY)
    assert result.exit_code == 0, result.output
    assert "resuming with other settings than the run's (lr" in result.stderr


def test_datasets_that_share_ground_across_splits_are_said(tmp_path: Path) -> None:
    """The same raster tiled twice with other split seeds: val tiles of one are train tiles
    of the other, so val IoU would be optimistic; train says so."""
    rng = np.random.default_rng(0)
    raster = write_raster(tmp_path / "a.tif", rng.integers(0, 255, (3, 128, 128), np.uint8))
    boxes = [pixel_box(c, r, c + 8, r + 8) for r in range(4, 128, 16) for c in range(4, 128, 16)]
    footprints = write_footprints(tmp_path / "f.gpkg", boxes, "EPSG:32633")
    dirs = []
    for seed in ("0", "3"):
        out = tmp_path / f"t{seed}"
        result = CliRunner().invoke(main, ["-q", "tile", str(raster), "-f", str(footprints),
                                           "-o", str(out), "--size", "32", "--block-tiles",
                                           "1", "--seed", seed])
        assert result.exit_code == 0, result.stderr
        dirs.append(str(out))
    result = run(*dirs, "--out", str(tmp_path / "m.pt"), "--epochs", "1", "--max-steps", "1",
                 *TINY)
    assert result.exit_code == 0, result.output
    assert "cover ground that" in result.stderr and "trains on" in result.stderr
    alone = run(dirs[0], "--out", str(tmp_path / "n.pt"), "--epochs", "1", "--max-steps", "1",
                *TINY)
    assert "cover ground" not in alone.stderr


def test_resuming_a_replacement_into_a_new_out_names_its_best(tiles: Path, tmp_path: Path
                                                              ) -> None:
    """An interrupted --overwrite run resumed into a new --out: the log says where the
    run's best so far is (its staged model, not the old --out); an --out that is the
    checkpoint itself is refused."""
    out = tmp_path / "m.pt"
    assert run(str(tiles), "--out", str(out), "--epochs", "1", "--max-steps", "1",
               "--checkpoint-dir", str(tmp_path / "first"), *TINY).exit_code == 0
    staged, last = tmp_path / "m.checkpoints" / "best.pt", tmp_path / "m.checkpoints" / "last.pt"
    code, stderr, _ = interrupt_geotiler(
        ["-q", "train", str(tiles), "--out", str(out), "--epochs", "10000", "--no-progress",
         "--overwrite", *TINY], ready=lambda: staged.exists() and last.exists())
    assert code == 130, stderr
    assert_one_line_error(run(str(tiles), "--out", str(last), "--epochs", "2", "--resume",
                              str(last), *TINY), 1, "where the run's checkpoints go")
    done = len((tmp_path / "m.checkpoints" / "metrics.csv").read_text().splitlines()) - 1
    new = tmp_path / "n.pt"
    resumed = run(str(tiles), "--out", str(new), "--epochs", str(done + 1), "--resume",
                  str(last), *TINY)
    assert resumed.exit_code == 0, resumed.output
    # the checkpoint is of the run's best epoch (its first): the new --out starts from it,
    # and the summary names the epoch the file holds; the staged model stays where it is
    best = load_model(new).spec.training["best_epoch"]
    assert f"(epoch {best})" in resumed.stdout and f"model: {new}" in resumed.stdout
    assert new.is_file() and staged.is_file()


def test_resuming_past_the_best_epoch_into_a_new_out_says_where_the_best_is(
        tiles: Path, tmp_path: Path) -> None:
    """A checkpoint later than the run's best epoch holds other weights than the best:
    resumed into a new --out, the log says where the earlier best is (the first run's
    model file), and the new file holds the best of the resumed epochs."""
    first, last = tmp_path / "m.pt", tmp_path / "m.checkpoints" / "last.pt"
    done = run(str(tiles), "--out", str(first), "--epochs", "3", *TINY)
    assert done.exit_code == 0, done.output
    state = torch.load(last, weights_only=True)  # as if epoch 1 had been the best
    torch.save({**state, "best_epoch": 1, "best_iou": 1.0}, last)
    new = tmp_path / "n.pt"
    resumed = run(str(tiles), "--out", str(new), "--epochs", "4", "--resume",
                  str(tmp_path / "m.checkpoints" / "last.pt"), *TINY)
    assert resumed.exit_code == 0, resumed.output
    assert "the best before them, epoch 1, is in the first run's model file" in resumed.stderr
    assert load_model(new).spec.training["best_epoch"] == 4

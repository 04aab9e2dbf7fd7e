"""Every command against a corpus of damaged and odd inputs: one ``Error:`` line, never a
traceback (issue 11, kind 1).

Each case runs the real CLI (in-process with CliRunner, or as a subprocess where the
process itself must be limited: a file size limit standing in for a full disk, Ctrl-C)
and checks the exit code, that stderr holds exactly one ``Error:`` line naming the file,
and that no ``Traceback`` is printed. The inputs are written here, in tmp dirs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geotiler.cli import main
from geotiler.tiles.shards import list_shards

from conftest import (
    REPO,
    interrupt_geotiler,
    pixel_box,
    write_footprints,
    write_raster,
    write_tiny_model,
)

CUDA = False
try:  # torch is a dependency; only asks whether this machine has a GPU
    import torch

    CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    pass


def run(*args: str):
    return CliRunner().invoke(main, ["-q", *args])


def assert_error(stdout: str, stderr: str, code: int, exit_code: int, *names: str) -> str:
    """Exit ``code``, exactly one ``Error:`` line on stderr naming each of ``names``, no
    traceback anywhere. Returns the Error line."""
    assert exit_code == code, stdout + stderr
    assert "Traceback" not in stdout + stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    for name in names:
        assert name in errors[0], errors[0]
    return errors[0]


def check(result, code: int, *names: str) -> str:
    return assert_error(result.output, result.stderr, code, result.exit_code, *names)


# --- the corpus -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    data = rng.integers(0, 90, size=(3, 300, 300)).astype(np.uint8)
    data[:, 40:90, 50:120] = 230
    good = write_raster(root / "good.tif", data)
    big = write_raster(root / "big.tif", rng.integers(0, 255, (3, 512, 512)).astype(np.uint8))
    blob = big.read_bytes()
    (root / "truncated.tif").write_bytes(blob[: len(blob) // 2])  # opens; later strips gone
    (root / "garbage.tif").write_bytes(bytes(rng.integers(0, 256, 4000, dtype=np.uint8)))
    (root / "empty.tif").write_bytes(b"")
    footprints = write_footprints(root / "buildings.gpkg", [pixel_box(50, 40, 120, 90)],
                                  "EPSG:32633")
    undefined = root / "undefined.gpkg"
    shutil.copy(footprints, undefined)
    with sqlite3.connect(undefined) as con:  # the layer's SRS: "Undefined Cartesian SRS"
        con.execute("UPDATE gpkg_geometry_columns SET srs_id = -1")
        con.execute("UPDATE gpkg_contents SET srs_id = -1")
    (root / "garbage.gpkg").write_bytes(b"not a geopackage" * 10)
    (root / "a_file").write_text("a regular file, not a folder")
    tiles = root / "tiles"
    assert run("tile", str(good), "-f", str(footprints), "-o", str(tiles), "--size", "64",
               "--keep-empty", "1").exit_code == 0
    bad_tiles = root / "bad_tiles"
    bad_tiles.mkdir()
    (bad_tiles / "dataset.json").write_text("{ not json")
    model = root / "model.pt"
    write_tiny_model(model)
    (root / "garbage.pt").write_bytes(b"not a model")
    assert run("predict", str(good), "-m", str(model), "-o", str(root / "pred" / "b.gpkg"),
               "--device", "cpu").exit_code == 0
    return {p.name: p for p in root.iterdir()} | {"root": root}


UNWRITABLE = "/proc/geotiler-test/out"  # /proc takes no new folders, not even from root

# (command line with {name} for corpus files and {tmp} for a fresh folder, exit code, the
# text the Error line must hold)
CASES = {
    "tile truncated raster": ("tile {truncated.tif} -f {buildings.gpkg} -o {tmp}/t", 1,
                              "truncated.tif"),
    "tile garbage raster": ("tile {garbage.tif} -f {buildings.gpkg} -o {tmp}/t", 1,
                            "garbage.tif"),
    "tile empty raster": ("tile {empty.tif} -f {buildings.gpkg} -o {tmp}/t", 1, "empty.tif"),
    "tile undefined SRS": ("tile {good.tif} -f {undefined.gpkg} -o {tmp}/t", 1,
                           "undefined.gpkg"),
    "tile garbage footprints": ("tile {good.tif} -f {garbage.gpkg} -o {tmp}/t", 1,
                                "garbage.gpkg"),
    "tile out under a file": ("tile {good.tif} -f {buildings.gpkg} -o {a_file}/sub", 1,
                              "a_file/sub"),
    "tile out unwritable": ("tile {good.tif} -f {buildings.gpkg} -o " + UNWRITABLE, 1,
                            UNWRITABLE),
    "train garbage dataset": ("train {bad_tiles} -o {tmp}/m.pt", 1, "bad_tiles"),
    "train missing dataset": ("train {tmp}/nothing -o {tmp}/m.pt", 1, "nothing"),
    "train out under a file": ("train {tiles} -o {a_file}/m.pt --epochs 1", 1, "a_file"),
    "predict truncated raster": ("predict {truncated.tif} -m {model.pt} -o {tmp}/b.gpkg "
                                 "--device cpu", 1, "truncated.tif"),
    "predict garbage raster": ("predict {garbage.tif} -m {model.pt} -o {tmp}/b.gpkg "
                               "--device cpu", 1, "garbage.tif"),
    "predict empty raster": ("predict {empty.tif} -m {model.pt} -o {tmp}/b.gpkg --device cpu",
                             1, "empty.tif"),
    "predict garbage model": ("predict {good.tif} -m {garbage.pt} -o {tmp}/b.gpkg "
                              "--device cpu", 1, "garbage.pt"),
    "predict out under a file": ("predict {good.tif} -m {model.pt} -o {a_file}/b.gpkg "
                                 "--device cpu", 1, "a_file"),
    "predict out unwritable": ("predict {good.tif} -m {model.pt} -o " + UNWRITABLE
                               + "/b.gpkg --device cpu", 1, "/proc/geotiler-test"),
    "evaluate garbage pred": ("evaluate {garbage.tif} {buildings.gpkg}", 1, "garbage.tif"),
    "evaluate undefined SRS truth": ("evaluate {pred}/b.gpkg {undefined.gpkg}", 1,
                                     "undefined.gpkg"),
    "evaluate garbage truth": ("evaluate {pred}/b.gpkg {garbage.gpkg}", 1, "garbage.gpkg"),
    "evaluate out under a file": ("evaluate {pred}/b_mask.tif {buildings.gpkg} "
                                  "-o {a_file}/m.json", 1, "a_file"),
    "evaluate probabilities as PRED": ("evaluate {pred}/b_prob.tif {buildings.gpkg}", 1,
                                       "b_mask.tif"),
    "evaluate a raster as TRUTH": ("evaluate {pred}/b.gpkg {good.tif}", 1, "is a raster"),
    "tile a raster as footprints": ("tile {good.tif} -f {good.tif} -o {tmp}/t", 1,
                                    "is a raster"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_command_ends_in_one_error_line(corpus, tmp_path, case):
    line, code, named = CASES[case]
    line = line.replace("{tmp}", str(tmp_path))
    for name, path in corpus.items():
        line = line.replace("{" + name + "}", str(path))
    args = line.split()
    result = run(*args)
    check(result, code, named)
    assert not (tmp_path / "t").exists() or not any((tmp_path / "t").rglob("*.partial*"))


def test_out_in_a_read_only_folder(corpus, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into a chmod 0o555 folder anyway; the unwritable /proc "
                    "case covers a folder the OS refuses")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = run("tile", str(corpus["good.tif"]), "-f", str(corpus["buildings.gpkg"]),
                     "-o", str(locked / "t"))
        check(result, 1, str(locked / "t"))
    finally:
        locked.chmod(0o755)


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["train", "predict"])
def test_device_cuda_without_cuda(corpus, tmp_path, command):
    if command == "train":
        args = ["train", str(corpus["tiles"]), "-o", str(tmp_path / "m.pt")]
    else:
        args = ["predict", str(corpus["good.tif"]), "-m", str(corpus["model.pt"]), "-o",
                str(tmp_path / "b.gpkg")]
    result = run(*args, "--device", "cuda")
    check(result, 2, "--device cuda")
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_zstd_frame_is_a_skipped_tile(corpus, tmp_path):
    """A member whose zstd frame header is damaged (its checksum matching: damaged before
    it was stored) is skipped and counted; training goes on."""
    tiles = damaged_zstd_dataset(tmp_path / "tiles")
    result = run("train", str(tiles), "-o", str(tmp_path / "m.pt"), "--epochs", "1",
                 "--device", "cpu", "--num-downs", "3", "--batch-size", "2")
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "1 corrupt tile(s) skipped" in result.output


def damaged_zstd_dataset(root: Path) -> Path:
    """A small dataset whose first training tile's image has its zstd frame magic zeroed
    (the record's checksum is of the damaged bytes: the damage predates the shard)."""
    from trainer_fixtures import make_tile_dataset

    from geotiler.tiles.shards import CHECKSUMS, ShardWriter

    make_tile_dataset(root, splits={"train": 8, "val": 2}, size=64)
    shard = root / "shards" / "train-000000.tar"
    with tarfile.open(shard) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    keys = sorted({name.split(".")[0] for name in members})
    with ShardWriter(shard) as writer:
        for i, key in enumerate(keys):
            record = json.loads(members[f"{key}.json"])
            record.pop(CHECKSUMS, None)
            image = members[f"{key}.image.tif"]
            if i == 0:
                magic = b"\x28\xb5\x2f\xfd"
                assert magic in image
                image = image.replace(magic, b"\0\0\0\0", 1)
            writer.add(key, {"image.tif": image, "mask.tif": members[f"{key}.mask.tif"]},
                       record)
    return root


def test_a_raster_named_with_cjk_characters(corpus, tmp_path):
    """29 CJK characters: 87 bytes of name, more than a ustar member name may hold with
    the key's suffixes; keys are capped in bytes, and GDAL opens every member."""
    name = "东京都千代田区丸の内一丁目航空写真正射画像建物抽出用テスト"[:29]
    raster = tmp_path / f"{name}.tif"
    shutil.copy(corpus["good.tif"], raster)
    out = tmp_path / "tiles"
    result = run("tile", str(raster), "-f", str(corpus["buildings.gpkg"]), "-o", str(out),
                 "--size", "128", "--keep-empty", "1")
    assert result.exit_code == 0, result.stderr
    shard = list_shards(out)[0]
    with tarfile.open(shard, encoding="utf-8") as tar:
        names = tar.getnames()
    assert names and all(len(n.encode()) <= 100 for n in names)
    assert names[0].startswith(name[:10])
    with rasterio.open(f"/vsitar/{shard}/{names[0]}") as src:
        assert src.count == 3


# --- a full disk: a file size limit (RLIMIT_FSIZE) works without mounting anything --------

def run_limited(limit: int, *args: str) -> subprocess.CompletedProcess:
    """``geotiler -q ARGS`` in a process that may write no file larger than ``limit`` bytes
    (a write past it fails with EFBIG, as one on a full disk fails with ENOSPC)."""

    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write, do not kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "geotiler", "-q", *args], cwd=REPO, env=env,
                          preexec_fn=limit_files, capture_output=True, text=True, timeout=300)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_disk_full_while_tiling(corpus, tmp_path):
    out = tmp_path / "t"
    proc = run_limited(50_000, "tile", str(corpus["big.tif"]), "-f",
                       str(corpus["buildings.gpkg"]), "-o", str(out), "--size", "128",
                       "--keep-empty", "1")
    line = assert_error(proc.stdout, proc.stderr, 1, proc.returncode, str(out / "shards"))
    assert "File too large" in line
    assert not list(out.rglob("*.partial*"))
    if list(out.glob("shards/*.tar")):  # finished shards stay, whole, for a rerun to reuse
        json.loads((out / "config.json").read_text())
    else:  # a first run that finished no shard leaves nothing behind
        assert not out.exists()


def test_disk_full_while_predict_overwrites(corpus, tmp_path):
    shutil.copytree(corpus["pred"], tmp_path / "pred")
    before = digests(tmp_path / "pred")
    proc = run_limited(60_000, "predict", str(corpus["big.tif"]), "-m",
                       str(corpus["model.pt"]), "-o", str(tmp_path / "pred" / "b.gpkg"),
                       "--device", "cpu", "--overwrite")
    line = assert_error(proc.stdout, proc.stderr, 1, proc.returncode, str(tmp_path / "pred"))
    assert "ulimit -f" in line  # not GDAL's "TIFFAppendToStrip:Write error at scanline"
    assert digests(tmp_path / "pred") == before  # earlier outputs intact, nothing left over
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == sorted(before)


def test_disk_full_while_evaluate_writes_json(corpus, tmp_path):
    out = tmp_path / "m.json"
    proc = run_limited(300, "evaluate", str(corpus["pred"] / "b_mask.tif"),
                       str(corpus["buildings.gpkg"]), "-o", str(out))
    assert_error(proc.stdout, proc.stderr, 1, proc.returncode, str(out))
    assert list(tmp_path.iterdir()) == []  # no .partial file


# --- Ctrl-C on a local cluster -------------------------------------------------------------

def test_ctrl_c_on_a_local_cluster_prints_no_worker_traceback(corpus, tmp_path):
    """SIGINT to the whole process group, as a terminal's Ctrl-C sends it: the workers
    ignore it, the client cleans up, one ``Interrupted:`` line, exit 130."""
    out = tmp_path / "t"
    proc = subprocess.Popen(
        [sys.executable, "-m", "geotiler", "-q", "tile", str(corpus["big.tif"]), "-f",
         str(corpus["buildings.gpkg"]), "-o", str(out), "--size", "16", "--scheduler",
         "local", "--workers", "2", "--no-progress"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    deadline = time.monotonic() + 60
    # interrupt while shards are being written (a .partial file exists), however fast or
    # loaded the machine is
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "shards").is_dir() and any((out / "shards").glob("*.partial*")):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the job ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stdout + stderr, stderr
    assert stderr.strip().splitlines()[-1].startswith("Interrupted:")
    assert not list(out.rglob("*.partial*"))


# --- Ctrl-C and SIGTERM in predict -----------------------------------------------------------

@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "Interrupted:"),
                                             (signal.SIGTERM, 143, "Terminated:")])
def test_predict_stops_at_once_when_interrupted_or_terminated(tmp_path, model_file, sig, code,
                                                               word):
    """``kill`` (SIGTERM: docker stop, Slurm, systemd) takes Ctrl-C's path, and neither waits
    for the block being inferred: one 2048 px block holds 247,009 windows here (the code
    that waited for it stopped 51 s after Ctrl-C), and the command must end within
    seconds (0.5 s here), its block files removed."""
    rng = np.random.default_rng(0)
    raster = write_raster(tmp_path / "a.tif", rng.integers(0, 255, (3, 2048, 2048), np.uint8))
    out = tmp_path / "out" / "b.gpkg"
    exit_code, stderr, waited = interrupt_geotiler(
        ["-q", "predict", str(raster), "-m", str(model_file), "-o", str(out), "--overlap",
         "60", "--block", "2048", "--no-progress"],
        ready=lambda: out.parent.is_dir() and any(out.parent.glob(".b.blocks-*")),
        sig=sig, settle=1.0)  # well inside the block's windows
    assert exit_code == code, stderr
    assert stderr.strip().splitlines()[-1].startswith(word), stderr
    assert "Traceback" not in stderr
    assert waited < 15, f"took {waited:.0f} s to stop"
    assert not out.parent.exists()  # the folder it made, its block files and outputs


# --- a full disk, reported in GDAL's or torch's own words ----------------------------------

@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs filled up (needs root and mount(8); skipped elsewhere)."""
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with open(mount / "filler", "wb") as handle, contextlib.suppress(OSError):
            handle.write(b"\0" * 2**21)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_short_write_on_a_full_disk_is_named_as_such(full_disk, tmp_path):
    from rasterio.errors import RasterioIOError

    from geotiler.errors import OutputError

    gdal = RasterioIOError("TIFFAppendToStrip:Write error at scanline 325")
    assert str(OutputError.writing(full_disk / "b_mask.tif", gdal)) == (
        f"cannot write {full_disk / 'b_mask.tif'}: No space left on device (free some space "
        "or choose another --out)")
    # with room left again (the partial files removed), or a file size limit: a short write
    assert str(OutputError.writing(tmp_path / "b.tif", gdal)) == (
        f"cannot write {tmp_path / 'b.tif'}: the write came up short: the disk is full or a "
        "file size limit (ulimit -f) is reached")
    # any other failure keeps its own words
    assert str(OutputError.writing(tmp_path / "b.tif", RuntimeError("odd"))).endswith(": odd")
    import torch

    from trainer.modelfile import save_atomic

    with pytest.raises(OutputError, match="No space left on device"):
        save_atomic({"w": torch.zeros(2**18)}, full_disk / "m.pt")
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]  # no partial file


def test_a_replacement_that_fails_before_its_checkpoint_leaves_no_staged_model(tmp_path):
    """``train --overwrite`` on a disk that takes the model (33 kB) but not the checkpoint
    (108 kB): the old model and checkpoint stay, and no staged model is left for a
    resumed older run to move onto --out (it once installed the failed run's weights)."""
    from trainer_fixtures import make_tile_dataset

    tiles = make_tile_dataset(tmp_path / "t", splits={"train": 12, "val": 4}, shard_size=5,
                              size=32)
    tiny = ["--ngf", "4", "--ndf", "4", "--num-downs", "3", "--device", "cpu",
            "--batch-size", "4", "--max-steps", "1", "--max-minutes", "0"]
    model, ckpt = tmp_path / "m.pt", tmp_path / "m.checkpoints"
    first = CliRunner().invoke(main, ["-q", "train", str(tiles), "-o", str(model),
                                      "--epochs", "1", *tiny])
    assert first.exit_code == 0, first.output
    before = digests(ckpt) | {"m.pt": hashlib.sha256(model.read_bytes()).hexdigest()}
    proc = run_limited(60_000, "train", str(tiles), "-o", str(model), "--overwrite",
                       "--epochs", "2", "--seed", "5", *tiny)
    assert_error(proc.stdout, proc.stderr, 1, proc.returncode, "last.pt", "came up short")
    assert not (ckpt / "best.pt").exists()
    after = digests(ckpt) | {"m.pt": hashlib.sha256(model.read_bytes()).hexdigest()}
    # the older run's files, its config and metrics included, all as they were
    kept = ("m.pt", "last.pt", "train_config.json", "metrics.csv")
    assert {k: after[k] for k in kept} == {k: before[k] for k in kept}


def test_the_model_file_is_never_ahead_of_its_checkpoint(tmp_path):
    """The best model was written before the checkpoint: a checkpoint that then failed (a
    full disk) left --out holding an epoch last.pt did not know, and a resumed run could
    replace it with a worse one. Now the checkpoint goes first; a run whose first
    checkpoint fails writes no model (and leaves no empty checkpoint folder), and resuming a
    checkpoint of the best epoch writes that epoch's model file if it went missing."""
    import torch
    from trainer_fixtures import make_tile_dataset

    from trainer.modelfile import read_model_file

    tiles = make_tile_dataset(tmp_path / "t", splits={"train": 12, "val": 4}, shard_size=5,
                              size=32)
    tiny = ["--ngf", "4", "--ndf", "4", "--num-downs", "3", "--device", "cpu",
            "--batch-size", "4", "--max-steps", "1"]
    model, ckpt = tmp_path / "m.pt", tmp_path / "m.checkpoints"
    proc = run_limited(60_000, "train", str(tiles), "-o", str(model), "--epochs", "2", *tiny)
    assert_error(proc.stdout, proc.stderr, 1, proc.returncode, "last.pt", "came up short")
    assert not model.exists() and not ckpt.exists()

    done = CliRunner().invoke(main, ["-q", "train", str(tiles), "-o", str(model), "--epochs",
                                     "1", *tiny])
    assert done.exit_code == 0, done.output
    model.unlink()  # as if the model's save had failed right after the checkpoint's
    again = CliRunner().invoke(main, ["-q", "train", str(tiles), "-o", str(model), "--epochs",
                                      "1", "--resume", str(ckpt / "last.pt"), *tiny])
    assert again.exit_code == 0, again.output
    weights = torch.load(ckpt / "last.pt", weights_only=True)["G"]
    spec, restored = read_model_file(model)
    assert spec.training["best_epoch"] == 1
    assert restored.keys() == weights.keys()
    assert all(torch.equal(v.float(), weights[k].float()) for k, v in restored.items())

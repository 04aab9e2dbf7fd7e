"""One progress convention: a bar on a terminal, plain log lines otherwise, nothing when off."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import dask
import pytest

from geotiler.progress import ProgressMeter, progress_mode
from pipelines.progress import DaskProgress

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def lines():
    """The messages logged to ``geotiler.progress`` (the CLI stops them propagating to the
    root logger once a command has run, so caplog's root handler would not see them)."""
    logged: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record.getMessage())

    logger = logging.getLogger("geotiler.progress")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logged
    logger.removeHandler(handler)
    logger.setLevel(level)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_mode_follows_the_stream_and_the_switch():
    assert progress_mode(True, Terminal()) == "bar"
    assert progress_mode(True, io.StringIO()) == "log"
    assert progress_mode(False, Terminal()) == "off"


def test_log_mode_writes_a_line_per_tenth_and_a_summary(lines):
    with ProgressMeter(200, "tiling", "shard", mode="log", min_interval_s=0) as meter:
        for _ in range(200):
            meter.update(1)
    assert len(lines) == 10, lines  # 10 %, 20 %, ... 90 %, then the summary
    assert lines[0].startswith("tiling: 20/200 shards (10%)") and "ETA" in lines[0]
    assert lines[-1].startswith("tiling: 200 shards done in")
    assert not any("\r" in line for line in lines)


def test_log_mode_is_quiet_between_intervals_and_off_is_silent(lines):
    with ProgressMeter(100, "epoch 1/3", "step", mode="log", summary=False) as meter:
        for _ in range(100):  # far quicker than LOG_MIN_INTERVAL_S: no line at all
            meter.update(1)
    with ProgressMeter(100, "predicting", "task", mode="off") as meter:
        meter.update(100)
    assert lines == []


def test_bar_mode_draws_on_the_terminal():
    stream = Terminal()
    with ProgressMeter(10, "tiling", "shard", mode="bar", stream=stream,
                       bar_delay_s=0) as meter:
        for _ in range(10):
            meter.update(1)
    assert "tiling" in stream.getvalue() and "\r" in stream.getvalue()


def test_dask_callback_counts_the_named_tasks(lines):

    def work(i: int) -> int:
        return i * 2

    tasks = [dask.delayed(work)(i, dask_key_name=f"shard-{i:06d}") for i in range(5)]
    total = dask.delayed(sum)(tasks, dask_key_name="total")
    callback = DaskProgress("tiling", "shard", "log", prefixes=("shard",))
    with callback:
        assert dask.compute(total, scheduler="sync")[0] == 20
    assert callback.progress.total == 5 and callback.progress.n == 5
    assert lines[-1].startswith("tiling: 5 shards done in")


def test_a_tile_run_logging_to_a_file_writes_no_carriage_returns(scene, tmp_path):
    raster, footprints, _ = scene(width=600, height=400)

    def tile(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "geotiler", *extra[:1], "tile", str(raster), "-f",
             str(footprints), "-o", str(tmp_path / f"t{len(extra)}"), "--size", "64",
             *extra[1:]], cwd=REPO, capture_output=True, text=True, timeout=300)

    logged = tile("-v")  # stderr is a pipe here, as in a log file
    assert logged.returncode == 0, logged.stderr
    assert "\r" not in logged.stderr
    assert "INFO: tiling: " in logged.stderr and " shards done in " in logged.stderr
    silent = tile("-v", "--no-progress")
    assert silent.returncode == 0 and "shards done" not in silent.stderr
    quiet = tile("-q")
    assert quiet.returncode == 0 and quiet.stderr == ""

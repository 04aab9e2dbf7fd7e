"""Tiling without start-up cost: small jobs skip what they do not need, and cutting a shard's
strips on several threads writes the very same shard."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from geotiler.tiles.config import TileConfig
from geotiler.tiles.plan import plan_tiling
from geotiler.tiles.task import write_shard

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("overlap", [0, 37])
def test_strips_on_threads_write_the_same_shard(scene, tmp_path: Path, overlap: int) -> None:
    raster, vector, _ = scene(width=1100, height=700)
    config = TileConfig(size=128, overlap=overlap, keep_empty=1.0, shard_size=64)
    plan = plan_tiling([raster], vector, tmp_path / "out", config)
    spec, geoms = plan.shards[0], plan.shard_geoms[0]
    assert len(spec.positions) > 16  # several strips
    one = write_shard(spec, geoms, config)
    first = spec.path.read_bytes(), spec.path.with_name(spec.path.stem + ".records.json")
    records_one = first[1].read_text()
    many = write_shard(spec, geoms, config, threads=3)
    assert spec.path.read_bytes() == first[0]
    assert first[1].read_text() == records_one
    assert [r["key"] for r in many.records] == [r["key"] for r in one.records]
    assert many.band_sum.tolist() == one.band_sum.tolist()
    assert many.band_sqsum.tolist() == one.band_sqsum.tolist()


def test_small_job_imports_no_cluster_code(scene, tmp_path: Path) -> None:
    """The threaded scheduler runs without importing dask.distributed (~0.4 s)."""
    raster, vector, _ = scene()
    out = tmp_path / "tiles"
    code = (
        "import sys\n"
        "from geotiler.cli import main\n"
        f"main(['-q', 'tile', {str(raster)!r}, '-f', {str(vector)!r}, '-o', {str(out)!r},"
        " '--size', '128', '--no-progress'], standalone_mode=False)\n"
        "print('distributed' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"
    assert sum(json.loads((out / "dataset.json").read_text())["counts"].values()) > 0

"""`geotiler tile --scheduler ADDRESS` on a real dask.distributed cluster on loopback."""

from __future__ import annotations

import hashlib

import pytest
from click.testing import CliRunner

from geotiler.cli import main
from geotiler.tiles.shards import list_shards

distributed = pytest.importorskip("distributed")


def digests(out):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in list_shards(out)}


@pytest.mark.slow
def test_distributed_scheduler_gives_the_same_tiles_as_threads(scene, tmp_path):
    raster, vector, _ = scene(width=800, height=600)
    args = ["-q", "tile", str(raster), "-f", str(vector), "--size", "64", "--shard-size", "12"]
    local = tmp_path / "local"
    assert CliRunner().invoke(main, [*args, "-o", str(local)]).exit_code == 0
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        remote = tmp_path / "remote"
        result = CliRunner().invoke(main, [*args, "-o", str(remote), "--scheduler",
                                           cluster.scheduler_address])
        assert result.exit_code == 0, result.stderr
        with distributed.Client(cluster) as client:
            # both workers took part
            assert len(client.scheduler_info()["workers"]) == 2
    assert len(digests(local)) > 4
    assert digests(remote) == digests(local)
    assert (remote / "index.gpkg").read_bytes()[:16] == b"SQLite format 3\x00"


@pytest.mark.slow
def test_scheduler_local_starts_its_own_cluster_with_the_same_tiles(scene, tmp_path):
    """`--scheduler local`: a throw-away LocalCluster of worker processes."""
    raster, vector, _ = scene(width=400, height=300)
    args = ["tile", str(raster), "-f", str(vector), "--size", "64", "--shard-size", "12"]
    threads = tmp_path / "threads"
    assert CliRunner().invoke(main, ["-q", *args, "-o", str(threads)]).exit_code == 0
    local = tmp_path / "local"
    result = CliRunner().invoke(main, [*args, "-o", str(local), "--scheduler", "local",
                                       "--workers", "2", "--no-progress"])
    assert result.exit_code == 0, result.stderr
    assert "started a local Dask cluster with 2 workers" in result.stderr
    assert digests(local) == digests(threads)
    # bad input still fails with one line when a cluster was asked for
    bad = CliRunner().invoke(main, [*args[:3], str(tmp_path / "missing.gpkg"), "-o",
                                    str(tmp_path / "bad"), "--scheduler", "local"])
    assert bad.exit_code != 0 and "Traceback" not in bad.stderr


def test_unreachable_scheduler_is_a_usage_error(scene, tmp_path):
    raster, vector, _ = scene()
    result = CliRunner().invoke(main, ["tile", str(raster), "-f", str(vector), "-o",
                                       str(tmp_path / "o"), "--scheduler", "tcp://127.0.0.1:9"])
    assert result.exit_code == 2
    assert "cannot reach the Dask scheduler" in result.stderr
    assert "Traceback" not in result.stderr

"""The Dask graph of ``geotiler tile``: one task per shard, one ``compute`` at the end.

The library decides everything (:func:`geotiler.tiles.plan.plan_tiling`); this module only maps
:func:`geotiler.tiles.task.write_shard` over the shards. The footprint subset of each shard is
passed with its task (a few hundred polygons), never the whole layer. Shards finished by an
earlier identical run are read back instead of recomputed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import dask
import dask.threaded
import numpy as np
import rasterio
import rasterio.errors
import shapely

from geotiler.io import open_raster, raster_source
from geotiler.progress import progress_mode
from geotiler.tiles.config import TileConfig, TileReport
from geotiler.tiles.outdir import Digests, commit_replacement, discard_unfinished
from geotiler.tiles.plan import (
    TilingPlan,
    finish_dataset,
    plan_tiling,
    prepare_output,
    record_digests,
    source_digests,
)
from geotiler.tiles.shards import PARTIAL_SUFFIX, SHARD_DIR, read_shard_summary, shard_is_complete
from geotiler.tiles.task import ShardResult, ShardSpec, shard_result, write_shard
from pipelines.cluster import PendingClient
from pipelines.progress import DaskProgress, wait_with_progress

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)


def run_tiling(
    rasters: Sequence[Path | str],
    footprints: Path | str,
    out_dir: Path | str,
    config: TileConfig,
    *,
    client: Client | PendingClient | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    require_footprints: bool = False,
    progress: bool = True,
    footprints_layer: str | None = None,
    footprints_where: str | None = None,
) -> TileReport:
    """Tile ``rasters`` with ``footprints`` into the dataset directory ``out_dir``.

    Without ``client`` the shards run on Dask's threaded scheduler (GDAL, OpenCV and zlib
    release the GIL; on 2 cores threads measured faster than a process cluster), with
    ``workers`` threads (default: one per core); with fewer than two shards per thread, the
    shards run one at a time, each cutting its strips on every thread. With a
    ``distributed.Client`` they run on its cluster, which must see the same file paths.
    A :class:`~pipelines.cluster.PendingClient` is waited for once the job is planned (so a
    cluster can start meanwhile) and before ``out_dir`` is touched. Whatever fails, no partial
    file is left behind. ``progress``: a bar on a terminal, a few log lines otherwise
    (:mod:`geotiler.progress`).

    Raises:
        InputError, ConfigError, OutputError: see :func:`~geotiler.tiles.plan.plan_tiling`,
            :func:`~geotiler.tiles.plan.prepare_output` and
            :func:`~geotiler.tiles.plan.finish_dataset` (a run that kept no tile).
    """
    started = time.perf_counter()
    plan = plan_tiling(rasters, footprints, out_dir, config, require_footprints=require_footprints,
                       footprints_layer=footprints_layer, footprints_where=footprints_where)
    # Everything is checked before anything is created: a scheduler that cannot be reached
    # fails here, not after --out and its config.json exist.
    if isinstance(client, PendingClient):
        client = client.get()
    known: Digests = {}

    def digests_now() -> Digests:
        known.update(source_digests(plan))
        return known

    target = prepare_output(out_dir, plan, overwrite=overwrite, digests=digests_now)
    write_dir = target.write_dir
    if target.replacing:  # the old dataset stays until the new one is finished
        plan.write_to(write_dir)
    # hashing large sources takes seconds: do it while the tiles are being cut; once done,
    # config.json records the digests, so an interrupted run can be resumed from then on
    hasher = ThreadPoolExecutor(max_workers=1)
    digests = hasher.submit(_hash_and_record, write_dir, plan, dict(known))
    results: list[ShardResult | None] = [None] * len(plan.shards)
    todo = []
    for index, spec in enumerate(plan.shards):
        if target.resume and shard_is_complete(spec.path):
            summary = read_shard_summary(spec.path)
            results[index] = shard_result(summary["records"], summary)
            plan.report.shards_reused += 1
            continue
        todo.append(index)
    cores = workers or os.cpu_count() or 1
    # Few shards (a small raster: 3 shards for 256 tiles): one task per shard would leave
    # cores idle while the biggest shard runs, so the shards run one after another, each
    # cutting its strips on every core; many shards run one per core.
    threads = cores if client is None and len(todo) < 2 * cores else 1
    tasks = [
        dask.delayed(write_shard_wkb, pure=False)(
            plan.shards[i], shapely.to_wkb(plan.shard_geoms[i]), config, threads,
            dask_key_name=f"shard-{plan.shards[i].path.stem}")
        for i in todo
    ]
    if plan.report.shards_reused:
        log.info("reusing %d finished shard(s) of an earlier run", plan.report.shards_reused)
    log.info("tiling %d raster(s) into %d shard(s) in %s", len(plan.rasters), len(tasks), out_dir)
    try:
        computed = _compute(tasks, client, 1 if threads > 1 else workers, progress)
    except BaseException:
        _remove_partials(write_dir)
        digests.cancel()
        hasher.shutdown(wait=True)
        discard_unfinished(target)
        raise
    for index, result in zip(todo, computed, strict=True):
        results[index] = result
    plan.report.shards_written = len(tasks)
    hasher.shutdown(wait=True)
    try:
        finish_dataset(write_dir, plan, [r for r in results if r is not None],
                       digests=digests.result())
    except BaseException:
        discard_unfinished(target)
        raise
    if target.replacing:
        commit_replacement(target)
    plan.report.seconds = time.perf_counter() - started
    return plan.report


def _hash_and_record(out_dir: Path, plan: TilingPlan, known: Digests
                     ) -> Digests:
    """The inputs' SHA-256 (``known`` if already computed), recorded in ``config.json``."""
    digests = known or source_digests(plan)
    if not known:
        record_digests(out_dir, plan, digests)
    return digests


def _compute(
    tasks: list, client: Client | None, workers: int | None, progress: bool
) -> list[ShardResult]:
    if not tasks:
        return []
    mode = progress_mode(progress)
    if client is not None:
        futures = client.compute(tasks)
        wait_with_progress(futures, "tiling", "shard", mode)
        return list(client.gather(futures))
    # the scheduler as a function: named ("threads"), Dask imports distributed to look for
    # a client (0.3-0.5 s of a small job's start-up)
    with DaskProgress("tiling", "shard", mode, prefixes=("shard",)):
        return list(dask.compute(*tasks, scheduler=dask.threaded.get, num_workers=workers))


def _remove_partials(out_dir: Path) -> None:
    """After an interruption: shards still being written are removed, finished ones stay."""
    for stale in (out_dir / SHARD_DIR).glob(f"*{PARTIAL_SUFFIX}*"):
        stale.unlink(missing_ok=True)


# Measured on 2 cores (benchmarks/bench_tile.py): a LocalCluster of 2 processes tiles a
# 16384² scene 1.3x faster than threads, but takes ~1-2 s to start; below ~1000 tiles threads
# win.
LARGE_JOB_TILES = 1000


def is_large_job(rasters: Sequence[Path | str], config: TileConfig) -> bool:
    """Whether a tiling job is big enough to pay for starting worker processes.

    Estimated from the rasters' headers (their pixel counts) before any planning, so that a
    cluster can start while the job is planned. Raises InputError for a remote raster
    that cannot be opened (:func:`geotiler.io.open_raster`).
    """
    pixels = 0
    for path in rasters:
        source = raster_source(path)
        if isinstance(source, str):  # remote: GDAL caches a failure, so report it now
            with open_raster(source) as src:
                pixels += src.width * src.height
            continue
        try:
            with rasterio.open(source) as src:
                pixels += src.width * src.height
        except (rasterio.errors.RasterioIOError, OSError):
            return False  # let planning report the bad input
    scale = config.scale or 1.0
    tiles = pixels / (config.stride * scale) ** 2
    return tiles >= LARGE_JOB_TILES


def write_shard_wkb(spec: ShardSpec, wkb: np.ndarray, config: TileConfig, threads: int = 1
                    ) -> ShardResult:
    """:func:`write_shard` with the footprints given as WKB, for tasks sent to workers.

    Pickling shapely geometries goes one at a time through Python (0.5 s for a 16384² scene's
    50,000 footprints, serial in the client before any task starts, plus 0.25 s to unpickle
    them in the workers); ``to_wkb``/``from_wkb`` do the whole array in C in a tenth of that.
    """
    return write_shard(spec, shapely.from_wkb(wkb), config, threads=threads)

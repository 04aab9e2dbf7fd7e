"""The Dask graph of ``geotiler predict``.

Per block of the plan (:mod:`geotiler.predict.blocks` does all the work):

* ``infer``: read the block, run its windows, return its core (uint8 where already final,
  float sums only along its top and left edges) and its spills to the right, below and
  below-right (each a separate Dask output, so a neighbour receives only the strip it
  needs and a block waiting for its neighbours holds ~1/6 of its float sums);
* ``finalize``: its core plus the spills of its left, upper and upper-left neighbours,
  written as a block file;
* ``polygonize``: once the blocks within the halo are written, the buildings it owns.

One ``compute`` at the end; the driver then writes the GeoTIFFs and the GeoPackage
(:func:`geotiler.predict.outputs.finish`).

The model (:mod:`trainer.inference`) is loaded **once per run** by :func:`run_predict` and
never travels with a task. With the threaded scheduler every thread shares that one model,
which the ``infer`` tasks reach by closure; its forward passes run one at a time on a
thread of its own (torch already uses every core), and the scheduler's threads, which
read, blend, write and polygonize meanwhile, run at a lower CPU priority so that they fill
the cores the forward pass leaves idle instead of slowing it down. On a ``distributed``
cluster each worker loads the model once, through a worker plugin
(:class:`PredictorPlugin`) that carries only the model's path and is removed when the run
ends; the tasks carry only the plugin's name. The cluster must see the same paths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
from distributed.diagnostics.plugin import WorkerPlugin

from geotiler.device import resolve_device
from geotiler.predict.blocks import (
    BlockOutput,
    BlockStats,
    finalize_block,
    infer_block,
    polygonize_job_block,
    settle,
)
from geotiler.predict.config import ModelInfo, PredictConfig, Predictor
from geotiler.predict.job import PredictJob, prepare
from geotiler.predict.outputs import PredictReport, abort, finish
from geotiler.progress import progress_mode
from pipelines.progress import DaskProgress, wait_with_progress

if TYPE_CHECKING:
    from distributed import Client, Worker

log = logging.getLogger(__name__)

Infer = Callable[[PredictJob, tuple[int, int]], BlockOutput]
"""An ``infer`` task: a block of a job -> :func:`infer_block`'s output, with some predictor."""


class PredictorPlugin(WorkerPlugin):
    """Makes one predictor per ``distributed`` worker (as it registers or as a worker joins)
    and drops it when unregistered; ``make`` is pickled to the workers, so it should carry a
    model's path (:class:`trainer.inference.ModelLoader`), not its weights."""

    def __init__(self, make: Callable[[], Predictor], name: str) -> None:
        self.make = make
        self.name = name
        self.predictor: Predictor | None = None

    def setup(self, worker: Worker) -> None:
        self.predictor = self.make()

    def teardown(self, worker: Worker) -> None:
        close = getattr(self.predictor, "close", None)
        if callable(close):
            close()
        self.predictor = None


def _infer_on_worker(job: PredictJob, index: tuple[int, int], plugin: str) -> BlockOutput:
    """:func:`infer_block` with the predictor this worker's plugin made."""
    from distributed import get_worker

    predictor = get_worker().plugins[plugin].predictor  # type: ignore[attr-defined]
    if predictor is None:  # pragma: no cover - the plugin's setup runs before any task
        raise RuntimeError(f"worker plugin {plugin} holds no predictor")
    return infer_block(job, index, predictor)


def _polygonize(job: PredictJob, index: tuple[int, int], after: list[BlockStats]) -> int:
    del after  # only orders this task after the blocks it reads
    return polygonize_job_block(job, index)


def build_graph(job: PredictJob, run_infer: Infer) -> tuple[Any, list[Any]]:
    """The delayed settled (job, block stats) of a prepared job (:func:`settle`), and its
    delayed block polygons; ``run_infer`` runs one block's windows."""
    job_d = dask.delayed(job, pure=True)
    # Named, so Dask never tokenizes (pickles) the predictor the function may hold.
    infer_d = dask.delayed(run_infer, name="infer", pure=True, nout=len(BlockOutput._fields))
    infer: dict[tuple[int, int], Any] = {}
    for i, j in job.plan.indexes:
        infer[i, j] = infer_d(job_d, (i, j), dask_key_name=f"infer-{i}-{j}")
    stats: dict[tuple[int, int], Any] = {}
    for i, j in job.plan.indexes:
        own = infer[i, j]
        left = infer[i, j - 1][3] if j > 0 else None  # BlockOutput.right
        up = infer[i - 1, j][4] if i > 0 else None  # .bottom
        upleft = infer[i - 1, j - 1][5] if i > 0 and j > 0 else None  # .corner
        stats[i, j] = dask.delayed(finalize_block, pure=True)(
            job_d, (i, j), own[0], own[1], own[2], own[6], own[7], left, up, upleft,
            dask_key_name=f"finalize-{i}-{j}")
    reach = job.polygon_reach
    settled = dask.delayed(settle, pure=True, nout=2)(job_d, list(stats.values()),
                                                      dask_key_name="settle")
    # --otsu: the settled job carries the threshold, so masks and polygons wait for the
    # whole inference (its outputs are on disk by then); otherwise a block polygonizes as
    # soon as its neighbours are finalized.
    poly_job = settled[0] if job.config.otsu else job_d
    polygons = [
        dask.delayed(_polygonize, pure=True)(
            poly_job, (i, j), [stats[n] for n in job.plan.neighbours(i, j, reach)],
            dask_key_name=f"polygonize-{i}-{j}")
        for i, j in job.plan.indexes
    ]
    return settled, polygons


def run_predict(raster: Path | str, model_path: Path | str, out: Path | str,
                config: PredictConfig | None = None, *, raster_out: Path | str | None = None,
                client: Client | None = None, workers: int | None = None,
                progress: bool = False) -> PredictReport:
    """Predict buildings on ``raster`` with the model file ``model_path``.

    Without ``client``: Dask's threaded scheduler with ``workers`` threads, sharing the
    model loaded here. With a ``distributed.Client``: its cluster, each worker loading the
    model once.

    Raises:
        ConfigError, InputError, ModelFileError, OutputError: see
            :func:`geotiler.predict.job.prepare` and :func:`trainer.inference.load_predictor`
            (``--precision bf16`` on a device without native bfloat16 is a ConfigError).
    """
    from trainer.inference import ModelLoader, load_predictor

    config = config or PredictConfig()
    started = time.perf_counter()
    device = resolve_device(config.device)
    path = str(Path(model_path).resolve())
    # Checks the file (and the precision) before any work.
    with load_predictor(path, device, config.precision, config.tta) as predictor:
        log.info("precision: %s (--precision %s) on %s%s", predictor.precision,
                 config.precision, device,
                 "" if config.tta == "none" else f", test-time augmentation: {config.tta}")
        model = ModelInfo.from_spec(predictor.spec, name=Path(model_path).name)
        job = prepare(raster, model, out, config, raster_out)
        # Workers resolve --precision for their own device (the same, on one machine).
        report = run_job(job, predictor,
                         worker_predictor=ModelLoader(path, device, config.precision,
                                                      config.tta),
                         client=client, workers=workers, progress=progress, started=started)
    return dataclasses.replace(report, precision=predictor.precision)


def run_job(job: PredictJob, predictor: Predictor, *, client: Client | None = None,
            worker_predictor: Callable[[], Predictor] | None = None,
            workers: int | None = None, progress: bool = False,
            started: float | None = None) -> PredictReport:
    """Compute a prepared job's graph and write its outputs; temporaries go on failure.

    ``predictor`` runs the windows with the threaded scheduler. With ``client``, each
    worker makes its own once with ``worker_predictor`` (picklable; default: a copy of
    ``predictor``, sent once per worker).
    """
    started = time.perf_counter() if started is None else started
    try:
        with _infer_task(predictor, client, worker_predictor) as (run_infer, stop):
            settled, polygons = build_graph(job, run_infer)
            t0 = time.perf_counter()
            settled_job, stats, reach = _compute(settled, polygons, client, workers, progress,
                                                 stop)
        timings = {"compute": time.perf_counter() - t0}
        if reach:
            log.warning("%d building(s) reach past their block's --halo (%d px): each was "
                        "seen only in part, so it may come back cut or overlapping a "
                        "neighbour's piece of it; rerun with a larger --halo", reach,
                        job.config.halo)
        _trim_heap()
        return finish(settled_job, stats, started, timings)
    except BaseException:
        abort(job)
        raise


class _Stoppable:
    """A predictor that refuses new batches once ``stop`` is set: after Ctrl-C the blocks
    being inferred end at their next batch instead of running all their windows (a block
    of 2048 px at ``--overlap 127`` holds thousands) while the command waits for them."""

    def __init__(self, predictor: Predictor, stop: threading.Event) -> None:
        self.predictor, self.stop = predictor, stop

    def __call__(self, image: Any, valid: Any) -> Any:
        if self.stop.is_set():
            raise KeyboardInterrupt
        return self.predictor(image, valid)


@contextlib.contextmanager
def _infer_task(predictor: Predictor, client: Client | None,
                worker_predictor: Callable[[], Predictor] | None
                ) -> Iterator[tuple[Infer, threading.Event]]:
    """The ``infer`` task function and the event that stops it: with the threaded
    scheduler, :func:`infer_block` with ``predictor`` bound (a closure, never copied); on a
    cluster, one that finds the worker's predictor through a :class:`PredictorPlugin`
    registered for as long as this lasts (Dask cancels a cluster's tasks itself)."""
    stop = threading.Event()
    if client is None:
        yield functools.partial(infer_block, predictor=_Stoppable(predictor, stop)), stop
        return
    make = worker_predictor or functools.partial(_same, predictor)
    plugin = PredictorPlugin(make, f"geotiler-predictor-{uuid.uuid4().hex}")
    client.register_plugin(plugin)
    try:
        yield functools.partial(_infer_on_worker, plugin=plugin.name), stop
    finally:
        try:
            client.unregister_worker_plugin(plugin.name)
        except Exception as err:  # a lost cluster must not hide the run's own error
            log.warning("could not remove worker plugin %s: %s", plugin.name, err)


def _same(predictor: Predictor) -> Predictor:
    return predictor


def _trim_heap() -> None:
    """Give the worker threads' freed block buffers back to the OS before the GeoTIFFs are
    written (glibc keeps them per thread otherwise: measured 1.3 GB -> see the benchmark)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _compute(settled: Any, polygons: list[Any], client: Client | None,
             workers: int | None, progress: bool, stop: threading.Event
             ) -> tuple[PredictJob, list[BlockStats], int]:
    """Run the graph: the settled job, block stats, and how many buildings reach past their
    block's halo (the polygon tasks return only that count; their polygons are on disk).
    ``progress``: a bar on a terminal, a few log lines otherwise (:mod:`geotiler.progress`),
    counting blocks inferred and polygonized."""
    mode = progress_mode(progress)
    if client is not None:
        futures = client.compute([settled, *polygons])
        wait_with_progress(futures, "predicting", "task", mode)
        gathered = client.gather(futures)
        job, stats = gathered[0]
        return job, list(stats), sum(gathered[1:])
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(
            workers or default_threads(), initializer=_background_priority,
            thread_name_prefix="geotiler-predict"))
        stack.enter_context(DaskProgress("predicting", "task", mode,
                                         prefixes=("infer", "polygonize")))
        try:
            result = dask.compute(settled, polygons, scheduler="threads", pool=pool)
        except BaseException:
            stop.set()  # before the pool's exit waits for the running tasks
            raise
    job, stats = result[0]
    return job, list(stats), sum(result[1])


def default_threads() -> int:
    """Threads of the threaded scheduler: one per core, plus one. The forward pass runs on a
    thread of its own; with only one per core, two polygonizing blocks held every thread
    while the forward pass waited for its next windows (8192² benchmark: 1.31 -> 1.24 x
    the bare forward time)."""
    return (os.cpu_count() or 1) + 1


# How far the threads that read, blend, write and polygonize step back for the forward
# pass (Linux nice increment). On CPU, torch's threads meet at a barrier after every
# layer, so one of them losing its core to polygonizing stalls them all: at equal
# priority the forward ran 17 % slower beside the other work (16384² benchmark).
BACKGROUND_NICENESS = 19


def _background_priority() -> None:
    """Lower this thread's CPU priority (Linux, where nice is per thread; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid)
                       + BACKGROUND_NICENESS)
    except OSError:  # not permitted: keep the default priority
        pass

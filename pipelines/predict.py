"""The Dask graph of ``geotiler predict``, and the adapter from a model file to a predictor.

Per block of the plan (:mod:`geotiler.predict` does all the work):

* ``infer``: read the block, run its windows, return its core (uint8 where already final,
  float sums only along its top and left edges) and its spills to the right, below and
  below-right (each a separate Dask output, so a neighbour receives only the strip it
  needs and a block waiting for its neighbours holds ~1/6 of its float sums);
* ``finalize``: its core plus the spills of its left, upper and upper-left neighbours,
  written as a block file;
* ``polygonize``: once the blocks within the halo are written, the buildings it owns.

One ``compute`` at the end; the driver then writes the GeoTIFFs and the GeoPackage.

The model is loaded **once per process** (:func:`load_predictor` caches it by path,
modification time and device) inside the task function: tasks carry the model's path,
never its weights. With the threaded scheduler every thread shares the one model; its
forward passes run one at a time on a thread of their own (torch already uses every
core), and the scheduler's threads, which read, blend, write and polygonize meanwhile,
run at a lower CPU priority so that they fill the cores the forward pass leaves idle
instead of slowing it down. A ``distributed`` cluster must see the same paths.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import numpy as np

from geotiler.predict import (
    BlockOutput,
    BlockStats,
    ModelInfo,
    PredictConfig,
    PredictJob,
    Predictor,
    PredictReport,
    abort,
    finalize_block,
    finish,
    infer_block,
    polygonize_job_block,
    prepare,
    settle,
)

if TYPE_CHECKING:
    from distributed import Client

    from trainer.modelfile import LoadedModel

log = logging.getLogger(__name__)


class ModelPredictor:
    """A loaded model file as a :class:`geotiler.predict.Predictor`.

    Every forward pass runs on one thread of its own, started by the thread that loads the
    model, so it keeps that thread's CPU priority while the threads that read, blend and
    polygonize may give theirs up (:func:`_background_priority`). One thread also
    serializes the passes: torch already spreads each one over every core.
    """

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self._runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="geotiler-forward")
        self._runner.submit(int).result()  # start the thread now, from this thread

    @property
    def spec(self) -> Any:
        return self.loaded.spec

    def __call__(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        return self._runner.submit(self._forward, image, valid).result()

    def _forward(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        x = self.loaded.normalize(image, valid)
        y = self.loaded.predict(x)
        return y.float().cpu().numpy()


_CACHE: dict[tuple[str, int, str], ModelPredictor] = {}
_CACHE_LOCK = threading.Lock()


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_predictor(path: Path | str, device: str = "cpu") -> ModelPredictor:
    """The model file at ``path`` on ``device``, loaded once per process."""
    from trainer.modelfile import load_model

    resolved = Path(path).resolve()
    try:
        stamp = resolved.stat().st_mtime_ns
    except OSError:
        stamp = -1  # load_model says what is wrong
    key = (str(resolved), stamp, device)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is None:
            cached = _CACHE[key] = ModelPredictor(load_model(resolved, device=device))
        return cached


ModelSource = str | Predictor
"""A model file's path (loaded once per process by the task) or a picklable predictor."""


def _infer(job: PredictJob, index: tuple[int, int], source: ModelSource, device: str
           ) -> BlockOutput:
    predictor = load_predictor(source, device) if isinstance(source, str) else source
    return infer_block(job, index, predictor)


def _polygonize(job: PredictJob, index: tuple[int, int], after: list[BlockStats]) -> int:
    del after  # only orders this task after the blocks it reads
    return polygonize_job_block(job, index)


def build_graph(job: PredictJob, source: ModelSource, device: str = "cpu"
                ) -> tuple[Any, list[Any]]:
    """The delayed settled (job, block stats) of a prepared job (:func:`settle`), and its
    delayed block polygons."""
    job_d = dask.delayed(job, pure=True)
    infer: dict[tuple[int, int], Any] = {}
    for i, j in job.plan.indexes:
        infer[i, j] = dask.delayed(_infer, pure=True, nout=len(BlockOutput._fields))(
            job_d, (i, j), source, device, dask_key_name=f"infer-{i}-{j}")
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

    Without ``client``: Dask's threaded scheduler with ``workers`` threads. With a
    ``distributed.Client``: its cluster (each worker process loads the model once).
    """
    config = config or PredictConfig()
    started = time.perf_counter()
    device = resolve_device(config.device)
    predictor = load_predictor(model_path, device)  # checks the file before any work
    model = ModelInfo.from_spec(predictor.spec, name=Path(model_path).name)
    job = prepare(raster, model, out, config, raster_out)
    return run_job(job, str(Path(model_path).resolve()), device, client=client,
                   workers=workers, progress=progress, started=started)


def run_job(job: PredictJob, source: ModelSource, device: str = "cpu", *,
            client: Client | None = None, workers: int | None = None, progress: bool = False,
            started: float | None = None) -> PredictReport:
    """Compute a prepared job's graph and write its outputs; temporaries go on failure."""
    started = time.perf_counter() if started is None else started
    try:
        settled, polygons = build_graph(job, source, device)
        t0 = time.perf_counter()
        settled_job, stats = _compute(settled, polygons, client, workers, progress)
        timings = {"compute": time.perf_counter() - t0}
        _trim_heap()
        return finish(settled_job, stats, started, timings)
    except BaseException:
        abort(job)
        raise


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
             workers: int | None, progress: bool) -> tuple[PredictJob, list[BlockStats]]:
    """Run the graph: the settled job and block stats (the polygon tasks return only
    counts; their polygons are on disk)."""
    if client is not None:
        futures = client.compute([settled, polygons])
        if progress:
            from distributed import progress as dist_progress

            dist_progress(futures)
        (job, stats), _ = client.gather(futures)
        return job, list(stats)
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(
            workers or default_threads(), initializer=_background_priority,
            thread_name_prefix="geotiler-predict"))
        if progress:
            from dask.diagnostics import ProgressBar

            stack.enter_context(ProgressBar(minimum=1.0, out=sys.stderr))
        result = dask.compute(settled, polygons, scheduler="threads", pool=pool)
    job, stats = result[0]
    return job, list(stats)


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

"""Where Dask work runs: the threaded scheduler, a local cluster, or a user's cluster.

Only the CLI calls this (libraries never start clusters); what it opens it closes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from geotiler.errors import ConfigError

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

AUTO = "auto"
THREADS = "threads"
LOCAL = "local"


@contextlib.contextmanager
def open_client(
    scheduler: str, workers: int | None = None, *, large: bool = False
) -> Iterator[Client | None]:
    """Yield a ``distributed.Client`` for ``scheduler``, or None for the threaded scheduler.

    ``threads``: Dask's threaded scheduler in this process (no start-up cost). ``local``: a
    ``LocalCluster`` of ``workers`` processes started here and closed afterwards (about 3 s
    to start, then free of the GIL). ``auto``: ``local`` when the caller says the job is
    ``large``, else ``threads``. Anything else is the address of a running
    ``dask.distributed`` scheduler (``tcp://host:8786``).
    """
    if scheduler == AUTO:
        scheduler = LOCAL if large else THREADS
        log.info("--scheduler auto: using %s", scheduler)
    if scheduler == THREADS:
        yield None
        return
    from distributed import Client, LocalCluster

    with _quiet_asyncio():
        yield from _distributed_client(scheduler, workers, Client, LocalCluster)


@contextlib.contextmanager
def _quiet_asyncio() -> Iterator[None]:
    """Cancelled Dask futures (Ctrl-C) make asyncio log 'Task exception was never retrieved'
    tracebacks at teardown; they are noise for a user, so asyncio is muted meanwhile."""
    logger = logging.getLogger("asyncio")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _distributed_client(
    scheduler: str, workers: int | None, Client: type, LocalCluster: type
) -> Iterator[Client]:
    if scheduler == LOCAL:
        import dask

        # The workers' statistical profiler samples every task's stack for the dashboard;
        # nobody looks at it here, and it cost ~15% of the tiling throughput on 2 cores.
        with dask.config.set({"distributed.worker.profile.enabled": False}), \
                LocalCluster(n_workers=workers or 2, threads_per_worker=1, processes=True,
                             dashboard_address=None) as cluster, Client(cluster) as client:
            log.info("started a local Dask cluster with %d workers", len(cluster.workers))
            yield client
        return
    try:
        client = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError, ValueError) as err:
        raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None
    with client:
        log.info("using the Dask scheduler at %s", scheduler)
        yield client

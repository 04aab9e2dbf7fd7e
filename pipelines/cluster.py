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

THREADS = "threads"
LOCAL = "local"


@contextlib.contextmanager
def open_client(scheduler: str, workers: int | None = None) -> Iterator[Client | None]:
    """Yield a ``distributed.Client`` for ``scheduler``, or None for the threaded scheduler.

    ``threads``: Dask's threaded scheduler in this process (the default; fastest measured on
    small machines since GDAL, OpenCV and torch release the GIL). ``local``: a
    ``LocalCluster`` of ``workers`` processes started here and closed afterwards. Anything
    else is the address of a running ``dask.distributed`` scheduler (``tcp://host:8786``).
    """
    if scheduler == THREADS:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler == LOCAL:
        with LocalCluster(n_workers=workers or 2, threads_per_worker=1, processes=True,
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

"""Where Dask work runs: the threaded scheduler, a local cluster, or a user's cluster.

Only the CLI calls this (libraries never start clusters); what it opens it closes.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from geotiler.errors import ConfigError

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

AUTO = "auto"
THREADS = "threads"
LOCAL = "local"
SCHEDULERS = (AUTO, THREADS, LOCAL)
# How long reaching a scheduler address may take before the run is refused.
CONNECT_TIMEOUT = "10s"
# A dask.distributed address: scheme://host[:port] or host:port.
_ADDRESS = re.compile(r"([a-z]+://\S+|[\w.\-]+:\d+|\[[0-9a-fA-F:]+\]:\d+)")


def check_scheduler(value: str) -> str:
    """``value`` if it is a ``--scheduler`` choice or looks like a scheduler address.

    Raises:
        ConfigError: anything else (naming the option and the accepted forms).
    """
    if value in SCHEDULERS or _ADDRESS.fullmatch(value):
        return value
    raise ConfigError(
        f"--scheduler must be auto, threads, local or the address of a dask.distributed "
        f"scheduler such as tcp://10.0.0.5:8786; got {value!r}"
    )


def dask_setup(worker: object) -> None:
    """Run by each local-cluster worker as it starts (a Dask preload of this module).

    Ctrl-C in a terminal reaches every process of the foreground group, the workers too;
    they would each print a KeyboardInterrupt traceback. The client alone handles it (and
    closes the cluster), so the workers ignore SIGINT; the warnings a worker logs for each
    task the client cancels are muted too.
    """
    del worker
    with contextlib.suppress(ValueError):  # not the main thread: nothing to do
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("distributed.worker.state_machine").setLevel(logging.ERROR)


@contextlib.contextmanager
def open_client(
    scheduler: str,
    workers: int | None = None,
    *,
    large: bool = False,
    preload: Sequence[str] = (),
) -> Iterator[Client | None]:
    """Yield a ``distributed.Client`` for ``scheduler``, or None for the threaded scheduler.

    ``threads``: Dask's threaded scheduler in this process (no start-up cost). ``local``: a
    ``LocalCluster`` of ``workers`` processes started here and closed afterwards (about 3 s
    to start, then free of the GIL). ``auto``: ``local`` when the caller says the job is
    ``large``, else ``threads``. Anything else is the address of a running
    ``dask.distributed`` scheduler (``tcp://host:8786``). ``preload`` names modules a local
    cluster's workers import as they start, instead of on their first task.

    Raises:
        ConfigError: ``scheduler`` is no choice nor address, or cannot be reached within
            :data:`CONNECT_TIMEOUT`.
    """
    scheduler = _resolve(check_scheduler(scheduler), large)
    if scheduler == THREADS:
        yield None
        return
    from distributed import Client, LocalCluster

    with _quiet_asyncio():
        yield from _distributed_client(scheduler, workers, Client, LocalCluster, preload)


def _resolve(scheduler: str, large: bool) -> str:
    if scheduler == AUTO:
        scheduler = LOCAL if large else THREADS
        log.info("--scheduler auto: using %s", scheduler)
    return scheduler


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
    scheduler: str, workers: int | None, Client: type, LocalCluster: type, preload: Sequence[str]
) -> Iterator[Client]:
    if scheduler == LOCAL:
        import dask

        # The workers' statistical profiler samples every task's stack for the dashboard;
        # nobody looks at it here, and it cost ~15% of the tiling throughput on 2 cores.
        # Dask also starts workers with MALLOC_TRIM_THRESHOLD_ set, which hands freed memory
        # back to the OS at once; our tasks allocate and free the same few MB per strip or
        # block, and paying page faults for them again each time cost ~20% (measured).
        environ = {name: value for name, value in
                   dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
                   if name != "MALLOC_TRIM_THRESHOLD_"}
        with dask.config.set({"distributed.worker.profile.enabled": False,
                              "distributed.nanny.pre-spawn-environ": environ}), \
                LocalCluster(n_workers=workers or 2, threads_per_worker=1, processes=True,
                             dashboard_address=None,
                             # A task's error reaches the client (and the CLI's one line);
                             # what the workers would log besides is noise, e.g. heartbeat
                             # tracebacks while the cluster closes after Ctrl-C.
                             silence_logs=logging.CRITICAL,
                             preload=[__name__, *preload]) as cluster, \
                Client(cluster) as client:
            log.info("started a local Dask cluster with %d workers", len(cluster.workers))
            yield client
        return
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as err:
        raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None
    with client:
        log.info("using the Dask scheduler at %s", scheduler)
        yield client


class PendingClient:
    """A client that :func:`start_client` is still bringing up; :meth:`get` waits for it."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._client: Client | None = None
        self._error: BaseException | None = None

    def get(self) -> Client | None:
        """The client (None for the threaded scheduler), once started; start-up errors
        are raised here."""
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self._client


@contextlib.contextmanager
def start_client(
    scheduler: str,
    workers: int | None = None,
    *,
    large: bool = False,
    preload: Sequence[str] = (),
) -> Iterator[PendingClient]:
    """:func:`open_client` in a background thread, so a job is planned while it starts.

    A local cluster takes about a second to start (processes importing Dask, then the
    ``preload`` modules); planning a job (reading footprints, laying out tiles) takes as long,
    and needs no cluster. On exit the client and cluster are closed as with
    :func:`open_client`, after waiting for a start that is still under way.
    """
    pending = PendingClient()
    release = threading.Event()
    scheduler = _resolve(check_scheduler(scheduler), large)
    if scheduler != THREADS:
        # imported here, not in the thread: an import holds the GIL for its whole length
        import distributed  # noqa: F401

    def run() -> None:
        try:
            with open_client(scheduler, workers, large=large, preload=preload) as client:
                pending._client = client
                pending._ready.set()
                release.wait()
        except BaseException as err:  # handed to the caller through get()
            pending._error = err
            pending._ready.set()

    thread = threading.Thread(target=run, name="geotiler-start-dask", daemon=True)
    thread.start()
    try:
        yield pending
    finally:
        release.set()
        thread.join()

"""Dask work reported through :class:`geotiler.progress.ProgressMeter` (bar, log lines or nothing).

Replaces Dask's own text bars (``dask.diagnostics.ProgressBar``, ``distributed.progress``),
which redraw one line with ``\\r`` and so fill log files with frames. With the local
schedulers a scheduler callback counts finished tasks (:class:`DaskProgress`, only those whose
key starts with one of ``prefixes``: the shards, the blocks); with a ``distributed`` client,
finished futures are counted as they complete (:func:`wait_with_progress`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dask.callbacks import Callback
from dask.utils import key_split

from geotiler.progress import Mode, ProgressMeter

if TYPE_CHECKING:
    from distributed import Future


class DaskProgress(Callback):
    """A Dask scheduler callback feeding a :class:`ProgressMeter` (use as a context manager
    around ``dask.compute``); counts the tasks whose key name starts with ``prefixes``
    (all tasks when empty)."""

    def __init__(self, desc: str, unit: str, mode: Mode,
                 prefixes: Sequence[str] = ()) -> None:
        super().__init__()
        self.progress = ProgressMeter(None, desc, unit, mode=mode)
        self.prefixes = tuple(prefixes)

    def _counts(self, key: Any) -> bool:
        return not self.prefixes or key_split(key).startswith(self.prefixes)

    def _start_state(self, dsk: Any, state: dict[str, Any]) -> None:
        self.progress.reset(sum(1 for key in dsk if self._counts(key)))

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if self._counts(key):
            self.progress.update(1)

    def _finish(self, dsk: Any, state: Any, errored: bool) -> None:
        self.progress.close()


def wait_with_progress(futures: Sequence[Future], desc: str, unit: str, mode: Mode) -> None:
    """Wait for ``futures`` of a ``distributed`` client, counting them as they finish
    (a failed one counts too; ``client.gather`` raises its error afterwards)."""
    if mode == "off":
        return
    from distributed import as_completed

    with ProgressMeter(len(futures), desc, unit, mode=mode) as progress:
        for _ in as_completed(futures):
            progress.update(1)

"""One progress convention for ``tile``, ``train`` and ``predict``, fit for terminals and logs.

Why: a live bar (``\\r`` redrawing one line) is right on a terminal and wrong in a log file,
where every redraw becomes a frame (Dask's text bar wrote dozens for a 2-second run).

How: :func:`progress_mode` picks one of three modes from the stream and the user's wish:

* ``bar`` (stderr is a terminal): a tqdm bar with rate and ETA, shown once the work has taken
  more than :data:`BAR_DELAY_S` and removed when it ends;
* ``log`` (stderr is a file or a pipe): plain log lines (logger ``geotiler.progress``, INFO)
  when another tenth of the work is done but at most one per :data:`LOG_MIN_INTERVAL_S`, at
  least one per :data:`LOG_EVERY_S` while work goes on, and a closing summary line;
* ``off`` (``--no-progress`` or ``-q``): nothing.

:class:`ProgressMeter` has the small part of tqdm's interface the callers use (``update``,
``set_postfix``, ``total``, context manager); the Dask graphs feed it through a scheduler
callback (:mod:`pipelines.progress`).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Literal, TextIO

log = logging.getLogger("geotiler.progress")

Mode = Literal["bar", "log", "off"]
BAR_DELAY_S = 1.0  # a bar appears only for work that lasts longer
LOG_STEP = 0.1  # log mode: a line per tenth of the work ...
LOG_MIN_INTERVAL_S = 10.0  # ... but no more often than this ...
LOG_EVERY_S = 30.0  # ... and at least this often while work goes on


def progress_mode(enabled: bool, stream: TextIO | None = None) -> Mode:
    """``off`` unless ``enabled``; ``bar`` when ``stream`` (default stderr) is a terminal,
    else ``log``."""
    if not enabled:
        return "off"
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return "bar" if callable(isatty) and isatty() else "log"


class ProgressMeter:
    """Progress of ``total`` units of work (``None``: unknown until :meth:`reset`).

    ``desc`` names the work in the bar and the log lines, ``unit`` its units (``shard``,
    ``step``, ``task``); ``summary`` adds a closing log line in ``log`` mode. The log-mode
    intervals and the bar's delay are seconds (``min_interval_s``, ``every_s``,
    ``bar_delay_s``).
    """

    def __init__(self, total: int | None, desc: str, unit: str = "it", *,
                 mode: Mode = "log", stream: TextIO | None = None, summary: bool = True,
                 min_interval_s: float = LOG_MIN_INTERVAL_S,
                 every_s: float = LOG_EVERY_S, bar_delay_s: float = BAR_DELAY_S) -> None:
        self.total = total
        self.n = 0
        self.desc, self.unit, self.mode, self.summary = desc, unit, mode, summary
        self.min_interval_s, self.every_s = min_interval_s, every_s
        self._postfix: dict[str, Any] = {}
        self._start = self._last_line = time.perf_counter()
        self._next_step = LOG_STEP
        self._bar: Any = None
        self._closed = False
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False,
                             file=stream if stream is not None else sys.stderr,
                             dynamic_ncols=True, delay=bar_delay_s)

    def reset(self, total: int) -> None:
        """Start over with ``total`` units (a Dask graph knows its size when it starts)."""
        self.total, self.n = total, 0
        self._start = self._last_line = time.perf_counter()
        self._next_step = LOG_STEP
        if self._bar is not None:
            self._bar.reset(total=total)

    def update(self, n: int = 1) -> None:
        """``n`` more units done."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "log":
            self._maybe_log()

    def set_postfix(self, **values: Any) -> None:
        """Figures shown after the bar, or at the end of the log lines (``loss=0.12``)."""
        self._postfix = values
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)

    def _maybe_log(self) -> None:
        now = time.perf_counter()
        since = now - self._last_line
        fraction = self.n / self.total if self.total else 0.0
        stepped = fraction >= self._next_step and since >= self.min_interval_s
        if (stepped or since >= self.every_s) and (self.total is None or self.n < self.total):
            self._next_step = (int(fraction / LOG_STEP) + 1) * LOG_STEP
            self._last_line = now
            log.info("%s", self._line(now))

    def _line(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        rate = self.n / elapsed
        text = f"{self.desc}: {self.n}"
        if self.total:
            text += f"/{self.total} {self.unit}s ({self.n / self.total:.0%})"
            if 0 < self.n < self.total and rate > 0:
                text += f", {rate:.3g} {self.unit}/s, ETA {_duration((self.total - self.n) / rate)}"
        else:
            text += f" {self.unit}s, {rate:.3g} {self.unit}/s"
        if self._postfix:
            text += ", " + ", ".join(f"{k} {v}" for k, v in self._postfix.items())
        return text

    def close(self) -> None:
        """End the bar (removed from the terminal), or log the closing summary line."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "log" and self.summary and self.n:
            elapsed = time.perf_counter() - self._start
            log.info("%s: %d %ss done in %s (%.3g %s/s)", self.desc, self.n, self.unit,
                     _duration(elapsed), self.n / max(elapsed, 1e-9), self.unit)

    def __enter__(self) -> ProgressMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h04m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"

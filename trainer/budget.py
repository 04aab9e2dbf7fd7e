"""The ``--max-minutes`` budget: how many epochs fit, and when a run stops.

A time-boxed run plans its epochs from its pace so far (:func:`planned_epochs`) and decays
the learning rate over that plan (:func:`trainer.steps.lr_at`); every rank takes rank 0's
plan and stop, so the processes of a ``torchrun`` launch stay in step.
"""

from __future__ import annotations

import logging
import time

from trainer.checkpoint import Progress
from trainer.config import TrainConfig
from trainer.distributed import Dist, main_decides, main_value

log = logging.getLogger(__name__)


def planned_epochs(config: TrainConfig, done: int, run_epochs: int, run_seconds: float,
                   elapsed: float) -> int:
    """How many epochs in all fit ``--max-minutes``: ``done`` epochs so far plus as many
    more as the remaining budget holds at the mean pace of this run's ``run_epochs`` epochs
    (``run_seconds`` for them; ``elapsed`` seconds since the run started, set-up included),
    capped by ``--epochs``. The learning-rate schedule (:func:`trainer.steps.lr_at`) decays
    over this plan, so a time-boxed run ends at a low learning rate instead of being cut off
    mid-schedule (on the Massachusetts tiles that cut-off left the best val IoU at an early
    epoch, README "Results on real imagery").
    """
    if config.max_minutes is None:
        return config.epochs
    pace = run_seconds / max(1, run_epochs)
    remaining = 60.0 * config.max_minutes - elapsed
    more = int(remaining // pace) if pace > 0 else config.epochs
    return max(done, min(config.epochs, done + more))


def stop_message(config: TrainConfig, state: Progress, start_time: float,
                 ctx: Dist) -> str | None:
    """None while the run goes on; else why it stops early ("" when --epochs are done or
    the budget's planned epochs end with them). Every rank takes rank 0's answer."""
    if state.planned is not None and state.epoch >= state.planned:
        return ("" if state.epoch >= config.epochs else
                f"--max-minutes {config.max_minutes:.1f}: stopping after epoch "
                f"{state.epoch}, the last that fits")
    if config.max_minutes is None or state.epoch >= config.epochs:
        return "" if state.epoch >= config.epochs else None
    spent = main_decides(time.perf_counter() - start_time >= 60 * config.max_minutes, ctx)
    return (f"--max-minutes {config.max_minutes:.1f} spent after epoch {state.epoch} of "
            f"{config.epochs}: stopping") if spent else None


def replan(config: TrainConfig, state: Progress, run_epochs: int, loop_start: float,
           start_time: float, ctx: Dist) -> None:
    """After an epoch: set ``state.planned`` to the epochs that fit ``--max-minutes``
    (``None`` when all of ``--epochs`` fit, or without a budget), logging the first plan
    that binds. ``run_epochs`` were run since ``loop_start``; the run began at
    ``start_time`` (``time.perf_counter()``)."""
    if config.max_minutes is None:
        return
    now = time.perf_counter()
    planned = main_value(planned_epochs(config, state.epoch, run_epochs, now - loop_start,
                                        now - start_time), ctx)
    # Only a budget that binds changes the schedule: when every epoch fits, the run
    # follows --epochs, and a resumed run with more --epochs repeats exactly.
    fitted = planned if planned < config.epochs else None
    if ctx.is_main and fitted is not None and state.planned is None:
        log.info("--max-minutes %.1f fits about %d epochs (of --epochs %d): the learning "
                 "rate decays over them", config.max_minutes, fitted, config.epochs)
    state.planned = fitted

"""Options shared by several ``geotiler`` commands, declared once.

Each is a decorator (or a factory of one where the help text names what the command
replaces or runs on), applied like ``@click.option``. Range checks use Click's own types, so a
bad value is a usage error (exit 2) naming the option.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import click

from geotiler.device import DEVICES, PRECISIONS

F = TypeVar("F", bound=Callable[..., Any])


class Finite(click.FloatRange):
    """Click's FloatRange that also refuses ``nan`` and ``inf`` (``nan`` passes every range
    test, and ``--min-area inf`` dropped every building without a word)."""

    name = "float"

    def _describe_range(self) -> str:
        # unbounded: no "[x<=None]" in --help
        return "" if self.min is None and self.max is None else super()._describe_range()

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def overwrite_option(help_text: str) -> Callable[[F], F]:
    """``--overwrite``: a flag; ``help_text`` says what it replaces for this command."""
    return click.option("--overwrite", is_flag=True, help=help_text)


progress_option = click.option(
    "--progress/--no-progress", default=True, show_default=True,
    help="Show progress: a bar on a terminal, a few log lines when stderr is a file or a "
    "pipe. 'geotiler -q COMMAND' also turns it off.")


def layer_options(name: str, what: str) -> Callable[[F], F]:
    """``--{name}-layer`` and ``--{name}-where``: which layer of a vector input and an OGR
    SQL filter on its features (``what`` names the input in the help)."""
    def decorate(func: F) -> F:
        func = click.option(
            f"--{name}-where", default=None, metavar="SQL",
            help=f"OGR SQL filter on the {what}' attributes, e.g. \"building IS NOT NULL\" "
            "(default for OpenStreetMap .osm/.osm.pbf extracts).")(func)
        func = click.option(
            f"--{name}-layer", default=None, metavar="NAME",
            help=f"Layer of the {what} file to read. Default: its only polygon layer "
            "('multipolygons' for OpenStreetMap extracts).")(func)
        return func
    return decorate


def _check_scheduler(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from geotiler.errors import ConfigError
    from pipelines.cluster import check_scheduler

    try:
        return check_scheduler(value)
    except ConfigError as err:
        raise click.BadParameter(str(err).split("; got")[0].removeprefix("--scheduler "),
                                 ctx, param) from None


def scheduler_options(func: F) -> F:
    """``--scheduler`` and ``--workers``, shared by the commands that run Dask graphs."""
    func = click.option(
        "--workers", type=click.IntRange(min=1), default=None,
        help="Threads (or local-cluster processes) to use. Default: one per core.",
    )(func)
    func = click.option(
        "--scheduler", default="auto", show_default=True, metavar="auto|threads|local|ADDRESS",
        callback=_check_scheduler,
        help="Where Dask runs the work: 'threads' in this process, 'local' for a LocalCluster "
        "of processes (faster for large jobs, ~3 s to start), 'auto' to pick between them by "
        "the job's size, or the address of a running "
        "dask.distributed scheduler, e.g. tcp://10.0.0.5:8786 (workers must see the same paths).",
    )(func)
    return func


def device_option(default: str, help_text: str) -> Callable[[F], F]:
    """``--device`` (:data:`geotiler.device.DEVICES`), with the command config's default."""
    return click.option("--device", type=click.Choice(DEVICES), default=default,
                        show_default=True, help=help_text)


def precision_option(default: str, measured: str) -> Callable[[F], F]:
    """``--precision`` (:data:`geotiler.device.PRECISIONS`) of ``train`` and ``predict``,
    with the command config's default; ``measured`` ends the help with what it gives."""
    return click.option(
        "--precision", type=click.Choice(PRECISIONS), default=default, show_default=True,
        help="Network arithmetic: bf16 autocast (weights stay fp32) or fp32; 'auto' takes "
        "bf16 where the CPU or GPU computes it natively (AVX-512 BF16/AMX, Ampere+). "
        + measured)

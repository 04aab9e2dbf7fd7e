"""The ``geotiler`` command line: thin Click commands over the library.

Each command validates its flags, builds a config, makes one library call and reports.
Library errors (:mod:`geotiler.errors`) become a one-line ``Error: ...`` and exit 1; bad
usage exits 2; Ctrl-C exits 130 after the library has removed its partial files. Heavy
imports (torch, dask) happen inside the commands so ``geotiler --help`` stays instant.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from geotiler import __version__
from geotiler.errors import GeotilerError

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("geotiler")


def _configure_logging(verbose: int, quiet: int) -> None:
    level = max(logging.DEBUG, logging.INFO - 10 * verbose + 10 * quiet)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    for name in ("geotiler", "trainer", "pipelines"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.ERROR)


def handle_errors(func: F) -> F:
    """Turn library errors into one-line messages with exit code 1, Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GeotilerError as err:
            raise click.ClickException(str(err)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted: partial outputs were removed; rerun to continue.", err=True)
            sys.exit(130)
        except MemoryError:
            raise click.ClickException(
                "out of memory: lower --batch-size/--workers or the block size"
            ) from None

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="geotiler")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", count=True, help="Less log output.")
def main(verbose: int, quiet: int) -> None:
    """Turn GeoTIFFs and building footprints into a segmentation model, and the model back
    into building polygons for GIS.

    \b
    geotiler tile area.tif --footprints buildings.gpkg --out tiles/
    geotiler train tiles/ --out model.pt
    geotiler predict area.tif --model model.pt --out buildings.gpkg
    geotiler evaluate buildings.gpkg truth.gpkg
    """
    _configure_logging(verbose, quiet)


# --- commands -------------------------------------------------------------------------------

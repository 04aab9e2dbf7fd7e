"""The ``geotiler`` command group: logging, error reporting and the entry point.

``-v``/``-q`` counts become the log level; this is the only place logging handlers are
configured. Library errors (:mod:`geotiler.errors`) become a one-line ``Error: ...`` and exit
1, a :class:`~geotiler.errors.ConfigError` (a setting out of range or inconsistent with the
data) exits 2 like bad usage, Ctrl-C exits 130 after the library has removed its partial
files. The commands live one per module (:mod:`geotiler.cli`).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from geotiler import __version__
from geotiler.cli.demo import demo
from geotiler.cli.evaluate import evaluate
from geotiler.cli.predict import predict
from geotiler.cli.tile import tile
from geotiler.cli.train import train
from geotiler.errors import ConfigError, GeotilerError


def configure_logging(verbose: int, quiet: int) -> None:
    """Log INFO and up to stderr; each ``-v`` one level more, each ``-q`` one level less."""
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


class _BadSetting(click.ClickException):
    """A setting out of range or inconsistent with the data: one line, exit 2 (usage)."""

    exit_code = 2


class _Group(click.Group):
    """The command group; running a command turns library errors into one-line messages."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as err:
            raise _BadSetting(str(err)) from None
        except GeotilerError as err:
            raise click.ClickException(str(err)) from None
        except KeyboardInterrupt:
            # a Dask cluster being torn down reports its cancelled futures at exit: mute it
            for name in ("asyncio", "distributed", "tornado"):
                logging.getLogger(name).disabled = True
            click.echo("Interrupted: partial outputs were removed; rerun to continue.", err=True)
            sys.exit(130)
        except MemoryError:
            raise click.ClickException(
                "out of memory: lower --batch-size/--workers or the block size"
            ) from None


@click.group(cls=_Group,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="geotiler")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", count=True, help="Less log output.")
def main(verbose: int, quiet: int) -> None:
    """Turn GeoTIFFs and building footprints into a segmentation model, and the model back
    into building polygons for GIS.

    \b
    geotiler demo                   # the whole chain on the sample scene, ~5 min on CPU
    geotiler tile area.tif --footprints buildings.gpkg --out tiles/
    geotiler train tiles/ --out model.pt
    geotiler predict area.tif --model model.pt --out buildings.gpkg
    geotiler evaluate buildings.gpkg truth.gpkg
    """
    configure_logging(verbose, quiet)


main.add_command(tile)
main.add_command(train)
main.add_command(predict)
main.add_command(evaluate)
main.add_command(demo)

"""The ``geotiler`` command group: logging, error reporting and the entry point.

``-v``/``-q`` counts become the log level; this is the only place logging handlers are
configured. Library errors (:mod:`geotiler.errors`) become a one-line ``Error: ...`` and exit
1, a :class:`~geotiler.errors.ConfigError` (a setting out of range or inconsistent with the
data) exits 2 like bad usage, Ctrl-C exits 130 and SIGTERM (``kill``, ``docker stop``,
Slurm, systemd) 143, both after the library has removed its partial files. Anything else
a command raises (GDAL, PROJ, a codec, the OS, Dask) is caught by a last-resort net and
also becomes one ``Error:`` line with exit 1, naming the file where the exception does;
its traceback is logged at DEBUG (``-v``). The commands live one per
module (:mod:`geotiler.cli`).
"""

from __future__ import annotations

import errno
import logging
import signal
import sys
import threading
import traceback
from typing import Any

import click

from geotiler import __version__
from geotiler.cli.demo import demo
from geotiler.cli.evaluate import evaluate
from geotiler.cli.predict import predict
from geotiler.cli.tile import tile
from geotiler.cli.train import train
from geotiler.errors import ConfigError, GeotilerError, OutputError, reason

log = logging.getLogger("geotiler")


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
    # GDAL's own messages (rasterio logs them at ERROR) repeat what the one Error: line
    # says; they are shown with -v.
    rasterio_log = logging.getLogger("rasterio")
    rasterio_log.handlers[:] = [handler]
    rasterio_log.setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    rasterio_log.propagate = False


# ``geotiler`` alone shows its help by raising this UsageError (Click >= 8.2): kept as is.
_NoArgsIsHelp = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _BadSetting(click.ClickException):
    """A setting out of range or inconsistent with the data: one line, exit 2 (usage)."""

    exit_code = 2


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that it takes
    the same path: every ``except BaseException`` that removes partial files runs."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


# What an interrupted command leaves, and how to go on (the library removed its partials);
# else what the library set as ``after`` on the KeyboardInterrupt (train: its --resume).
_AFTER_INTERRUPT = {
    "tile": "rerun the same command to continue (finished shards are reused)",
    "demo": "rerun the same command to start again",
}


class _Group(click.Group):
    """The command group; running a command turns library errors into one-line messages."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as err:  # e.g. an unknown option before the command
            raise _one_line(err, ctx) from None

    def invoke(self, ctx: click.Context) -> Any:
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
        try:
            return self._invoke(ctx)
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as err:
            raise _BadSetting(_with_help(str(err), ctx)) from None
        except click.UsageError as err:  # Click's usage block would bury the one line
            raise _one_line(err, ctx) from None
        except GeotilerError as err:
            raise click.ClickException(str(err)) from None
        except KeyboardInterrupt as err:
            # a Dask cluster being torn down reports its cancelled futures at exit: mute it
            for name in ("asyncio", "distributed", "tornado"):
                logging.getLogger(name).disabled = True
            # ... and a cluster that could not close in time is closed again at exit, where
            # a failure is reported as an "Exception ignored" traceback: shown with -v only
            sys.unraisablehook = _debug_unraisable
            what = "Terminated" if isinstance(err, Terminated) else "Interrupted"
            after = (_AFTER_INTERRUPT.get(ctx.invoked_subcommand or "")
                     or getattr(err, "after", None) or "rerun to start again")
            click.echo(f"{what}: partial outputs were removed; {after}.", err=True)
            sys.exit(143 if isinstance(err, Terminated) else 130)
        except MemoryError:
            raise click.ClickException(
                "out of memory: lower --batch-size/--workers or the block size"
            ) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except OSError as err:  # the OS refused a file operation the library did not expect
            log.debug("".join(traceback.format_exception(err)))
            raise click.ClickException(_os_message(err)) from None
        except Exception as err:  # the last-resort net: one line, never a traceback
            log.debug("".join(traceback.format_exception(err)))
            raise click.ClickException(
                f"{type(err).__name__}: {reason(err)} (run with -v for the traceback)"
            ) from None


def _one_line(err: click.UsageError, group: click.Context) -> click.ClickException:
    """Bad usage (an unknown option, a value out of its range, a missing argument) as one
    line that names the help to read: ``Invalid value for '--epochs': -1 is not in the
    range x>=1 (see 'geotiler train --help')``, exit 2. Where Click does not say which
    command's options it was parsing (``Option '--init' requires an argument``), the
    command being run is named. A command run without arguments that shows its help
    instead is left as it is."""
    if isinstance(err, _NoArgsIsHelp):
        return err
    message = err.format_message().rstrip(".")
    path = err.ctx.command_path if err.ctx is not None else _running(group)
    if isinstance(err, click.NoSuchOption) and err.option_name in _GROUP_OPTIONS:
        # -q/-v belong to geotiler itself, before the command
        return _BadSetting(f"{message}: {err.option_name} goes before the command "
                           f"(geotiler {err.option_name} {path.split()[-1]} ...)")
    return _BadSetting(f"{message} (see '{path} --help')")


_GROUP_OPTIONS = ("-q", "--quiet", "-v", "--verbose", "-qq", "-vv")


def _with_help(message: str, group: click.Context) -> str:
    """A setting's own range or consistency error (``--size must be between 16 and 8192
    pixels, got 7``) names the command's help, as Click's usage errors do; messages about
    the data rather than an option are left as they are."""
    if "--" not in message or not group.invoked_subcommand:
        return message
    return f"{message} (see '{_running(group)} --help')"


def _running(group: click.Context) -> str:
    """The command being run (``geotiler tile``), or the group alone before one is chosen."""
    return " ".join(p for p in (group.command_path, group.invoked_subcommand) if p)


def _debug_unraisable(unraisable: Any) -> None:
    """After Ctrl-C: an exception Python cannot raise (in an atexit callback) is logged at
    DEBUG instead of printed with its traceback."""
    error = unraisable.exc_value
    if error is not None:
        log.debug("%s: %s", unraisable.err_msg or "ignored",
                  "".join(traceback.format_exception(error)))


def _os_message(err: OSError) -> str:
    """One line for an OSError: the file it names and the OS's reason."""
    if err.filename is None:
        if err.errno in (errno.ENOSPC, errno.EFBIG):  # a full disk or ulimit -f: the advice
            return str(OutputError.writing("an output", err))
        return f"{reason(err)} (run with -v for the traceback)"
    return str(OutputError.writing(err.filename, err)).replace("cannot write", "cannot use", 1)


@click.group(cls=_Group,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="geotiler")
@click.option("-v", "--verbose", count=True,
              help="Debug log output, GDAL's own messages and the traceback of an error.")
@click.option("-q", "--quiet", count=True,
              help="Less log output: warnings and the result only (-qq: errors only).")
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

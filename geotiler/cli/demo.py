"""``geotiler demo``: the whole chain (tile, train, predict, evaluate, quick-look) on the
sample scene.

Options take their defaults from :class:`pipelines.demo.DemoConfig`; the command builds that
config, hands it to :func:`pipelines.demo.run_demo` and prints where every output went.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import cast

import click

from geotiler.cli.options import Finite, overwrite_option
from pipelines.demo import DemoConfig
from trainer.config import ARCHS, Arch

log = logging.getLogger("geotiler")

_DEMO = DemoConfig()


@click.command()
@click.option("--out", "-o", "out_dir", default=str(_DEMO.out_dir), show_default=True,
              type=click.Path(file_okay=False, path_type=str),
              help="Folder for the tiles, model, predictions, metrics and quick-look.")
@click.option("--minutes", type=Finite(min=0, min_open=True), default=_DEMO.minutes,
              show_default=True, help="Training time budget (the best epoch is kept).")
@click.option("--arch", type=click.Choice(ARCHS), default=_DEMO.arch,
              show_default=True, help="Model to train.")
@click.option("--raster", default=None, type=click.Path(path_type=str),
              help="Use this GeoTIFF instead of the sample scene (with --footprints).")
@click.option("--footprints", "-f", default=None, type=click.Path(path_type=str),
              help="Footprints of --raster.")
@click.option("--seed", type=int, default=_DEMO.seed, show_default=True,
              help="Seed of split and model.")
@overwrite_option("Replace an earlier demo in --out.")
def demo(out_dir: str, minutes: float, arch: str, raster: str | None, footprints: str | None,
         seed: int, overwrite: bool) -> None:
    """Run the whole chain on the sample scene: tile, train a small model for a few
    minutes, predict, evaluate, and draw a quick-look PNG.

    Prints where every output went. Scores are on the scene the model trained on, so they
    show that the chain works, not how well the model generalizes (see the training log's
    validation IoU for that).

    \b
    Examples:
      geotiler demo
      geotiler demo --minutes 10 --out demo10/
      geotiler demo --raster area.tif --footprints buildings.gpkg --out mydemo/
    """
    from pipelines.demo import run_demo

    config = DemoConfig(out_dir=Path(out_dir), raster=Path(raster) if raster else None,
                        footprints=Path(footprints) if footprints else None,
                        minutes=minutes, arch=cast(Arch, arch), seed=seed)
    progress = sys.stderr.isatty() and log.isEnabledFor(logging.INFO)
    report = run_demo(config, overwrite=overwrite, progress=progress)
    click.echo(
        f"tiles:         {report.tiles}\n"
        f"model:         {report.model}\n"
        f"probabilities: {report.probabilities}\n"
        f"mask:          {report.mask}\n"
        f"buildings:     {report.buildings}  (layer 'buildings', open in QGIS)\n"
        f"metrics:       {report.metrics}\n"
        f"quick-look:    {report.quicklook}\n"
        f"{report.summary_line()}"
    )

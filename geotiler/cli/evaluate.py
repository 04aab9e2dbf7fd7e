"""``geotiler evaluate``: score predicted buildings against reference footprints.

Options take their defaults from :class:`geotiler.evaluate.EvalConfig`; the command builds
that config, hands it to :func:`geotiler.evaluate.evaluate`, prints the table and, with
``--out``, writes the report as JSON.
"""

from __future__ import annotations

import contextlib

import click

from geotiler.cli.options import Finite, layer_options, overwrite_option
from geotiler.evaluate.config import EvalConfig

_EVAL = EvalConfig()


@click.command()
@click.argument("pred", type=click.Path(path_type=str))
@click.argument("truth", type=click.Path(path_type=str))
@click.option("--raster", default=None, type=click.Path(path_type=str),
              help="Grid for pixel scores when PRED is polygons (a file or an https:// or "
              "s3:// URL). Default: the {stem}_mask.tif that predict wrote beside PRED, if "
              "there.")
@layer_options("truth", "truth")
@click.option("--pred-layer", default=None, metavar="NAME",
              help="Layer of a polygon PRED to score. Default: 'buildings' (what predict "
              "writes), else the file's only polygon layer.")
@click.option("--out", "-o", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Also write the metrics as JSON to this file.")
@click.option("--tolerance", type=Finite(min=0), default=_EVAL.tolerance,
              show_default=True, help="Boundary F-score tolerance in metres.")
@click.option("--iou-threshold", type=Finite(0, 1, min_open=True),
              default=_EVAL.iou_threshold, show_default=True,
              help="IoU at which a predicted building matches a true one.")
@overwrite_option("Replace an existing --out file.")
def evaluate(pred: str, truth: str, raster: str | None, out: str | None, tolerance: float,
             iou_threshold: float, overwrite: bool, truth_layer: str | None,
             truth_where: str | None, pred_layer: str | None) -> None:
    """Score predicted buildings PRED (mask GeoTIFF or polygon layer) against TRUTH
    footprints (any vector format and CRS).

    Prints pixel IoU/precision/recall/F1, per-building precision/recall/F1 (one-to-one
    matches at IoU >= 0.5, the SpaceNet metric), the boundary F-score and the seed
    method's four scores.

    \b
    Example:
      geotiler evaluate buildings.gpkg truth.gpkg --out metrics.json
    """
    from geotiler.evaluate import evaluate as run_evaluation
    from geotiler.evaluate import save_report
    from geotiler.evaluate.report import check_report_path

    # an unusable --out fails now, not after the scoring
    created = (check_report_path(out, overwrite, inputs=[pred, truth, raster])
               if out is not None else [])
    config = EvalConfig(tolerance=tolerance, iou_threshold=iou_threshold)
    try:
        report = run_evaluation(pred, truth, raster, config, truth_layer=truth_layer,
                                truth_where=truth_where, pred_layer=pred_layer)
    except BaseException:  # leave no empty folder made for the report
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    click.echo(report.format_table())
    if out is not None:
        save_report(report, out, overwrite=overwrite)
        click.echo(f"metrics written to {out}")

"""``geotiler predict``: a raster + a model file -> building polygons and prediction rasters.

Options take their defaults from :class:`geotiler.predict.PredictConfig`; the command builds
that config and hands it to :func:`pipelines.predict.run_predict` on the Dask scheduler
chosen by ``--scheduler``.
"""

from __future__ import annotations

import logging
from typing import Any

import click

from geotiler.cli.options import (
    Finite,
    device_option,
    overwrite_option,
    precision_option,
    progress_option,
    scheduler_options,
)
from geotiler.instances import InstanceOptions
from geotiler.predict import COG_COMPRESSION, TTA_MODES, WINDOW_KINDS, PredictConfig
from geotiler.tiles.config import parse_bands

log = logging.getLogger("geotiler")

_PREDICT = PredictConfig()
_INST = _PREDICT.instances


@click.command()
@click.argument("raster", type=click.Path(path_type=str))
@click.option("--model", "-m", "model_path", required=True, type=click.Path(path_type=str),
              help="Model file written by `geotiler train`.")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="GeoPackage of building polygons to write (layer 'buildings', raster CRS).")
@click.option("--raster-out", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Directory of the probability and mask GeoTIFFs ({stem}_prob.tif, "
              "{stem}_mask.tif, {stem} from --out). Default: beside --out.")
@click.option("--overlap", type=click.IntRange(min=0), default=_PREDICT.overlap,
              help="Pixels shared by neighbouring windows (model GSD). Default: a quarter "
              "of the model's tile size (64 for 256 px tiles).")
@click.option("--batch-size", type=click.IntRange(min=1), default=_PREDICT.batch_size,
              show_default=True, help="Windows per forward pass.")
@click.option("--block", type=click.IntRange(min=64), default=_PREDICT.block,
              show_default=True, help="Side of a processing block in pixels (bounds memory).")
@click.option("--halo", type=click.IntRange(min=0), default=_PREDICT.halo, show_default=True,
              help="Pixels around a block seen when polygonizing: more than the largest "
              "building, or block of touching buildings (a warning names those that reach "
              "past it).")
@click.option("--threshold", type=Finite(0, 1, min_open=True, max_open=True),
              default=_PREDICT.threshold, show_default=True,
              help="Probability at or above which a pixel is building.")
@click.option("--otsu", is_flag=True, default=_PREDICT.otsu,
              help="Pick the building threshold by Otsu's method over the whole raster "
              "(the seed method's rule) instead of --threshold.")
@click.option("--window", type=click.Choice(WINDOW_KINDS), default=_PREDICT.window,
              show_default=True, help="Blending window of overlapping predictions.")
@click.option("--simplify", type=Finite(min=0), default=_PREDICT.simplify,
              show_default=True, help="Polygon simplification tolerance in metres (0: none).")
@click.option("--min-area", type=Finite(min=0), default=_PREDICT.min_area,
              show_default=True, help="Drop polygons smaller than this many m².")
@click.option("--regularize/--no-regularize", default=_PREDICT.regularize, show_default=True,
              help="Square the corners of nearly rectangular buildings.")
@click.option("--contour-threshold", type=Finite(0, 1),
              default=_INST.contour_threshold, show_default=True,
              help="Contour probability at or above which a pixel is an outline (instance "
              "markers are the footprint off the outlines).")
@click.option("--merge-contour", type=Finite(0, 1), default=_INST.merge_contour,
              show_default=True,
              help="Neighbouring parts whose shared border has a lower mean contour "
              "probability are one building (roof ridges, shadows); 0 keeps every cut.")
@click.option("--marker-erosion", type=Finite(min=0),
              default=_INST.marker_erosion_m, show_default=True,
              help="Erode instance markers by this many metres before flooding, so houses "
              "joined by a thin bridge of footprint get a marker each (0: off).")
@click.option("--min-marker-area", type=Finite(min=0),
              default=_INST.min_marker_area_m2, show_default=True,
              help="Instance markers smaller than this many m² are dropped.")
@click.option("--min-fragment", type=Finite(min=0), default=_INST.min_fragment_m2,
              show_default=True,
              help="Parts smaller than this many m² join the neighbour they share the "
              "longest border with.")
@click.option("--bands", default=None, metavar="3,2,1",
              help="The raster's band numbers (1-based) to feed the model, in the order it "
              "was trained on. Required when the raster has another number of bands than "
              "the model takes. Default: the model's own band numbers.")
@device_option(_PREDICT.device, "Where the model runs ('auto': CUDA when available).")
@precision_option(_PREDICT.precision, "bf16 masks agree with fp32's on >= 99 % of pixels.")
@click.option("--tta", type=click.Choice(list(TTA_MODES)), default=_PREDICT.tta,
              show_default=True,
              help="Test-time augmentation: average each window's outputs over its flips "
              "('flips': 4x the network's time) or all eight symmetries of the square "
              "('d4': 8x). Did not help on Massachusetts (README, 'Results').")
@click.option("--probabilities/--no-probabilities", default=_PREDICT.probabilities,
              show_default=True, help="Also write the probability GeoTIFF.")
@click.option("--compress", type=click.Choice(list(COG_COMPRESSION)), default=_PREDICT.compress,
              show_default=True,
              help="Compression of the output GeoTIFFs (deflate for GDAL older than 2.3).")
@overwrite_option("Replace existing outputs.")
@progress_option
@scheduler_options
def predict(raster: str, model_path: str, out: str, raster_out: str | None, scheduler: str,
            workers: int | None, progress: bool, bands: str | None, **options: Any) -> None:
    """Predict building polygons on RASTER with a trained model.

    RASTER is a file or an https:// or s3:// URL (read in place through GDAL's /vsicurl/ and
    /vsis3/). The raster is read block by block at the model's GSD (any size, any CRS) and
    predicted in overlapping windows blended without seams. Writes OUT (GeoPackage,
    layer 'buildings' with area_m2 and score), a probability GeoTIFF and a mask GeoTIFF
    (tiled, compressed, with overviews, on the model's grid in the raster's CRS).
    Nothing is left half-written if it fails.

    \b
    Examples:
      geotiler predict area.tif --model model.pt --out buildings.gpkg
      geotiler predict big.tif -m model.pt -o out/b.gpkg --scheduler tcp://10.0.0.5:8786
    """
    from pipelines.cluster import open_client
    from pipelines.predict import run_predict

    instances = InstanceOptions(
        contour_threshold=options.pop("contour_threshold"),
        merge_contour=options.pop("merge_contour"),
        marker_erosion_m=options.pop("marker_erosion"),
        min_marker_area_m2=options.pop("min_marker_area"),
        min_fragment_m2=options.pop("min_fragment"),
    )
    config = PredictConfig(instances=instances,
                           bands=None if bands is None else parse_bands(bands), **options)
    with open_client(scheduler, workers) as client:
        report = run_predict(raster, model_path, out, config, raster_out=raster_out,
                             client=client, workers=workers,
                             progress=progress and log.isEnabledFor(logging.INFO))
    click.echo(
        f"{report.buildings} buildings (the mask covers {report.building_fraction:.1%} of "
        f"the valid area) "
        f"from {report.windows_run} windows on a {report.grid[0]} x {report.grid[1]} px grid "
        f"at {report.gsd:g} m in {report.seconds:.1f}s ({report.precision})"
        + (f" (Otsu threshold {report.threshold:.3f})" if config.otsu else "")
        + f"; wrote {', '.join(report.outputs)}"
    )

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
from typing import Any, TypeVar, cast

import click

from geotiler import __version__
from geotiler.errors import ConfigError, GeotilerError
from geotiler.predict import COG_COMPRESSION, WINDOW_KINDS, PredictConfig
from geotiler.predict import DEVICES as PREDICT_DEVICES
from geotiler.tiles.config import COMPRESSIONS, TARGETS, TileConfig, parse_bands, parse_split
from trainer.config import ARCHS, DEVICES, PRESET_NAMES, PRESETS, TrainConfig

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


class _BadSetting(click.ClickException):
    """A setting out of range or inconsistent with the data: one line, exit 2 (usage)."""

    exit_code = 2


def handle_errors(func: F) -> F:
    """Turn library errors into one-line messages with exit code 1, Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
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

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
    _configure_logging(verbose, quiet)


# --- shared options -------------------------------------------------------------------------

def scheduler_options(func: F) -> F:
    """``--scheduler`` and ``--workers``, shared by the commands that run Dask graphs."""
    func = click.option(
        "--workers", type=click.IntRange(min=1), default=None,
        help="Threads (or local-cluster processes) to use. Default: one per core.",
    )(func)
    func = click.option(
        "--scheduler", default="auto", show_default=True, metavar="auto|threads|local|ADDRESS",
        help="Where Dask runs the work: 'threads' in this process, 'local' for a LocalCluster "
        "of processes (faster for large jobs, ~3 s to start), 'auto' to pick between them by "
        "the job's size, or the address of a running "
        "dask.distributed scheduler, e.g. tcp://10.0.0.5:8786 (workers must see the same paths).",
    )(func)
    return func


_TILE = TileConfig()


def _parse_or_none(parser: Callable[[str], Any], value: str | None) -> Any:
    return None if value is None else parser(value)


# --- commands -------------------------------------------------------------------------------

@main.command()
@click.argument("rasters", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--footprints", "-f", required=True, type=click.Path(path_type=str),
              help="Building polygons (GPKG, GeoJSON, Shapefile, GeoParquet; any CRS).")
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(path_type=str),
              help="Dataset directory to create (or to finish, if an identical run stopped).")
@click.option("--size", type=int, default=_TILE.size, show_default=True,
              help="Tile width and height in pixels.")
@click.option("--overlap", type=int, default=_TILE.overlap, show_default=True,
              help="Pixels shared by neighbouring tiles.")
@click.option("--gsd", type=float, default=None,
              help="Target ground sample distance in metres per pixel (works for geographic "
              "CRSs too). Default: the raster's own.")
@click.option("--scale", type=float, default=None,
              help="Resample factor instead of --gsd: output pixel = input pixel x SCALE "
              "(2.64 turns 675 px crops into 256 px tiles, as the seed method did).")
@click.option("--bands", default=None, metavar="1,2,3",
              help="Band numbers to keep (1-based). Default: every band that is not alpha.")
@click.option("--contour-width", type=int, default=_TILE.contour_width, show_default=True,
              help="Thickness in pixels of the building outlines drawn onto the contour mask.")
@click.option("--target", type=click.Choice(TARGETS), default=_TILE.target, show_default=True,
              help="'masks': footprint + contour channels; 'seed-rgb': the seed method's RGB "
              "target (white buildings, green outlines, blurred).")
@click.option("--seed-blur", type=int, default=_TILE.seed_blur, show_default=True,
              help="Gaussian blur kernel (odd px) of the seed-rgb target; 0 for none.")
@click.option("--max-nodata", type=float, default=_TILE.max_nodata, show_default=True,
              help="Skip tiles with a larger fraction of nodata pixels.")
@click.option("--min-building-fraction", type=float, default=_TILE.min_building_fraction,
              show_default=True, help="Skip training tiles with less building area than this.")
@click.option("--keep-empty", type=float, default=_TILE.keep_empty, show_default=True,
              help="Fraction of building-free training tiles to keep.")
@click.option("--split", default=",".join(str(s) for s in _TILE.split), show_default=True,
              metavar="TRAIN,VAL,TEST", help="Fractions of spatial blocks per split.")
@click.option("--block-tiles", type=int, default=_TILE.block_tiles, show_default=True,
              help="Side of a split block in tiles (tiles of one block share a split).")
@click.option("--shard-size", type=int, default=_TILE.shard_size, show_default=True,
              help="Tiles per shard file.")
@click.option("--seed", type=int, default=_TILE.seed, show_default=True,
              help="Seed of the split and of the empty-tile selection.")
@click.option("--compress", type=click.Choice(list(COMPRESSIONS)),
              default=_TILE.compress, show_default=True,
              help="Compression of tile GeoTIFFs (deflate for GDAL older than 2.3).")
@click.option("--require-footprints", is_flag=True,
              help="Fail (instead of warning) when a raster has no footprint on it.")
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset in --out.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a progress bar.")
@scheduler_options
@handle_errors
def tile(rasters: tuple[str, ...], footprints: str, out_dir: str, split: str,
         bands: str | None, scheduler: str, workers: int | None, overwrite: bool,
         require_footprints: bool, progress: bool, **options: Any) -> None:
    """Cut RASTERS and their building FOOTPRINTS into georeferenced tile shards.

    Each tile is a GeoTIFF pair (image + masks: footprint and contour outlines) inside
    OUT/shards/{split}-NNNNNN.tar; OUT/index.gpkg shows every tile in QGIS and
    OUT/dataset.json describes the dataset for `geotiler train`. Rasters are read window
    by window, so any size works. Rerunning the same command finishes an interrupted run.

    \b
    Example:
      geotiler tile sample_data/area.tif --footprints sample_data/buildings.gpkg --out tiles/
    """
    from pipelines.cluster import start_client
    from pipelines.tile import is_large_job

    config = TileConfig(
        split=parse_split(split),
        bands=_parse_or_none(parse_bands, bands),
        **options,
    )
    # A local cluster starts (its workers importing what a tiling task needs) while the
    # rest of the pipeline is imported and the job planned.
    with start_client(scheduler, workers, large=is_large_job(rasters, config),
                      preload=("geotiler.tiles.task",)) as client:
        from pipelines.tile import run_tiling

        report = run_tiling(
            rasters, footprints, out_dir, config, client=client, workers=workers,
            overwrite=overwrite, require_footprints=require_footprints,
            progress=progress and log.isEnabledFor(logging.INFO),
        )
    t = report.tiles
    click.echo(
        f"{sum(t.values())} tiles (train {t['train']}, val {t['val']}, test {t['test']}) with "
        f"{report.buildings} building parts in {out_dir} in {report.seconds:.1f}s; "
        f"skipped {report.skipped_nodata} mostly-nodata, {report.skipped_selection} by "
        f"selection, {report.skipped_overlap_guard} at split borders; "
        f"{report.shards_written} shard(s) written, {report.shards_reused} reused"
    )


# --- train ----------------------------------------------------------------------------------

_TRAIN = TrainConfig()


def _preset_help() -> str:
    return "; ".join(
        f"{name}: " + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in values.items())
        for name, values in PRESETS.items()
    )


@main.command()
@click.argument("tiles_dir", type=click.Path(path_type=str))
@click.option("--out", "-o", "out_path", required=True,
              type=click.Path(dir_okay=False, path_type=str),
              help="Model file to write (the best epoch by val IoU), e.g. model.pt.")
@click.option("--arch", type=click.Choice(ARCHS), default=_TRAIN.arch, show_default=True,
              help="'pix2pix': U-Net generator + PatchGAN discriminator, cGAN + L1 loss "
              "(Isola et al.); 'unet': the same U-Net alone with BCE + Dice loss.")
@click.option("--preset", type=click.Choice(PRESET_NAMES), default=_TRAIN.preset,
              show_default=True,
              help=f"Network size and batch size ({_preset_help()}). 'small' trains in "
              "minutes on a CPU; 'full' is the pix2pix paper's network (for a GPU). "
              "--ngf/--ndf/--num-downs/--batch-size override it.")
@click.option("--epochs", type=click.IntRange(min=1), default=_TRAIN.epochs, show_default=True,
              help="Passes over the training tiles (the learning rate decays linearly to "
              "zero over the second half).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Tiles per step and process. Default: the preset's.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=_TRAIN.lr,
              help="Adam learning rate (generator and discriminator). Default: 1e-3 for the "
              "U-Net, 2e-4 (the paper's) for pix2pix.")
@click.option("--ngf", type=click.IntRange(min=1), default=None,
              help="Generator filters in its first level (doubling per level up to 8x). "
              "Default: the preset's.")
@click.option("--ndf", type=click.IntRange(min=1), default=None,
              help="Discriminator filters in its first layer. Default: the preset's.")
@click.option("--num-downs", type=click.IntRange(min=2), default=None,
              help="U-Net levels; the tile size must be a multiple of 2^levels (256 px: at "
              "most 8). Default: the preset's.")
@click.option("--lambda-l1", type=click.FloatRange(min=0), default=_TRAIN.lambda_l1,
              show_default=True, help="Weight of the L1 term of the pix2pix generator loss.")
@click.option("--augment/--no-augment", default=_TRAIN.augment, show_default=True,
              help="Random flips, 90-degree rotations and mild colour jitter of training tiles.")
@click.option("--workers", type=click.IntRange(min=0), default=_TRAIN.workers,
              help="Data loading processes per training process (0: load in-process). "
              "Default: 0 on CPU (loader processes would compete with torch for the cores), "
              "up to 4 with CUDA.")
@click.option("--seed", type=int, default=_TRAIN.seed, show_default=True,
              help="Seed of weights, data order and augmentation (CPU runs repeat exactly).")
@click.option("--device", type=click.Choice(DEVICES), default=_TRAIN.device, show_default=True,
              help="'auto' uses the GPU when CUDA is available (with mixed precision).")
@click.option("--resume", type=click.Path(path_type=str), default=None, metavar="CHECKPOINT",
              help="Continue a run from its checkpoint (e.g. model.checkpoints/last.pt) with "
              "the same options; raise --epochs to train longer.")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Where checkpoints, metrics.csv and the resolved config go. Default: "
              "beside --out (model.pt -> model.checkpoints/).")
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="Stop each epoch after this many steps (quick runs). Default: the whole "
              "train split.")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Time budget: start no new epoch after this many minutes (the best model "
              "so far is kept). Default: no limit.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing --out and start over an earlier run's checkpoints.")
@handle_errors
def train(tiles_dir: str, out_path: str, resume: str | None, checkpoint_dir: str | None,
          overwrite: bool, **options: Any) -> None:
    """Train a building segmentation model on the tile shards in TILES_DIR.

    Validates on the 'val' split after every epoch (pixel IoU, F1, boundary F-score) and
    keeps the best model in --out, a single file with everything `geotiler predict` needs.
    A checkpoint is written every epoch; --resume continues exactly where it stopped.
    Launch with torchrun for several processes or GPUs (only rank 0 writes files).

    \b
    Examples:
      geotiler train tiles/ --out model.pt
      geotiler train tiles/ --out model.pt --arch unet --epochs 30
      geotiler train tiles/ --out model.pt --resume model.checkpoints/last.pt --epochs 40
      torchrun --nproc_per_node 4 -m geotiler train tiles/ --out model.pt --preset full
    """
    import os

    from trainer.loop import train as run_training

    config = TrainConfig(**options)
    progress = sys.stderr.isatty() and logging.getLogger("trainer").isEnabledFor(logging.INFO)
    summary = run_training(tiles_dir, out_path, config, checkpoint_dir=checkpoint_dir,
                           resume=resume, overwrite=overwrite, progress=progress)
    if os.environ.get("RANK", "0") != "0":
        return
    best = (f"best val IoU {summary.best_val_iou:.3f} (epoch {summary.best_epoch})"
            if summary.best_val_iou is not None else "no val tiles: last epoch kept")
    val = summary.val
    last = (f"; last epoch: IoU {val['iou']:.3f}, F1 {val['f1']:.3f}, boundary F "
            f"{val['boundary_f']:.3f}" if val else "")
    skipped = f"; {summary.skipped_tiles} corrupt tile(s) skipped" if summary.skipped_tiles else ""
    click.echo(
        f"trained {config.arch} ({config.preset}) for {summary.epochs_run} epoch(s) on "
        f"{summary.device} x{summary.world_size} at {summary.images_per_second:.1f} img/s in "
        f"{summary.seconds:.0f}s; {best}{last}{skipped}; model: {summary.out_path}; "
        f"metrics: {summary.metrics_path}"
    )


_PREDICT = PredictConfig()


@main.command()
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
              help="Pixels around a block seen when polygonizing (> largest building).")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=_PREDICT.threshold, show_default=True,
              help="Probability at or above which a pixel is building.")
@click.option("--otsu", is_flag=True, default=_PREDICT.otsu,
              help="Pick the building threshold by Otsu's method over the whole raster "
              "(the seed method's rule) instead of --threshold.")
@click.option("--window", type=click.Choice(WINDOW_KINDS), default=_PREDICT.window,
              show_default=True, help="Blending window of overlapping predictions.")
@click.option("--simplify", type=click.FloatRange(min=0), default=_PREDICT.simplify,
              show_default=True, help="Polygon simplification tolerance in metres (0: none).")
@click.option("--min-area", type=click.FloatRange(min=0), default=_PREDICT.min_area,
              show_default=True, help="Drop polygons smaller than this many m².")
@click.option("--regularize/--no-regularize", default=_PREDICT.regularize, show_default=True,
              help="Square the corners of nearly rectangular buildings.")
@click.option("--device", type=click.Choice(PREDICT_DEVICES), default=_PREDICT.device,
              show_default=True, help="Where the model runs ('auto': CUDA when available).")
@click.option("--probabilities/--no-probabilities", default=_PREDICT.probabilities,
              show_default=True, help="Also write the probability GeoTIFF.")
@click.option("--compress", type=click.Choice(list(COG_COMPRESSION)), default=_PREDICT.compress,
              show_default=True,
              help="Compression of the output GeoTIFFs (deflate for GDAL older than 2.3).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a progress bar.")
@scheduler_options
@handle_errors
def predict(raster: str, model_path: str, out: str, raster_out: str | None, scheduler: str,
            workers: int | None, progress: bool, **options: Any) -> None:
    """Predict building polygons on RASTER with a trained model.

    The raster is read block by block at the model's GSD (any size, any CRS) and
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

    config = PredictConfig(**options)
    with open_client(scheduler, workers) as client:
        report = run_predict(raster, model_path, out, config, raster_out=raster_out,
                             client=client, workers=workers,
                             progress=progress and log.isEnabledFor(logging.INFO))
    click.echo(
        f"{report.buildings} buildings ({report.building_fraction:.1%} of the valid area) "
        f"from {report.windows_run} windows on a {report.grid[0]} x {report.grid[1]} px grid "
        f"at {report.gsd:g} m in {report.seconds:.1f}s"
        + (f" (Otsu threshold {report.threshold:.3f})" if config.otsu else "")
        + f"; wrote {', '.join(report.outputs)}"
    )


@main.command()
@click.argument("pred", type=click.Path(path_type=str))
@click.argument("truth", type=click.Path(path_type=str))
@click.option("--raster", default=None, type=click.Path(path_type=str),
              help="Grid for pixel scores when PRED is polygons. Default: the "
              "{stem}_mask.tif that predict wrote beside PRED, if there.")
@click.option("--out", "-o", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Also write the metrics as JSON to this file.")
@click.option("--tolerance", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Boundary F-score tolerance in metres.")
@click.option("--iou-threshold", type=click.FloatRange(0, 1, min_open=True), default=0.5,
              show_default=True, help="IoU at which a predicted building matches a true one.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@handle_errors
def evaluate(pred: str, truth: str, raster: str | None, out: str | None, tolerance: float,
             iou_threshold: float, overwrite: bool) -> None:
    """Score predicted buildings PRED (mask GeoTIFF or polygon layer) against TRUTH
    footprints (any vector format and CRS).

    Prints pixel IoU/precision/recall/F1, per-building precision/recall/F1 (one-to-one
    matches at IoU >= 0.5, the SpaceNet metric), the boundary F-score and the seed
    method's four scores.

    \b
    Example:
      geotiler evaluate buildings.gpkg truth.gpkg --out metrics.json
    """
    import os

    from geotiler.evaluate import evaluate as run_evaluation
    from geotiler.evaluate import save_report

    if out is not None and os.path.exists(out) and not overwrite:
        raise click.ClickException(f"{out} already exists; use --overwrite to replace it")
    report = run_evaluation(pred, truth, raster, tolerance=tolerance,
                            iou_threshold=iou_threshold)
    click.echo(report.format_table())
    if out is not None:
        save_report(report, out, overwrite=overwrite)
        click.echo(f"metrics written to {out}")


@main.command()
@click.option("--out", "-o", "out_dir", default="demo", show_default=True,
              type=click.Path(file_okay=False, path_type=str),
              help="Folder for the tiles, model, predictions, metrics and quick-look.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=3.0,
              show_default=True, help="Training time budget (the best epoch is kept).")
@click.option("--arch", type=click.Choice(["unet", "pix2pix"]), default="unet",
              show_default=True, help="Model to train.")
@click.option("--raster", default=None, type=click.Path(path_type=str),
              help="Use this GeoTIFF instead of the sample scene (with --footprints).")
@click.option("--footprints", "-f", default=None, type=click.Path(path_type=str),
              help="Footprints of --raster.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of split and model.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier demo in --out.")
@handle_errors
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
    from pathlib import Path

    from pipelines.demo import DemoConfig, run_demo
    from trainer.config import Arch

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

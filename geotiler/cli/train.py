"""``geotiler train``: tile shards -> a building segmentation model file.

Options take their defaults from :class:`trainer.config.TrainConfig` (``--preset`` names a
row of :data:`trainer.config.PRESETS`); the command builds that config and hands it to
:func:`trainer.loop.train`. torch is imported only when the command runs.
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
)
from trainer.config import ARCHS, DEFAULT_WALL_WEIGHT, PRESET_NAMES, PRESETS, RECONS, TrainConfig

_TRAIN = TrainConfig()


def _preset_help() -> str:
    return "; ".join(
        f"{name}: " + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in values.items())
        for name, values in PRESETS.items()
    )


@click.command()
@click.argument("tiles_dirs", nargs=-1, required=True, type=click.Path(path_type=str),
                metavar="TILES_DIR...")
@click.option("--out", "-o", "out_path", required=True,
              type=click.Path(dir_okay=False, path_type=str),
              help="Model file to write (the best epoch by val IoU), e.g. model.pt.")
@click.option("--arch", type=click.Choice(ARCHS), default=_TRAIN.arch, show_default=True,
              help="'pix2pix': U-Net generator + PatchGAN discriminator, cGAN + lambda x "
              "reconstruction loss (Isola et al.; see --recon); 'unet': the same U-Net alone "
              "with BCE + Dice loss.")
@click.option("--preset", type=click.Choice(PRESET_NAMES), default=_TRAIN.preset,
              show_default=True,
              help=f"Network size and batch size ({_preset_help()}). 'small' trains in "
              "minutes on a CPU; 'full' is the pix2pix paper's network (for a GPU). "
              "--ngf/--ndf/--num-downs/--batch-size override it.")
@click.option("--epochs", type=click.IntRange(min=1), default=_TRAIN.epochs, show_default=True,
              help="The most passes over the training tiles (the learning rate decays "
              "linearly to zero over the second half of those that fit --max-minutes).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Tiles per step and process. Default: the preset's.")
@click.option("--lr", type=Finite(min=0, min_open=True), default=_TRAIN.lr,
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
@click.option("--full-res", type=click.IntRange(min=0), default=_TRAIN.full_res,
              show_default=True, metavar="CHANNELS",
              help="Channels of a branch at the input's resolution (the paper's U-Net has "
              "none: its first layer down-samples and its last up-samples). 0: none.")
@click.option("--wall-weight", type=Finite(min=0), default=_TRAIN.wall_weight,
              help="Extra loss weight on the outline pixels between touching buildings "
              "(U-Net's border weights), so that wall-sharing houses come apart. 0: off. "
              f"Default: {DEFAULT_WALL_WEIGHT:g} for the U-Net on footprint + contour tiles, "
              "else 0.")
@click.option("--recon", type=click.Choice(RECONS), default=_TRAIN.recon, show_default=True,
              help="pix2pix reconstruction term: bce-dice (learns buildings where they are a "
              "few % of pixels) or l1 (the paper's, to reproduce the seed method).")
@click.option("--lambda-recon", "--lambda-l1", "lambda_recon", type=Finite(min=0),
              default=_TRAIN.lambda_recon, show_default=True,
              help="Weight of the reconstruction term of the pix2pix generator loss.")
@click.option("--augment/--no-augment", default=_TRAIN.augment, show_default=True,
              help="Augment training tiles: random flips and 90-degree rotations, mild "
              "colour jitter, and the zoom, blur and noise set below.")
@click.option("--scale-jitter", type=Finite(min=0), default=_TRAIN.scale_jitter,
              show_default=True,
              help="Zoom training tiles by up to 1 + S (and down to 1 / (1 + S)), so "
              "buildings are seen at several ground resolutions. 0: off.")
@click.option("--blur", type=Finite(min=0), default=_TRAIN.blur, show_default=True,
              help="Largest Gaussian blur sigma in px, on half the training tiles. 0: off.")
@click.option("--noise", type=Finite(min=0), default=_TRAIN.noise, show_default=True,
              help="Std of Gaussian noise on half the training tiles, in units of each "
              "band's std. 0: off.")
@click.option("--workers", type=click.IntRange(min=0), default=_TRAIN.workers,
              help="Data loading processes per training process (0: load in-process). "
              "Default: 0 on CPU (loader processes would compete with torch for the cores), "
              "up to 4 with CUDA.")
@click.option("--seed", type=int, default=_TRAIN.seed, show_default=True,
              help="Seed of weights, data order and augmentation (CPU runs repeat exactly).")
@device_option(_TRAIN.device, "'auto' uses the GPU when CUDA is available.")
@precision_option(_TRAIN.precision, "Measured 1.7x faster on CPU at 256 px.")
@click.option("--init", type=click.Path(path_type=str), default=_TRAIN.init, metavar="MODEL",
              help="Start from the generator weights of this model file, e.g. one "
              "pretrained on other scenes, or 'synthetic': the weights shipped with "
              "geotiler, pretrained on our synthetic scenes tiled at 1 m (RGB tiles with "
              "footprint + contour masks, small U-Net). The run trains that "
              "file's network (its --ngf and --num-downs unless given); the new tiles' "
              "normalization is used. Weights ignored with --resume.")
@click.option("--resume", type=click.Path(path_type=str), default=None, metavar="CHECKPOINT",
              help="Continue a run from its checkpoint (e.g. model.checkpoints/last.pt) with "
              "the same options; raise --epochs to train longer.")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Where checkpoints, metrics.csv and the resolved config go. Default: "
              "beside --out (model.pt -> model.checkpoints/).")
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="Stop each epoch after this many steps (quick runs). Default: the whole "
              "train split.")
@click.option("--max-minutes", type=Finite(min=0), default=_TRAIN.max_minutes,
              show_default=True, callback=lambda _ctx, _param, v: v or None,
              help="Time budget: train as many epochs (up to --epochs) as fit in this many "
              "minutes, with the learning-rate schedule fitted to them; the best model is "
              "kept. 0: no time limit (--epochs only).")
@overwrite_option("Replace an existing --out (when the new run ends: until then its best "
                  "epoch waits in the checkpoint folder) and start over an earlier run's "
                  "checkpoints.")
@progress_option
def train(tiles_dirs: tuple[str, ...], out_path: str, resume: str | None,
          checkpoint_dir: str | None, overwrite: bool, progress: bool,
          **options: Any) -> None:
    """Train a building segmentation model on the tile shards in TILES_DIR (one or more
    tile datasets, e.g. one per scene, with the same bands, tile size and GSD; their
    normalization is pooled).

    Validates on the 'val' split after every epoch (pixel IoU, F1, boundary F-score) and
    keeps the best model in --out, a single file with everything `geotiler predict` needs.
    A checkpoint (last.pt) is written after the first and last epochs, each new best, and
    otherwise at most once a minute; --resume continues exactly from it.
    Launch with torchrun for several processes or GPUs (only rank 0 writes files).

    \b
    Examples:
      geotiler train tiles/ --out model.pt
      geotiler train tiles/ --out model.pt --arch unet --epochs 30 --max-minutes 0
      geotiler train tiles_boston/ tiles_kampala/ --out model.pt --max-minutes 60
      geotiler train tiles/ --out model.pt --init synthetic --epochs 150   # RGB ~1 m, 3x sooner
      geotiler train tiles/ --out model.pt --resume model.checkpoints/last.pt --epochs 40
      torchrun --nproc_per_node 4 -m geotiler train tiles/ --out model.pt --preset full
    """
    import os

    from trainer.loop import train as run_training

    config = TrainConfig(**options)
    progress = progress and logging.getLogger("trainer").isEnabledFor(logging.INFO)
    summary = run_training(list(tiles_dirs), out_path, config, checkpoint_dir=checkpoint_dir,
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
        f"trained {config.arch} ({summary.network}) for {summary.epochs_run} epoch(s) on "
        f"{summary.device} x{summary.world_size} ({summary.precision}) at "
        f"{summary.images_per_second:.1f} img/s in "
        f"{summary.seconds:.0f}s; {best}{last}{skipped}; model: {summary.out_path}; "
        f"metrics: {summary.metrics_path}"
    )

"""The training loop: pix2pix (cGAN + reconstruction) or a plain U-Net (BCE + Dice) over tiles.

:func:`train` is the one entry point. It runs in one process, or in each process of a
``torchrun`` launch (:mod:`trainer.distributed`); only rank 0 writes files.

Each epoch: set the epoch's learning rate, train on the ``train`` split
(:func:`trainer.steps.train_epoch`), validate on ``val`` (:func:`trainer.validate.validate`),
keep the model with the best val IoU in the model file (:mod:`trainer.modelfile`; staged
beside the checkpoint while the run replaces an older one), append a row to ``metrics.csv``
and, when due (:func:`trainer.checkpoint.checkpoint_due`), write the checkpoint that
``resume`` continues from exactly (:mod:`trainer.checkpoint`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from geotiler import __version__
from geotiler.errors import ConfigError, DatasetError, GeotilerError
from geotiler.io import given_twice
from geotiler.progress import ProgressMeter, progress_mode
from geotiler.tiles.schema import DatasetInfo, load_dataset_info, pool_datasets
from geotiler.tiles.shards import list_shards
from trainer import budget, checkpoint, checks, rundir
from trainer.config import TrainConfig
from trainer.data import ShardDataset, make_loader
from trainer.distributed import (
    Dist,
    barrier,
    setup_distributed,
    teardown_distributed,
)
from trainer.losses import GANLoss
from trainer.modelfile import ModelSpec, init_weights, save_model, with_init_network
from trainer.networks import count_parameters
from trainer.pretrained import resolve_init
from trainer.steps import build_models, set_lr, train_epoch
from trainer.validate import validate

log = logging.getLogger(__name__)


@dataclass
class TrainSummary:
    """What a training run did."""

    out_path: Path
    checkpoint_dir: Path
    metrics_path: Path
    epochs: int  # epochs completed, resumed ones included
    epochs_run: int  # epochs run by this call
    best_epoch: int | None  # 1-based; None without validation tiles
    best_val_iou: float | None
    val: dict[str, float] = field(default_factory=dict)  # scores of the last epoch
    train_loss: dict[str, float] = field(default_factory=dict)
    images: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    skipped_tiles: int = 0
    device: str = "cpu"
    precision: str = "fp32"  # resolved: fp32 or bf16
    world_size: int = 1
    resumed_from: int | None = None
    parameters: int = 0
    network: str = ""  # the generator trained, e.g. "ngf 32, 5 levels" (--init's may differ)


def train(
    tiles_dirs: Path | str | Sequence[Path | str],
    out_path: Path | str,
    config: TrainConfig,
    *,
    checkpoint_dir: Path | str | None = None,
    resume: Path | str | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> TrainSummary:
    """Train on the tiles in ``tiles_dirs`` (one tile dataset or several, e.g. one per
    scene, pooled by :func:`geotiler.tiles.schema.pool_datasets`); the best model (by val
    IoU over all their val tiles) goes to ``out_path``.

    ``resume`` is a checkpoint (or its directory) of an earlier run to continue exactly.
    Raises DatasetError, ConfigError, OutputError or TrainingError (the loss stopped being
    finite: nothing of that epoch is saved) with a message a user can act on.
    """
    ctx = setup_distributed(config.device, config.precision)
    started = time.time()
    try:
        dirs = ([Path(tiles_dirs)] if isinstance(tiles_dirs, (str, Path))
                else [Path(d) for d in tiles_dirs])
        if (twice := given_twice(dirs)) is not None:
            raise ConfigError(f"tile dataset {twice} is given twice: its tiles would count "
                              "double")
        summary = _train(dirs, Path(out_path), config, ctx,
                         Path(checkpoint_dir) if checkpoint_dir else None,
                         Path(resume) if resume else None, overwrite, progress)
        # every rank is past its last collective before any leaves the group: a gloo rank
        # tearing down while its peer still talks to it aborted now and then at exit
        barrier(ctx)
        return summary
    except BaseException as err:  # say how to go on (Ctrl-C, SIGTERM) and tidy up
        after = rundir.after_failure(
            Path(checkpoint_dir) if checkpoint_dir else
            rundir.default_checkpoint_dir(out_path), started,
            remove_empty=checkpoint_dir is None)
        if isinstance(err, KeyboardInterrupt):
            advice = after or "no epoch had finished: rerun the same command"
            err.after = advice  # type: ignore[attr-defined]
        elif isinstance(err, GeotilerError) and after:  # a full disk, say: once mended
            err.args = (f"{err.args[0]}; then {after}", *err.args[1:])
        if isinstance(err, torch.cuda.OutOfMemoryError):
            raise ConfigError(
                f"CUDA ran out of memory at --batch-size {config.effective_batch_size}: "
                "lower --batch-size (or use --preset small / a smaller --ngf)") from None
        raise
    finally:
        teardown_distributed(ctx)


@dataclass
class _Data:
    """The two splits of a run and their loaders."""

    train: ShardDataset
    val: ShardDataset
    train_loader: Any
    val_loader: Any
    workers: int


def _load_data(tiles_dirs: list[Path], info: DatasetInfo, config: TrainConfig,
               ctx: Dist) -> _Data:
    names = ", ".join(str(d) for d in tiles_dirs)
    train_set = ShardDataset(
        [s for d in tiles_dirs for s in list_shards(d, "train")], info, shuffle=True,
        augment=config.augment,
        seed=config.seed, rank=ctx.rank, world_size=ctx.world_size,
        shuffle_buffer=config.shuffle_buffer, jitter=config.jitter,
        scale=config.scale_jitter, blur=config.blur, noise=config.noise,
    )
    if train_set.num_tiles == 0:
        raise DatasetError(
            f"{names} has no train tiles (counts: {info.counts}); re-tile with a larger "
            "train fraction in --split"
        )
    val_set = ShardDataset([s for d in tiles_dirs for s in list_shards(d, "val")], info,
                           rank=ctx.rank,
                           world_size=ctx.world_size)
    if val_set.num_tiles == 0 and ctx.is_main:
        log.warning("%s has no val tiles: training without validation; the model file will "
                    "hold the last epoch's weights", names)
    pin = ctx.device.type == "cuda"
    workers = config.loader_workers(ctx.device.type)
    batch_size = config.effective_batch_size
    return _Data(train_set, val_set, make_loader(train_set, batch_size, workers, pin_memory=pin),
                 make_loader(val_set, batch_size, min(workers, 1), pin_memory=pin), workers)


def _train(
    tiles_dirs: list[Path],
    out_path: Path,
    config: TrainConfig,
    ctx: Dist,
    checkpoint_dir: Path | None,
    resume: Path | None,
    overwrite: bool,
    progress: bool,
) -> TrainSummary:
    start_time = time.perf_counter()
    saved = checkpoint.load_checkpoint(resume) if resume is not None else None  # read once
    config = (checkpoint.resumed_network(config, saved) if saved is not None
              else with_init_network(config)).resolved()  # --init's file unread on resume
    infos = [load_dataset_info(d) for d in tiles_dirs]
    for d, one in zip(tiles_dirs, infos, strict=True):
        checks.check_shards(d, one)
    checks.check_buildings(tiles_dirs, infos)
    if ctx.is_main:
        checks.warn_shared_ground(tiles_dirs)
    info = pool_datasets(infos, [str(d) for d in tiles_dirs])
    if ctx.is_main:
        for other, d in zip(infos[1:], tiles_dirs[1:], strict=True):
            if other.band_names != infos[0].band_names:
                log.warning("band names differ: %s has %s, %s has %s (bands are used by "
                            "position)", tiles_dirs[0], infos[0].band_names, d,
                            other.band_names)
    config = checks.with_wall_weight(config, info)
    model_config = config.model_config(info.num_bands, len(info.mask_channels))
    model_config.check_tile_size(info.tile_size)
    ckpt_dir = checkpoint_dir or rundir.default_checkpoint_dir(out_path)
    rundir.check_outputs(out_path, ckpt_dir, resume, overwrite, tiles_dirs)
    target = rundir.model_target(out_path, ckpt_dir, resume)
    data = _load_data(tiles_dirs, info, config, ctx)

    checkpoint.seed_everything(config.seed)
    models = build_models(model_config, config, ctx)
    if config.init is not None and resume is None:
        start = init_weights(models.g, config.init, model_config)
        if ctx.is_main:
            log.info("generator weights from %s", resolve_init(config.init))
            checks.warn_init_mismatch(config.init, start.dataset, info)
    elif config.init is not None and ctx.is_main:
        log.warning("--init %s is ignored with --resume: the checkpoint's weights continue",
                    config.init)
    gan_loss = GANLoss().to(ctx.device)
    parameters = count_parameters(models.g) + (count_parameters(models.d) if models.d else 0)
    state = checkpoint.Progress()

    def spec(val: dict[str, float], loss: dict[str, float]) -> ModelSpec:
        training = _training_summary(state, val, loss, config, ctx, tiles_dirs,
                                     time.perf_counter() - start_time)
        return ModelSpec(dataset=info, model=model_config, training=training,
                         geotiler_version=__version__)

    if resume is not None and saved is not None:
        state = checkpoint.resume(saved, resume, models, info, config, ctx)
        del saved  # the optimizer states are copied: free the file's tensors
        if ctx.is_main and state.history and state.best_epoch == state.epoch:
            # the checkpoint is of the best epoch, whose model file a failure or interrupt
            # between the two saves may have missed: write it again from these weights
            save_model(target, models.g, spec(*rundir.row_scores(state.history[-1])))
        rundir.carry_best(state, out_path, target, resume)
    start_epoch = state.epoch

    writer = None
    if ctx.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        writer = _tensorboard(ckpt_dir / "tensorboard")
        log.info("training %s (ngf %d, %d levels, %.2fM parameters) on %d train / %d val "
                 "tiles, %d process(es) on %s", model_config.arch, model_config.ngf,
                 model_config.num_downs, parameters / 1e6,
                 data.train.num_tiles, data.val.num_tiles, ctx.world_size, ctx.device)
        log.info("precision: %s (--precision %s)", ctx.precision, config.precision)

    tiles_here = data.train.tiles_of_rank(data.workers)
    expected_steps = math.ceil(tiles_here / config.effective_batch_size)
    if config.max_steps:
        expected_steps = min(expected_steps, config.max_steps)
    skipped = run_images = 0
    run_seconds = 0.0
    last_val: dict[str, float] = {}
    last_loss: dict[str, float] = {}
    last_save: float | None = None  # when this run last wrote last.pt
    loop_start = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        epoch_start = time.perf_counter()
        lr = set_lr(models, epoch, config, state.planned)
        data.train.set_epoch(epoch)
        with ProgressMeter(expected_steps, f"epoch {epoch + 1}/{config.epochs}", "step",
                           mode=progress_mode(progress and ctx.is_main), summary=False) as bar:
            stats = train_epoch(models, gan_loss, data.train_loader, config, ctx, bar,
                                epoch=epoch)
        train_seconds = time.perf_counter() - epoch_start
        capped = ctx.distributed or (config.max_steps is not None
                                     and stats.steps_here >= config.max_steps)
        train_skipped = 0 if capped else max(0, tiles_here - stats.images_here)

        val_scores: dict[str, float] = {}
        val_skipped = 0
        if data.val.num_tiles:
            val_scores, val_seen = validate(models.g, data.val_loader, model_config,
                                            info.target, config, ctx)
            val_skipped = max(0, data.val.num_tiles - val_seen)
        skipped = max(skipped, train_skipped + val_skipped)

        state.epoch = epoch + 1
        state.images += stats.images
        run_images += stats.images
        run_seconds += train_seconds
        rate = stats.images / max(train_seconds, 1e-9)
        last_val, last_loss = val_scores, stats.losses
        improved = bool(val_scores) and (state.best_iou is None
                                         or val_scores["iou"] > state.best_iou)
        if improved:
            state.best_iou, state.best_epoch = val_scores["iou"], epoch + 1
        row: dict[str, Any] = {
            "epoch": epoch + 1, "steps": stats.steps, "images": stats.images, "lr": lr,
            **last_loss, **{f"val_{k}": v for k, v in val_scores.items()},
            "img_per_s": rate, "seconds": time.perf_counter() - epoch_start,
        }
        state.history.append(row)

        if ctx.is_main:
            _log_epoch(row, writer, val_scores, last_loss, config, improved)
        budget.replan(config, state, epoch + 1 - start_epoch, loop_start, start_time, ctx)
        stop = budget.stop_message(config, state, start_time, ctx)
        new_model = improved or not val_scores
        if checkpoint.checkpoint_due(last_save, new_model,
                                     stop is not None or state.epoch >= config.epochs, ctx):
            checkpoint.save_checkpoint(ckpt_dir, models, state, config, info, ctx)
            if ctx.is_main:  # after it: a failed first save leaves an older run's files
                if last_save is None:
                    rundir.write_run_config(ckpt_dir, {
                        "config": config.to_dict(), "model": model_config.to_dict(),
                        "tiles": [str(d) for d in tiles_dirs], "world_size": ctx.world_size,
                        "device": str(ctx.device)})
                rundir.write_metrics_csv(ckpt_dir / rundir.METRICS_NAME,
                                         state.history)  # the epochs last.pt holds
            last_save = time.perf_counter()
        if ctx.is_main and new_model:  # after its checkpoint, never ahead of it
            save_model(target, models.g, spec(val_scores, last_loss))
        barrier(ctx)
        if stop is not None:
            if ctx.is_main and stop:
                log.info("%s", stop)
            break

    if writer is not None:
        writer.close()
    if ctx.is_main and target != out_path:
        rundir.publish_staged(target, out_path)
    if skipped and ctx.is_main:
        log.warning("%d corrupt tile(s) were skipped in each epoch (see the warnings above)",
                    skipped)
    return TrainSummary(
        out_path=out_path, checkpoint_dir=ckpt_dir,
        metrics_path=ckpt_dir / rundir.METRICS_NAME,
        epochs=state.epoch, epochs_run=max(0, state.epoch - start_epoch),
        best_epoch=state.best_epoch, best_val_iou=state.best_iou, val=last_val,
        train_loss=last_loss, images=run_images, seconds=time.perf_counter() - start_time,
        images_per_second=run_images / run_seconds if run_seconds else 0.0,
        skipped_tiles=skipped, device=str(ctx.device), precision=ctx.precision,
        world_size=ctx.world_size,
        resumed_from=start_epoch if resume is not None else None, parameters=parameters,
        network=f"ngf {model_config.ngf}, {model_config.num_downs} levels",
    )


def _training_summary(state: checkpoint.Progress, val: dict[str, float], loss: dict[str, float],
                      config: TrainConfig, ctx: Dist, tiles_dirs: list[Path],
                      seconds: float) -> dict[str, Any]:
    """The ``training`` entry of the model file's spec."""
    return {
        "arch": config.arch, "preset": config.preset, "epochs": state.epoch,
        "best_epoch": state.best_epoch, "best_val_iou": state.best_iou, "val": val,
        "train_loss": loss, "images": state.images, "batch_size": config.effective_batch_size,
        "lr": config.effective_lr, "seed": config.seed, "world_size": ctx.world_size,
        "device": str(ctx.device), "precision": ctx.precision,
        "tiles": [str(d) for d in tiles_dirs],
        "seconds": round(seconds, 1),
    }


def _log_epoch(row: dict[str, Any], writer: Any, val: dict[str, float],
               loss: dict[str, float], config: TrainConfig, improved: bool) -> None:
    """An epoch's row to tensorboard (if installed) and one log line."""
    epoch = int(row["epoch"])
    if writer is not None:
        for k, v in row.items():
            if k != "epoch" and isinstance(v, int | float):
                writer.add_scalar(k, v, epoch)
        writer.flush()
    val_text = (f" | val IoU {val['iou']:.3f} F1 {val['f1']:.3f} BF {val['boundary_f']:.3f}"
                if val else "")
    loss_text = " ".join(f"{k} {v:.4f}" for k, v in loss.items())
    log.info("epoch %d/%d: %s%s | %.1f img/s%s", epoch, config.epochs, loss_text, val_text,
             row["img_per_s"], " (best)" if improved else "")


def _tensorboard(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.debug("tensorboard is not installed; metrics go to metrics.csv only")
        return None
    return SummaryWriter(str(log_dir))

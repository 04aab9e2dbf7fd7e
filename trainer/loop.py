"""The training loop: pix2pix (cGAN + L1) or a plain U-Net (BCE + Dice) over tile shards.

:func:`train` is the one entry point. It runs in one process, or in each process of a
``torchrun`` launch (detected from ``RANK``/``WORLD_SIZE``; gloo on CPU, NCCL on GPU) with
the models wrapped in ``DistributedDataParallel``; only rank 0 writes files.

Each epoch: train on the ``train`` split, validate on ``val`` (pixel IoU, precision,
recall, F1 and boundary F-score of the building mask), keep the model with the best val
IoU in the model file, append a row to ``metrics.csv`` and write a checkpoint
(``last.pt``: models, optimizers, schedulers, RNG states, epoch) that ``resume`` continues
from exactly. The pix2pix update alternates D and G as junyanz ``pix2pix_model.py`` does.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from geotiler import __version__
from geotiler.atomic import atomic_path
from geotiler.errors import ConfigError, DatasetError, OutputError
from geotiler.tiles.schema import DatasetInfo, load_dataset_info
from geotiler.tiles.shards import list_shards
from trainer.config import ModelConfig, TrainConfig
from trainer.data import ShardDataset, make_loader
from trainer.losses import GANLoss, bce_dice_loss, l1_loss
from trainer.metrics import SegmentationMeter
from trainer.modelfile import ModelSpec, save_model
from trainer.networks import build_discriminator, build_generator, count_parameters

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "geotiler-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "last.pt"
METRICS_NAME = "metrics.csv"
CONFIG_NAME = "train_config.json"


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
    world_size: int = 1
    resumed_from: int | None = None
    parameters: int = 0


# --- distributed ----------------------------------------------------------------------------


@dataclass
class Dist:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise ConfigError(f"environment variable {name} is not an integer") from None


def setup_distributed(device: str) -> Dist:
    """Pick the device and join the process group when launched by torchrun."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available; use "
                          "--device cpu (or auto)")
    use_cuda = device == "cuda" or (device == "auto" and cuda)
    if use_cuda:
        dev = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
        owns = True
    if world > 1 and not use_cuda:
        local_world = _env_int("LOCAL_WORLD_SIZE", world)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return Dist(rank, world, local_rank, dev, owns)


def _all_reduce(tensor: torch.Tensor, ctx: Dist, op: Any = None) -> torch.Tensor:
    if not ctx.distributed:
        return tensor
    backend_tensor = tensor.to(ctx.device)
    dist.all_reduce(backend_tensor, op=op or dist.ReduceOp.SUM)
    return backend_tensor.cpu()


# --- RNG state ------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Torch, CUDA, numpy and Python RNG states as tensors and plain values."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError, IndexError):
            torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


# --- models and optimizers ------------------------------------------------------------------


@dataclass
class Models:
    """The networks being trained, their optimizers and LR schedules."""

    generator: nn.Module
    opt_g: torch.optim.Optimizer
    sched_g: torch.optim.lr_scheduler.LambdaLR
    discriminator: nn.Module | None = None
    opt_d: torch.optim.Optimizer | None = None
    sched_d: torch.optim.lr_scheduler.LambdaLR | None = None

    @property
    def g(self) -> nn.Module:
        """The generator itself (unwrapped from DDP)."""
        return _unwrap(self.generator)

    @property
    def d(self) -> nn.Module | None:
        return None if self.discriminator is None else _unwrap(self.discriminator)

    def schedulers(self) -> list[torch.optim.lr_scheduler.LambdaLR]:
        return [s for s in (self.sched_g, self.sched_d) if s is not None]


def _unwrap(net: nn.Module) -> nn.Module:
    return net.module if isinstance(net, DistributedDataParallel) else net


def _budget_spent(config: TrainConfig, start_time: float, ctx: Dist) -> bool:
    """Whether ``--max-minutes`` is used up; every rank takes rank 0's answer."""
    if config.max_minutes is None:
        return False
    spent = time.perf_counter() - start_time >= 60 * config.max_minutes
    flag = torch.tensor([int(spent)], dtype=torch.int64, device=ctx.device)
    if ctx.distributed:
        dist.broadcast(flag, src=0)
    return bool(flag.item())


def lr_factor(epochs: int, decay: bool) -> Callable[[int], float]:
    """pix2pix's schedule: constant for the first half of the epochs, then linear to ~0."""
    constant = epochs - epochs // 2
    decaying = epochs // 2

    def factor(epoch: int) -> float:
        if not decay:
            return 1.0
        return 1.0 - max(0, epoch + 1 - constant) / float(decaying + 1)

    return factor


def build_models(model_config: ModelConfig, config: TrainConfig, ctx: Dist) -> Models:
    """Networks (initialised N(0, 0.02)), Adam optimizers and schedules, DDP-wrapped if needed."""
    factor = lr_factor(config.epochs, config.lr_decay)
    betas = (config.beta1, 0.999)
    g: nn.Module = build_generator(model_config).to(ctx.device)
    opt_g = torch.optim.Adam(g.parameters(), lr=config.effective_lr, betas=betas)
    models = Models(g, opt_g, torch.optim.lr_scheduler.LambdaLR(opt_g, factor))
    if model_config.arch == "pix2pix":
        d: nn.Module = build_discriminator(model_config).to(ctx.device)
        models.opt_d = torch.optim.Adam(d.parameters(), lr=config.effective_lr, betas=betas)
        models.sched_d = torch.optim.lr_scheduler.LambdaLR(models.opt_d, factor)
        models.discriminator = d
    if ctx.distributed:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        models.generator = DistributedDataParallel(models.generator, device_ids=ids)
        if models.discriminator is not None:
            models.discriminator = DistributedDataParallel(models.discriminator, device_ids=ids)
    return models


def _set_requires_grad(net: nn.Module | None, flag: bool) -> None:
    if net is not None:
        for p in net.parameters():
            p.requires_grad_(flag)


# --- steps ----------------------------------------------------------------------------------


def _autocast(ctx: Dist, config: TrainConfig) -> contextlib.AbstractContextManager[Any]:
    if ctx.device.type == "cuda" and config.amp and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def pix2pix_step(
    models: Models,
    gan_loss: GANLoss,
    image: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    config: TrainConfig,
    ctx: Dist,
) -> dict[str, torch.Tensor]:
    """One alternating update: D on (real, fake) pairs, then G on GAN + lambda * L1.

    ``target`` is in [0, 1] and is mapped to [-1, 1] for the tanh generator.
    """
    if models.discriminator is None or models.opt_d is None:
        raise RuntimeError("pix2pix needs a discriminator")
    real_b = target * 2.0 - 1.0
    with _autocast(ctx, config):
        fake_b = models.generator(image)

    # D: fake pairs then real pairs; gradients accumulate (one all-reduce under DDP).
    d, d_net = models.discriminator, models.d
    _set_requires_grad(d_net, True)
    models.opt_d.zero_grad(set_to_none=True)
    no_sync = d.no_sync() if isinstance(d, DistributedDataParallel) else contextlib.nullcontext()
    with no_sync:
        with _autocast(ctx, config):
            pred_fake = d(torch.cat([image, fake_b.detach()], 1))
        loss_d_fake = gan_loss(pred_fake, False, valid)
        (loss_d_fake * 0.5).backward()
    with _autocast(ctx, config):
        pred_real = d(torch.cat([image, real_b], 1))
    loss_d_real = gan_loss(pred_real, True, valid)
    (loss_d_real * 0.5).backward()
    models.opt_d.step()

    # G: fool D (D frozen, used unwrapped so DDP sees no second forward) and stay near L1.
    _set_requires_grad(d_net, False)
    models.opt_g.zero_grad(set_to_none=True)
    assert d_net is not None
    with _autocast(ctx, config):
        pred_fake = d_net(torch.cat([image, fake_b], 1))
    loss_g_gan = gan_loss(pred_fake, True, valid)
    loss_g_l1 = l1_loss(fake_b, real_b, valid) * config.lambda_l1
    (loss_g_gan + loss_g_l1).backward()
    models.opt_g.step()
    _set_requires_grad(d_net, True)
    return {
        "loss_g": (loss_g_gan + loss_g_l1).detach(),
        "loss_g_gan": loss_g_gan.detach(),
        "loss_g_l1": loss_g_l1.detach(),
        "loss_d": ((loss_d_fake + loss_d_real) * 0.5).detach(),
    }


def unet_step(
    models: Models,
    image: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    config: TrainConfig,
    ctx: Dist,
) -> dict[str, torch.Tensor]:
    """One update of the plain U-Net on BCE + Dice."""
    models.opt_g.zero_grad(set_to_none=True)
    with _autocast(ctx, config):
        logits = models.generator(image)
    loss = bce_dice_loss(logits, target, valid)
    loss.backward()
    models.opt_g.step()
    return {"loss": loss.detach()}


def probabilities(net: nn.Module, image: torch.Tensor, arch: str) -> torch.Tensor:
    """Generator outputs as probabilities in [0, 1] (tanh -> affine, logits -> sigmoid)."""
    out = net(image).float()
    return ((out + 1.0) * 0.5).clamp(0.0, 1.0) if arch == "pix2pix" else torch.sigmoid(out)


# --- validation -----------------------------------------------------------------------------


def validate(
    models: Models,
    loader: Any,
    info: DatasetInfo,
    arch: str,
    config: TrainConfig,
    ctx: Dist,
) -> tuple[dict[str, float], int]:
    """Scores of the generator on the val loader (summed over processes), and tiles seen."""
    meter = SegmentationMeter(info.target, config.threshold, config.boundary_tolerance)
    net = models.g
    net.eval()
    with torch.inference_mode():
        for batch in loader:
            image = batch["image"].to(ctx.device, non_blocking=True)
            with _autocast(ctx, config):
                prob = probabilities(net, image, arch)
            meter.update(prob, batch["target"], batch["valid"])
    net.train()
    counts = _all_reduce(meter.to_tensor(), ctx)
    meter.load_tensor(counts)
    seen = int(_all_reduce(torch.tensor([meter.images], dtype=torch.int64), ctx)[0])
    return meter.scores(), seen


# --- checkpoints ----------------------------------------------------------------------------


def _dataset_identity(info: DatasetInfo) -> dict[str, Any]:
    return {
        "bands": info.bands,
        "band_names": info.band_names,
        "dtype": info.dtype,
        "tile_size": info.tile_size,
        "mask_channels": info.mask_channels,
        "target": info.target,
    }


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save through a temporary name, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`train` (never runs code from the file)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise ConfigError(f"--resume: checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"--resume: {path} is not a readable checkpoint: {first[:200]}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"--resume: {path} is not a geotiler training checkpoint")
    if state.get("format_version", 0) > CHECKPOINT_VERSION:
        raise ConfigError(f"--resume: {path} was written by a newer geotiler; upgrade geotiler")
    return state


def _check_resume(state: dict[str, Any], info: DatasetInfo, model_config: ModelConfig,
                  path: Path) -> None:
    saved_data = json.loads(state["dataset"])
    current = _dataset_identity(info)
    diffs = [f"{k}: checkpoint {saved_data.get(k)!r}, dataset {v!r}"
             for k, v in current.items() if saved_data.get(k) != v]
    if diffs:
        raise ConfigError(
            f"--resume: checkpoint {path} was trained on different tiles ({'; '.join(diffs)}); "
            "resume with the dataset it was trained on, or start a new run"
        )
    saved_model = json.loads(state["model"])
    now = model_config.to_dict()
    diffs = [f"{k}: checkpoint {saved_model.get(k)!r}, now {v!r}"
             for k, v in now.items() if saved_model.get(k) != v]
    if diffs:
        raise ConfigError(
            f"--resume: checkpoint {path} holds a different network ({'; '.join(diffs)}); "
            "pass the same --arch/--preset/--ngf/--ndf/--num-downs as the run that wrote it"
        )


def _gather_rng(ctx: Dist) -> list[dict[str, Any]]:
    state = rng_state()
    if not ctx.distributed:
        return [state]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, state)
    return gathered


# --- the run --------------------------------------------------------------------------------


def _write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    fields: list[str] = []
    for row in history:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def _tensorboard(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.debug("tensorboard is not installed; metrics go to metrics.csv only")
        return None
    return SummaryWriter(str(log_dir))


def _batches(loader: Any, ctx: Dist, max_steps: int | None) -> Iterator[dict[str, Any]]:
    """Batches until the loader (of any rank) runs dry or ``max_steps``.

    Under DDP every rank must take the same number of steps, so ranks agree at each step
    (a one-integer all-reduce) whether all of them still have data.
    """
    it = iter(loader)
    steps = 0
    while max_steps is None or steps < max_steps:
        batch = next(it, None)
        if ctx.distributed:
            flag = torch.tensor([0 if batch is None else 1], dtype=torch.int64)
            if int(_all_reduce(flag, ctx, dist.ReduceOp.MIN)[0]) == 0:
                return
        if batch is None:
            return
        steps += 1
        yield batch


def _check_outputs(out_path: Path, ckpt_dir: Path, resume: Path | None, overwrite: bool) -> None:
    if out_path.is_dir():
        raise OutputError(f"--out {out_path} is a directory; give a file name like model.pt")
    if out_path.exists() and not (overwrite or resume):
        raise OutputError(f"--out {out_path} exists; pass --overwrite to replace it")
    last = ckpt_dir / CHECKPOINT_NAME
    if last.exists() and not (overwrite or resume):
        raise OutputError(
            f"{ckpt_dir} holds the checkpoint of an earlier run; pass --resume {last} to "
            "continue it or --overwrite to start over"
        )


def default_checkpoint_dir(out_path: Path | str) -> Path:
    """Checkpoints beside the model file: ``model.pt`` -> ``model.checkpoints/``."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.stem + ".checkpoints")


def train(
    tiles_dir: Path | str,
    out_path: Path | str,
    config: TrainConfig,
    *,
    checkpoint_dir: Path | str | None = None,
    resume: Path | str | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> TrainSummary:
    """Train on the tiles in ``tiles_dir``; the best model (by val IoU) goes to ``out_path``.

    ``resume`` is a checkpoint (or its directory) of an earlier run to continue exactly.
    Raises DatasetError, ConfigError or OutputError with a message a user can act on.
    """
    ctx = setup_distributed(config.device)
    try:
        return _train(Path(tiles_dir), Path(out_path), config, ctx,
                      Path(checkpoint_dir) if checkpoint_dir else None,
                      Path(resume) if resume else None, overwrite, progress)
    except torch.cuda.OutOfMemoryError:
        raise ConfigError(
            f"CUDA ran out of memory at --batch-size {config.effective_batch_size}: lower "
            "--batch-size (or use --preset small / a smaller --ngf)"
        ) from None
    finally:
        if ctx.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(
    tiles_dir: Path,
    out_path: Path,
    config: TrainConfig,
    ctx: Dist,
    checkpoint_dir: Path | None,
    resume: Path | None,
    overwrite: bool,
    progress: bool,
) -> TrainSummary:
    start_time = time.perf_counter()
    config = config.resolved()
    batch_size = config.effective_batch_size
    info = load_dataset_info(tiles_dir)
    train_shards = list_shards(tiles_dir, "train")
    val_shards = list_shards(tiles_dir, "val")
    model_config = config.model_config(info.num_bands, len(info.mask_channels))
    model_config.check_tile_size(info.tile_size)
    ckpt_dir = checkpoint_dir or default_checkpoint_dir(out_path)
    _check_outputs(out_path, ckpt_dir, resume, overwrite)

    train_set = ShardDataset(
        train_shards, info, shuffle=True, augment=config.augment, seed=config.seed,
        rank=ctx.rank, world_size=ctx.world_size, shuffle_buffer=config.shuffle_buffer,
        jitter=config.jitter,
    )
    if train_set.num_tiles == 0:
        raise DatasetError(
            f"{tiles_dir} has no train tiles (counts: {info.counts}); re-tile with a larger "
            "train fraction in --split"
        )
    val_set = ShardDataset(val_shards, info, rank=ctx.rank, world_size=ctx.world_size)
    if val_set.num_tiles == 0 and ctx.is_main:
        log.warning("%s has no val tiles: training without validation; the model file will "
                    "hold the last epoch's weights", tiles_dir)
    pin = ctx.device.type == "cuda"
    workers = config.loader_workers(ctx.device.type)
    train_loader = make_loader(train_set, batch_size, workers, pin_memory=pin)
    val_loader = make_loader(val_set, batch_size, min(workers, 1), pin_memory=pin)

    seed_everything(config.seed)
    models = build_models(model_config, config, ctx)
    gan_loss = GANLoss().to(ctx.device)
    parameters = count_parameters(models.g) + (count_parameters(models.d) if models.d else 0)

    start_epoch = 0
    best_iou: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = []
    images_total = 0
    resumed_from: int | None = None
    if resume is not None:
        state = load_checkpoint(resume)
        _check_resume(state, info, model_config, resume)
        models.g.load_state_dict(state["G"])
        models.opt_g.load_state_dict(state["opt_G"])
        models.sched_g.load_state_dict(state["sched_G"])
        if models.d is not None and models.opt_d is not None and models.sched_d is not None:
            models.d.load_state_dict(state["D"])
            models.opt_d.load_state_dict(state["opt_D"])
            models.sched_d.load_state_dict(state["sched_D"])
        factor = lr_factor(config.epochs, config.lr_decay)
        for sched in models.schedulers():  # the schedule of this run's --epochs and --lr
            sched.lr_lambdas = [factor] * len(sched.optimizer.param_groups)
            sched.base_lrs = [config.effective_lr] * len(sched.optimizer.param_groups)
            for group in sched.optimizer.param_groups:
                group["lr"] = config.effective_lr * factor(sched.last_epoch)
            sched._last_lr = [g["lr"] for g in sched.optimizer.param_groups]
        start_epoch = resumed_from = int(state["epoch"])
        best_iou = state.get("best_iou")
        best_epoch = state.get("best_epoch")
        history = json.loads(state["history"])
        images_total = int(state.get("images", 0))
        rngs = state["rng"]
        if len(rngs) == ctx.world_size:
            set_rng_state(rngs[ctx.rank])
        else:
            log.warning("resuming with %d processes instead of %d: random streams are re-seeded",
                        ctx.world_size, len(rngs))
            seed_everything(config.seed + 1000 * start_epoch + ctx.rank)
        if ctx.is_main:
            log.info("resuming from %s after epoch %d", resume, start_epoch)
        if start_epoch >= config.epochs:
            log.warning("the checkpoint already has %d epochs (--epochs %d): nothing to do; "
                        "raise --epochs to train on", start_epoch, config.epochs)

    spec_base = ModelSpec(
        model=model_config, bands=list(info.bands), band_names=list(info.band_names),
        dtype=info.dtype, mean=list(info.mean), std=list(info.std), tile_size=info.tile_size,
        gsd=info.gsd, mask_channels=list(info.mask_channels), target=info.target,
        tiling=dict(info.config), training={}, geotiler_version=__version__,
    )
    metrics_path = ckpt_dir / METRICS_NAME
    writer = None
    if ctx.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if overwrite and resume is None:  # start over: no stale checkpoint of the old run
            (ckpt_dir / CHECKPOINT_NAME).unlink(missing_ok=True)
            (ckpt_dir / METRICS_NAME).unlink(missing_ok=True)
        resolved = {"config": config.to_dict(), "model": model_config.to_dict(),
                    "tiles": str(tiles_dir), "world_size": ctx.world_size,
                    "device": str(ctx.device), "geotiler_version": __version__}
        (ckpt_dir / CONFIG_NAME).write_text(json.dumps(resolved, indent=2) + "\n")
        writer = _tensorboard(ckpt_dir / "tensorboard")
        log.info("training %s (%s preset, %.1fM parameters) on %d train / %d val tiles, "
                 "%d process(es) on %s", model_config.arch, config.preset, parameters / 1e6,
                 train_set.num_tiles, val_set.num_tiles, ctx.world_size, ctx.device)

    amp_note = ctx.device.type == "cuda" and config.amp
    if amp_note and ctx.is_main and not torch.cuda.is_bf16_supported():
        log.info("this GPU has no bfloat16: training in float32")
    expected_steps = math.ceil(train_set.tiles_of_rank(workers) / batch_size)
    if config.max_steps:
        expected_steps = min(expected_steps, config.max_steps)
    skipped = 0
    run_images = 0
    run_seconds = 0.0
    epochs_done = start_epoch
    last_val: dict[str, float] = {}
    last_loss: dict[str, float] = {}
    for epoch in range(start_epoch, config.epochs):
        epoch_start = time.perf_counter()
        train_set.set_epoch(epoch)
        sums: dict[str, torch.Tensor] = {}
        steps = 0
        seen = 0
        bar = tqdm(total=expected_steps, desc=f"epoch {epoch + 1}/{config.epochs}",
                   unit="step", leave=False, file=sys.stderr, dynamic_ncols=True,
                   disable=not (progress and ctx.is_main))
        with bar:
            for batch in _batches(train_loader, ctx, config.max_steps):
                image = batch["image"].to(ctx.device, non_blocking=True)
                target = batch["target"].to(ctx.device, non_blocking=True)
                valid = batch["valid"].to(ctx.device, non_blocking=True)
                if model_config.arch == "pix2pix":
                    losses = pix2pix_step(models, gan_loss, image, target, valid, config, ctx)
                else:
                    losses = unet_step(models, image, target, valid, config, ctx)
                for k, v in losses.items():
                    sums[k] = sums.get(k, torch.zeros((), device=ctx.device)) + v.float()
                steps += 1
                seen += int(image.shape[0])
                bar.update(1)
                if steps % 10 == 1 or steps == expected_steps:
                    rate = seen * ctx.world_size / max(time.perf_counter() - epoch_start, 1e-9)
                    main_loss = "loss_g" if "loss_g" in losses else "loss"
                    bar.set_postfix(loss=f"{float(losses[main_loss]):.4f}", img_s=f"{rate:.1f}")
        train_seconds = time.perf_counter() - epoch_start
        epoch_lr = float(models.opt_g.param_groups[0]["lr"])
        for sched in models.schedulers():
            sched.step()
        totals = _all_reduce(torch.tensor([steps, seen], dtype=torch.int64), ctx)
        epoch_images = int(totals[1])
        loss_keys = sorted(sums)
        loss_vec = torch.stack([sums[k] for k in loss_keys]).cpu() if loss_keys else torch.zeros(0)
        loss_vec = _all_reduce(loss_vec, ctx) / max(int(totals[0]), 1)
        last_loss = {k: float(v) for k, v in zip(loss_keys, loss_vec, strict=True)}
        capped = ctx.distributed or (config.max_steps is not None and steps >= config.max_steps)
        train_skipped = 0 if capped else max(0, train_set.tiles_of_rank(workers) - seen)

        val_scores: dict[str, float] = {}
        val_skipped = 0
        if val_set.num_tiles:
            val_scores, val_seen = validate(models, val_loader, info, model_config.arch,
                                            config, ctx)
            val_skipped = max(0, val_set.num_tiles - val_seen)
        skipped = max(skipped, train_skipped + val_skipped)
        epoch_seconds = time.perf_counter() - epoch_start
        images_total += epoch_images
        run_images += epoch_images
        run_seconds += train_seconds
        rate = epoch_images / max(train_seconds, 1e-9)
        last_val = val_scores
        improved = bool(val_scores) and (best_iou is None or val_scores["iou"] > best_iou)
        if improved:
            best_iou, best_epoch = val_scores["iou"], epoch + 1
        row: dict[str, Any] = {
            "epoch": epoch + 1, "steps": int(totals[0]), "images": epoch_images,
            "lr": epoch_lr, **last_loss,
            **{f"val_{k}": v for k, v in val_scores.items()},
            "img_per_s": rate, "seconds": epoch_seconds,
        }
        history.append(row)

        if ctx.is_main:
            if improved or not val_scores:
                spec = dataclasses.replace(spec_base, training={
                    "arch": model_config.arch, "preset": config.preset, "epochs": epoch + 1,
                    "best_epoch": best_epoch, "best_val_iou": best_iou, "val": val_scores,
                    "train_loss": last_loss, "images": images_total,
                    "batch_size": batch_size, "lr": config.effective_lr, "seed": config.seed,
                    "world_size": ctx.world_size, "device": str(ctx.device),
                    "tiles": str(tiles_dir),
                    "seconds": round(time.perf_counter() - start_time, 1),
                })
                save_model(out_path, models.g, spec)
            _write_metrics_csv(metrics_path, history)
            if writer is not None:
                for k, v in row.items():
                    if k != "epoch" and isinstance(v, int | float):
                        writer.add_scalar(k, v, epoch + 1)
                writer.flush()
            val_text = (f" | val IoU {val_scores['iou']:.3f} F1 {val_scores['f1']:.3f} "
                        f"BF {val_scores['boundary_f']:.3f}" if val_scores else "")
            loss_text = " ".join(f"{k} {v:.4f}" for k, v in last_loss.items())
            log.info("epoch %d/%d: %s%s | %.1f img/s%s", epoch + 1, config.epochs, loss_text,
                     val_text, rate, " (best)" if improved else "")

        rngs = _gather_rng(ctx)
        if ctx.is_main:
            state = {
                "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
                "epoch": epoch + 1,
                "config": json.dumps(config.to_dict()),
                "model": json.dumps(model_config.to_dict()),
                "dataset": json.dumps(_dataset_identity(info)),
                "G": models.g.state_dict(), "opt_G": models.opt_g.state_dict(),
                "sched_G": models.sched_g.state_dict(),
                "D": models.d.state_dict() if models.d is not None else {},
                "opt_D": models.opt_d.state_dict() if models.opt_d is not None else {},
                "sched_D": models.sched_d.state_dict() if models.sched_d else {},
                "rng": rngs,
                "best_iou": best_iou, "best_epoch": best_epoch,
                "history": json.dumps(history), "images": images_total,
            }
            save_checkpoint(ckpt_dir / CHECKPOINT_NAME, state)
        if ctx.distributed:
            dist.barrier()
        epochs_done = epoch + 1
        if _budget_spent(config, start_time, ctx) and epochs_done < config.epochs:
            if ctx.is_main:
                log.info("--max-minutes %.1f spent after epoch %d of %d: stopping",
                         config.max_minutes, epochs_done, config.epochs)
            break

    if writer is not None:
        writer.close()
    if skipped and ctx.is_main:
        log.warning("%d corrupt tile(s) were skipped in each epoch (see the warnings above)",
                    skipped)
    return TrainSummary(
        out_path=out_path, checkpoint_dir=ckpt_dir, metrics_path=metrics_path,
        epochs=epochs_done, epochs_run=max(0, epochs_done - start_epoch),
        best_epoch=best_epoch, best_val_iou=best_iou, val=last_val, train_loss=last_loss,
        images=run_images, seconds=time.perf_counter() - start_time,
        images_per_second=run_images / run_seconds if run_seconds else 0.0,
        skipped_tiles=skipped, device=str(ctx.device), world_size=ctx.world_size,
        resumed_from=resumed_from, parameters=parameters,
    )


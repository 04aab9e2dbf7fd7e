"""Updating the networks: optimizers, the learning-rate schedule, one step, one epoch.

:class:`Models` holds the generator (and for pix2pix the PatchGAN discriminator) with their
Adam optimizers. The learning rate is a pure function of the epoch (:func:`lr_at`, pix2pix's
schedule: constant, then linear to ~0) written into ``optimizer.param_groups`` at the start
of every epoch, nanoGPT-style: there is no scheduler state to save, so a resumed run (with
any ``--epochs``) follows exactly the schedule of an uninterrupted one.

:func:`unet_step` is one update of the plain U-Net on BCE + Dice; :func:`pix2pix_step` the
alternating D then G update of junyanz ``pix2pix_model.py``. :func:`train_epoch` runs one
of them over a loader and averages the losses over steps and ranks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from geotiler.errors import TrainingError
from geotiler.progress import ProgressMeter
from trainer.config import ModelConfig, TrainConfig
from trainer.distributed import Dist, all_reduce, autocast, batches, no_sync, unwrap, wrap
from trainer.losses import GANLoss, bce_dice_loss, reconstruction_loss, wall_weight
from trainer.networks import build_discriminator, build_generator


@dataclass
class Models:
    """The networks being trained and their optimizers (networks DDP-wrapped if needed)."""

    config: ModelConfig
    generator: nn.Module
    opt_g: torch.optim.Optimizer
    discriminator: nn.Module | None = None
    opt_d: torch.optim.Optimizer | None = None

    @property
    def g(self) -> nn.Module:
        """The generator itself (unwrapped from DDP)."""
        return unwrap(self.generator)

    @property
    def d(self) -> nn.Module | None:
        """The discriminator itself (unwrapped from DDP), if there is one."""
        return None if self.discriminator is None else unwrap(self.discriminator)

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [o for o in (self.opt_g, self.opt_d) if o is not None]


def build_models(model_config: ModelConfig, config: TrainConfig, ctx: Dist) -> Models:
    """Networks (initialised N(0, 0.02)) on ``ctx.device`` with Adam optimizers.

    A discriminator only for ``arch == "pix2pix"``. The learning rate is set per epoch by
    :func:`set_lr`.
    """
    betas = (config.beta1, 0.999)
    g: nn.Module = build_generator(model_config).to(ctx.device)
    opt_g = torch.optim.Adam(g.parameters(), lr=config.effective_lr, betas=betas)
    models = Models(model_config, wrap(g, ctx), opt_g)
    if model_config.arch == "pix2pix":
        d: nn.Module = build_discriminator(model_config).to(ctx.device)
        models.opt_d = torch.optim.Adam(d.parameters(), lr=config.effective_lr, betas=betas)
        models.discriminator = wrap(d, ctx)
    return models


def lr_at(epoch: int, config: TrainConfig, epochs: int | None = None) -> float:
    """The learning rate of 0-based ``epoch``: pix2pix's schedule with ``lr_decay``.

    Constant for the first ``epochs - epochs // 2`` epochs, then linear towards 0 over the
    other ``epochs // 2``; constant throughout without ``lr_decay``. ``epochs`` is the
    run's planned length (``None``: ``config.epochs``; with ``--max-minutes``, the epochs
    that fit the budget, see :func:`trainer.budget.planned_epochs`).
    """
    if not config.lr_decay:
        return config.effective_lr
    epochs = config.epochs if epochs is None else epochs
    constant = epochs - epochs // 2
    decaying = epochs // 2
    return config.effective_lr * (1.0 - max(0, epoch + 1 - constant) / float(decaying + 1))


def set_lr(models: Models, epoch: int, config: TrainConfig, epochs: int | None = None) -> float:
    """Write :func:`lr_at` of ``epoch`` into every optimizer; returns it."""
    lr = lr_at(epoch, config, epochs)
    for optimizer in models.optimizers():
        for group in optimizer.param_groups:
            group["lr"] = lr
    return lr


def _set_requires_grad(net: nn.Module | None, flag: bool) -> None:
    if net is not None:
        for p in net.parameters():
            p.requires_grad_(flag)


def pix2pix_step(
    models: Models,
    gan_loss: GANLoss,
    image: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    config: TrainConfig,
    ctx: Dist,
) -> dict[str, torch.Tensor]:
    """One alternating update: D on (real, fake) pairs, then G on GAN + lambda * recon
    (``config.recon``: BCE + Dice by default, L1 as in the paper).

    ``image`` (N,C,H,W) normalized, ``target`` (N,K,H,W) in [0, 1] (mapped to [-1, 1] for
    the tanh generator), ``valid`` (N,1,H,W). Returns the detached scalar losses
    ``loss_g``, ``loss_g_gan``, ``loss_g_recon`` and ``loss_d``. RuntimeError without a
    discriminator.
    """
    d, d_net, opt_d = models.discriminator, models.d, models.opt_d
    if d is None or d_net is None or opt_d is None:
        raise RuntimeError("pix2pix needs a discriminator")
    real_b = target * 2.0 - 1.0
    with autocast(ctx, ctx.precision):
        fake_b = models.generator(image)

    # D: fake pairs then real pairs; gradients accumulate (one all-reduce under DDP).
    _set_requires_grad(d_net, True)
    opt_d.zero_grad(set_to_none=True)
    with no_sync(d):
        with autocast(ctx, ctx.precision):
            pred_fake = d(torch.cat([image, fake_b.detach()], 1))
        loss_d_fake = gan_loss(pred_fake, False, valid)
        (loss_d_fake * 0.5).backward()
    with autocast(ctx, ctx.precision):
        pred_real = d(torch.cat([image, real_b], 1))
    loss_d_real = gan_loss(pred_real, True, valid)
    (loss_d_real * 0.5).backward()
    opt_d.step()

    # G: fool D (D frozen, used unwrapped so DDP sees no second forward) and match the target.
    _set_requires_grad(d_net, False)
    models.opt_g.zero_grad(set_to_none=True)
    with autocast(ctx, ctx.precision):
        pred_fake = d_net(torch.cat([image, fake_b], 1))
    loss_g_gan = gan_loss(pred_fake, True, valid)
    loss_g_recon = reconstruction_loss(fake_b, target, config.recon, valid) * config.lambda_recon
    (loss_g_gan + loss_g_recon).backward()
    models.opt_g.step()
    _set_requires_grad(d_net, True)
    return {
        "loss_g": (loss_g_gan + loss_g_recon).detach(),
        "loss_g_gan": loss_g_gan.detach(),
        "loss_g_recon": loss_g_recon.detach(),
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
    """One update of the plain U-Net on BCE + Dice; returns the detached ``loss``.

    Shapes as in :func:`pix2pix_step`.
    """
    models.opt_g.zero_grad(set_to_none=True)
    with autocast(ctx, ctx.precision):
        logits = models.generator(image)
    walls = (wall_weight(target, valid, config.wall_weight, config.wall_reach or 1)
             if config.wall_weight else None)
    loss = bce_dice_loss(logits, target, valid, walls)
    loss.backward()
    models.opt_g.step()
    return {"loss": loss.detach()}


@dataclass
class EpochStats:
    """What one epoch of training did, summed over ranks (``images_here``: this rank)."""

    steps: int = 0
    images: int = 0
    images_here: int = 0
    steps_here: int = 0
    losses: dict[str, float] = field(default_factory=dict)  # mean per step


def check_finite(losses: dict[str, torch.Tensor], epoch: int, step: int) -> None:
    """TrainingError when a loss is NaN or infinite: the weights are then no longer numbers,
    and training on would only write a model that predicts nothing."""
    bad = [k for k, v in losses.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise TrainingError(
            f"the training loss became {float(losses[bad[0]])} ({', '.join(bad)}) at epoch "
            f"{epoch + 1}, step {step}; nothing of this epoch was saved. Lower --lr, or "
            "check the tiles for extreme values"
        )


def train_epoch(
    models: Models,
    gan_loss: GANLoss,
    loader: Any,
    config: TrainConfig,
    ctx: Dist,
    bar: ProgressMeter,
    *,
    epoch: int = 0,
) -> EpochStats:
    """One pass over ``loader`` (at most ``config.max_steps`` steps), ticking ``bar``.

    Raises:
        TrainingError: a loss is not finite (checked every step on every rank).
    """
    start = time.perf_counter()
    sums: dict[str, torch.Tensor] = {}
    steps = seen = 0
    for batch in batches(loader, ctx, config.max_steps):
        image = batch["image"].to(ctx.device, non_blocking=True)
        target = batch["target"].to(ctx.device, non_blocking=True)
        valid = batch["valid"].to(ctx.device, non_blocking=True)
        if models.config.arch == "pix2pix":
            losses = pix2pix_step(models, gan_loss, image, target, valid, config, ctx)
        else:
            losses = unet_step(models, image, target, valid, config, ctx)
        check_finite(losses, epoch, steps + 1)
        for k, v in losses.items():
            sums[k] = sums.get(k, torch.zeros((), device=ctx.device)) + v.float()
        steps += 1
        seen += int(image.shape[0])
        bar.update(1)
        if steps % 10 == 1 or steps == bar.total:
            elapsed = max(time.perf_counter() - start, 1e-9)
            main_loss = "loss_g" if "loss_g" in losses else "loss"
            bar.set_postfix(loss=f"{float(losses[main_loss]):.4f}",
                            img_s=f"{seen * ctx.world_size / elapsed:.1f}")
    totals = all_reduce(torch.tensor([steps, seen], dtype=torch.int64), ctx)
    keys = sorted(sums)
    means = torch.stack([sums[k] for k in keys]).cpu() if keys else torch.zeros(0)
    means = all_reduce(means, ctx) / max(int(totals[0]), 1)
    return EpochStats(
        steps=int(totals[0]), images=int(totals[1]), images_here=seen, steps_here=steps,
        losses={k: float(v) for k, v in zip(keys, means, strict=True)},
    )

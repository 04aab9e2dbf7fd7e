"""Losses: the conditional GAN objective, L1, and BCE + Dice, all with a pixel weight.

``weight`` is a (N,1,H,W) tensor of 0/1 (or soft) pixel weights: pixels of nodata (where a
tile's ``valid`` mask is False) weigh 0 and so add nothing to any loss or gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` (N,C,H,W) over pixels with weight (N,1,H,W), per channel alike."""
    if weight is None:
        return values.mean()
    weight = weight.to(values.dtype).expand_as(values)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def patch_weight(weight: torch.Tensor | None, size: torch.Size) -> torch.Tensor | None:
    """A pixel weight averaged down to the PatchGAN's output grid."""
    if weight is None:
        return None
    return F.adaptive_avg_pool2d(weight.float(), (int(size[-2]), int(size[-1])))


class GANLoss(nn.Module):
    """pix2pix's vanilla GAN loss: BCE with logits against all-real or all-fake labels."""

    def __init__(self, real_label: float = 1.0, fake_label: float = 0.0) -> None:
        super().__init__()
        self.real = float(real_label)
        self.fake = float(fake_label)

    def forward(
        self, prediction: torch.Tensor, target_is_real: bool, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        value = self.real if target_is_real else self.fake
        target = torch.full_like(prediction, value, dtype=torch.float32)
        loss = F.binary_cross_entropy_with_logits(prediction.float(), target, reduction="none")
        return weighted_mean(loss, patch_weight(weight, prediction.shape))


def l1_loss(
    prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean absolute error over weighted pixels."""
    return weighted_mean((prediction.float() - target.float()).abs(), weight)


def bce_loss(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Binary cross-entropy of logits against targets in [0, 1], over weighted pixels."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    return weighted_mean(loss, weight)


def soft_dice_loss(
    prob: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    eps: float = 1.0,
) -> torch.Tensor:
    """1 - soft Dice per channel over the batch's weighted pixels, averaged over channels.

    ``prob`` and ``target`` (N,K,H,W) in [0, 1].
    """
    prob = prob.float()
    target = target.float()
    w = torch.ones_like(prob[:, :1]) if weight is None else weight.float()
    dims = (0, 2, 3)
    inter = (prob * target * w).sum(dims)
    total = (prob * w).sum(dims) + (target * w).sum(dims)
    return (1.0 - (2.0 * inter + eps) / (total + eps)).mean()


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    eps: float = 1.0,
) -> torch.Tensor:
    """:func:`soft_dice_loss` of ``sigmoid(logits)``."""
    return soft_dice_loss(torch.sigmoid(logits.float()), target, weight, eps)


def bce_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
    bce_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """The plain U-Net's loss: BCE + Dice. ``bce_weight`` (N,C,H,W), if given, weighs the
    BCE term per channel instead of ``weight`` (e.g. :func:`wall_weight`)."""
    return (bce_loss(logits, target, weight if bce_weight is None else bce_weight)
            + dice_loss(logits, target, weight))


def wall_weight(target: torch.Tensor, valid: torch.Tensor, gain: float,
                reach: int) -> torch.Tensor:
    """Per-pixel, per-channel BCE weights that stress the walls between touching buildings.

    ``target`` (N,2,H,W) is footprint then contour in [0, 1]; ``valid`` (N,1,H,W) the
    nodata weight. A wall is a contour pixel whose whole (2 ``reach`` + 1)² window lies in
    the footprints: an outline between two buildings, not one against the ground (which
    has ground within ``reach`` px when ``reach`` is at least half the contour width). Its
    contour-channel weight is 1 + ``gain``; every other weight is ``valid``. The idea of
    U-Net's border weights (Ronneberger et al. 2015, w0 = 10): the few pixels that keep
    touching instances apart are otherwise outvoted by the many that are easy.
    Returns (N,2,H,W) float32.
    """
    footprint, contour = target[:, :1].float(), target[:, 1:2].float()
    inside = -F.max_pool2d(-footprint, 2 * reach + 1, stride=1, padding=reach)  # erosion
    walls = contour * inside
    valid = valid.float()
    return torch.cat([valid, valid * (1.0 + gain * walls)], 1)


def reconstruction_loss(
    fake: torch.Tensor, target: torch.Tensor, kind: str, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """pix2pix's reconstruction term for a tanh generator output ``fake`` (N,K,H,W) in
    [-1, 1] against ``target`` (N,K,H,W) in [0, 1].

    ``l1``: mean |fake - (2 target - 1)| (the paper's). ``bce-dice``: BCE + soft Dice on
    p = (fake + 1) / 2. Since tanh(x) = 2 sigmoid(2x) - 1, p is sigmoid(2x): BCE is
    computed from the logits 2 atanh(fake), clamped away from +-1 for stability. Unlike L1,
    BCE + Dice weighs a missed building pixel by how rare buildings are (Dice), so the
    generator cannot settle on the all-background answer.
    """
    if kind == "l1":
        return l1_loss(fake, target * 2.0 - 1.0, weight)
    if kind != "bce-dice":
        raise ValueError(f"unknown reconstruction loss {kind!r}")
    fake = fake.float().clamp(-1.0 + 1e-6, 1.0 - 1e-6)
    logits = 2.0 * torch.atanh(fake)
    return bce_loss(logits, target, weight) + soft_dice_loss((fake + 1.0) * 0.5, target, weight)

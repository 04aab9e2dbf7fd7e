"""Validation metrics from torch batches, accumulated as counts (see geotiler.metrics).

The building mask of a prediction or a target is its ``footprint`` channel for ``masks``
targets, and for the seed's RGB target the footprint plane of
:func:`geotiler.tiles.contours.seed_rgb_planes` (the one rule tiling, predict and evaluate
share); a pixel is building above ``threshold``.
"""

from __future__ import annotations

import numpy as np
import torch

from geotiler.metrics import BoundaryCounts, Confusion, boundary_counts, confusion
from geotiler.tiles.contours import seed_rgb_planes


def building_channel(values: torch.Tensor, target: str) -> torch.Tensor:
    """(N,K,H,W) probabilities or targets in [0, 1] -> (N,H,W) building probability."""
    if target == "seed-rgb":
        return seed_rgb_planes(values[:, 0], values[:, 1], values[:, 2])[0]
    return values[:, 0]


class SegmentationMeter:
    """Accumulates pixel confusion and boundary counts over batches."""

    FIELDS = 8

    def __init__(self, target: str, threshold: float = 0.5, tolerance_px: float = 2) -> None:
        self.target = target
        self.threshold = threshold
        self.tolerance_px = tolerance_px
        self.confusion = Confusion()
        self.boundary = BoundaryCounts()
        self.images = 0

    def update(self, prob: torch.Tensor, truth: torch.Tensor, valid: torch.Tensor) -> None:
        """Add a batch: ``prob``/``truth`` (N,K,H,W) in [0, 1], ``valid`` (N,1,H,W)."""
        pred = (building_channel(prob.float(), self.target) > self.threshold).cpu().numpy()
        true = (building_channel(truth.float(), self.target) > 0.5).cpu().numpy()
        mask = (valid[:, 0] > 0.5).cpu().numpy()
        self.confusion = self.confusion + confusion(pred, true, mask)
        self.boundary = self.boundary + boundary_counts(pred, true, self.tolerance_px, mask)
        self.images += int(pred.shape[0])

    def to_tensor(self) -> torch.Tensor:
        """The counts as one int64 tensor (to sum over processes)."""
        c, b = self.confusion, self.boundary
        values = [c.tp, c.fp, c.fn, c.tn, b.pred_matched, b.pred_total, b.truth_matched,
                  b.truth_total]
        return torch.tensor(values, dtype=torch.int64)

    def load_tensor(self, counts: torch.Tensor) -> None:
        v = [int(x) for x in np.asarray(counts.cpu())]
        self.confusion = Confusion(*v[:4])
        self.boundary = BoundaryCounts(*v[4:])

    def scores(self) -> dict[str, float]:
        """Pixel IoU, precision, recall, F1 and boundary F-score of the building class."""
        c = self.confusion
        return {
            "iou": c.iou,
            "precision": c.precision,
            "recall": c.recall,
            "f1": c.f1,
            "boundary_f": self.boundary.f_score,
        }

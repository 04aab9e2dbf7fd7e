"""Segmentation metrics on binary masks, in numpy (shared by ``train`` and ``evaluate``).

Counts, not scores, are the unit: :class:`Confusion` and :class:`BoundaryCounts` add up
over tiles (and processes), and the scores are computed once from the totals, so a metric
over many tiles is the metric of the whole area, not a mean of per-tile ratios.

Conventions for empty cases: when prediction and truth are both empty the scores are 1
(nothing to find, nothing found); when only one is empty they are 0.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

import cv2
import numpy as np


def _ratio(num: float, den: float, *, both_empty: bool) -> float:
    if den > 0:
        return float(num) / float(den)
    return 1.0 if both_empty else 0.0


@dataclass(frozen=True)
class Confusion:
    """Pixel confusion counts of a binary segmentation (building = positive)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: Confusion) -> Confusion:
        return Confusion(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    @property
    def _empty(self) -> bool:
        return self.tp + self.fp + self.fn == 0

    @property
    def iou(self) -> float:
        return _ratio(self.tp, self.tp + self.fp + self.fn, both_empty=self._empty)

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp, both_empty=self._empty)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn, both_empty=self._empty)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn, both_empty=self._empty)

    @property
    def accuracy(self) -> float:
        total = self.tp + self.fp + self.fn + self.tn
        return _ratio(self.tp + self.tn, total, both_empty=True)

    def scores(self) -> dict[str, float]:
        """Pixel IoU, precision, recall, F1 and accuracy of the building class."""
        return {
            "iou": self.iou,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "accuracy": self.accuracy,
        }

    def seed_scores(self) -> dict[str, float]:
        """The FCN scores the seed method reports, over the two classes background/building.

        pixel accuracy, mean (per-class) accuracy, mean IoU and frequency-weighted IoU
        (Long et al. 2015). Classes absent from the truth are left out of the means.
        """
        total = self.tp + self.fp + self.fn + self.tn
        # class 0 = background, class 1 = building; n_ii correct, t_i truth pixels of class i
        classes = [
            (self.tn, self.tn + self.fp, self.tn + self.fp + self.fn),  # (n_ii, t_i, union)
            (self.tp, self.tp + self.fn, self.tp + self.fn + self.fp),
        ]
        present = [(n, t, u) for n, t, u in classes if t > 0]
        pixel_acc = _ratio(self.tp + self.tn, total, both_empty=True)
        if not present:
            return {"pixel_accuracy": pixel_acc, "mean_accuracy": 1.0, "mean_iou": 1.0,
                    "fw_iou": 1.0}
        mean_acc = float(np.mean([n / t for n, t, _ in present]))
        mean_iou = float(np.mean([n / u for n, _, u in present]))
        fw_iou = float(sum(t * n / u for n, t, u in present) / total)
        return {"pixel_accuracy": pixel_acc, "mean_accuracy": mean_acc, "mean_iou": mean_iou,
                "fw_iou": fw_iou}


def confusion(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> Confusion:
    """Confusion counts of boolean arrays of the same shape, over ``valid`` pixels only."""
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    if valid is not None:
        valid = np.broadcast_to(np.asarray(valid, dtype=bool), pred.shape)
        pred, truth = pred[valid], truth[valid]
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    tn = int(pred.size - tp - fp - fn)
    return Confusion(tp, fp, fn, tn)


def pixel_scores(
    pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None
) -> dict[str, float]:
    """IoU, precision, recall, F1 and accuracy of boolean masks."""
    return confusion(pred, truth, valid).scores()


@dataclass(frozen=True)
class BoundaryCounts:
    """Boundary pixels of prediction and truth, and how many lie near the other's boundary."""

    pred_matched: int = 0
    pred_total: int = 0
    truth_matched: int = 0
    truth_total: int = 0

    def __add__(self, other: BoundaryCounts) -> BoundaryCounts:
        return BoundaryCounts(
            *(a + b for a, b in zip(astuple(self), astuple(other), strict=True))
        )

    @property
    def _empty(self) -> bool:
        return self.pred_total == 0 and self.truth_total == 0

    @property
    def precision(self) -> float:
        return _ratio(self.pred_matched, self.pred_total, both_empty=self._empty)

    @property
    def recall(self) -> float:
        return _ratio(self.truth_matched, self.truth_total, both_empty=self._empty)

    @property
    def f_score(self) -> float:
        p, r = self.precision, self.recall
        if self._empty:
            return 1.0
        return 2 * p * r / (p + r) if p + r > 0 else 0.0


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of a 2-D boolean mask that touch the background (4-connectivity).

    The array edge does not count as background, so a building cut by a tile edge has no
    boundary along that edge.
    """
    m = np.asarray(mask, dtype=np.uint8)
    eroded = cv2.erode(m, _CROSS, borderType=cv2.BORDER_REPLICATE)
    return (m > 0) & (eroded == 0)


def _distance_to(points: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest True pixel of ``points``."""
    if not points.any():
        return np.full(points.shape, np.inf, dtype=np.float32)
    return cv2.distanceTransform(
        (~points).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
    )


def edge_band(truth: np.ndarray, width_px: float) -> np.ndarray:
    """(H,W) bool: the pixels within ``width_px`` (Euclidean, px) of the true outline, on
    either side: background pixels whose nearest building pixel, and building pixels whose
    nearest background pixel, is at most ``width_px`` + 0.5 away (``width_px`` 1: one ring
    each side). The array edge is not an outline.

    Where an outline drawn a pixel off (a footprint misregistered from its roof, a blurred
    edge) puts its wrong pixels: ``geotiler evaluate`` reports the share of wrong pixels in
    this band, ``benchmarks/error_budget.py`` its cost in IoU.
    """
    t = np.asarray(truth, dtype=bool)
    if t.all() or not t.any():
        return np.zeros(t.shape, dtype=bool)
    return np.where(t, _distance_to(~t), _distance_to(t)) <= width_px + 0.5


def boundary_counts(
    pred: np.ndarray, truth: np.ndarray, tolerance_px: float, valid: np.ndarray | None = None
) -> BoundaryCounts:
    """Boundary match counts of (H,W) or (N,H,W) boolean masks within ``tolerance_px``.

    A prediction boundary pixel is matched when a truth boundary pixel lies within the
    tolerance (Euclidean, in pixels), and vice versa; only boundary pixels where ``valid``
    is True count. For a tolerance in metres, divide by the ground sample distance.
    """
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    if pred.ndim == 3:
        total = BoundaryCounts()
        for i in range(pred.shape[0]):
            v = None if valid is None else np.broadcast_to(valid, pred.shape)[i]
            total = total + boundary_counts(pred[i], truth[i], tolerance_px, v)
        return total
    if pred.ndim != 2:
        raise ValueError(f"expected (H,W) or (N,H,W) masks, got shape {pred.shape}")
    pb, tb = boundary(pred), boundary(truth)
    if valid is not None:
        v = np.asarray(valid, dtype=bool)
        pb, tb = pb & v, tb & v
    pred_matched = int(np.count_nonzero(_distance_to(tb)[pb] <= tolerance_px))
    truth_matched = int(np.count_nonzero(_distance_to(pb)[tb] <= tolerance_px))
    return BoundaryCounts(
        pred_matched, int(np.count_nonzero(pb)), truth_matched, int(np.count_nonzero(tb))
    )


def boundary_f_score(
    pred: np.ndarray, truth: np.ndarray, tolerance_px: float, valid: np.ndarray | None = None
) -> float:
    """Boundary F-score (Csurka et al. 2013) of boolean masks at ``tolerance_px``."""
    return boundary_counts(pred, truth, tolerance_px, valid).f_score

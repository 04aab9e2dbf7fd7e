"""Per-building scores: predicted and true polygons matched one to one (the SpaceNet metric).

Pairs are matched greedily by IoU, highest first, among pairs with IoU >= the threshold, so
each building counts at most once on either side.
"""

from __future__ import annotations

import numpy as np
import shapely

from geotiler.evaluate.config import EvalConfig
from geotiler.evaluate.report import BuildingMetrics


def match_buildings(pred: np.ndarray, truth: np.ndarray,
                    iou_threshold: float = EvalConfig.iou_threshold
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matches of polygons at IoU >= ``iou_threshold``, greedy by IoU descending.

    ``pred``, ``truth``: object arrays of shapely polygons in one CRS. Candidate pairs come
    from an STRtree. Returns (pred indexes, truth indexes, IoUs) of the matched pairs: intp,
    intp and float64 arrays of one length.
    """
    empty = (np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp), np.empty(0))
    if len(pred) == 0 or len(truth) == 0:
        return empty
    tree = shapely.STRtree(pred)
    t_idx, p_idx = tree.query(truth, predicate="intersects")
    if len(t_idx) == 0:
        return empty
    a, b = pred[p_idx], truth[t_idx]
    inter = shapely.area(shapely.intersection(a, b))
    union = shapely.area(a) + shapely.area(b) - inter
    iou = np.divide(inter, union, out=np.zeros(len(inter)), where=union > 0)
    keep = iou >= iou_threshold
    p_idx, t_idx, iou = p_idx[keep], t_idx[keep], iou[keep]
    order = np.argsort(-iou, kind="stable")
    used_p: set[int] = set()
    used_t: set[int] = set()
    out_p, out_t, out_iou = [], [], []
    for k in order:
        p, t = int(p_idx[k]), int(t_idx[k])
        if p in used_p or t in used_t:
            continue
        used_p.add(p)
        used_t.add(t)
        out_p.append(p)
        out_t.append(t)
        out_iou.append(float(iou[k]))
    return np.array(out_p, dtype=np.intp), np.array(out_t, dtype=np.intp), np.array(out_iou)


def building_metrics(pred: np.ndarray, truth: np.ndarray,
                     iou_threshold: float = EvalConfig.iou_threshold) -> BuildingMetrics:
    """SpaceNet-style per-building precision, recall and F1 (0 where undefined), and the
    unmatched buildings that touch none of the other side (false detections, missed)."""
    p_idx, _, iou = match_buildings(pred, truth, iou_threshold)
    n_pred, n_truth, matched = len(pred), len(truth), len(p_idx)
    precision = matched / n_pred if n_pred else 0.0
    recall = matched / n_truth if n_truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    touched_pred, touched_truth = _touching(pred, truth)
    return BuildingMetrics(n_pred, n_truth, matched, precision, recall, f1,
                           float(iou.mean()) if matched else 0.0, iou_threshold,
                           false_detections=n_pred - touched_pred,
                           missed=n_truth - touched_truth)


def _touching(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """How many predicted and how many true buildings share some area with one of the
    other side (a shared edge alone does not count)."""
    if len(pred) == 0 or len(truth) == 0:
        return 0, 0
    t_idx, p_idx = shapely.STRtree(pred).query(truth, predicate="intersects")
    shared = shapely.area(shapely.intersection(pred[p_idx], truth[t_idx])) > 0
    return len(np.unique(p_idx[shared])), len(np.unique(t_idx[shared]))

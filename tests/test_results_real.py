"""On a real aerial scene, a briefly trained small model beats the trivial baselines.

The baselines a user could get without geotiler: "no buildings" (IoU 0) and the best
single brightness threshold, chosen on the train split. All scores are on the test split,
which neither training nor the baseline's threshold saw: pixel IoU, and per-building F1@0.5
of the polygons (the model's through the instance step, the baseline's as connected
components), against the truth buildings of the same tiles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from geotiler.cli import main
from geotiler.tiles.shards import iter_tiles
from trainer.modelfile import load_model

from conftest import shared_scene

SCENE = "massachusetts-22978945"


def _iou(pred: np.ndarray, truth: np.ndarray) -> float:
    union = np.count_nonzero(pred | truth)
    return float(np.count_nonzero(pred & truth)) / union if union else 1.0


def _split(tiles: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    items = list(iter_tiles(tiles, split))
    images = np.stack([t.image for t in items])
    truth = np.stack([t.mask[0] > 127 for t in items])
    valid = np.stack([t.valid for t in items])
    return images, truth, valid, items


def _best_brightness_rule(images: np.ndarray, truth: np.ndarray, valid: np.ndarray):
    """The threshold (and side) on mean brightness with the best IoU on these tiles."""
    brightness = images[:, :3].astype(np.float32).mean(axis=1)
    best = (-1.0, 0.0, True)
    for t in np.linspace(10, 245, 48):
        for above in (True, False):
            pred = (brightness >= t) if above else (brightness < t)
            best = max(best, (_iou(pred & valid, truth & valid), float(t), above))
    return best[1], best[2]


@pytest.mark.slow
def test_small_unet_beats_background_and_colour_threshold(tmp_path: Path) -> None:
    scene = shared_scene(SCENE)
    raster, vector = scene / "22978945_15.tif", scene / "22978945_15.gpkg"
    tiles, model_path = tmp_path / "tiles", tmp_path / "model.pt"
    runner = CliRunner()
    result = runner.invoke(main, ["-q", "tile", str(raster), "-f", str(vector), "-o", str(tiles),
                                  "--size", "128", "--keep-empty", "1"])
    assert result.exit_code == 0, result.stderr
    result = runner.invoke(main, ["-q", "train", str(tiles), "--out", str(model_path),
                                  "--arch", "unet", "--epochs", "12", "--workers", "0",
                                  "--device", "cpu", "--seed", "0"])
    assert result.exit_code == 0, result.stderr

    images, truth, valid, _ = _split(tiles, "test")
    assert truth.any(), "the test split should hold buildings"
    model = load_model(model_path)
    with torch.no_grad():
        prob = model.predict(model.normalize(images))
    pred = np.asarray(prob[:, 0]) >= 0.5
    model_iou = _iou(pred & valid, truth & valid)

    background_iou = _iou(np.zeros_like(truth), truth & valid)
    t, above = _best_brightness_rule(*_split(tiles, "train")[:3])
    brightness = images[:, :3].astype(np.float32).mean(axis=1)
    colour = (brightness >= t) if above else (brightness < t)
    colour_iou = _iou(colour & valid, truth & valid)

    truth_contours = np.stack([t.mask[1] > 127 for t in _split(tiles, "test")[3]])
    model_f1 = _building_f1(np.asarray(prob[:, 0]), np.asarray(prob[:, 1]), truth,
                            truth_contours, valid)
    colour_f1 = _building_f1(colour, None, truth, truth_contours, valid)

    print(f"test pixel IoU: model {model_iou:.3f}, brightness threshold {colour_iou:.3f}, "
          f"background {background_iou:.3f}; building F1@0.5: model {model_f1:.3f}, "
          f"brightness threshold {colour_f1:.3f}")
    assert background_iou == 0.0
    assert model_iou > colour_iou + 0.05
    assert model_f1 > colour_f1 + 0.1


def _building_f1(footprint: np.ndarray, contour: np.ndarray | None, truth: np.ndarray,
                 truth_contour: np.ndarray, valid: np.ndarray, gsd: float = 1.0) -> float:
    """Per-building F1@0.5 over (N,H,W) tiles: predicted polygons through the instance step
    (at the scene's 1 m GSD), truth polygons from the footprint and contour masks."""
    from geotiler.evaluate.matching import building_metrics
    from geotiler.instances import InstanceOptions
    from geotiler.polygons import PolygonOptions, polygonize_block
    from geotiler.predict.plan import Rect

    options = PolygonOptions(min_area=4 / gsd**2, instances=InstanceOptions().in_pixels(gsd))
    pred, true = [], []
    for i in range(len(truth)):
        size = truth.shape[1]
        rect = Rect(i * size, (i + 1) * size, 0, size)  # tiles stacked apart, never touching
        ct = None if contour is None else contour[i] * valid[i]
        pred.extend(polygonize_block(footprint[i] * valid[i], ct, rect, options=options).geoms)
        true.extend(polygonize_block(truth[i] & valid[i], truth_contour[i] & valid[i], rect,
                                     options=options).geoms)
    return building_metrics(np.asarray(pred, dtype=object),
                            np.asarray(true, dtype=object)).f1

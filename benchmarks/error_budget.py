"""Where a model's pixel IoU goes: its error pixels sorted by kind, per split area (run by
hand; README "Results on real imagery", the error budget).

A predicted mask (``geotiler predict``'s ``{stem}_mask.tif`` over a whole scene) is compared
with the scene's footprints, rasterized on the mask's grid by pixel centre (as
``geotiler evaluate`` does), inside the train, val and test tiles of a reference tiling.
Every wrong pixel gets one kind:

* **false detection**: a false positive in a predicted component that touches no true
  building (a tree, a car park, a shadow taken for a roof);
* **missed building**: a false negative in a true building that no predicted pixel touches;
* **edge**: any other wrong pixel within ``--edge`` metres of the true outline (the outline
  drawn too far out or too far in, a footprint offset from its roof;
  :func:`geotiler.metrics.edge_band`, whose share of all wrong pixels ``geotiler evaluate``
  reports);
* **other**: the rest (a roof half missed, a prediction spilling far past its building).

For each kind it prints the pixels and the pixel IoU the area would have if those pixels
were right: the IoU a perfect fix of that kind alone would reach. The train area is scored
too: a model that scores no better there than on val is limited by its data and labels,
not by overfitting. The last column is a yardstick: the IoU of the true footprints against
themselves moved by one pixel (the mean over a move along x and one along y), what a
perfect outline drawn one pixel off would score. ::

    python benchmarks/score_areas.py model.pt --ref tiles --name def   # writes the mask
    python benchmarks/error_budget.py /tmp/q/pred_def_wall/buildings_mask.tif \\
        --scene ../shared/data/massachusetts-22978945 --ref tiles
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from rasterio import features
from scipy import ndimage

from geotiler.metrics import edge_band

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation import find_scene_files, truth_on_grid

KINDS = ("false detection", "missed building", "edge", "other")


def error_kinds(pred: np.ndarray, truth: np.ndarray, edge_px: float
                ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(false positive, false negative) (H, W) bool masks of each kind of wrong pixel (see
    the module docstring). ``pred`` and ``truth`` are (H, W) bool; ``edge_px`` is the edge
    band's half width (px)."""
    pred_labels, _ = ndimage.label(pred)
    truth_labels, _ = ndimage.label(truth)
    both = pred & truth
    pred_hit = np.zeros(pred_labels.max() + 1, dtype=bool)
    pred_hit[pred_labels[both]] = True
    truth_hit = np.zeros(truth_labels.max() + 1, dtype=bool)
    truth_hit[truth_labels[both]] = True
    fp, fn = pred & ~truth, truth & ~pred
    false_detection = fp & ~pred_hit[pred_labels]
    missed = fn & ~truth_hit[truth_labels]
    near = edge_band(truth, edge_px)  # the band `geotiler evaluate` counts too
    fp_rest, fn_rest = fp & ~false_detection, fn & ~missed
    none = np.zeros_like(pred)
    return {"false detection": (false_detection, none), "missed building": (none, missed),
            "edge": (fp_rest & near, fn_rest & near), "other": (fp_rest & ~near, fn_rest & ~near)}


def budget(pred: np.ndarray, truth: np.ndarray, area: np.ndarray,
           kinds: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, object]:
    """Pixel IoU in ``area`` ((H, W) bool), and per kind its wrong pixels and the IoU with
    them made right (a false positive made right leaves the union, a false negative joins
    the intersection)."""
    inter = int((pred & truth & area).sum())
    union = int(((pred | truth) & area).sum())
    out: dict[str, object] = {"iou": inter / max(union, 1), "errors": union - inter}
    for kind, (fp, fn) in kinds.items():
        n_fp, n_fn = int((fp & area).sum()), int((fn & area).sum())
        out[kind] = (n_fp + n_fn, (inter + n_fn) / max(union - n_fp, 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mask", type=Path, help="predicted mask GeoTIFF of the whole scene")
    parser.add_argument("--scene", type=Path, required=True,
                        help="scene folder (raster + footprints)")
    parser.add_argument("--ref", type=Path, required=True,
                        help="reference tiling (its index.gpkg)")
    parser.add_argument("--edge", type=float, default=2.0, help="edge band half width (m)")
    args = parser.parse_args()
    _, footprints = find_scene_files(args.scene)
    with rasterio.open(args.mask) as src:
        band = src.read(1)
        pred = band > 0 if src.nodata is None else (band > 0) & (band != src.nodata)
        transform, crs, shape = src.transform, src.crs, (src.height, src.width)
    gsd = abs(transform.a)
    truth = truth_on_grid(footprints, crs, transform, shape)
    kinds = error_kinds(pred, truth, args.edge / gsd)
    index = gpd.read_file(args.ref / "index.gpkg", layer="tiles").to_crs(crs)
    print(f"{args.mask}: wrong pixels by kind, edge band {args.edge:g} m ({args.edge / gsd:g}"
          " px); each cell: pixels, share of the wrong pixels, -> the IoU with them right")
    moved = [np.roll(truth, 1, axis=axis) for axis in (0, 1)]  # scene borders: no truth there
    print("| split | pixel IoU | wrong px | " + " | ".join(KINDS) + " | truth moved 1 px |")
    print("|---|---|---|" + "---|" * (len(KINDS) + 1))
    for split in ("train", "val", "test"):
        tiles = index[index["split"] == split]
        if tiles.empty:
            continue
        area = features.rasterize(((g, 1) for g in tiles.geometry), out_shape=shape,
                                  transform=transform).astype(bool)
        b = budget(pred, truth, area, kinds)
        errors = int(b["errors"])  # type: ignore[call-overload]
        cells = [f"{n} ({n / max(errors, 1):.0%}) -> {iou:.3f}"
                 for n, iou in (b[k] for k in KINDS)]  # type: ignore[misc]
        yardstick = np.mean([(truth & m & area).sum() / max(((truth | m) & area).sum(), 1)
                             for m in moved])
        print(f"| {split} | {b['iou']:.3f} | {errors} | " + " | ".join(cells)
              + f" | {yardstick:.3f} |")


if __name__ == "__main__":
    main()

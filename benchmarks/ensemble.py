"""Score the mean of several models' predictions of one scene (run by hand; README "Results
on real imagery": is seed variance a lever?).

Each PRED folder is one ``score_areas.py`` prediction (``pred_<name>_<tag>/`` with
``buildings_prob.tif`` and ``buildings_mask.tif``: the same scene, grid and model GSD).
Their footprint and contour probabilities are averaged, polygonized block by block with
``geotiler predict``'s default settings (:func:`geotiler.polygons.polygonize_tiled`), and
scored on the val and test areas of ``--ref`` as ``score_areas.py`` scores a model (given
one folder, it reproduces that model's line exactly)::

    python benchmarks/ensemble.py /tmp/q/pred_def_wall /tmp/q/pred_def_wall_s1 \\
        --ref /tmp/q/def256 --name def --out /tmp/ens/ma2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ablation as ab
import score_areas as sa

from geotiler.io import ground_gsd
from geotiler.polygons import PolygonOptions, polygonize_tiled, to_map
from geotiler.predict import PredictConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("preds", type=Path, nargs="+", help="prediction folders of one scene")
    ap.add_argument("--out", type=Path, required=True, help="folder for the mean's outputs")
    ap.add_argument("--work", type=Path, default=sa.W, help="where score_areas keeps areas")
    ap.add_argument("--scene", type=Path, default=ab.DEFAULT_SCENE)
    ap.add_argument("--ref", type=Path, required=True)
    ap.add_argument("--name", default="ma")
    a = ap.parse_args()
    sa.W = a.work
    a.out.mkdir(parents=True, exist_ok=True)
    probs = []
    for pred in a.preds:
        with rasterio.open(pred / "buildings_prob.tif") as src:
            probs.append(src.read().astype(np.float32))
            transform, crs = src.transform, src.crs
    with rasterio.open(a.preds[0] / "buildings_mask.tif") as src:
        profile, nodata, valid = src.profile, src.nodata, src.read_masks(1) > 0
    footprint, contour = np.rint(np.mean(probs, axis=0)).astype(np.uint8)
    footprint[~valid] = 0
    contour[~valid] = 0
    mask = np.where(valid, footprint >= 128, nodata or 0).astype(np.uint8)
    with rasterio.open(a.out / "buildings_mask.tif", "w", **profile) as dst:
        dst.write(mask, 1)
        if nodata is None:
            dst.write_mask(valid)
    gx, gy = ground_gsd(crs, transform, mask.shape[1], mask.shape[0])
    pixel_area, config = gx * gy, PredictConfig()
    options = PolygonOptions(threshold=config.threshold,
                             instances=config.instances.in_pixels(pixel_area ** 0.5),
                             simplify=config.simplify / pixel_area ** 0.5,
                             min_area=config.min_area / pixel_area)
    found = polygonize_tiled(lambda r: (footprint[r.row0:r.row1, r.col0:r.col1],
                                        contour[r.row0:r.row1, r.col0:r.col1]),
                             mask.shape[0], mask.shape[1], options=options)
    gpd.GeoDataFrame({"area_m2": found.area * pixel_area, "score": found.score},
                     geometry=list(to_map(found.geoms, transform)), crs=crs).to_file(
        a.out / "buildings.gpkg", layer="buildings", driver="GPKG")
    areas = sa.prep(a.ref, a.scene.resolve(), a.name)["areas"]
    cells = []
    for split, (area, area_crs, truth, _) in areas.items():
        m, q, _ = ab.score_area(a.out / "buildings.gpkg", a.out / split, area, area_crs, truth)
        cells.append(f"{split}: IoU {m['pixels']['iou']:.3f} F1 {m['pixels']['f1']:.3f} "
                     f"bldgF1 {q['buildings']['f1']:.3f} "
                     f"{q['buildings']['predicted']}/{q['buildings']['truth']}")
    print(f"{a.name} mean of {', '.join(p.name for p in a.preds)} " + " | ".join(cells))


if __name__ == "__main__":
    main()

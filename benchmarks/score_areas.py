"""Score one model on the fixed val and test areas of a scene (run by hand; README
"Results on real imagery": recipes, post-processing, synthetic pretraining).

The areas are the val and test tiles of a reference tiling (``--ref``, e.g. the one
``benchmarks/ablation.py`` makes: 128 px tiles, 2-tile split blocks of 256 m at 1 m). The
model predicts the whole scene (extra arguments go to ``geotiler predict``), the mask is cut
to each area, truth and predicted polygons are clipped to it (parts under 4 m² dropped),
and ``geotiler evaluate`` scores both. Settings are chosen on the val columns; test is
reported. One line per run is appended to ``WORK/results.txt``::

    geotiler tile 22978945_15.tif -f 22978945_15.gpkg -o /tmp/q/ref128 --size 128 \
        --keep-empty 1 --seed 0
    python benchmarks/score_areas.py model.pt --ref /tmp/q/ref128 --tag base
    python benchmarks/score_areas.py model.pt --ref /tmp/q/ref128 --tag t04 --threshold 0.4
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import geopandas as gpd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ablation as ab

W = Path("/tmp/q")  # default work folder (``--work``)


def prep(ref: Path, scene: Path, name: str) -> dict:
    raster, footprints = ab.find_scene_files(scene)
    out = {}
    for split in ("val", "test"):
        index = gpd.read_file(ref / "index.gpkg", layer="tiles")
        sub = index[index["split"] == split]
        import numpy as np
        import shapely
        area = shapely.union_all(np.asarray(sub.geometry.values, dtype=object))
        crs = ab.CRS.from_user_input(index.crs.to_wkt())
        d = W / f"area_{name}_{split}"
        truth = ab.area_truth(gpd.read_file(footprints), area, crs, d)
        out[split] = (area, crs, truth, d)
    return {"raster": raster, "areas": out}


def score(model: Path, scene: Path, ref: Path, name: str, tag: str, extra: list[str]) -> dict:
    p = prep(ref, scene, name)
    raster = p["raster"]
    outd = model.parent / f"pred_{name}_{tag}"
    gpkg = outd / "buildings.gpkg"
    summ, _, wall = ab.geotiler("predict", str(raster), "-m", str(model), "-o", str(gpkg),
                                "--device", "cpu", "--no-progress", "--overwrite", *extra)
    res = {"predict": summ.strip(), "predict_s": wall}
    for split, (area, crs, truth, _) in p["areas"].items():
        m, q, _ = ab.score_area(gpkg, outd / split, area, crs, truth)
        res[split] = {"iou": m["pixels"]["iou"], "f1": m["pixels"]["f1"],
                      "bf": m["boundary"]["f_score"], "bldg_f1": q["buildings"]["f1"],
                      "pred": q["buildings"]["predicted"], "true": q["buildings"]["truth"]}
    line = f"{name} {tag} " + " | ".join(
        f"{s}: IoU {r['iou']:.3f} F1 {r['f1']:.3f} bF {r['bf']:.3f} bldgF1 {r['bldg_f1']:.3f} "
        f"{r['pred']}/{r['true']}" for s, r in res.items() if s in ("val", "test"))
    print(line, flush=True)
    with open(W / "results.txt", "a") as f:
        f.write(line + f"  [{' '.join(extra)}]\n")
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--work", type=Path, default=W, help="areas and results.txt go here")
    ap.add_argument("--scene", type=Path, default=ab.DEFAULT_SCENE)
    ap.add_argument("--ref", type=Path, default=W / "ref128")
    ap.add_argument("--name", default="ma")
    ap.add_argument("--tag", default="default")
    a, extra = ap.parse_known_args()
    W = a.work
    score(a.model, a.scene.resolve(), a.ref, a.name, a.tag, extra)

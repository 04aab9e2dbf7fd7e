"""What the prediction did to each true building (run by hand; README "Results on real
imagery", issue #12's building-F1 goal).

Building F1@0.5 says how many footprints were found, not why the others were not. This
sorts every true footprint (parts under ``--min-area`` m² dropped from both sides, as
``score_areas.py`` does) by its best-overlapping predicted polygon:

- ``matched``: IoU >= 0.5 (what building F1 counts);
- ``merged``: that polygon also covers >= 30 % of another footprint (neighbours joined);
- ``split``: two or more predicted polygons each cover >= 10 % of it;
- ``partial``: one polygon, IoU < 0.5 (outline too small or too large);
- ``missed``: no predicted polygon covers 10 % of it (nor 10 % of itself lies on it).

::

    python benchmarks/error_kinds.py /tmp/bn/pred_bn_w025/val/buildings.gpkg \
        /tmp/bn/area_bn_val/truth_buildings.gpkg
"""
from __future__ import annotations

import argparse
from collections import Counter

import geopandas as gpd
import numpy as np

KINDS = ("matched", "merged", "split", "partial", "missed")


def error_kinds(pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, min_area: float = 4.0
                ) -> tuple[list[str], np.ndarray]:
    """The kind of every true footprint and its area in m² (both in a projected CRS)."""
    if truth.crs.is_geographic:
        truth = truth.to_crs(truth.estimate_utm_crs())
    pred = pred.to_crs(truth.crs)
    pred = pred[pred.area >= min_area].reset_index(drop=True)
    truth = truth[truth.area >= min_area].reset_index(drop=True)
    p_geoms, t_geoms = pred.geometry.values, truth.geometry.values
    kinds = []
    for t in t_geoms:
        hits = [(j, t.intersection(p_geoms[j]).area) for j in pred.sindex.query(t)]
        hits = [(j, a) for j, a in hits if a > 0.1 * min(t.area, p_geoms[j].area)]
        if not hits:
            kinds.append("missed")
            continue
        best = p_geoms[max(hits, key=lambda h: h[1])[0]]
        covered = sum(1 for k in truth.sindex.query(best)
                      if t_geoms[k].intersection(best).area > 0.3 * t_geoms[k].area)
        if t.intersection(best).area / t.union(best).area >= 0.5:
            kinds.append("matched")
        elif covered >= 2:
            kinds.append("merged")
        elif len(hits) >= 2:
            kinds.append("split")
        else:
            kinds.append("partial")
    return kinds, np.asarray(truth.area)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pred", help="predicted polygons (predict's buildings.gpkg)")
    ap.add_argument("truth", help="true footprints")
    ap.add_argument("--min-area", type=float, default=4.0, help="m², as predict's default")
    args = ap.parse_args()
    kinds, areas = error_kinds(gpd.read_file(args.pred), gpd.read_file(args.truth),
                               args.min_area)
    counts = Counter(kinds)
    print(f"{len(kinds)} true footprints")
    for kind in KINDS:
        sel = np.array([k == kind for k in kinds], dtype=bool)
        median = f"{np.median(areas[sel]):.0f} m²" if sel.any() else "-"
        print(f"{kind:8s} {counts[kind]:5d} {counts[kind] / max(len(kinds), 1):6.1%}  "
              f"median area {median}")


if __name__ == "__main__":
    main()

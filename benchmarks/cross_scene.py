"""Cross-scene generalization: a model trained without a scene family, scored on it, beside
the model trained on every family (run by hand; README "Results on real imagery").

Every RGB scene of ``../shared/data`` is tiled at one common GSD (``--gsd``, default 0.5 m:
the scenes range from 0.13 m to 1 m), 256 px tiles with 128 px overlap, split blocks of
4 tiles (256 m at 0.5 m: at Massachusetts' 1 m the same blocks as benchmarks/ablation.py's
reference split). ``all`` trains one model on the train splits of every family
(``geotiler train A B C ...``, normalization pooled); ``without-F`` trains on every family
but F. Each family's test split (the union of its test tiles) is then scored with both, so
the held-out model is measured on imagery of a region it never saw, and the ``all`` model on
the same pixels of a region it saw elsewhere in the scene. Training budget, seed and
settings are the same for every model (``--max-minutes``, ``--epochs``, ``--seed``).

    python benchmarks/cross_scene.py --work /tmp/cross --holdout massachusetts
    python benchmarks/cross_scene.py --work /tmp/cross --holdout massachusetts atlanta

Writes ``WORK/cross_scene.md`` and ``WORK/cross_scene.json``; prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from rasterio.crs import CRS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation import (
    REPO,
    area_truth,
    geotiler,
    score_area,
    start,
)

DATA = REPO.parent / "shared" / "data"
log = logging.getLogger("cross_scene")


@dataclass(frozen=True)
class Scene:
    family: str  # region: a held-out unit
    name: str
    rasters: tuple[str, ...]  # globs in the scene folder
    footprints: str
    extra: tuple[str, ...] = ()


SCENES = (
    Scene("massachusetts", "massachusetts-22978945", ("22978945_15.tif",), "22978945_15.gpkg"),
    Scene("atlanta", "spacenet4-atlanta-737201_3736389", ("DERIVED_*.tif",), "MVOI_*.geojson"),
    Scene("atlanta", "spacenet-atlanta-rgba", ("SN4_*.tif",), "SN4_*.geojson",
          ("--bands", "1,2,3")),
    Scene("east-africa", "tanzania", ("DERIVED_*.tif",), "labels.geojson"),
    Scene("east-africa", "kampala-a", ("DERIVED_kampala_A_z20_mosaic.tif",), "labels.geojson"),
    Scene("east-africa", "fair-ds5-nairobi", ("DERIVED_*.tif",), "labels.geojson"),
    Scene("nepal", "fairmodels-banepa", ("DERIVED_banepa_*.tif",), "osm_features_*.geojson"),
    Scene("nepal", "fair-ds3-nepal", ("DERIVED_*.tif",), "labels.geojson"),
    Scene("philippines", "philippines", ("DERIVED_*.tif",), "labels.geojson"),
    Scene("canada", "gdl-new-brunswick", ("23322E759967N_clipped_1m_1of2.tif",),
          "DERIVED_BakerLake_2017_buildings_only.gpkg"),
)


def one(folder: Path, pattern: str) -> list[Path]:
    found = sorted(folder.glob(pattern))
    if not found:
        raise SystemExit(f"{folder} has no {pattern}")
    return found


def tile_scene(scene: Scene, work: Path, args: argparse.Namespace) -> Path:
    folder = DATA / scene.name
    out = work / "tiles" / scene.name
    if (out / "dataset.json").exists():
        return out
    rasters = [str(p) for pattern in scene.rasters for p in one(folder, pattern)]
    footprints = one(folder, scene.footprints)[0]
    geotiler("tile", *rasters, "-f", str(footprints), "-o", str(out), "--gsd", str(args.gsd),
             "--size", "256", "--overlap", "128", "--block-tiles", "4", "--keep-empty", "0.5",
             "--seed", str(args.seed), "--no-progress", "--overwrite", *scene.extra)
    return out


def test_area(tiles: Path) -> tuple[shapely.Geometry, CRS] | None:
    index = gpd.read_file(tiles / "index.gpkg", layer="tiles")
    test = index[index["split"] == "test"]
    if test.empty:
        return None
    area = shapely.union_all(np.asarray(test.geometry.values, dtype=object))
    return area, CRS.from_user_input(index.crs.to_wkt())


def train(name: str, tiles: list[Path], work: Path, args: argparse.Namespace) -> Path:
    model = work / name / "model.pt"
    if model.exists() and not args.retrain:
        return model
    model.parent.mkdir(parents=True, exist_ok=True)
    summary, cpu, _ = geotiler("train", *map(str, tiles), "-o", str(model), "--epochs",
                               str(args.epochs), "--max-minutes", str(args.max_minutes),
                               "--seed", str(args.seed), "--device", "cpu", "--overwrite",
                               *shlex.split(args.train_args))
    log.info("%s: %s (CPU %.1f min)", name, summary.strip(), cpu / 60)
    return model


def score_scene(model: Path, scene: Scene, tiles: Path, out: Path) -> dict[str, Any] | None:
    """Predict each raster of the scene and score the union of its test tiles."""
    found = test_area(tiles)
    if found is None:
        return None
    area, crs = found
    folder = DATA / scene.name
    truth = area_truth(gpd.read_file(one(folder, scene.footprints)[0]), area, crs, out)
    rasters = [p for pattern in scene.rasters for p in one(folder, pattern)]
    gpkg = out / "scene" / "buildings.gpkg"
    raster = rasters[0]
    if len(rasters) > 1:  # one input covering the test tiles of every raster: a GDAL VRT
        raster = out / "scene" / "mosaic.vrt"
        raster.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gdalbuildvrt", "-q", "-overwrite", str(raster), *map(str, rasters)],
                       check=True)
    geotiler("predict", str(raster), "-m", str(model), "-o", str(gpkg), "--device", "cpu",
             "--no-progress", "--overwrite", *(("--bands", "1,2,3") if scene.extra else ()))
    m, q, _ = score_area(gpkg, out / "test", area, crs, truth)
    totals = {"iou": m["pixels"]["iou"], "f1": m["pixels"]["f1"],
              "boundary_f": m["boundary"]["f_score"], "building_f1": q["buildings"]["f1"],
              "predicted": q["buildings"]["predicted"], "truth": q["buildings"]["truth"]}
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="work folder (outside the repo)")
    parser.add_argument("--holdout", nargs="+", default=["massachusetts"],
                        help="families to hold out, one model each")
    parser.add_argument("--gsd", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--max-minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retrain", action="store_true", help="retrain existing models")
    parser.add_argument("--train-args", default="",
                        help="more `geotiler train` options for every model, e.g. "
                        "'--scale-jitter 0.25'")
    args = parser.parse_args()
    work = start(args.work)
    tiles = {s.name: tile_scene(s, work, args) for s in SCENES}
    models = {"all": train("all", list(tiles.values()), work, args)}
    for family in args.holdout:
        keep = [tiles[s.name] for s in SCENES if s.family != family]
        models[f"without-{family}"] = train(f"without-{family}", keep, work, args)
    rows: list[dict[str, Any]] = []
    for family in args.holdout:
        for scene in (s for s in SCENES if s.family == family):
            for label in ("all", f"without-{family}"):
                result = score_scene(models[label], scene, tiles[scene.name],
                                     work / label / "scores" / scene.name)
                if result is not None:
                    rows.append({"scene": scene.name, "family": family, "model": label,
                                 **result})
    lines = ["| scene (family) | model | pixel IoU | pixel F1 | building F1@0.5 | "
             "boundary F | buildings predicted / true |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['scene']} ({r['family']}) | {r['model']} | {r['iou']:.3f} | "
                     f"{r['f1']:.3f} | {r['building_f1']:.3f} | {r['boundary_f']:.3f} | "
                     f"{r['predicted']} / {r['truth']} |")
    header = (f"Cross-scene: {len(SCENES)} scenes tiled at {args.gsd} m, 256 px, overlap 128; "
              f"each model {args.epochs} epochs at most, {args.max_minutes} min, seed "
              f"{args.seed}{' ' + args.train_args if args.train_args else ''}; scored on "
              "each held-out scene's test split.")
    text = header + "\n\n" + "\n".join(lines)
    (work / "cross_scene.md").write_text(text + "\n")
    (work / "cross_scene.json").write_text(json.dumps({"rows": rows, "args": vars(args)},
                                                      indent=2, default=str) + "\n")
    print(text)


if __name__ == "__main__":
    main()

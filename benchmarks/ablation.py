"""Ablation: pix2pix vs U-Net, with and without contour targets, on one real scene (by hand).

Reproduces the ablation table of README.md from scratch: the same tiles (same split), the
same epochs and the same seed for four models, scored on the test split::

    python benchmarks/ablation.py --work /tmp/ablation                  # README table
    python benchmarks/ablation.py --epochs 1 --work /tmp/ablation_smoke  # smoke run, minutes
    python benchmarks/ablation.py --scene ../shared/data/massachusetts-22978945 --size 128 \\
        --epochs 20 --seed 0 --max-minutes 30 --work /tmp/ablation

| config | tiles | train |
|---|---|---|
| pix2pix + contours (the seed method) | ``--contour-width 3`` | ``--arch pix2pix`` |
| pix2pix, no contours | ``--contour-width 0`` | ``--arch pix2pix`` |
| U-Net (BCE + Dice) + contours | ``--contour-width 3`` | ``--arch unet`` |
| U-Net (BCE + Dice), no contours | ``--contour-width 0`` | ``--arch unet`` |

Every step is the CLI, run as ``sys.executable -m geotiler`` (WORK is ``--work``, default a
new temporary folder; the scene's raster and footprints are found in ``--scene``)::

    geotiler tile RASTER -f FOOTPRINTS -o WORK/tiles_contour{3,0} --size 128 \\
        --contour-width {3,0} --keep-empty 1 --seed 0 --no-progress --overwrite
    geotiler train WORK/tiles_contour{3,0} -o WORK/{config}/model.pt --arch {pix2pix,unet} \\
        --epochs 20 --seed 0 --workers 0 --device cpu --overwrite [--max-minutes M]
    geotiler predict RASTER -m WORK/{config}/model.pt -o WORK/{config}/scene/buildings.gpkg \\
        --device cpu --no-progress --overwrite
    geotiler evaluate WORK/{config}/test/mask.tif WORK/test_area/truth.gpkg \\
        -o WORK/{config}/test/eval_mask.json --overwrite
    geotiler evaluate WORK/{config}/test/buildings.gpkg WORK/test_area/truth_buildings.gpkg \\
        --raster WORK/{config}/test/mask.tif -o WORK/{config}/test/eval_polygons.json --overwrite

Settings are fixed by the options (chosen on val, reported on test): ``val IoU`` is the best
epoch's pixel IoU on the val split from ``model.checkpoints/metrics.csv`` (the epoch that
``model.pt`` keeps); every ``test`` column is measured here on the test split.

How the test area is restricted: the test split is the tiles with ``split == "test"`` in
``WORK/tiles_contour3/index.gpkg`` (layer ``tiles``; both tile sets are checked to have the
same tiles in the same splits). Their union is the test area. Each model predicts the whole
scene (imagery only, so context outside the test tiles is seen but no labels), then

* the predicted mask is cut to the window of the test area's bounding box and every pixel
  outside the test tiles is set to nodata (255), so ``evaluate`` counts test pixels only;
* truth footprints and predicted polygons are intersected with the test area (as the tile
  masks are: a building cut by the area's edge keeps its inside part), and parts below
  predict's ``--min-area`` (4 m²) are dropped from both for the per-building scores.

Pixel IoU, pixel F1 and the boundary F-score (1 m) come from the mask (``eval_mask.json``).
The per-building F1 (one-to-one matches at IoU >= 0.5) comes from predict's polygons
(``eval_polygons.json``), since only they use the contour channel to split touching
buildings; ``evaluate`` on a mask polygonizes it without the contours (that score is kept in
``ablation.json`` as ``building_f1_mask``). ``CPU min`` is the training subprocess's user +
system time (``getrusage(RUSAGE_CHILDREN)`` before and after), on the CPU (``--device cpu``,
which also makes runs repeat exactly); torch's threads spin while they wait, so CPU time
grows when other work shares the cores: time on an idle machine.

Writes ``WORK/ablation.md`` (the table), ``WORK/ablation.json`` (every number) and one
quick-look PNG of the test area per model (``WORK/quicklook_{config}.png``: truth yellow,
predicted polygons magenta, outside the test tiles dark grey). Prints the table and which
config wins on test pixel IoU.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
import rasterio.windows
import shapely
from rasterio.crs import CRS
from rasterio.windows import Window

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCENE = REPO.parent / "shared" / "data" / "massachusetts-22978945"
RASTER_SUFFIXES = (".tif", ".tiff")
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".shp", ".parquet", ".fgb")
MASK_NODATA = 255
MIN_AREA_M2 = 4.0  # geotiler predict's default --min-area

log = logging.getLogger("ablation")


@dataclass(frozen=True)
class Config:
    name: str  # folder and file names
    label: str  # table row
    arch: str
    contours: bool


CONFIGS = (
    Config("pix2pix_contours", "pix2pix + contours (seed method)", "pix2pix", True),
    Config("pix2pix_plain", "pix2pix, no contours", "pix2pix", False),
    Config("unet_contours", "U-Net (BCE + Dice) + contours", "unet", True),
    Config("unet_plain", "U-Net (BCE + Dice), no contours", "unet", False),
)


def geotiler(*args: str) -> tuple[str, float, float]:
    """Run ``python -m geotiler ARGS`` (its log goes to our stderr).

    Returns its stdout, CPU seconds (user + system) and wall seconds.
    """
    cmd = [sys.executable, "-m", "geotiler", *args]
    log.info("$ %s", shlex.join(["geotiler", *args]))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"failed (exit {proc.returncode}): {shlex.join(cmd)}\n{proc.stdout}")
    return proc.stdout, cpu, wall


def find_scene_files(scene: Path) -> tuple[Path, Path]:
    """The scene folder's one raster and one footprint file."""
    if not scene.is_dir():
        raise SystemExit(f"scene folder {scene} does not exist")
    files = sorted(p for p in scene.iterdir() if p.is_file())
    rasters = [p for p in files if p.suffix.lower() in RASTER_SUFFIXES]
    vectors = [p for p in files if p.suffix.lower() in VECTOR_SUFFIXES]
    if len(rasters) != 1 or len(vectors) != 1:
        raise SystemExit(f"{scene} holds {len(rasters)} raster(s) and {len(vectors)} footprint "
                         f"file(s); this script needs exactly one of each")
    return rasters[0], vectors[0]


def tile_splits(tiles: Path) -> gpd.GeoDataFrame:
    return gpd.read_file(tiles / "index.gpkg", layer="tiles")


def test_area(tiles: Path) -> tuple[shapely.Geometry, CRS, list[str]]:
    """Union of the test tiles (CRS of the index), and their keys."""
    index = tile_splits(tiles)
    test = index[index["split"] == "test"]
    if test.empty:
        raise SystemExit(f"{tiles} has no test tiles; use a larger scene or another --seed")
    area = shapely.union_all(np.asarray(test.geometry.values, dtype=object))
    return area, CRS.from_user_input(index.crs.to_wkt()), sorted(test["key"])


def check_same_splits(a: Path, b: Path) -> None:
    """Both tile sets must hold the same tiles in the same splits (only the masks differ)."""
    split_a = dict(zip(*(tile_splits(a)[c] for c in ("key", "split")), strict=True))
    split_b = dict(zip(*(tile_splits(b)[c] for c in ("key", "split")), strict=True))
    if split_a != split_b:
        raise SystemExit(f"{a} and {b} have different tiles or splits; cannot compare")


def crop_to_area(src_path: Path, dst_path: Path, area: shapely.Geometry,
                 nodata: int | None) -> None:
    """Copy the window of ``src_path`` around ``area``; pixels outside it become invalid.

    With ``nodata`` they are set to it (and it is the file's nodata value); without, the
    copy gets an internal mask (outside and the source's invalid pixels masked).
    """
    with rasterio.open(src_path) as src:
        full = Window(0, 0, src.width, src.height)
        window = rasterio.windows.from_bounds(*area.bounds, transform=src.transform)
        window = window.round_offsets().round_lengths().intersection(full)
        transform = src.window_transform(window)
        data = src.read(window=window)
        inside = rasterio.features.geometry_mask([area], out_shape=data.shape[1:],
                                                 transform=transform, invert=True)
        profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1],
                   "count": data.shape[0], "dtype": data.dtype, "crs": src.crs,
                   "transform": transform, "compress": "deflate", "nodata": nodata}
        if nodata is not None:
            data[:, ~inside] = nodata
            with rasterio.open(dst_path, "w", **profile) as dst:
                dst.write(data)
            return
        valid = inside & (src.dataset_mask(window=window) > 0)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), \
            rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(data)
        dst.write_mask(valid.astype(np.uint8) * 255)


def clip_polygons(frame: gpd.GeoDataFrame, area: shapely.Geometry, crs: CRS,
                  min_area: float = 0.0) -> gpd.GeoDataFrame:
    """The polygons' parts inside ``area`` (in ``crs``) of at least ``min_area`` (CRS units²)."""
    if frame.crs is None:
        raise SystemExit("a polygon layer has no CRS")
    geoms = np.asarray(frame.to_crs(crs.to_wkt()).geometry.values, dtype=object)
    geoms = geoms[~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)]
    clipped = shapely.intersection(shapely.make_valid(geoms), area)
    parts = shapely.get_parts(shapely.get_parts(clipped))  # collections, then multi-parts
    parts = parts[shapely.get_type_id(parts) == 3]
    areas = shapely.area(parts)
    keep = (areas > 0) & (areas >= min_area)
    return gpd.GeoDataFrame({"area_m2": areas[keep]}, geometry=list(parts[keep]),
                            crs=crs.to_wkt())


def write_polygons(frame: gpd.GeoDataFrame, path: Path) -> Path:
    path.unlink(missing_ok=True)
    frame.to_file(path, layer="buildings", driver="GPKG", geometry_type="Polygon")
    return path


def best_val(metrics_csv: Path) -> dict[str, Any]:
    """The best epoch by val IoU (the first of equals, as training keeps it)."""
    with open(metrics_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise SystemExit(f"{metrics_csv} has no epochs")
    best = max(rows, key=lambda r: float(r["val_iou"]))  # max returns the first maximum
    return {"epochs_run": len(rows), "best_epoch": int(best["epoch"]),
            "val_iou": float(best["val_iou"]), "val_f1": float(best["val_f1"]),
            "val_boundary_f": float(best["val_boundary_f"])}


def run_config(config: Config, tiles: Path, raster: Path, area: shapely.Geometry,
               area_crs: CRS, truth: dict[str, Path], image_crop: Path, work: Path,
               args: argparse.Namespace) -> dict[str, Any]:
    """Train, predict, score on the test area and draw the quick-look of one config."""
    from geotiler.quicklook import render_quicklook

    out = work / config.name
    (out / "test").mkdir(parents=True, exist_ok=True)
    model = out / "model.pt"
    train_args = ["train", str(tiles), "-o", str(model), "--arch", config.arch,
                  "--epochs", str(args.epochs), "--seed", str(args.seed), "--workers", "0",
                  "--device", args.device, "--overwrite"]
    if args.max_minutes is not None:
        train_args += ["--max-minutes", str(args.max_minutes)]
    summary, cpu, wall = geotiler(*train_args)
    log.info("%s: %s (CPU %.1f min)", config.name, summary.strip(), cpu / 60)
    val = best_val(out / "model.checkpoints" / "metrics.csv")

    gpkg = out / "scene" / "buildings.gpkg"
    summary, _, _ = geotiler("predict", str(raster), "-m", str(model), "-o", str(gpkg),
                             "--device", args.device, "--no-progress", "--overwrite")
    log.info("%s: %s", config.name, summary.strip())
    mask = out / "test" / "mask.tif"
    crop_to_area(gpkg.with_name(f"{gpkg.stem}_mask.tif"), mask, area, MASK_NODATA)
    predicted = clip_polygons(gpd.read_file(gpkg, layer="buildings"), area, area_crs,
                              MIN_AREA_M2)
    pred_test = write_polygons(predicted, out / "test" / "buildings.gpkg")

    eval_mask, eval_poly = out / "test" / "eval_mask.json", out / "test" / "eval_polygons.json"
    geotiler("evaluate", str(mask), str(truth["pixels"]), "-o", str(eval_mask), "--overwrite")
    geotiler("evaluate", str(pred_test), str(truth["buildings"]), "--raster", str(mask),
             "-o", str(eval_poly), "--overwrite")
    by_mask = json.loads(eval_mask.read_text())
    by_poly = json.loads(eval_poly.read_text())
    render_quicklook(image_crop, work / f"quicklook_{config.name}.png",
                     truth=gpd.read_file(truth["buildings"]), predicted=predicted)
    return {
        "config": config.name, "label": config.label, "arch": config.arch,
        "contour_width": args.contour_width if config.contours else 0,
        **val,
        "cpu_train_s": cpu, "wall_train_s": wall,
        "test_pixel_iou": by_mask["pixels"]["iou"],
        "test_pixel_f1": by_mask["pixels"]["f1"],
        "test_pixel_precision": by_mask["pixels"]["precision"],
        "test_pixel_recall": by_mask["pixels"]["recall"],
        "test_boundary_f": by_mask["boundary"]["f_score"],
        "test_building_f1": by_poly["buildings"]["f1"],
        "test_building_precision": by_poly["buildings"]["precision"],
        "test_building_recall": by_poly["buildings"]["recall"],
        "test_buildings_predicted": by_poly["buildings"]["predicted"],
        "test_buildings_truth": by_poly["buildings"]["truth"],
        "test_buildings_matched": by_poly["buildings"]["matched"],
        "building_f1_mask": by_mask["buildings"]["f1"],
        "eval_mask": by_mask, "eval_polygons": by_poly,
    }


def markdown_table(results: list[dict[str, Any]]) -> str:
    lines = ["| config | val IoU (best, from training) | test pixel IoU | test F1 | "
             "test building F1@0.5 | test boundary F | CPU min |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['label']} | {r['val_iou']:.3f} (epoch {r['best_epoch']}) | "
                     f"{r['test_pixel_iou']:.3f} | {r['test_pixel_f1']:.3f} | "
                     f"{r['test_building_f1']:.3f} | {r['test_boundary_f']:.3f} | "
                     f"{r['cpu_train_s'] / 60:.1f} |")
    return "\n".join(lines)


def winner_sentence(results: list[dict[str, Any]]) -> str:
    ranked = sorted(results, key=lambda r: -r["test_pixel_iou"])
    first, second = ranked[0], ranked[1]
    if first["test_pixel_iou"] == second["test_pixel_iou"]:
        tied = [r["label"] for r in ranked if r["test_pixel_iou"] == first["test_pixel_iou"]]
        return (f"No single winner on test pixel IoU: {', '.join(tied)} tie at "
                f"{first['test_pixel_iou']:.3f}.")
    return (f"{first['label']} wins on test pixel IoU ({first['test_pixel_iou']:.3f}, "
            f"against {second['test_pixel_iou']:.3f} for {second['label']}).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, default=DEFAULT_SCENE,
                        help="folder with one GeoTIFF and one footprint file")
    parser.add_argument("--work", type=Path, default=None,
                        help="work folder, outside the repository (default: a new temp folder)")
    parser.add_argument("--size", type=int, default=128, help="tile size in pixels")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and training")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="time budget of each training run (geotiler train --max-minutes)")
    parser.add_argument("--contour-width", type=int, default=3,
                        help="outline width of the 'contours' configs (the others use 0)")
    parser.add_argument("--keep-empty", type=float, default=1.0,
                        help="fraction of building-free training tiles kept")
    parser.add_argument("--device", choices=["cpu", "auto", "cuda"], default="cpu",
                        help="where train and predict run (cpu: CPU minutes, exact repeats)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("pyogrio").setLevel(logging.WARNING)  # "Created N records"

    raster, footprints = find_scene_files(args.scene.resolve())
    work = (args.work or Path(tempfile.mkdtemp(prefix="ablation_"))).resolve()
    if work.is_relative_to(REPO):
        raise SystemExit(f"--work {work} is inside the repository; give a folder outside it")
    work.mkdir(parents=True, exist_ok=True)
    log.info("scene %s, footprints %s; work folder %s", raster, footprints.name, work)

    tiles: dict[bool, Path] = {}
    counts: dict[bool, dict[str, int]] = {}
    for contours in (True, False):
        width = args.contour_width if contours else 0
        tiles[contours] = work / f"tiles_contour{width}"
        geotiler("tile", str(raster), "-f", str(footprints), "-o", str(tiles[contours]),
                 "--size", str(args.size), "--contour-width", str(width), "--keep-empty",
                 str(args.keep_empty), "--seed", str(args.seed), "--no-progress", "--overwrite")
        info = json.loads((tiles[contours] / "dataset.json").read_text())
        counts[contours] = info["counts"]
        log.info("%s: %s tiles, mask channels %s", tiles[contours].name, info["counts"],
                 info["mask_channels"])
    check_same_splits(tiles[True], tiles[False])

    area, area_crs, test_keys = test_area(tiles[True])
    test_dir = work / "test_area"
    test_dir.mkdir(exist_ok=True)
    all_truth = gpd.read_file(footprints)
    truth = {"pixels": write_polygons(clip_polygons(all_truth, area, area_crs),
                                      test_dir / "truth.gpkg"),
             "buildings": write_polygons(clip_polygons(all_truth, area, area_crs, MIN_AREA_M2),
                                         test_dir / "truth_buildings.gpkg")}
    image_crop = test_dir / "test_area.tif"
    crop_to_area(raster, image_crop, area, nodata=None)
    n_parts = len(gpd.read_file(truth["buildings"]))
    log.info("test area: %d tiles, %.0f m², %d truth building parts of >= %g m²",
             len(test_keys), area.area, n_parts, MIN_AREA_M2)

    results = []
    for config in CONFIGS:
        results.append(run_config(config, tiles[config.contours], raster, area, area_crs,
                                  truth, image_crop, work, args))

    table = markdown_table(results)
    winner = winner_sentence(results)
    c = counts[True]
    header = (f"Ablation on {raster.name}: {args.size} px tiles ({c.get('train', 0)} train / "
              f"{c.get('val', 0)} val / {c.get('test', 0)} test, {n_parts} test building "
              f"parts), {args.epochs} epoch(s), seed {args.seed}, small preset, "
              f"--device {args.device}.")
    (work / "ablation.md").write_text(f"{header}\n\n{table}\n\n{winner}\n")
    settings = {"scene": str(args.scene), "raster": str(raster), "footprints": str(footprints),
                "size": args.size, "epochs": args.epochs, "seed": args.seed,
                "max_minutes": args.max_minutes, "contour_width": args.contour_width,
                "keep_empty": args.keep_empty, "device": args.device,
                "counts": counts[True], "test_tiles": test_keys, "test_area_m2": area.area,
                "test_building_parts": n_parts, "min_area_m2": MIN_AREA_M2}
    (work / "ablation.json").write_text(
        json.dumps({"settings": settings, "results": results}, indent=2) + "\n")
    log.info("wrote %s, %s and quick-looks quicklook_*.png", work / "ablation.md",
             work / "ablation.json")
    print(f"{header}\n\n{table}\n\n{winner}")


if __name__ == "__main__":
    main()

"""Ablation: U-Net vs Pix2Pix, with and without contour targets, and the seed method's own
recipe, on one real scene (run by hand; issue #12's table in README "Results").

Every config is tiled, trained with the same seed and the same time budget, predicts the
whole scene, and is scored on the same test area; val picks nothing here (the settings
were chosen on val beforehand, README), test is reported::

    python benchmarks/ablation.py --work /tmp/ablation                   # README table
    python benchmarks/ablation.py --epochs 1 --max-minutes 1 --work /tmp/ablation_smoke
    python benchmarks/ablation.py --work /tmp/ablation --reuse   # score the models again

| config | tiles | train | predict |
|---|---|---|---|
| U-Net + contours | 128 px, native GSD, overlap 64, ``--contour-width 3`` | ``--arch unet`` | |
| U-Net, no contours | same, ``--contour-width 0`` | ``--arch unet`` | |
| Pix2Pix (BCE + Dice) + contours | as the U-Net's | ``--arch pix2pix --recon bce-dice`` | |
| Pix2Pix (BCE + Dice), no contours | as above, no contours | same | |
| seed method | 256 px at 0.5 m, ``--target seed-rgb`` | ``--arch pix2pix --recon l1`` | Otsu |

The seed method trained pix2pix (cGAN + 100 L1) on 675 px crops of 20 cm imagery resized to
256 px -- about 0.53 m per pixel -- with an RGB target (white buildings, green outlines,
blurred) and thresholded with Otsu's method. On this 1 m scene its ``--scale 2.64`` would
give 2.6 m pixels and two tiles, so the recipe keeps its ground resolution instead
(``--scale 0.5``: 256 px tiles of 128 m at 0.5 m, whose 2-tile split blocks are the
reference's).

The test area is fixed by a reference tiling (128 px, no overlap, 2-tile split blocks of
256 m, ``--seed``): every config's tiling uses split blocks of the same 256 m, so its train
tiles never touch the test area (checked). Each model predicts the whole scene (imagery
only); the predicted mask is cut to the test area (pixels outside become nodata), truth and
predicted polygons are clipped to it, parts under 4 m² dropped from both.

Columns: ``val IoU`` is the best epoch's pixel IoU on the config's own val tiles
(``metrics.csv``); pixel IoU/F1 and boundary F (1 m) come from the mask; building F1@0.5
(one-to-one matches at IoU >= 0.5) and the predicted/true building counts from predict's
polygons (the instance step: :mod:`geotiler.instances`). ``CPU min`` is the training
process's user + system time. The instance table scores the U-Net + contours model's
predictions again with the instance step off (``--merge-contour 0 --min-marker-area 0
--min-fragment 0``: every predicted contour pixel cuts, as before the step existed).

Writes ``WORK/ablation.md``, ``WORK/ablation.json`` and quick-looks of the test area
(``WORK/quicklook_{config}.png``; not to be committed: the scene is not ours).
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
    tiles: str  # key of TILINGS
    train: tuple[str, ...]
    predict: tuple[str, ...] = ()


# Tilings; every one splits by blocks of 256 m (at 1 m: 2 tiles of 128 px, or 4 at stride 64).
TILINGS: dict[str, tuple[str, ...]] = {
    "reference": ("--size", "128", "--block-tiles", "2", "--contour-width", "3"),
    "contours": ("--size", "128", "--overlap", "64", "--block-tiles", "4",
                 "--contour-width", "3"),
    "plain": ("--size", "128", "--overlap", "64", "--block-tiles", "4", "--contour-width", "0"),
    "seed": ("--size", "256", "--scale", "0.5", "--block-tiles", "2", "--target", "seed-rgb",
             "--contour-width", "3"),
}

CONFIGS = (
    Config("unet_contours", "U-Net (BCE + Dice) + contours", "contours", ("--arch", "unet")),
    Config("unet_plain", "U-Net (BCE + Dice), no contours", "plain", ("--arch", "unet")),
    Config("pix2pix_contours", "Pix2Pix (cGAN + BCE + Dice) + contours", "contours",
           ("--arch", "pix2pix", "--recon", "bce-dice")),
    Config("pix2pix_plain", "Pix2Pix (cGAN + BCE + Dice), no contours", "plain",
           ("--arch", "pix2pix", "--recon", "bce-dice")),
    Config("seed", "seed method: Pix2Pix (cGAN + L1), seed-rgb target, Otsu", "seed",
           ("--arch", "pix2pix", "--recon", "l1"), ("--otsu",)),
)
INSTANCE_OFF = ("--merge-contour", "0", "--min-marker-area", "0", "--min-fragment", "0")


def start(work: Path, verbose: bool = False) -> Path:
    """What every scene benchmark does first: log with timestamps (pyogrio's "Created N
    records" muted), and refuse a work folder inside the repository (nothing made from
    ../shared may land in it). Returns the folder, resolved and created."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("pyogrio").setLevel(logging.WARNING)
    work = work.resolve()
    if work.is_relative_to(REPO):
        raise SystemExit(f"--work {work} is inside the repository; give a folder outside it")
    work.mkdir(parents=True, exist_ok=True)
    return work


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


def truth_on_grid(footprints: Path, crs: CRS, transform: Any, shape: tuple[int, int]
                  ) -> np.ndarray:
    """(H, W) bool: the footprints rasterized on a grid by pixel centre, as ``geotiler
    evaluate`` scores pixels."""
    frame = gpd.read_file(footprints).to_crs(crs)
    return rasterio.features.rasterize(((g, 1) for g in frame.geometry if g is not None),
                                       out_shape=shape, transform=transform).astype(bool)


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
    """The polygons' parts inside ``area`` (in ``crs``) of at least ``min_area`` m² (areas
    measured in the local UTM zone where ``crs`` is geographic)."""
    if frame.crs is None:
        raise SystemExit("a polygon layer has no CRS")
    geoms = np.asarray(frame.to_crs(crs.to_wkt()).geometry.values, dtype=object)
    geoms = geoms[~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)]
    clipped = shapely.intersection(shapely.make_valid(geoms), area)
    parts = shapely.get_parts(shapely.get_parts(clipped))  # collections, then multi-parts
    parts = parts[shapely.get_type_id(parts) == 3]
    areas = shapely.area(parts)
    if crs.is_geographic and len(parts):
        series = gpd.GeoSeries(parts, crs=crs.to_wkt())
        areas = series.to_crs(series.estimate_utm_crs()).area.to_numpy()
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


def area_truth(footprints: gpd.GeoDataFrame, area: shapely.Geometry, crs: CRS,
               folder: Path) -> dict[str, Path]:
    """The truth of one scoring area: every part inside it (for the pixel scores) and the
    parts of at least 4 m² (for the per-building scores), as GeoPackages in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return {"pixels": write_polygons(clip_polygons(footprints, area, crs), folder / "truth.gpkg"),
            "buildings": write_polygons(clip_polygons(footprints, area, crs, MIN_AREA_M2),
                                        folder / "truth_buildings.gpkg")}


def score_area(gpkg: Path, folder: Path, area: shapely.Geometry, crs: CRS,
               truth: dict[str, Path]) -> tuple[dict[str, Any], dict[str, Any],
                                                 gpd.GeoDataFrame]:
    """Score predict's outputs (``gpkg`` and its ``_mask.tif``) on one area.

    The mask is cut to the area (pixels outside become nodata), the polygons clipped to it
    (parts under 4 m² dropped), and ``geotiler evaluate`` scores both against ``truth``
    (:func:`area_truth`); files go to ``folder``. Returns the mask's and the polygons'
    evaluate reports and the clipped predicted polygons.
    """
    folder.mkdir(parents=True, exist_ok=True)
    mask = folder / "mask.tif"
    crop_to_area(gpkg.with_name(f"{gpkg.stem}_mask.tif"), mask, area, MASK_NODATA)
    predicted = clip_polygons(gpd.read_file(gpkg, layer="buildings"), area, crs, MIN_AREA_M2)
    polygons = write_polygons(predicted, folder / "buildings.gpkg")
    eval_mask, eval_poly = folder / "eval_mask.json", folder / "eval_polygons.json"
    geotiler("evaluate", str(mask), str(truth["pixels"]), "-o", str(eval_mask), "--overwrite")
    geotiler("evaluate", str(polygons), str(truth["buildings"]), "--raster", str(mask),
             "-o", str(eval_poly), "--overwrite")
    return json.loads(eval_mask.read_text()), json.loads(eval_poly.read_text()), predicted


def score(model: Path, raster: Path, out: Path, area: shapely.Geometry, area_crs: CRS,
          truth: dict[str, Path], args: argparse.Namespace,
          predict_args: tuple[str, ...] = ()) -> tuple[dict[str, Any], gpd.GeoDataFrame]:
    """Predict the whole scene with ``model`` and score it on the test area."""
    gpkg = out / "scene" / "buildings.gpkg"
    summary, _, _ = geotiler("predict", str(raster), "-m", str(model), "-o", str(gpkg),
                             "--device", args.device, "--no-progress", "--overwrite",
                             *predict_args)
    log.info("%s: %s", out.name, summary.strip())
    by_mask, by_poly, predicted = score_area(gpkg, out / "test", area, area_crs, truth)
    return {
        "test_pixel_iou": by_mask["pixels"]["iou"],
        "test_pixel_f1": by_mask["pixels"]["f1"],
        "test_boundary_f": by_mask["boundary"]["f_score"],
        "test_building_f1": by_poly["buildings"]["f1"],
        "test_building_precision": by_poly["buildings"]["precision"],
        "test_building_recall": by_poly["buildings"]["recall"],
        "test_buildings_predicted": by_poly["buildings"]["predicted"],
        "test_buildings_truth": by_poly["buildings"]["truth"],
        "eval_mask": by_mask, "eval_polygons": by_poly,
    }, predicted


def run_config(config: Config, tiles: Path, raster: Path, area: shapely.Geometry,
               area_crs: CRS, truth: dict[str, Path], image_crop: Path, work: Path,
               args: argparse.Namespace) -> dict[str, Any]:
    """Train, predict, score on the test area and draw the quick-look of one config."""
    from geotiler.quicklook import render_quicklook

    out = work / config.name
    out.mkdir(parents=True, exist_ok=True)
    model = out / "model.pt"
    train_args = ["train", str(tiles), "-o", str(model), *config.train,
                  "--epochs", str(args.epochs), "--seed", str(args.seed), "--workers", "0",
                  "--device", args.device, "--overwrite"]
    if args.max_minutes is not None:
        train_args += ["--max-minutes", str(args.max_minutes)]
    record = out / "train.json"  # the training run's summary and times, for --reuse
    if args.reuse and model.exists() and record.exists():
        done = json.loads(record.read_text())
        summary, cpu, wall = done["summary"], done["cpu_s"], done["wall_s"]
        log.info("%s: reusing %s (trained earlier with %s)", config.name, model,
                 " ".join(done["args"]))
    else:
        summary, cpu, wall = geotiler(*train_args)
        record.write_text(json.dumps({"summary": summary, "cpu_s": cpu, "wall_s": wall,
                                      "args": train_args}, indent=2) + "\n")
    log.info("%s: %s (CPU %.1f min)", config.name, summary.strip(), cpu / 60)
    val = best_val(out / "model.checkpoints" / "metrics.csv")
    scores, predicted = score(model, raster, out, area, area_crs, truth, args, config.predict)
    render_quicklook(image_crop, work / f"quicklook_{config.name}.png",
                     truth=gpd.read_file(truth["buildings"]), predicted=predicted)
    return {"config": config.name, "label": config.label, "tiles": config.tiles,
            "train_args": list(config.train), "predict_args": list(config.predict),
            **val, "cpu_train_s": cpu, "wall_train_s": wall, "model": str(model), **scores}


def markdown_table(results: list[dict[str, Any]]) -> str:
    lines = ["| config | val IoU (best epoch) | test pixel IoU | test F1 | "
             "test building F1@0.5 | test boundary F | buildings predicted / true | CPU min |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['label']} | {r['val_iou']:.3f} ({r['best_epoch']}) | "
                     f"{r['test_pixel_iou']:.3f} | {r['test_pixel_f1']:.3f} | "
                     f"{r['test_building_f1']:.3f} | {r['test_boundary_f']:.3f} | "
                     f"{r['test_buildings_predicted']} / {r['test_buildings_truth']} | "
                     f"{r['cpu_train_s'] / 60:.1f} |")
    return "\n".join(lines)


def winner_sentence(results: list[dict[str, Any]]) -> str:
    ranked = sorted(results, key=lambda r: -r["test_pixel_iou"])
    first, second = ranked[0], ranked[1]
    return (f"{first['label']} wins on test pixel IoU ({first['test_pixel_iou']:.3f}, "
            f"against {second['test_pixel_iou']:.3f} for {second['label']}).")


def instance_table(on: dict[str, Any], off: dict[str, Any]) -> str:
    lines = ["| instance step | test building F1@0.5 | precision | recall | "
             "buildings predicted / true |", "|---|---|---|---|---|"]
    for label, r in (("off (every contour pixel cuts)", off), ("on (default)", on)):
        lines.append(f"| {label} | {r['test_building_f1']:.3f} | "
                     f"{r['test_building_precision']:.3f} | {r['test_building_recall']:.3f} | "
                     f"{r['test_buildings_predicted']} / {r['test_buildings_truth']} |")
    return "\n".join(lines)


def check_disjoint(tiles: Path, area: shapely.Geometry) -> None:
    """No train tile of ``tiles`` may cover any of the test area."""
    index = tile_splits(tiles)
    train = shapely.union_all(np.asarray(index[index["split"] == "train"].geometry.values,
                                         dtype=object))
    if shapely.area(shapely.intersection(train, area)) > 1e-6 * area.area:
        raise SystemExit(f"train tiles of {tiles} overlap the test area")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, default=DEFAULT_SCENE,
                        help="folder with one GeoTIFF and one footprint file")
    parser.add_argument("--work", type=Path, default=None,
                        help="work folder, outside the repository (default: a new temp folder)")
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and training")
    parser.add_argument("--max-minutes", type=float, default=6.0,
                        help="time budget of each training run (geotiler train --max-minutes)")
    parser.add_argument("--keep-empty", type=float, default=1.0,
                        help="fraction of building-free training tiles kept")
    parser.add_argument("--only", nargs="*", default=None, help="run only these configs")
    parser.add_argument("--device", choices=["cpu", "auto", "cuda"], default="cpu",
                        help="where train and predict run")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the models an earlier run trained in --work (with their "
                        "train.json) and only predict and score again")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    work = start(args.work or Path(tempfile.mkdtemp(prefix="ablation_")), args.verbose)
    raster, footprints = find_scene_files(args.scene.resolve())
    log.info("scene %s, footprints %s; work folder %s", raster, footprints.name, work)

    configs = [c for c in CONFIGS if args.only is None or c.name in args.only]
    tiles: dict[str, Path] = {}
    for name in ["reference", *sorted({c.tiles for c in configs})]:
        tiles[name] = work / f"tiles_{name}"
        if not (tiles[name] / "dataset.json").exists():
            geotiler("tile", str(raster), "-f", str(footprints), "-o", str(tiles[name]),
                     *TILINGS[name], "--keep-empty", str(args.keep_empty), "--seed",
                     str(args.seed), "--no-progress", "--overwrite")
    area, area_crs, test_keys = test_area(tiles["reference"])
    for path in tiles.values():
        check_disjoint(path, area)
    test_dir = work / "test_area"
    truth = area_truth(gpd.read_file(footprints), area, area_crs, test_dir)
    image_crop = test_dir / "test_area.tif"
    crop_to_area(raster, image_crop, area, nodata=None)
    n_parts = len(gpd.read_file(truth["buildings"]))
    log.info("test area: %d reference tiles, %.0f m², %d truth building parts of >= %g m²",
             len(test_keys), area.area, n_parts, MIN_AREA_M2)

    results = [run_config(c, tiles[c.tiles], raster, area, area_crs, truth, image_crop, work,
                          args) for c in configs]
    text = f"{markdown_table(results)}\n\n{winner_sentence(results)}" if len(results) > 1 \
        else markdown_table(results)
    unet = next((r for r in results if r["config"] == "unet_contours"), None)
    if unet is not None:
        off, _ = score(Path(unet["model"]), raster, work / "unet_contours_instance_off", area,
                       area_crs, truth, args, INSTANCE_OFF)
        unet["instance_off"] = off
        text += "\n\nInstance step, U-Net + contours, same predictions:\n\n" + \
            instance_table(unet, off)
    counts = {k: json.loads((v / "dataset.json").read_text())["counts"] for k, v in tiles.items()}
    header = (f"Ablation on {raster.name}: test area of {len(test_keys)} reference tiles "
              f"({area.area:.0f} m², {n_parts} test building parts), {args.epochs} epochs at "
              f"most, {args.max_minutes} min each, seed {args.seed}, small preset, "
              f"--device {args.device}; tiles per split: {counts}.")
    (work / "ablation.md").write_text(f"{header}\n\n{text}\n")
    settings = {"scene": str(args.scene), "raster": str(raster), "footprints": str(footprints),
                "epochs": args.epochs, "seed": args.seed, "max_minutes": args.max_minutes,
                "keep_empty": args.keep_empty, "device": args.device, "tilings": TILINGS,
                "counts": counts, "test_tiles": test_keys, "test_area_m2": area.area,
                "test_building_parts": n_parts, "min_area_m2": MIN_AREA_M2}
    (work / "ablation.json").write_text(
        json.dumps({"settings": settings, "results": results}, indent=2) + "\n")
    log.info("wrote %s, %s and quick-looks quicklook_*.png", work / "ablation.md",
             work / "ablation.json")
    print(f"{header}\n\n{text}")


if __name__ == "__main__":
    main()

"""Benchmark ``geotiler tile`` against the GDAL route on a generated scene (run by hand).

In one run, for each raster size: generate a synthetic scene (RGB GeoTIFF + footprints),
then time

* geotiler: ``geotiler tile`` (imagery tiles + footprint and contour masks + shards + index),
* GDAL: ``gdal_rasterize`` of the footprints onto the raster's grid, then ``gdal_retile.py``
  of the imagery and of the mask into 256 px GeoTIFFs (Debian's gdal-bin),

and print tiles/s for both, their ratio, and each run's peak RSS (sampled with psutil over
the whole process tree). Memory should not grow with the raster size.

It also times the start-up floor: a Python process that only imports what ``geotiler
tile`` imports (rasterio, pyogrio -- which imports geopandas, pandas and pyarrow when they
are installed --, shapely, OpenCV, imagecodecs, dask), and prints it as a share of the
GDAL route's whole run: on small rasters that share bounds the ratio geotiler can reach.

    python benchmarks/bench_tile.py                      # 4096 and 16384 px
    python benchmarks/bench_tile.py --sizes 2048 --keep  # quick, keep outputs
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from geotiler.synthetic import SceneSpec, make_scene

log = logging.getLogger("bench_tile")


def run_measured(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, peak RSS of it and its children in MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            parent = psutil.Process(proc.pid)
            while not done.is_set():
                rss = parent.memory_info().rss
                for child in parent.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        rss += child.memory_info().rss
                peak = max(peak, rss)
                time.sleep(0.02)
        except psutil.Error:
            pass

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    done.set()
    sampler.join()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err.decode()[-2000:]}")
    return seconds, peak / 2**20


def gdal_route(raster: Path, vector: Path, work: Path, size: int) -> tuple[float, float, int]:
    """gdal_rasterize (mask on the raster grid) + gdal_retile.py of image and mask."""
    import rasterio

    with rasterio.open(raster) as src:
        left, bottom, right, top = src.bounds
        width, height = src.width, src.height
    mask = work / "gdal_mask.tif"
    seconds = peak = 0.0
    for cmd in (
        ["gdal_rasterize", "-q", "-burn", "255", "-ot", "Byte", "-te", str(left), str(bottom),
         str(right), str(top), "-ts", str(width), str(height), "-co", "TILED=YES",
         str(vector), str(mask)],
        ["gdal_retile.py", "-q", "-ps", str(size), str(size), "-targetDir",
         str(_fresh(work / "gdal_img")), str(raster)],
        ["gdal_retile.py", "-q", "-ps", str(size), str(size), "-targetDir",
         str(_fresh(work / "gdal_mask")), str(mask)],
    ):
        s, p = run_measured(cmd)
        seconds += s
        peak = max(peak, p)
    tiles = len(list((work / "gdal_img").glob("*.tif")))
    return seconds, peak, tiles


def geotiler_route(raster: Path, vector: Path, work: Path, size: int, extra: list[str]
                   ) -> tuple[float, float, int]:
    out = work / "geotiler_tiles"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "geotiler", "-q", "tile", str(raster), "-f", str(vector),
           "-o", str(out), "--size", str(size), "--keep-empty", "1", "--max-nodata", "1",
           "--no-progress", *extra]
    seconds, peak = run_measured(cmd)
    import json

    counts = json.loads((out / "dataset.json").read_text())["counts"]
    return seconds, peak, sum(counts.values())


#: What a ``geotiler tile`` process imports before it cuts a tile (``python -X importtime``).
STARTUP_IMPORTS = "import pipelines.tile, geotiler.tiles.task, geotiler.vectors, pyogrio"


def startup_floor() -> float:
    """Wall seconds of a Python process that only imports what ``geotiler tile`` imports."""
    seconds, _ = run_measured([sys.executable, "-c", STARTUP_IMPORTS])
    return seconds


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384],
                        help="raster side lengths in pixels")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--work", type=Path, default=None, help="work directory (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--repeat", type=int, default=2,
                        help="runs of each route; the fastest counts (shared VMs are noisy)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not shutil.which("gdal_retile.py"):
        raise SystemExit("gdal_retile.py not found: apt-get install gdal-bin")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_tile_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    floor_rows: list[tuple[int, float, float]] = []
    try:
        for side in args.sizes:
            raster, vector = work / f"scene_{side}.tif", work / f"scene_{side}.gpkg"
            if not raster.exists():
                log.info("generating a %d x %d scene ...", side, side)
                summary = make_scene(raster, vector, SceneSpec(width=side, height=side, seed=1))
                log.info("  %s buildings", summary.n_buildings)
            routes = (("geotiler (zstd, default)", []),
                      ("geotiler (deflate)", ["--compress", "deflate"]),
                      ("geotiler (no compression)", ["--compress", "none"]))
            gdal_runs, floors = [], []
            runs: dict[str, list[tuple[float, float, int]]] = {label: [] for label, _ in routes}
            for _ in range(args.repeat):  # interleaved, so drifts in machine speed hit all
                gdal_runs.append(gdal_route(raster, vector, work, args.tile))
                floors.append(startup_floor())
                for label, extra in routes:
                    runs[label].append(geotiler_route(raster, vector, work, args.tile, extra))
            g_s, g_rss, g_n = min(gdal_runs)
            floor_rows.append((side, min(floors), g_s))
            for label, _ in routes:
                t_s, t_rss, t_n = min(runs[label])
                rows.append((side, label, t_n, t_s, t_n / t_s, t_rss, g_n / g_s, g_rss))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    header = (f"{'raster':>7} {'route':<26} {'tiles':>6} {'s':>7} {'tiles/s':>8} "
              f"{'RSS MiB':>8} | {'GDAL tiles/s':>12} {'GDAL RSS':>8} {'speed ratio':>11}")
    print(header)
    print("-" * len(header))
    for side, label, n, s, rate, rss, g_rate, g_rss in rows:
        print(f"{side:>7} {label:<26} {n:>6} {s:>7.1f} {rate:>8.1f} {rss:>8.0f} | "
              f"{g_rate:>12.1f} {g_rss:>8.0f} {rate / g_rate:>10.2f}x")
    for side, floor, g_s in floor_rows:
        print(f"{side:>7} start-up floor: {floor:.2f} s of imports alone, no tile cut = "
              f"{floor / g_s:.0%} of the GDAL route's whole run ({g_s:.2f} s)")


if __name__ == "__main__":
    main()

"""Benchmark writing predict's ``buildings.gpkg``: one append per block against one stream.

Generates ``--polygons`` building-like polygons with shapely (rotated rectangles on a UTM
grid), splits them into ``--blocks`` block files as predict saves them, then times, in one
run and interleaved:

* appends: one ``pyogrio.write_dataframe(..., append=True)`` per block (the writer before
  this benchmark),
* stream: :func:`geotiler.predict.outputs.write_gpkg`'s writer, which streams every block
  through one open dataset (``pyogrio.raw.write_arrow`` of a record-batch reader),

and checks that both files hold the same polygons and attributes.

    python benchmarks/bench_gpkg.py                       # 150,000 polygons in 64 blocks
    python benchmarks/bench_gpkg.py --polygons 20000 --blocks 8
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import shapely

from geotiler.predict.blocks import MapPolygons
from geotiler.predict.outputs import LAYER, stream_polygons

log = logging.getLogger("bench_gpkg")
CRS_WKT = "EPSG:32633"


def make_blocks(n: int, blocks: int, seed: int = 0) -> list[MapPolygons]:
    """``n`` rotated rectangles (8-20 m sides) split into ``blocks`` MapPolygons."""
    rng = np.random.default_rng(seed)
    x = 600_000 + rng.uniform(0, 20_000, n)
    y = 5_330_000 + rng.uniform(0, 20_000, n)
    w, h = rng.uniform(8, 20, n), rng.uniform(8, 20, n)
    angle = rng.uniform(0, np.pi, n)
    corners = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5]])
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    dx, dy = corners[None, :, 0] * w[:, None], corners[None, :, 1] * h[:, None]
    coords = np.stack([x[:, None] + dx * cos - dy * sin, y[:, None] + dx * sin + dy * cos], -1)
    geoms = shapely.polygons(coords)
    area, score = shapely.area(geoms), rng.uniform(0.5, 1.0, n)
    parts = np.array_split(np.arange(n), blocks)
    return [MapPolygons(geoms[p], area[p], score[p]) for p in parts]


def write_appends(path: Path, blocks: list[MapPolygons], meta: dict[str, str]) -> None:
    """The earlier writer: a GeoDataFrame and a write_dataframe call per block."""
    for k, block in enumerate(blocks):
        frame = gpd.GeoDataFrame(
            {"area_m2": np.round(block.area_m2.astype(np.float64), 3),
             "score": np.round(block.score.astype(np.float64), 4)},
            geometry=gpd.GeoSeries(block.geoms, crs=CRS_WKT), crs=CRS_WKT)
        extra = {"append": True} if k else {"layer_metadata": meta}
        pyogrio.write_dataframe(frame, path, layer=LAYER, driver="GPKG",
                                geometry_type="Polygon", **extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polygons", type=int, default=150_000)
    parser.add_argument("--blocks", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each; fastest counts")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    blocks = make_blocks(args.polygons, args.blocks)
    meta = {"geotiler_predict": json.dumps({"bench": True})}
    work = Path(tempfile.mkdtemp(prefix="bench_gpkg_"))
    times: dict[str, list[float]] = {"appends": [], "stream": []}
    try:
        for _ in range(args.repeat):
            for label in times:
                path = work / f"{label}.gpkg"
                path.unlink(missing_ok=True)
                start = time.perf_counter()
                if label == "appends":
                    write_appends(path, blocks, meta)
                else:
                    stream_polygons(path, iter(blocks), CRS_WKT, {"bench": True})
                times[label].append(time.perf_counter() - start)
        a = pyogrio.read_dataframe(work / "appends.gpkg")
        b = pyogrio.read_dataframe(work / "stream.gpkg")
        same = (len(a) == len(b) == args.polygons and a[["area_m2", "score"]].equals(
            b[["area_m2", "score"]]) and bool(a.geometry.geom_equals_exact(b.geometry, 0).all()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = {label: min(t) for label, t in times.items()}
    print(f"{args.polygons} polygons in {args.blocks} blocks: appends {best['appends']:.2f} s, "
          f"stream {best['stream']:.2f} s, speed-up {best['appends'] / best['stream']:.1f}x, "
          f"same content: {same}")


if __name__ == "__main__":
    main()

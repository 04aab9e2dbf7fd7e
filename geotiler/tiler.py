"""Cut one shard: read each tile's window, rasterize its masks, select, encode, write.

:func:`write_shard` is the unit of parallel work (one Dask task per shard). It is a plain
function of its arguments: it opens the raster once, touches only its own windows and its
own output file, and returns the tile records plus per-band sums for normalization.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from rasterio.enums import Resampling

from geotiler.config import TileConfig
from geotiler.io import RasterInfo, read_window
from geotiler.masks import tile_masks
from geotiler.shards import ShardWriter, encode_geotiff
from geotiler.tiling import TileGrid

log = logging.getLogger(__name__)


@dataclass
class ShardSpec:
    """Everything one shard task needs: which tiles of which raster go into which file."""

    path: Path
    split: str
    raster: RasterInfo
    grid: TileGrid
    positions: list[tuple[int, int]]  # (row, col) of each tile, in write order
    crs_text: str


@dataclass
class ShardResult:
    """What a shard task reports back to the driver."""

    records: list[dict[str, Any]]
    band_sum: np.ndarray
    band_sqsum: np.ndarray
    band_count: int
    skipped_nodata: int = 0
    skipped_selection: int = 0


MAX_SOURCE_CHARS = 40


def source_key(source: str) -> str:
    """The source-name part of tile keys: no dots or slashes (WebDataset splits on dots),
    and short, so member names fit a plain ustar header that GDAL's /vsitar/ reads."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in source)
    if len(safe) > MAX_SOURCE_CHARS:
        safe = f"{safe[: MAX_SOURCE_CHARS - 9]}-{zlib.crc32(safe.encode()):08x}"
    return safe


def tile_key(source: str, row: int, col: int) -> str:
    """Key of a tile inside its shard."""
    return f"{source_key(source)}_r{row:04d}_c{col:04d}"


def resampling_for(grid: TileGrid, info: RasterInfo) -> Resampling:
    """Average when shrinking (no aliasing), bilinear when enlarging, exact copy otherwise."""
    factor = grid.pixel[0] / abs(info.transform.a)
    if abs(factor - 1) < 1e-9:
        return Resampling.nearest
    return Resampling.average if factor > 1 else Resampling.bilinear


def keep_empty_draw(seed: int, key: str) -> float:
    """A per-tile number in [0, 1) fixed by seed and key: the same for any worker count."""
    return zlib.crc32(f"{seed}:{key}".encode()) / 2**32


def write_shard(spec: ShardSpec, geoms: np.ndarray, config: TileConfig) -> ShardResult:
    """Write the tiles of ``spec`` into ``spec.path`` (atomically) and report what was done.

    ``geoms`` holds the footprints (raster CRS) that can touch these tiles. Tiles with more
    nodata than ``max_nodata`` are skipped; in the train split, tiles below
    ``min_building_fraction`` or building-free tiles beyond the ``keep_empty`` fraction are
    skipped too.
    """
    grid, info = spec.grid, spec.raster
    nb = len(info.bands)
    band_sum = np.zeros(nb)
    band_sqsum = np.zeros(nb)
    band_count = 0
    skipped_nodata = skipped_selection = 0
    tree = shapely.STRtree(geoms)
    pad = config.contour_width + 1
    resampling = resampling_for(grid, info)
    with rasterio.open(info.path) as src, ShardWriter(spec.path) as writer:
        for row, col in spec.positions:
            key = tile_key(info.name, row, col)
            bounds = grid.bounds(row, col)
            image, valid = read_window(src, info.bands, bounds, grid.size, resampling,
                                       all_valid=info.all_valid)
            nodata_fraction = 1.0 - float(valid.mean())
            if nodata_fraction > config.max_nodata:
                skipped_nodata += 1
                continue
            candidates = geoms[tree.query(shapely.box(*grid.bounds(row, col, pad=pad)))]
            transform = grid.transform(row, col)
            mask, count = tile_masks(
                candidates, transform, grid.size, contour_width=config.contour_width,
                target=config.target, seed_blur=config.seed_blur,
            )
            if not valid.all():  # no targets where there is no imagery to learn them from
                mask[:, ~valid] = 0
            footprint = mask[0] > 127 if config.target == "masks" else mask.min(axis=0) > 127
            building_fraction = float(np.count_nonzero(footprint)) / footprint.size
            if spec.split == "train" and not _selected(building_fraction, key, config):
                skipped_selection += 1
                continue
            record = {
                "key": key,
                "split": spec.split,
                "shard": spec.path.name,
                "source": info.name,
                "row": row,
                "col": col,
                "bounds": list(bounds),
                "transform": list(transform)[:6],
                "crs": spec.crs_text,
                "building_fraction": round(building_fraction, 6),
                "building_count": count,
                "nodata_fraction": round(nodata_fraction, 6),
            }
            members = {
                "image.tif": encode_geotiff(image, transform, info.crs, valid=valid,
                                            compress=config.compress, nodata=info.nodata),
                "mask.tif": encode_geotiff(mask, transform, info.crs, compress=config.compress),
            }
            writer.add(key, members, record)
            if spec.split == "train":
                sums, sqsums, count = band_moments(image, valid)
                band_sum += sums
                band_sqsum += sqsums
                band_count += count
        writer.summary = {
            "band_sum": band_sum.tolist(),
            "band_sqsum": band_sqsum.tolist(),
            "band_count": band_count,
            "skipped_nodata": skipped_nodata,
            "skipped_selection": skipped_selection,
        }
    return shard_result(writer.records, writer.summary)


def shard_result(records: list[dict[str, Any]], summary: dict[str, Any]) -> ShardResult:
    """Build a ShardResult from a shard's records and summary (fresh or read back)."""
    return ShardResult(
        records=records,
        band_sum=np.asarray(summary["band_sum"], dtype=np.float64),
        band_sqsum=np.asarray(summary["band_sqsum"], dtype=np.float64),
        band_count=int(summary["band_count"]),
        skipped_nodata=int(summary["skipped_nodata"]),
        skipped_selection=int(summary["skipped_selection"]),
    )


def band_moments(image: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-band sum and sum of squares over valid pixels, and their count.

    Integer images go through a histogram (exact, and cheaper than squaring in float64).
    """
    count = int(np.count_nonzero(valid))
    flat = image.reshape(image.shape[0], -1)
    mask = valid.ravel()
    sums = np.zeros(image.shape[0])
    sqsums = np.zeros(image.shape[0])
    for band, values in enumerate(flat):
        values = values if count == mask.size else values[mask]
        if values.dtype.kind == "u" and values.dtype.itemsize <= 2:
            hist = np.bincount(values).astype(np.float64)
            levels = np.arange(hist.size, dtype=np.float64)
            sums[band] = hist @ levels
            sqsums[band] = hist @ (levels * levels)
        else:
            as_float = values.astype(np.float64)
            sums[band] = as_float.sum()
            sqsums[band] = as_float @ as_float
    return sums, sqsums, count


def _selected(building_fraction: float, key: str, config: TileConfig) -> bool:
    if building_fraction <= 0:
        return keep_empty_draw(config.seed, key) < config.keep_empty
    return building_fraction >= config.min_building_fraction

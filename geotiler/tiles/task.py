"""Cut one shard: read the tiles' windows, rasterize their masks, select, encode, write.

:func:`write_shard` is the unit of parallel work (one Dask task per shard). It is a plain
function of its arguments: it opens the raster once, touches only its own windows and its
own output file, and returns the tile records plus per-band sums for normalization.
Horizontally adjacent tiles are handled as strips of up to :data:`STRIP_TILES`: one read
(when no resampling is needed) and one rasterization per strip, sliced into tiles that are
identical to those made one at a time.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import queue
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import rasterio
import shapely
from rasterio.enums import Resampling

from geotiler.io import RasterInfo, open_raster, read_window
from geotiler.tiles.config import TileConfig
from geotiler.tiles.contours import seed_rgb_planes
from geotiler.tiles.geotiff import GeoTiffEncoder
from geotiler.tiles.grid import TileGrid, resampling_for
from geotiler.tiles.masks import strip_masks
from geotiler.tiles.shards import ShardWriter

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


# Bytes (UTF-8) of the source part of a key: a member name ``{key}.image.tif`` must fit the
# 100 bytes of a ustar header, and a CJK character takes 3 of them.
MAX_SOURCE_BYTES = 40


def source_key(source: str) -> str:
    """The source-name part of tile keys: no dots or slashes (WebDataset splits on dots),
    and at most :data:`MAX_SOURCE_BYTES` bytes in UTF-8 (a longer name keeps its start and
    gets a CRC-32 of the whole), so member names fit a plain ustar header that GDAL's
    /vsitar/ reads."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in source)
    raw = safe.encode()
    if len(raw) > MAX_SOURCE_BYTES:
        head = raw[: MAX_SOURCE_BYTES - 9].decode("utf-8", errors="ignore")
        safe = f"{head}-{zlib.crc32(raw):08x}"
    return safe


def tile_key(source: str, row: int, col: int) -> str:
    """Key of a tile inside its shard."""
    return f"{source_key(source)}_r{row:04d}_c{col:04d}"


def building_pixels(mask: np.ndarray, target: str) -> np.ndarray:
    """(H,W) bool: where a (K,H,W) uint8 tile target is building (tile statistics)."""
    plane = mask[0] if target == "masks" else seed_rgb_planes(*mask.astype(np.float32))[0]
    return plane > 127


def keep_empty_draw(seed: int, key: str) -> float:
    """A per-tile number in [0, 1) fixed by seed and key: the same for any worker count."""
    return zlib.crc32(f"{seed}:{key}".encode()) / 2**32


def write_shard(spec: ShardSpec, geoms: np.ndarray, config: TileConfig, *,
                threads: int = 1) -> ShardResult:
    """Write the tiles of ``spec`` into ``spec.path`` (atomically) and report what was done.

    ``geoms`` holds the footprints (raster CRS) that can touch these tiles. Tiles with more
    nodata than ``max_nodata`` are skipped, the fraction counted over the part of the tile
    that lies on the raster (the padding of edge tiles is not missing imagery); in the
    train split, tiles below ``min_building_fraction`` or building-free tiles beyond the
    ``keep_empty`` fraction are skipped too.

    ``threads`` > 1 cuts that many strips at once (each thread with its own raster handle:
    GDAL datasets are not shared between threads); the shard is written in the same order
    and holds the same bytes as with one. For jobs with fewer shards than cores, where one
    task per shard would leave cores idle.

    Raises:
        InputError: the raster cannot be read. OutputError: the shard cannot be written.
    """
    cutter = _StripCutter(spec, geoms, config)
    nb = len(spec.raster.bands)
    band_sum = np.zeros(nb)
    band_sqsum = np.zeros(nb)
    band_count = 0
    skipped_nodata = skipped_selection = 0
    strips = list(tile_strips(spec.positions))
    handles: queue.SimpleQueue[rasterio.DatasetReader] = queue.SimpleQueue()
    threads = max(1, min(threads, len(strips)))
    with contextlib.ExitStack() as stack:
        for _ in range(threads):
            handles.put(stack.enter_context(
                open_raster(spec.raster.path, overviews=config.overviews)))

        def cut(strip: tuple[int, list[int]]) -> _StripResult:
            src = handles.get()
            try:
                return cutter.cut(src, *strip)
            finally:
                handles.put(src)

        writer = stack.enter_context(ShardWriter(spec.path))
        for result in _ordered_map(cut, strips, threads):
            skipped_nodata += result.skipped_nodata
            skipped_selection += result.skipped_selection
            for key, members, record in result.tiles:
                writer.add(key, members, record)
            for sums, sqsums, npixels in result.moments:  # tile by tile, as summed before
                band_sum += sums
                band_sqsum += sqsums
                band_count += npixels
        writer.summary = {
            "band_sum": band_sum.tolist(),
            "band_sqsum": band_sqsum.tolist(),
            "band_count": band_count,
            "skipped_nodata": skipped_nodata,
            "skipped_selection": skipped_selection,
        }
    return shard_result(writer.records, writer.summary)


T = TypeVar("T")
R = TypeVar("R")


def _ordered_map(function: Callable[[T], R], items: list[T], threads: int) -> Iterator[R]:
    """``map(function, items)`` on ``threads`` threads, in order, with at most
    2 x ``threads`` results waiting (memory stays that of a few strips). One thread: no
    pool at all."""
    if threads <= 1:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="strip") as pool:
        pending: collections.deque[Future[R]] = collections.deque()
        try:
            for item in items:
                pending.append(pool.submit(function, item))
                if len(pending) >= 2 * threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


@dataclass
class _StripResult:
    """The encoded tiles of one strip, what was skipped, and each training tile's band
    moments (:func:`band_moments`)."""

    tiles: list[tuple[str, dict[str, bytes], dict[str, Any]]] = field(default_factory=list)
    moments: list[tuple[np.ndarray, np.ndarray, int]] = field(default_factory=list)
    skipped_nodata: int = 0
    skipped_selection: int = 0


class _StripCutter:
    """Reads, masks, selects and encodes the tiles of one strip (thread-safe: no state
    changes after construction, the raster handle comes with each call)."""

    def __init__(self, spec: ShardSpec, geoms: np.ndarray, config: TileConfig) -> None:
        self.spec, self.config, self.geoms = spec, config, geoms
        info = spec.raster
        self.tree = shapely.STRtree(geoms)
        self.pad = config.contour_width + 1
        self.resampling = resampling_for(spec.grid, info)
        self.image_encoder = GeoTiffEncoder(info.crs, compress=config.compress,
                                            nodata=info.nodata, band_names=info.band_names)
        self.mask_encoder = GeoTiffEncoder(info.crs, compress=config.compress,
                                           band_names=tuple(config.mask_channels))
        self.extent = raster_extent_px(spec.grid, info)

    def cut(self, src: rasterio.DatasetReader, row: int, cols: list[int]) -> _StripResult:
        spec, config, grid, info = self.spec, self.config, self.spec.grid, self.spec.raster
        out = _StripResult()
        box = shapely.box(*_strip_bounds(grid, row, cols, self.pad))
        candidates = self.geoms[self.tree.query(box)]
        images = _read_strip(src, info, grid, row, cols, self.resampling)
        masks = strip_masks(
            candidates,
            grid.transform(row, cols[0]),
            grid.size,
            grid.stride,
            len(cols),
            contour_width=config.contour_width,
            target=config.target,
            seed_blur=config.seed_blur,
            valid=[valid for _, valid in images],
        )
        for col, (mask, count), (image, valid) in zip(cols, masks, images, strict=True):
            key = tile_key(info.name, row, col)
            nodata_fraction = _nodata_fraction(valid, grid, row, col, self.extent)
            if nodata_fraction > config.max_nodata:
                out.skipped_nodata += 1
                continue
            if not valid.all():  # no targets where there is no imagery to learn them from
                mask[:, ~valid] = 0
            footprint = building_pixels(mask, config.target)
            building_fraction = float(np.count_nonzero(footprint)) / footprint.size
            if spec.split == "train" and not _selected(building_fraction, key, config):
                out.skipped_selection += 1
                continue
            transform = grid.transform(row, col)
            record = {
                "key": key,
                "split": spec.split,
                "shard": spec.path.name,
                "source": info.name,
                "row": row,
                "col": col,
                "bounds": list(grid.bounds(row, col)),
                "transform": list(transform)[:6],
                "crs": spec.crs_text,
                "building_fraction": round(building_fraction, 6),
                "building_count": count,
                "nodata_fraction": round(nodata_fraction, 6),
            }
            members = {
                "image.tif": self.image_encoder.encode(image, transform, valid),
                "mask.tif": self.mask_encoder.encode(mask, transform),
            }
            out.tiles.append((key, members, record))
            if spec.split == "train":
                out.moments.append(band_moments(image, valid))
        return out


def raster_extent_px(grid: TileGrid, info: RasterInfo) -> tuple[int, int]:
    """(rows, cols) of target pixels whose centre lies on the raster."""
    height = info.height * abs(info.transform.e) / grid.pixel[1]
    width = info.width * abs(info.transform.a) / grid.pixel[0]
    return (math.ceil(height - 0.5), math.ceil(width - 0.5))


def _nodata_fraction(valid: np.ndarray, grid: TileGrid, row: int, col: int,
                     extent: tuple[int, int]) -> float:
    """Invalid fraction of a tile's pixels that lie on the raster (padding left out)."""
    rows = min(grid.size, max(0, extent[0] - row * grid.stride))
    cols = min(grid.size, max(0, extent[1] - col * grid.stride))
    if rows == 0 or cols == 0:
        return 1.0
    return 1.0 - float(np.count_nonzero(valid[:rows, :cols])) / (rows * cols)


# Tiles handled together: long enough to spread the per-call costs of reading and
# rasterizing, short enough that a strip's arrays stay small (16 x 256² x 4 B labels).
STRIP_TILES = 16


def tile_strips(
    positions: list[tuple[int, int]], max_tiles: int = STRIP_TILES
) -> Iterator[tuple[int, list[int]]]:
    """Runs of horizontally adjacent tiles, in write order: (row, [col, col+1, ...])."""
    row, cols = -1, list[int]()
    for r, c in positions:
        if cols and (r != row or c != cols[-1] + 1 or len(cols) == max_tiles):
            yield row, cols
            cols = []
        row = r
        cols.append(c)
    if cols:
        yield row, cols


def _strip_bounds(
    grid: TileGrid, row: int, cols: list[int], pad: int
) -> tuple[float, float, float, float]:
    first, last = grid.bounds(row, cols[0], pad=pad), grid.bounds(row, cols[-1], pad=pad)
    return (first[0], first[1], last[2], first[3])


def _read_strip(
    src: rasterio.DatasetReader,
    info: RasterInfo,
    grid: TileGrid,
    row: int,
    cols: list[int],
    resampling: Resampling,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Images and validity of a strip's tiles.

    An exact copy (no resampling) reads the strip in one call and slices it, which gives
    the same pixels as tile by tile; a resampled read goes tile by tile, so that each tile
    is resampled from its own window.
    """
    if resampling != Resampling.nearest or len(cols) == 1:
        return [
            read_window(
                src,
                info.bands,
                grid.bounds(row, col),
                grid.size,
                resampling,
                all_valid=info.all_valid,
            )
            for col in cols
        ]
    width = (len(cols) - 1) * grid.stride + grid.size
    image, valid = read_window(
        src,
        info.bands,
        _strip_bounds(grid, row, cols, 0),
        (grid.size, width),
        resampling,
        all_valid=info.all_valid,
    )
    tiles = []
    for k in range(len(cols)):
        part = slice(k * grid.stride, k * grid.stride + grid.size)
        tiles.append((np.ascontiguousarray(image[:, :, part]), valid[:, part]))
    return tiles


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


# dtypes cv2.meanStdDev takes as they are (uint32, int8 and 64-bit integers are not)
_CV2_DTYPES = {np.dtype(t) for t in ("uint8", "uint16", "int16", "int32", "float32", "float64")}


def band_moments(image: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-band sum and sum of squares over valid pixels, and their count.

    cv2.meanStdDev does one pass in C per band (10x faster than numpy here); other dtypes
    go through float64 numpy.
    """
    count = int(np.count_nonzero(valid))
    nb = image.shape[0]
    sums, sqsums = np.zeros(nb), np.zeros(nb)
    if count == 0:
        return sums, sqsums, 0
    if image.dtype in _CV2_DTYPES:
        mask = None if count == valid.size else valid.view(np.uint8)
        for band in range(nb):
            mean, std = cv2.meanStdDev(image[band], mask=mask)
            m, s = float(mean[0, 0]), float(std[0, 0])
            sums[band] = m * count
            sqsums[band] = (s * s + m * m) * count
        return sums, sqsums, count
    values = image[:, valid].astype(np.float64)
    return values.sum(axis=1), np.einsum("ij,ij->i", values, values), count


def _selected(building_fraction: float, key: str, config: TileConfig) -> bool:
    if building_fraction <= 0:
        return keep_empty_draw(config.seed, key) < config.keep_empty
    return building_fraction >= config.min_building_fraction

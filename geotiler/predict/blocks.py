"""The per-block steps of ``geotiler predict`` (memory bounded by a block, never by the raster).

After :func:`geotiler.predict.job.prepare`:

1. :func:`infer_block` reads one block's windows in one read (:func:`geotiler.io.read_window`),
   runs them in batches, and returns the weighted sums cut into the core and the spills to
   its neighbours (:mod:`geotiler.predict.blend`).
2. :func:`finalize_block` adds the neighbours' spills, turns sums into probabilities
   (uint8) and a mask, and writes the block to the work directory.
3. :func:`settle` (once every block is finalized) picks Otsu's threshold with ``--otsu``.
4. :func:`polygonize_job_block` reads a block with a halo back from those files, keeps the
   buildings it owns (:mod:`geotiler.polygons`) and saves them beside
   (:class:`MapPolygons`), for :mod:`geotiler.predict.outputs`.

The model is only seen through the :class:`~geotiler.predict.config.Predictor` protocol, so
everything here is plain numpy/GDAL; ``pipelines/predict.py`` runs the steps as a Dask graph.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.windows import Window

from geotiler.atomic import atomic_path
from geotiler.errors import ModelFileError, OutputError
from geotiler.io import GDAL_ERRORS, ground_gsd, open_raster, read_window
from geotiler.polygons import PolygonOptions, building_channels, polygonize_block, to_map
from geotiler.predict.blend import (
    Accumulator,
    CoreParts,
    compact_core,
    complete_core,
    threshold_uint8,
    window_weights,
)
from geotiler.predict.config import (
    COG_BLOCKSIZE,
    MASK_NODATA,
    OVERVIEW_RESAMPLING,
    Predictor,
)
from geotiler.predict.job import PredictJob
from geotiler.predict.plan import Rect

log = logging.getLogger(__name__)


class BlockOutput(NamedTuple):
    """What :func:`infer_block` returns: its core, compacted (:class:`~geotiler.predict.
    blend.CoreParts`), and its spills to the neighbours on the right, below and below-right."""

    probs: np.ndarray  # (K, h, w) uint8, final but for the first own_top rows/own_left cols
    own_top: np.ndarray  # (K + 1, t, w) sums
    own_left: np.ndarray  # (K + 1, h, l) sums
    right: np.ndarray  # (K + 1, h, spill) sums, to block (i, j + 1)
    bottom: np.ndarray  # (K + 1, spill, w) sums, to block (i + 1, j)
    corner: np.ndarray  # to block (i + 1, j + 1)
    valid: np.ndarray  # (h, w) bool over the core
    windows_run: int


@dataclass
class BlockStats:
    """What :func:`finalize_block` reports of one block (pixels of the model grid)."""

    index: tuple[int, int]
    windows_run: int
    building_pixels: int
    valid_pixels: int
    # (256,) counts of the footprint's uint8 levels over valid pixels; only with --otsu
    histogram: np.ndarray | None = None


def otsu_threshold(histogram: np.ndarray) -> float:
    """Otsu's threshold of a 256-level histogram, as a probability for ``>= threshold``.

    The level k maximising the between-class variance splits ``<= k`` from ``> k``; the
    returned value is the smallest probability stored as level k + 1.
    """
    hist = np.asarray(histogram, dtype=np.float64)
    total = hist.sum()
    if total <= 0:
        return 0.5
    levels = np.arange(hist.size, dtype=np.float64)
    weight0 = np.cumsum(hist)
    weight1 = total - weight0
    cum_mean = np.cumsum(hist * levels)
    mean0 = np.divide(cum_mean, weight0, out=np.zeros_like(cum_mean), where=weight0 > 0)
    mean1 = np.divide(cum_mean[-1] - cum_mean, weight1, out=np.zeros_like(cum_mean),
                      where=weight1 > 0)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    level = int(np.argmax(between[:-1]))
    return min(max((level + 1) / 255.0, 1e-6), 1 - 1e-6)


def with_threshold(job: PredictJob, threshold: float) -> PredictJob:
    """The same job with another footprint threshold (after an Otsu pass)."""
    return dataclasses.replace(job, config=dataclasses.replace(job.config, threshold=threshold))


def settle(job: PredictJob, stats: Sequence[BlockStats]
           ) -> tuple[PredictJob, list[BlockStats]]:
    """The job to polygonize and report with, once every block is finalized.

    With ``--otsu``: the job at Otsu's threshold over all blocks' histograms, and the
    blocks' building pixels recounted at it. Otherwise both as they are.
    """
    if not job.config.otsu:
        return job, list(stats)
    histograms = [s.histogram for s in stats if s.histogram is not None]
    if len(histograms) != len(stats):
        raise ValueError("--otsu needs every block's histogram")
    threshold = otsu_threshold(np.sum(histograms, axis=0))
    log.info("Otsu threshold of the footprint probabilities: %.3f", threshold)
    level = threshold_uint8(threshold)
    recounted = [dataclasses.replace(s, building_pixels=int(h[level:].sum()))
                 for s, h in zip(stats, histograms, strict=True)]
    return with_threshold(job, threshold), recounted


def _window_batch(image: np.ndarray, valid: np.ndarray, extent: Rect,
                  origins: Sequence[tuple[int, int]], size: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Cut (N, C, S, S) windows out of a block read; windows past its end are padded."""
    n, c = len(origins), image.shape[0]
    batch = np.zeros((n, c, size, size), dtype=image.dtype)
    vbatch = np.zeros((n, size, size), dtype=bool)
    for k, (row, col) in enumerate(origins):
        r0, c0 = row - extent.row0, col - extent.col0
        part = image[:, r0:r0 + size, c0:c0 + size]
        h, w = part.shape[1:]
        batch[k, :, :h, :w] = part  # past the grid's end: zeros, marked invalid
        vbatch[k, :h, :w] = valid[r0:r0 + size, c0:c0 + size]
    return batch, vbatch


def infer_block(job: PredictJob, index: tuple[int, int], predictor: Predictor) -> BlockOutput:
    """Run the windows of one block; return its weighted sums cut along the core.

    Windows holding no valid pixel are skipped. Raises ModelFileError when the predictor
    returns another shape than (N, K, S, S).
    """
    block = job.plan.block(*index)
    size = job.model.tile_size
    channels = len(job.model.channels)
    with open_raster(job.grid.path) as src:  # never from an overview: see geotiler.io
        image, valid = read_window(src, job.grid.bands, job.grid.map_bounds(block.extent),
                                   block.extent.shape, Resampling[job.grid.resampling],
                                   all_valid=not job.grid.has_nodata)
    acc = Accumulator(block.extent, channels, window_weights(size, job.config.window))
    todo = []
    for row, col in block.windows:
        r0, c0 = row - block.extent.row0, col - block.extent.col0
        if valid[r0:r0 + size, c0:c0 + size].any():  # nodata-only windows are skipped
            todo.append((row, col))
    batch_size = job.config.batch_size
    for start in range(0, len(todo), batch_size):
        origins = todo[start:start + batch_size]
        batch, vbatch = _window_batch(image, valid, block.extent, origins, size)
        probs = np.asarray(predictor(batch, vbatch), dtype=np.float32)
        expected = (len(origins), channels, size, size)
        if probs.shape != expected:
            raise ModelFileError(
                f"{job.model.name} returned shape {probs.shape}, expected {expected}")
        acc.add(probs, origins)
    pieces = acc.pieces(block.core)
    core_valid = valid[:block.core.height, :block.core.width].copy()
    # Copies and uint8: what waits for the neighbours is about a sixth of the float sums.
    parts = compact_core(pieces.core, *job.plan.incoming(*index))
    return BlockOutput(parts.probs, parts.top, parts.left, pieces.right.copy(),
                       pieces.bottom.copy(), pieces.corner.copy(), core_valid, len(todo))


def finalize_block(job: PredictJob, index: tuple[int, int], probs: np.ndarray,
                   own_top: np.ndarray, own_left: np.ndarray, valid: np.ndarray,
                   windows_run: int, left: np.ndarray | None = None,
                   up: np.ndarray | None = None, upleft: np.ndarray | None = None
                   ) -> BlockStats:
    """Complete a block's core with its neighbours' spills and write it to the work
    directory. The first five arguments after ``index`` are the block's own
    :class:`BlockOutput` fields; ``left`` is the left neighbour's ``right`` piece, ``up``
    the upper neighbour's ``bottom``, ``upleft`` the upper-left neighbour's ``corner``.

    Raises:
        OutputError: the block file cannot be written (naming the outputs' folder).
    """
    rect = job.plan.core(*index)
    probs = complete_core(CoreParts(probs, own_top, own_left), left, up, upleft)
    probs[:, ~valid] = 0
    footprint, _ = building_channels(probs, job.model.channels)
    mask = (footprint >= threshold_uint8(job.config.threshold)).astype(np.uint8)
    if job.grid.has_nodata:
        mask[~valid] = MASK_NODATA
    profile = {"driver": "GTiff", "width": rect.width, "height": rect.height,
               "dtype": "uint8", "crs": job.grid.crs_wkt,
               "transform": job.grid.block_transform(rect)}
    factors = overview_factors(job)
    for kind, data in (("prob", probs), ("mask", mask[None])):
        path = job.block_file(kind, index)
        try:
            with atomic_path(path, keep_suffix=True) as tmp, \
                    rasterio.open(tmp, "w", count=data.shape[0], **profile) as dst:
                dst.write(data)
                if factors:
                    dst.build_overviews(factors, Resampling[OVERVIEW_RESAMPLING[kind]])
        except GDAL_ERRORS as err:  # a full disk, a file size limit: name the outputs' folder
            raise OutputError.writing(path.parent.parent, err) from None
    histogram = (np.bincount(footprint[valid].ravel(), minlength=256) if job.config.otsu
                 else None)
    return BlockStats(index, windows_run, int((mask == 1).sum()), int(valid.sum()), histogram)


def overview_factors(job: PredictJob) -> list[int]:
    """Overview factors (2, 4, ...) of the output GeoTIFFs, made block by block.

    The COG writer would otherwise read the whole grid once more and resample it at the
    end, after the last window, when nothing else is left to overlap with: a third of
    the output time (16384² benchmark). Each finalized block builds its own overviews
    instead, and the outputs copy them. That is exact only where every block starts on a
    multiple of the largest factor; otherwise (odd ``--block`` sizes) this returns [] and
    GDAL makes them. The levels are those of GDAL's COG driver: halve until the grid fits
    one COG tile.
    """
    size, factor, factors = max(job.grid.width, job.grid.height), 1, []
    while math.ceil(size / factor) > COG_BLOCKSIZE:
        factor *= 2
        factors.append(factor)
    if factors and any(edge % factors[-1] for edge in (*job.plan.row_edges[:-1],
                                                       *job.plan.col_edges[:-1])):
        return []
    return factors


def read_blocks(job: PredictJob, kind: str, rect: Rect) -> np.ndarray:
    """A rectangle of the model grid mosaicked from the finished block files."""
    count = len(job.model.channels) if kind == "prob" else 1
    out = np.zeros((count, rect.height, rect.width), dtype=np.uint8)
    rows, cols = job.plan.row_edges, job.plan.col_edges
    i_range = range(bisect.bisect_right(rows, rect.row0) - 1, bisect.bisect_left(rows, rect.row1))
    j_range = range(bisect.bisect_right(cols, rect.col0) - 1, bisect.bisect_left(cols, rect.col1))
    for i, j in itertools.product(i_range, j_range):
        core = job.plan.core(i, j)
        r0, r1 = max(core.row0, rect.row0), min(core.row1, rect.row1)
        c0, c1 = max(core.col0, rect.col0), min(core.col1, rect.col1)
        if r0 >= r1 or c0 >= c1:
            continue
        with rasterio.open(job.block_file(kind, (i, j))) as src:
            out[:, r0 - rect.row0:r1 - rect.row0, c0 - rect.col0:c1 - rect.col0] = src.read(
                window=Window(c0 - core.col0, r0 - core.row0, c1 - c0, r1 - r0))
    return out


# --- polygons ------------------------------------------------------------------------------

@dataclass
class MapPolygons:
    """Polygons of one block on the map, with their attributes."""

    geoms: np.ndarray
    area_m2: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.geoms)

    def save(self, path: Path) -> None:
        """As WKB in an ``.npz`` (no pickles), written atomically."""
        wkb = [bytes(b) for b in shapely.to_wkb(self.geoms)] if len(self) else []
        sizes = np.array([len(b) for b in wkb], dtype=np.int64)
        blob = np.frombuffer(b"".join(wkb), dtype=np.uint8)
        # keep_suffix: np.savez adds ".npz" to a name that does not end with it
        try:
            with atomic_path(path, keep_suffix=True) as tmp:
                np.savez(tmp, wkb=blob, sizes=sizes, area_m2=self.area_m2.astype(np.float64),
                         score=self.score.astype(np.float64))
        except OSError as err:
            raise OutputError.writing(path.parent.parent, err) from None

    @classmethod
    def load(cls, path: Path) -> MapPolygons:
        """What :meth:`save` wrote."""
        with np.load(path, allow_pickle=False) as data:
            blob, sizes = data["wkb"].tobytes(), data["sizes"]
            ends = np.cumsum(sizes)
            wkb = [blob[e - n:e] for e, n in zip(ends, sizes, strict=True)]
            geoms = shapely.from_wkb(wkb) if wkb else np.empty(0, dtype=object)
            return cls(np.asarray(geoms, dtype=object), data["area_m2"], data["score"])


def polygon_options(job: PredictJob, rect: Rect) -> tuple[PolygonOptions, float]:
    """Pixel-unit polygon options for a block, and the ground area (m²) of its pixels."""
    gx, gy = ground_gsd(CRS.from_wkt(job.grid.crs_wkt),
                        job.grid.block_transform(rect), rect.width, rect.height)
    pixel_area = gx * gy
    options = PolygonOptions(
        threshold=job.config.threshold,
        instances=job.config.instances.in_pixels(math.sqrt(pixel_area)),
        simplify=job.config.simplify / math.sqrt(pixel_area),
        min_area=job.config.min_area / pixel_area,
        regularize=job.config.regularize,
    )
    return options, pixel_area


def polygonize_job_block(job: PredictJob, index: tuple[int, int]) -> int:
    """Save the buildings owned by one block (:func:`block_polygons`) in the work
    directory, for :func:`geotiler.predict.outputs.finish`; returns how many of them reach
    past the halo. With ``--otsu`` the block's mask file is first rewritten at the job's
    (settled) threshold."""
    if job.config.otsu:
        rewrite_mask_block(job, index)
    found, reach = block_polygons(job, index)
    found.save(job.block_file("poly", index).with_suffix(".npz"))
    return reach


def rewrite_mask_block(job: PredictJob, index: tuple[int, int]) -> None:
    """Re-threshold one block's mask file from its probability file (nodata kept)."""
    core = job.plan.core(*index)
    footprint, _ = building_channels(read_blocks(job, "prob", core), job.model.channels)
    path = job.block_file("mask", index)
    with rasterio.open(path, "r+") as dst:
        old = dst.read(1)
        mask = (footprint >= threshold_uint8(job.config.threshold)).astype(np.uint8)
        mask[old == MASK_NODATA] = MASK_NODATA
        dst.write(mask, 1)
        factors = overview_factors(job)
        if factors:
            dst.build_overviews(factors, Resampling[OVERVIEW_RESAMPLING["mask"]])


def block_polygons(job: PredictJob, index: tuple[int, int]) -> tuple[MapPolygons, int]:
    """Buildings owned by one block, read with a halo from the finished block files, and
    how many of them reach the halo's outer edge (inside the raster).

    Such a building (or the connected piece of footprint it was cut from) is larger than
    the halo: this block saw only part of it, and the neighbour that sees another part may
    make another building of it, so the two can overlap. Call only once the blocks within
    :attr:`PredictJob.polygon_reach` are finalized.
    """
    core = job.plan.core(*index)
    region = core.grow(job.config.halo, job.grid.height, job.grid.width)
    probs = read_blocks(job, "prob", region)
    footprint, contour = building_channels(probs, job.model.channels)
    options, pixel_area = polygon_options(job, core)
    found = polygonize_block(footprint, contour, region, core, options)
    reach = 0
    if len(found):
        x0, y0, x1, y1 = shapely.bounds(found.geoms).T
        near = options.simplify + 1  # simplified outlines may stop short of the edge
        reach = int(np.count_nonzero(
            ((region.col0 > 0) & (x0 <= region.col0 + near))
            | ((region.row0 > 0) & (y0 <= region.row0 + near))
            | ((region.col1 < job.grid.width) & (x1 >= region.col1 - near))
            | ((region.row1 < job.grid.height) & (y1 >= region.row1 - near))))
    return MapPolygons(to_map(found.geoms, job.grid.transform), found.area * pixel_area,
                       found.score), reach

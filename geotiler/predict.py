"""Prediction: a raster and a model -> probabilities, a mask and building polygons.

The model is only seen through the :class:`Predictor` protocol (a batch of source-dtype
windows and their validity -> probabilities), so everything here is plain numpy/GDAL and is
tested with synthetic predictors; ``pipelines/predict.py`` adapts a model file to it and
runs the steps below as a Dask graph. :func:`predict` runs them one after another.

Grid
    Windows are cut at the model's GSD: the target pixel size in the raster's CRS units is
    the native pixel size x ``model.gsd / ground GSD`` (ground GSD in metres, measured
    geodesically at the raster's centre, so geographic CRSs work), exactly as the tiler
    made the training tiles. Within 0.1 % of the model's GSD the raster is read as it is.
    The outputs are written **on this model grid** (same CRS and origin as the raster; the
    pixel size is the model's), not resampled back to the source grid: resampling
    probabilities twice would blur them, and GIS software overlays both grids anyway.

Steps (memory bounded by a block, never by the raster)
    1. :func:`prepare` checks inputs and outputs and plans blocks (:mod:`geotiler.blend`).
    2. :func:`infer_block` reads one block's windows in one read, runs them in batches,
       and returns the weighted sums cut into the core and the spills to its neighbours.
    3. :func:`finalize_block` adds the neighbours' spills, turns sums into probabilities
       (uint8) and a mask, and writes the block to a temporary file.
    4. :func:`polygonize_job_block` reads a block with a halo back from those files,
       keeps the buildings it owns (:mod:`geotiler.polygons`) and saves them beside.
    5. :func:`finish` writes the cloud-optimized GeoTIFFs (tiled 512 px, zstd or deflate,
       overviews) from the block files and ``buildings.gpkg`` (layer ``buildings``) from
       the saved polygons, block after block, then renames every output into place at
       once. :func:`abort` removes the temporaries. Neither the pixels nor the polygons
       of the whole raster are ever in memory.

Outputs
    ``{stem}_prob.tif``: one uint8 band per model channel (probability x 255).
    ``{stem}_mask.tif``: uint8, 1 = building (footprint >= threshold), 0 = not; 255 =
    nodata where the raster has nodata. ``{out}``: polygons with ``area_m2`` and ``score``
    (mean footprint probability inside).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, TypeVar
from xml.sax.saxutils import escape

import numpy as np
from affine import Affine

from geotiler import __version__
from geotiler.blend import (
    WINDOW_KINDS,
    Accumulator,
    BlockPlan,
    CoreParts,
    Rect,
    WindowKind,
    compact_core,
    complete_core,
    plan_blocks,
    threshold_uint8,
    window_weights,
)
from geotiler.device import DEVICES, Device
from geotiler.errors import ConfigError, InputError, ModelFileError, OutputError

T = TypeVar("T")

if TYPE_CHECKING:
    import rasterio

    from geotiler.io import RasterInfo
    from geotiler.polygons import PolygonOptions

# rasterio, geopandas, OpenCV and geotiler.polygons/io are imported inside the functions
# that use them: the CLI imports this module for PredictConfig's defaults, and
# ``geotiler --help`` must stay instant.

log = logging.getLogger(__name__)

LAYER = "buildings"
NATIVE_TOLERANCE = 1e-3  # read the raster as it is when within 0.1 % of the model's GSD
MASK_NODATA = 255
# Deflate level 3: measured 2.4x faster than the default 6 on 4096² probabilities, files
# 12 % larger.
# GDAL's block cache while the GeoTIFFs are written (default: 5 % of RAM, which the COG
# driver fills: 1.3 GB peak on 16384² vs 0.4 GB with 256 MiB, at the same speed).
GDAL_CACHE_BYTES = 256 * 2**20
COG_BLOCKSIZE = 512
COG_OPTIONS = {"BLOCKSIZE": COG_BLOCKSIZE, "OVERVIEWS": "AUTO", "BIGTIFF": "IF_SAFER",
               "NUM_THREADS": "ALL_CPUS", "PREDICTOR": "YES"}
# Measured on a 4096² two-channel probability map: zstd 1 + predictor 0.27 s (27.5 MB),
# deflate 1 + predictor 0.53 s (27.0 MB); the former default, deflate 3 without
# predictor, 0.68 s (32.1 MB).
COG_COMPRESSION = {"zstd": {"COMPRESS": "ZSTD", "LEVEL": 1},
                   "deflate": {"COMPRESS": "DEFLATE", "LEVEL": 1}}


@dataclass(frozen=True)
class PredictConfig:
    """How ``geotiler predict`` runs; the CLI's defaults come from here.

    Attributes:
        overlap: pixels shared by neighbouring windows (at the model's GSD); ``None``:
            a quarter of the model's tile size (64 for 256 px tiles).
        batch_size: windows per forward pass.
        block: side of a processing block in model pixels (rounded to whole strides);
            memory is bounded by about 4 x (channels + 1) x block² bytes per running block.
        halo: pixels read around a block when polygonizing; buildings larger than this
            (in model pixels) may be cut at block borders.
        threshold: probability at or above which a pixel is building (and contour).
        otsu: choose the footprint threshold by Otsu's method from the histogram of the
            whole raster's footprint probabilities (the seed method's rule) instead of
            ``threshold``; the mask and polygons are then made after all inference.
        window: blending window, ``hann`` or ``linear`` ramp.
        simplify: Douglas-Peucker tolerance in metres (0 keeps the pixel outline).
        min_area: polygons smaller than this (m²) are dropped.
        regularize: square the corners of rectangular-enough polygons.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        probabilities: write the probability GeoTIFF (the mask and polygons always are).
        compress: compression of the output GeoTIFFs: ``zstd`` (fast; GDAL >= 2.3, any
            recent QGIS) or ``deflate`` (for older readers).
        overwrite: replace existing outputs.
    """

    overlap: int | None = None
    batch_size: int = 8
    block: int = 2048
    halo: int = 256
    threshold: float = 0.5
    otsu: bool = False
    window: WindowKind = "hann"
    simplify: float = 0.5
    min_area: float = 4.0
    regularize: bool = False
    device: Device = "auto"
    probabilities: bool = True
    compress: Literal["zstd", "deflate"] = "zstd"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.overlap is not None and self.overlap < 0:
            raise ConfigError(f"--overlap must be >= 0 pixels, got {self.overlap}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.block < 64:
            raise ConfigError(f"--block must be at least 64 pixels, got {self.block}")
        if self.halo < 0:
            raise ConfigError(f"--halo must be >= 0 pixels, got {self.halo}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"--threshold must be between 0 and 1, got {self.threshold}")
        if self.window not in WINDOW_KINDS:
            raise ConfigError(f"--window must be one of {WINDOW_KINDS}, got {self.window!r}")
        if self.simplify < 0:
            raise ConfigError(f"--simplify must be >= 0 metres, got {self.simplify}")
        if self.min_area < 0:
            raise ConfigError(f"--min-area must be >= 0 m², got {self.min_area}")
        if self.device not in DEVICES:
            raise ConfigError(f"--device must be one of {DEVICES}, got {self.device!r}")
        if self.compress not in COG_COMPRESSION:
            raise ConfigError(f"--compress must be one of {tuple(COG_COMPRESSION)}, "
                              f"got {self.compress!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ModelInfo:
    """What prediction needs to know about a model, without torch."""

    bands: tuple[int, ...]
    band_names: tuple[str, ...]
    dtype: str
    tile_size: int
    gsd: float
    channels: tuple[str, ...]
    contour_width: int = 3
    name: str = "model"

    @classmethod
    def from_spec(cls, spec: Any, name: str = "model") -> ModelInfo:
        """From a ``trainer.modelfile.ModelSpec`` (read by attribute)."""
        return cls(
            bands=tuple(int(b) for b in spec.bands),
            band_names=tuple(str(b) for b in spec.band_names),
            dtype=str(spec.dtype),
            tile_size=int(spec.tile_size),
            gsd=float(spec.gsd),
            channels=tuple(str(c) for c in spec.mask_channels),
            contour_width=int((spec.tiling or {}).get("contour_width", 3)),
            name=name,
        )


class Predictor(Protocol):
    """A batch of windows -> probabilities.

    ``image``: (N, C, S, S) in the raster's dtype, bands in the model's order; ``valid``:
    (N, S, S) bool (False at nodata and past the raster's edge). Returns (N, K, S, S)
    float32 probabilities in [0, 1], K = the model's channels.
    """

    def __call__(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class PredictGrid:
    """The model grid over one raster and how to read it (small, picklable)."""

    path: str
    crs_wkt: str
    transform: Affine  # of the model grid
    width: int
    height: int
    bands: tuple[int, ...]
    resampling: str  # rasterio.enums.Resampling name
    native: bool  # model grid == raster grid
    has_nodata: bool
    dtype: str

    def block_transform(self, rect: Rect) -> Affine:
        return self.transform * Affine.translation(rect.col0, rect.row0)

    def map_bounds(self, rect: Rect) -> tuple[float, float, float, float]:
        left, top = self.transform * (rect.col0, rect.row0)
        right, bottom = self.transform * (rect.col1, rect.row1)
        return (min(left, right), min(top, bottom), max(left, right), max(top, bottom))


@dataclass(frozen=True)
class OutputPaths:
    gpkg: Path
    prob: Path
    mask: Path

    def all(self, probabilities: bool = True) -> list[Path]:
        return [self.gpkg, self.prob, self.mask] if probabilities else [self.gpkg, self.mask]


@dataclass(frozen=True)
class PredictJob:
    """Everything a task needs: grid, block plan, model description, config, paths."""

    grid: PredictGrid
    plan: BlockPlan
    model: ModelInfo
    config: PredictConfig
    outputs: OutputPaths
    workdir: Path  # temporary, inside the raster output directory

    def block_file(self, kind: str, index: tuple[int, int]) -> Path:
        return self.workdir / f"{kind}-{index[0]:04d}-{index[1]:04d}.tif"

    @property
    def polygon_reach(self) -> int:
        """How many blocks away a block's polygonization halo reaches."""
        rows, cols = np.diff(self.plan.row_edges), np.diff(self.plan.col_edges)
        smallest = int(min(rows.min(), cols.min()))
        return max(1, math.ceil(self.config.halo / smallest))


class BlockOutput(NamedTuple):
    """What :func:`infer_block` returns: its core, compacted (:class:`~geotiler.blend.
    CoreParts`), and its spills to the neighbours on the right, below and below-right."""

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
        import shapely

        wkb = [bytes(b) for b in shapely.to_wkb(self.geoms)] if len(self) else []
        sizes = np.array([len(b) for b in wkb], dtype=np.int64)
        blob = np.frombuffer(b"".join(wkb), dtype=np.uint8)
        tmp = path.with_name(path.name + ".partial.npz")
        np.savez(tmp, wkb=blob, sizes=sizes, area_m2=self.area_m2.astype(np.float64),
                 score=self.score.astype(np.float64))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> MapPolygons:
        import shapely

        with np.load(path, allow_pickle=False) as data:
            blob, sizes = data["wkb"].tobytes(), data["sizes"]
            ends = np.cumsum(sizes)
            wkb = [blob[e - n:e] for e, n in zip(ends, sizes, strict=True)]
            geoms = shapely.from_wkb(wkb) if wkb else np.empty(0, dtype=object)
            return cls(np.asarray(geoms, dtype=object), data["area_m2"], data["score"])


@dataclass
class PredictReport:
    raster: str
    outputs: list[str]
    grid: tuple[int, int]  # width, height of the model grid
    gsd: float
    blocks: int
    windows: int
    windows_run: int
    buildings: int
    building_fraction: float
    seconds: float
    threshold: float = 0.5  # the footprint threshold used (Otsu's with --otsu)
    timings: dict[str, float] = field(default_factory=dict)


# --- preparation ----------------------------------------------------------------------------

def output_paths(out: Path | str, raster_out: Path | str | None = None) -> OutputPaths:
    """``out`` is the GeoPackage; the GeoTIFFs go to ``raster_out`` (a directory, default
    the GeoPackage's) as ``{stem}_prob.tif`` and ``{stem}_mask.tif``."""
    gpkg = Path(out)
    if gpkg.suffix.lower() != ".gpkg":
        raise ConfigError(f"--out must be a GeoPackage file ending in .gpkg, got {gpkg}")
    folder = Path(raster_out) if raster_out is not None else gpkg.parent
    return OutputPaths(gpkg, folder / f"{gpkg.stem}_prob.tif", folder / f"{gpkg.stem}_mask.tif")


def check_outputs(paths: OutputPaths, overwrite: bool, probabilities: bool = True) -> None:
    """OutputError when an output exists (without overwrite) or a folder is not writable."""
    wanted = paths.all(probabilities)
    existing = [str(p) for p in wanted if p.exists()]
    if existing and not overwrite:
        raise OutputError(f"{', '.join(existing)} already exist(s); use --overwrite to replace")
    for path in wanted:
        if path.exists() and path.is_dir():
            raise OutputError(f"{path} is a directory; give a file name")
    for folder in {p.parent for p in wanted}:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"cannot create output directory {folder}: {err.strerror}") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"output directory {folder} is not writable")


def check_bands(path: Path, model: ModelInfo) -> None:
    """ModelFileError naming both band lists when the raster lacks the model's bands."""
    import rasterio

    try:
        with rasterio.open(path) as src:
            count = src.count
            names = [src.descriptions[i] or src.colorinterp[i].name for i in range(count)]
    except rasterio.errors.RasterioIOError:
        return  # open_raster_info says what is wrong with the file
    if max(model.bands) > count:
        have = ", ".join(f"{i + 1}:{n}" for i, n in enumerate(names))
        want = ", ".join(f"{b}:{n}" for b, n in zip(model.bands, model.band_names, strict=False))
        raise ModelFileError(
            f"{model.name} takes bands [{want}] but {path} has {count} band(s) [{have}]; "
            "predict on a raster with the bands the model was trained on"
        )


def make_grid(info: RasterInfo, model: ModelInfo) -> PredictGrid:
    """The model grid over a raster: same CRS and origin, pixel at the model's GSD."""
    import rasterio
    from rasterio.enums import MaskFlags

    factor = model.gsd / info.mean_gsd
    native = abs(factor - 1.0) < NATIVE_TOLERANCE
    px, py = abs(info.transform.a), abs(info.transform.e)
    if native:
        transform, width, height = info.transform, info.width, info.height
        resampling = "nearest"
    else:
        transform = Affine(px * factor, 0.0, info.transform.c, 0.0, -py * factor,
                           info.transform.f)
        width = max(1, round(info.width / factor))
        height = max(1, round(info.height / factor))
        resampling = "average" if factor > 1 else "bilinear"
    with rasterio.open(info.path) as src:
        flags = [src.mask_flag_enums[b - 1] for b in info.bands]
        has_nodata = any(MaskFlags.all_valid not in f for f in flags)
    return PredictGrid(str(info.path), info.crs.to_wkt(), transform, width, height,
                       info.bands, resampling, native, has_nodata, info.dtype)


def prepare(raster: Path | str, model: ModelInfo, out: Path | str, config: PredictConfig,
            raster_out: Path | str | None = None) -> PredictJob:
    """Check the raster, the model's fit to it and the outputs; plan the blocks.

    Creates the temporary work directory (remove it with :func:`abort` on failure).
    """
    from geotiler.io import open_raster_info

    path = Path(raster)
    outputs = output_paths(out, raster_out)
    overlap = model.tile_size // 4 if config.overlap is None else config.overlap
    config = dataclasses.replace(config, overlap=overlap)  # resolved, as written beside outputs
    if overlap >= model.tile_size:
        raise ConfigError(
            f"--overlap ({overlap}) must be smaller than the model's tile size "
            f"({model.tile_size})"
        )
    if not path.exists():
        raise InputError(f"raster {path} does not exist")
    check_bands(path, model)
    info = open_raster_info(path, bands=model.bands)
    if info.dtype != model.dtype:
        log.warning("%s is %s but %s was trained on %s; its normalization may not fit",
                    path, info.dtype, model.name, model.dtype)
    if [n.lower() for n in info.band_names] != [n.lower() for n in model.band_names]:
        log.info("raster bands %s, model bands %s (used by number)",
                 list(info.band_names), list(model.band_names))
    check_outputs(outputs, config.overwrite, config.probabilities)
    grid = make_grid(info, model)
    plan = plan_blocks(grid.height, grid.width, model.tile_size, overlap, config.block)
    workdir = Path(tempfile.mkdtemp(prefix=f".{outputs.gpkg.stem}.blocks-",
                                    dir=outputs.mask.parent))
    log.info("%s: %d x %d px at %.3g m (model grid%s), %d blocks, %d windows",
             path.name, grid.width, grid.height, model.gsd,
             "" if grid.native else ", resampled", len(plan.indexes), plan.num_windows)
    return PredictJob(grid, plan, model, config, outputs, workdir)


# --- reading --------------------------------------------------------------------------------

def read_region(src: rasterio.DatasetReader, grid: PredictGrid, rect: Rect
                ) -> tuple[np.ndarray, np.ndarray]:
    """Read a rectangle of the model grid: (C, h, w) in the raster's dtype and (h, w) valid.

    Native grids are copied exactly; others are resampled from the map rectangle (areas
    past the raster's edge are padded and marked invalid).
    """
    import rasterio.windows
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    h, w = rect.shape
    bands = list(grid.bands)
    if grid.native:
        window = Window(rect.col0, rect.row0, w, h)
        image = src.read(bands, window=window)
        valid = (src.dataset_mask(window=window) > 0 if grid.has_nodata
                 else np.ones((h, w), dtype=bool))
        return image, valid
    window = rasterio.windows.from_bounds(*grid.map_bounds(rect), transform=src.transform)
    eps = 1e-6
    inside = (window.col_off >= -eps and window.row_off >= -eps
              and window.col_off + window.width <= src.width + eps
              and window.row_off + window.height <= src.height + eps)
    kwargs: dict[str, Any] = {} if inside else {
        "boundless": True, "fill_value": src.nodata if src.nodata is not None else 0}
    image = src.read(bands, window=window, out_shape=(len(bands), h, w),
                     resampling=Resampling[grid.resampling], **kwargs)
    if grid.has_nodata or not inside:
        mask_kwargs: dict[str, Any] = {} if inside else {"boundless": True}
        valid = src.dataset_mask(window=window, out_shape=(h, w),
                                 resampling=Resampling.nearest, **mask_kwargs) > 0
    else:
        valid = np.ones((h, w), dtype=bool)
    return image, valid


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


# --- the steps ------------------------------------------------------------------------------

def infer_block(job: PredictJob, index: tuple[int, int], predictor: Predictor) -> BlockOutput:
    """Run the windows of one block; return its weighted sums cut along the core."""
    import rasterio

    block = job.plan.block(*index)
    size = job.model.tile_size
    channels = len(job.model.channels)
    with rasterio.open(job.grid.path) as src:
        image, valid = read_region(src, job.grid, block.extent)
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
    """
    import rasterio
    from rasterio.enums import Resampling

    from geotiler.polygons import building_channels

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
        final = job.block_file(kind, index)
        tmp = final.with_suffix(".partial")
        with rasterio.open(tmp, "w", count=data.shape[0], **profile) as dst:
            dst.write(data)
            if factors:
                dst.build_overviews(factors, Resampling[OVERVIEW_RESAMPLING[kind]])
        os.replace(tmp, final)
    histogram = (np.bincount(footprint[valid].ravel(), minlength=256) if job.config.otsu
                 else None)
    return BlockStats(index, windows_run, int((mask == 1).sum()), int(valid.sum()), histogram)


# How the overviews of the output GeoTIFFs are made: probabilities averaged, the mask
# (0 / 1 / nodata) by nearest neighbour.
OVERVIEW_RESAMPLING = {"prob": "average", "mask": "nearest"}  # rasterio Resampling names


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


def polygon_options(job: PredictJob, rect: Rect) -> tuple[PolygonOptions, float]:
    """Pixel-unit polygon options for a block, and the ground area (m²) of its pixels."""
    from rasterio.crs import CRS

    from geotiler.io import ground_gsd
    from geotiler.polygons import PolygonOptions

    gx, gy = ground_gsd(CRS.from_wkt(job.grid.crs_wkt),
                        job.grid.block_transform(rect), rect.width, rect.height)
    pixel_area = gx * gy
    options = PolygonOptions(
        threshold=job.config.threshold,
        grow=job.model.contour_width if "contour" in job.model.channels else 0,
        simplify=job.config.simplify / math.sqrt(pixel_area),
        min_area=job.config.min_area / pixel_area,
        regularize=job.config.regularize,
    )
    return options, pixel_area


def polygonize_job_block(job: PredictJob, index: tuple[int, int]) -> int:
    """Save the buildings owned by one block (:func:`block_polygons`) in the work
    directory, for :func:`finish`; returns how many. With ``--otsu`` the block's mask
    file is first rewritten at the job's (settled) threshold."""
    if job.config.otsu:
        rewrite_mask_block(job, index)
    found = block_polygons(job, index)
    found.save(job.block_file("poly", index).with_suffix(".npz"))
    return len(found)


def rewrite_mask_block(job: PredictJob, index: tuple[int, int]) -> None:
    """Re-threshold one block's mask file from its probability file (nodata kept)."""
    import rasterio
    from rasterio.enums import Resampling

    from geotiler.polygons import building_channels

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


def block_polygons(job: PredictJob, index: tuple[int, int]) -> MapPolygons:
    """Buildings owned by one block, read with a halo from the finished block files.

    Call only once the blocks within :attr:`PredictJob.polygon_reach` are finalized.
    """
    from geotiler.polygons import building_channels, polygonize_block, to_map

    core = job.plan.core(*index)
    region = core.grow(job.config.halo, job.grid.height, job.grid.width)
    probs = read_blocks(job, "prob", region)
    footprint, contour = building_channels(probs, job.model.channels)
    options, pixel_area = polygon_options(job, core)
    found = polygonize_block(footprint, contour, region, core, options)
    return MapPolygons(to_map(found.geoms, job.grid.transform), found.area * pixel_area,
                       found.score)


def read_blocks(job: PredictJob, kind: str, rect: Rect) -> np.ndarray:
    """A rectangle of the model grid mosaicked from the finished block files."""
    import rasterio
    from rasterio.windows import Window

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


def _vrt(job: PredictJob, kind: str, names: Sequence[str], nodata: int | None,
         level: int = 0) -> Path:
    """A VRT mosaic of the block files of one kind (written in the work directory).

    ``level`` 0 is the full grid, listing the block-built overviews of
    :func:`overview_factors` as its own; level k mosaics the blocks' k-th overviews.
    """
    g = job.grid
    factors = overview_factors(job)
    scale = factors[level - 1] if level else 1
    t = g.transform * Affine.scale(scale)
    width, height = math.ceil(g.width / scale), math.ceil(g.height / scale)
    open_options = (f'<OpenOptions><OOI key="OVERVIEW_LEVEL">{level - 1}</OOI></OpenOptions>'
                    if level else "")
    overviews = [_vrt(job, kind, names, nodata, k) for k in range(1, len(factors) + 1)
                 ] if not level else []
    bands = []
    for band, name in enumerate(names, start=1):
        sources = []
        for i, j in job.plan.indexes:
            core = job.plan.core(i, j)
            w, h = math.ceil(core.width / scale), math.ceil(core.height / scale)
            x, y = core.col0 // scale, core.row0 // scale
            sources.append(
                f'<SimpleSource><SourceFilename relativeToVRT="1">'
                f"{job.block_file(kind, (i, j)).name}</SourceFilename>{open_options}"
                f"<SourceBand>{band}</SourceBand>"
                f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
                f'<DstRect xOff="{x}" yOff="{y}" xSize="{w}" ySize="{h}"/></SimpleSource>')
        nd = f"<NoDataValue>{nodata}</NoDataValue>" if nodata is not None else ""
        ovr = "".join(f'<Overview><SourceFilename relativeToVRT="1">{path.name}'
                      f"</SourceFilename><SourceBand>{band}</SourceBand></Overview>"
                      for path in overviews)
        bands.append(f'<VRTRasterBand dataType="Byte" band="{band}">'
                     f"<Description>{escape(name)}</Description>{nd}{''.join(sources)}{ovr}"
                     "</VRTRasterBand>")
    meta = json.dumps({"config": job.config.to_dict(), "model": job.model.name,
                       "source": g.path, "geotiler_version": __version__})
    xml = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">'
           f"<SRS>{escape(g.crs_wkt)}</SRS>"
           f"<GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>"
           f'<Metadata><MDI key="geotiler_predict">{escape(meta)}</MDI></Metadata>'
           f"{''.join(bands)}</VRTDataset>")
    path = job.workdir / (f"{kind}-ovr{level}.vrt" if level else f"{kind}.vrt")
    path.write_text(xml)
    return path


def _staging(path: Path) -> Path:
    # Keeps the extension (GDAL picks conventions by it); hidden until renamed into place.
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


class GeoTiffOutput(NamedTuple):
    """One output GeoTIFF: which block files, band names, nodata, final path."""

    kind: str  # "prob" or "mask"; also picks the overview resampling
    names: Sequence[str]
    nodata: int | None
    path: Path


def geotiff_outputs(job: PredictJob) -> list[GeoTiffOutput]:
    """The output GeoTIFFs of a job: probabilities (unless switched off) and the mask."""
    outputs = [GeoTiffOutput("mask", ["building"],
                             MASK_NODATA if job.grid.has_nodata else None,
                             job.outputs.mask)]
    if job.config.probabilities:
        outputs.insert(0, GeoTiffOutput("prob", job.model.channels, None,
                                        job.outputs.prob))
    return outputs


def write_geotiff(job: PredictJob, output: GeoTiffOutput, staging: Path) -> None:
    """One cloud-optimized GeoTIFF from the block files, at ``staging``. Where the blocks
    carry no overviews (:func:`overview_factors`), GDAL makes them the same way."""
    import rasterio
    import rasterio.shutil

    vrt = _vrt(job, output.kind, output.names, output.nodata)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):  # bytes: rasterio passes ints on
        rasterio.shutil.copy(vrt, staging, driver="COG",
                             RESAMPLING=OVERVIEW_RESAMPLING[output.kind].upper(),
                             **COG_OPTIONS, **COG_COMPRESSION[job.config.compress])


def write_gpkg(job: PredictJob, staging: Path) -> int:
    """The buildings GeoPackage from the saved block polygons, one block at a time;
    returns how many buildings."""
    meta = {"config": job.config.to_dict(), "model": job.model.name,
            "source": job.grid.path, "geotiler_version": __version__}
    buildings = 0
    for k, index in enumerate(job.plan.indexes):
        block = MapPolygons.load(job.block_file("poly", index).with_suffix(".npz"))
        if k == 0 or len(block):  # the first write creates the layer, maybe empty
            write_polygons(staging, block, job.grid.crs_wkt, meta, append=k > 0)
            buildings += len(block)
    return buildings


def write_polygons(path: Path, polygons: MapPolygons, crs_wkt: str,
                   meta: dict[str, Any] | None = None, append: bool = False) -> None:
    """Write (or append to) the ``buildings`` layer of a GeoPackage; with no polygons and
    ``append`` False, a valid empty layer."""
    import geopandas as gpd
    import pyogrio

    frame = gpd.GeoDataFrame(
        {"area_m2": np.round(polygons.area_m2.astype(np.float64), 3),
         "score": np.round(polygons.score.astype(np.float64), 4)},
        geometry=gpd.GeoSeries(polygons.geoms, crs=crs_wkt), crs=crs_wkt)
    extra: dict[str, Any] = {"append": True} if append else {
        "layer_metadata": {"geotiler_predict": json.dumps(meta or {})}}
    pyogrio.write_dataframe(frame, path, layer=LAYER, driver="GPKG", geometry_type="Polygon",
                            **extra)


def finish(job: PredictJob, stats: Sequence[BlockStats], started: float,
           timings: dict[str, float] | None = None) -> PredictReport:
    """Write the final outputs from the block files and the saved polygons (one block's
    at a time), rename them into place, remove the work directory."""
    timings = dict(timings or {})
    staged = {_staging(final): final
              for final in [job.outputs.gpkg] + [out.path for out in geotiff_outputs(job)]}
    try:
        # The outputs are written side by side: GDAL's COG writer compresses on every core
        # but reads the blocks and builds overviews on one, and the GeoPackage needs none
        # of them. Each is staged under a temporary name until all are done.
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(staged),
                                thread_name_prefix="geotiler-outputs") as pool:
            gpkg = pool.submit(_timed, write_gpkg, job, _staging(job.outputs.gpkg))
            geotiffs = [pool.submit(_timed, write_geotiff, job, out, _staging(out.path))
                        for out in geotiff_outputs(job)]
            buildings, timings["gpkg"] = gpkg.result()
            timings["geotiffs"] = max(future.result()[1] for future in geotiffs)
        timings["outputs"] = time.perf_counter() - t0
        for tmp, final in staged.items():
            os.replace(tmp, final)
    except BaseException:
        for tmp in staged:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(job.workdir, ignore_errors=True)
    valid = sum(s.valid_pixels for s in stats)
    return PredictReport(
        raster=job.grid.path,
        outputs=[str(p) for p in job.outputs.all(job.config.probabilities)],
        grid=(job.grid.width, job.grid.height),
        gsd=job.model.gsd,
        blocks=len(job.plan.indexes),
        windows=job.plan.num_windows,
        windows_run=sum(s.windows_run for s in stats),
        buildings=buildings,
        building_fraction=(sum(s.building_pixels for s in stats) / valid) if valid else 0.0,
        seconds=time.perf_counter() - started,
        threshold=job.config.threshold,
        timings=timings,
    )


def _timed(function: Callable[..., T], *args: Any) -> tuple[T, float]:
    started = time.perf_counter()
    return function(*args), time.perf_counter() - started


def abort(job: PredictJob) -> None:
    """Remove the work directory and any staged output of an interrupted run."""
    shutil.rmtree(job.workdir, ignore_errors=True)
    for final in job.outputs.all(True):
        _staging(final).unlink(missing_ok=True)


# --- the whole run, one step after another ---------------------------------------------------

def predict(raster: Path | str, predictor: Predictor, model: ModelInfo, out: Path | str,
            config: PredictConfig | None = None, raster_out: Path | str | None = None,
            on_block: Callable[[], None] | None = None) -> PredictReport:
    """Predict buildings on ``raster`` serially, one block at a time (no Dask).

    Memory: the blocks of one row of the plan (their spills) plus one block.
    """
    config = config or PredictConfig()
    started = time.perf_counter()
    job = prepare(raster, model, out, config, raster_out)
    try:
        rows, cols = job.plan.shape
        stats: list[BlockStats] = []
        previous: dict[int, BlockOutput] = {}
        t0 = time.perf_counter()
        for i in range(rows):
            current: dict[int, BlockOutput] = {}
            for j in range(cols):
                own = infer_block(job, (i, j), predictor)
                current[j] = own
                left = current[j - 1].right if j > 0 else None
                up = previous[j].bottom if i > 0 else None
                upleft = previous[j - 1].corner if i > 0 and j > 0 else None
                stats.append(finalize_block(job, (i, j), *own[:3], own.valid, own.windows_run,
                                            left, up, upleft))
                empty = np.empty(0, np.uint8)
                current[j] = own._replace(probs=empty, own_top=empty, own_left=empty,
                                          valid=empty)
                if on_block:
                    on_block()
            previous = current
        t1 = time.perf_counter()
        job, stats = settle(job, stats)
        for index in job.plan.indexes:
            polygonize_job_block(job, index)
        t2 = time.perf_counter()
        return finish(job, stats, started, {"infer": t1 - t0, "polygonize": t2 - t1})
    except BaseException:
        abort(job)
        raise

"""The tile grid and the spatial train/val/test split.

The target pixel size at a GSD (:func:`gsd_factor`, :func:`scaled_pixel`) and the resampling
it reads with (:func:`resampling_for_scale`) are shared with prediction's model grid
(:mod:`geotiler.predict.grid`), so a model sees rasters cut exactly as its tiles were.
:func:`check_tile_gsds` holds a run's rasters to one tile GSD and warns where it lies far
from a raster's own.

The grid lives in the raster's CRS at the target pixel size: tile (row, col) covers output
pixels ``[row*stride, row*stride+size)`` x ``[col*stride, col*stride+size)`` from the raster's
top-left corner. The last row and column run past the raster's edge and are padded, so the
tiles cover every source pixel and none is dropped.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling

from geotiler.errors import ConfigError
from geotiler.io import RasterInfo
from geotiler.tiles.config import SPLITS, TileConfig
from geotiler.tiles.schema import POOL_GSD_TOLERANCE

log = logging.getLogger(__name__)

# Which split survives where overlapping tiles would land on both sides of a split border:
# held-out tiles are kept, training tiles give way.
_PRIORITY = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class TileGrid:
    """Tiles of one raster at the target resolution."""

    origin: tuple[float, float]  # map x, y of the raster's top-left corner
    pixel: tuple[float, float]  # target pixel width, height in CRS units (both > 0)
    size: int
    stride: int
    rows: int
    cols: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    def transform(self, row: int, col: int) -> Affine:
        """Affine transform of tile (row, col): its pixel (i, j) -> map coordinates."""
        x0 = self.origin[0] + col * self.stride * self.pixel[0]
        y0 = self.origin[1] - row * self.stride * self.pixel[1]
        return Affine(self.pixel[0], 0.0, x0, 0.0, -self.pixel[1], y0)

    def bounds(self, row: int, col: int, pad: int = 0) -> tuple[float, float, float, float]:
        """Map bounds (left, bottom, right, top) of a tile, grown by ``pad`` target pixels."""
        t = self.transform(row, col)
        left = t.c - pad * self.pixel[0]
        top = t.f + pad * self.pixel[1]
        right = t.c + (self.size + pad) * self.pixel[0]
        bottom = t.f - (self.size + pad) * self.pixel[1]
        return (left, bottom, right, top)


def gsd_factor(info: RasterInfo, gsd: float) -> float:
    """Target pixel over source pixel for pixels of ``gsd`` metres on the ground (the
    raster's ground GSD is measured at its centre, so geographic CRSs work too)."""
    return gsd / info.mean_gsd


def scaled_pixel(info: RasterInfo, factor: float) -> tuple[float, float]:
    """The raster's pixel size (width, height > 0) in its CRS units, times ``factor``."""
    return (abs(info.transform.a) * factor, abs(info.transform.e) * factor)


def target_pixel(info: RasterInfo, config: TileConfig) -> tuple[float, float]:
    """Target pixel size in the raster's CRS units, from --gsd (metres) or --scale."""
    if config.gsd is not None:
        factor = gsd_factor(info, config.gsd)
    elif config.scale is not None:
        factor = config.scale
    else:
        factor = 1.0
    return scaled_pixel(info, factor)


def resampling_for_scale(factor: float) -> Resampling:
    """How to read a raster at ``factor`` x its pixel size: average when shrinking (no
    aliasing), bilinear when enlarging, an exact copy (nearest) at 1."""
    if abs(factor - 1) < 1e-9:
        return Resampling.nearest
    return Resampling.average if factor > 1 else Resampling.bilinear


def resampling_for(grid: TileGrid, info: RasterInfo) -> Resampling:
    """The resampling that reads ``info``'s raster onto the tile grid."""
    return resampling_for_scale(grid.pixel[0] / abs(info.transform.a))


# Enlarging a raster's pixels more than this adds no detail, only tiles: --gsd 0.001 on
# 1 m imagery (millimetres typed for metres, degrees for a geographic raster) planned 10^12
# tiles and took all the memory before any check.
MAX_ENLARGEMENT = 16.0


def make_grid(info: RasterInfo, config: TileConfig) -> TileGrid:
    """The tile grid of one raster; rasters smaller than a tile get one padded tile.

    Raises:
        ConfigError: the raster is smaller than a pixel at the target GSD, or its pixels
            would be enlarged more than :data:`MAX_ENLARGEMENT` times.
    """
    pixel = target_pixel(info, config)
    enlargement = abs(info.transform.a) / pixel[0]
    if enlargement > MAX_ENLARGEMENT:
        asked = (f"--gsd {config.gsd:g} m (metres)" if config.gsd is not None
                 else f"--scale {config.scale:g}")
        raise ConfigError(
            f"{info.path}: {asked} would enlarge its {info.mean_gsd:.3g} m pixels "
            f"{enlargement:.3g} times (at most {MAX_ENLARGEMENT:g}): a finer grid adds tiles, "
            "not detail"
        )
    width = info.width * abs(info.transform.a) / pixel[0]
    height = info.height * abs(info.transform.e) / pixel[1]
    if width < 1 or height < 1:
        raise ConfigError(
            f"{info.path}: at the target GSD the raster is {width:.2f} x {height:.2f} px; "
            "choose a finer --gsd or a smaller --scale"
        )
    return TileGrid(
        origin=(info.transform.c, info.transform.f),
        pixel=pixel,
        size=config.size,
        stride=config.stride,
        rows=_count(height, config.size, config.stride),
        cols=_count(width, config.size, config.stride),
    )


FAR_RESAMPLING = 10.0  # tile GSD this many times a raster's own, either way, warns: a
# unit slip (cm for m) is ~100x, while real uses stay under 8x (0.13 m drone imagery at 1 m)


def tile_gsd(info: RasterInfo, grid: TileGrid) -> float:
    """Ground sample distance in metres of ``info``'s tiles on ``grid``."""
    return info.mean_gsd * grid.pixel[0] / abs(info.transform.a)


def _check_one_gsd(infos: list[RasterInfo], grids: list[TileGrid]) -> None:
    """ConfigError unless every raster's tiles have one GSD (within 2 %, as ``train``
    pools datasets): rasters of different native GSDs need ``--gsd``, else the dataset
    would record the first one's GSD for tiles at another."""
    gsds = [tile_gsd(i, g) for i, g in zip(infos, grids, strict=True)]
    if max(gsds) - min(gsds) > POOL_GSD_TOLERANCE * min(gsds):
        listed = ", ".join(f"{i.name} {g:.3g} m" for i, g in zip(infos, gsds, strict=True))
        raise ConfigError(f"the rasters' tiles would have different GSDs ({listed}): give "
                          f"one with --gsd (e.g. --gsd {max(gsds):.2g})")


def _warn_far_resampling(infos: list[RasterInfo], grids: list[TileGrid]) -> None:
    """Warn when tiles are resampled more than :data:`FAR_RESAMPLING` times away from a
    raster's own GSD: usually ``--gsd`` or ``--scale`` typed in another unit (``--gsd 50``
    meaning 50 cm). Coarser loses the buildings (a 10 m house at 10 m is one pixel); finer
    adds no detail and multiplies the tiles by the factor squared."""
    for info, grid in zip(infos, grids, strict=True):
        tile, native = tile_gsd(info, grid), info.mean_gsd
        factor = tile / native
        if factor > FAR_RESAMPLING or factor < 1 / FAR_RESAMPLING:
            way = "coarser" if factor > 1 else "finer"
            log.warning("%s: tiles at %.3g m from a %.3g m raster (%.3g x %s); --gsd is in "
                        "metres per pixel and --scale a factor: is that what you meant?",
                        info.name, tile, native, max(factor, 1 / factor), way)


def check_tile_gsds(infos: list[RasterInfo], grids: list[TileGrid]) -> None:
    """The GSD checks of one tiling run: one GSD for all its rasters' tiles (ConfigError
    otherwise) and a warning where tiles lie far from a raster's own GSD."""
    _check_one_gsd(infos, grids)
    _warn_far_resampling(infos, grids)


def _count(extent: float, size: int, stride: int) -> int:
    """Fewest tiles of ``size`` at ``stride`` whose union covers ``extent`` pixels."""
    return max(1, math.ceil(max(extent - size, 0.0) / stride - 1e-9) + 1)


def assign_splits(
    grids: Sequence[tuple[str, TileGrid]], config: TileConfig
) -> list[np.ndarray]:
    """Split every raster's tiles into train/val/test by square blocks of tiles.

    Blocks of ``block_tiles`` x ``block_tiles`` tiles from all rasters are pooled, shuffled
    with the seed and dealt out by the split fractions, so the result depends only on the
    inputs and the seed. Then, where tiles overlap (``--overlap``), a tile that overlaps a
    tile of another split is dropped from the lower-priority side (train < val < test), so
    no pixel is seen by two splits. Returns, per raster, a (rows, cols) array of split names
    with "" for dropped tiles.
    """
    bt = config.block_tiles
    blocks: list[tuple[int, int, int]] = []
    for index, (_, grid) in enumerate(grids):
        for br in range(math.ceil(grid.rows / bt)):
            for bc in range(math.ceil(grid.cols / bt)):
                blocks.append((index, br, bc))
    names = "|".join(name for name, _ in grids)
    rng = np.random.default_rng([config.seed, zlib.crc32(names.encode())])
    order = rng.permutation(len(blocks))
    counts = _deal(len(blocks), config.split)
    block_split: dict[tuple[int, int, int], str] = {}
    position = 0
    for split, count in zip(SPLITS, counts, strict=True):
        for k in order[position : position + count]:
            block_split[blocks[k]] = split
        position += count

    result = []
    for index, (_, grid) in enumerate(grids):
        rows, cols = np.indices(grid.shape)
        codes = np.vectorize(lambda r, c, i=index: _PRIORITY[block_split[(i, r // bt, c // bt)]])(
            rows, cols
        ).astype(np.int8)
        codes = _guard_overlaps(codes, reach=math.ceil(config.size / config.stride) - 1)
        labels = np.array(["", *SPLITS], dtype=object)[codes + 1]
        result.append(labels)
    return result


def guard_raster_overlaps(
    grids: Sequence[tuple[TileGrid, CRS]], labels: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """Where the rasters of one dataset overlap, keep the splits apart across rasters too.

    :func:`assign_splits` deals blocks per raster, so where two rasters cover the same
    ground (overlapping clips, a mosaic and its parts) a train tile of one could cover a
    test tile of the other. Every kept tile that shares more than 0.1 % of its area (less
    than a one-pixel strip along an edge) with a kept tile of another raster in a
    higher-priority split is dropped (train < val < test), as within one raster. Tiles of
    rasters in other CRSs are compared in the first raster's CRS (edges densified before
    reprojecting). ``labels`` are :func:`assign_splits`' arrays; returns new ones.
    """
    if len(grids) < 2:
        return list(labels)
    import shapely
    from pyproj import Transformer

    common = grids[0][1]
    boxes, owner, flat, codes = [], [], [], []
    for index, ((grid, crs), names) in enumerate(zip(grids, labels, strict=True)):
        bounds = np.array([grid.bounds(r, c) for r, c in np.ndindex(grid.shape)])
        polys = shapely.box(*bounds.T)  # row-major, as names.ravel()
        if crs != common:
            to_common = Transformer.from_crs(crs, common, always_xy=True)
            polys = shapely.transform(
                shapely.segmentize(polys, grid.size * grid.pixel[0] / 8),
                lambda xy, t=to_common: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))
        boxes.append(polys)
        owner.append(np.full(polys.size, index))
        flat.append(np.arange(polys.size))
        codes.append(np.array([_PRIORITY.get(n, -1) for n in names.ravel()], dtype=np.int8))
    all_boxes, all_owner = np.concatenate(boxes), np.concatenate(owner)
    all_flat, all_codes = np.concatenate(flat), np.concatenate(codes)
    kept = np.flatnonzero(all_codes >= 0)
    tree = shapely.STRtree(all_boxes[kept])
    a, b = tree.query(all_boxes[kept], predicate="intersects")
    a, b = kept[a], kept[b]
    pairs = (all_owner[a] != all_owner[b]) & (all_codes[a] < all_codes[b])
    a, b = a[pairs], b[pairs]
    shared = shapely.area(shapely.intersection(all_boxes[a], all_boxes[b]))
    drop = np.unique(a[shared > 1e-3 * shapely.area(all_boxes[a])])
    result = [np.array(names, dtype=object, copy=True) for names in labels]
    for k in drop:
        result[all_owner[k]].ravel()[all_flat[k]] = ""
    return result


def _deal(n_blocks: int, fractions: Sequence[float]) -> list[int]:
    """Block counts per split: rounded fractions, at least one held-out block when asked for
    and there are blocks to spare, the rest to train."""
    val = round(fractions[1] * n_blocks)
    test = round(fractions[2] * n_blocks)
    if fractions[1] > 0 and val == 0 and n_blocks - test >= 2:
        val = 1
    if fractions[2] > 0 and test == 0 and n_blocks - val >= 2:
        test = 1
    if fractions[0] > 0 and val + test >= n_blocks and n_blocks > 0:
        # keep at least one training block
        if test >= val and test > 0:
            test -= 1
        elif val > 0:
            val -= 1
    train = n_blocks - val - test
    return [train, val, test]


def _guard_overlaps(codes: np.ndarray, reach: int) -> np.ndarray:
    """Drop (-1) every tile that overlaps a tile of a higher-priority split."""
    if reach <= 0:
        return codes
    rows, cols = codes.shape
    padded = np.full((rows + 2 * reach, cols + 2 * reach), -1, dtype=np.int8)
    padded[reach : reach + rows, reach : reach + cols] = codes
    highest = codes.copy()
    for dr in range(-reach, reach + 1):
        for dc in range(-reach, reach + 1):
            window = padded[reach + dr : reach + dr + rows, reach + dc : reach + dc + cols]
            np.maximum(highest, window, out=highest)
    return np.where(highest > codes, np.int8(-1), codes)

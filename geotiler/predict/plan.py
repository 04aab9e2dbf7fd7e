"""Windows over a grid, grouped into blocks: which windows run, and which block owns each.

Pure arithmetic (no numpy, no OpenCV), so the CLI can read :data:`BLOCK_PX` and
:data:`HALO_PX` without loading anything heavy. The pieces:

* :func:`axis_starts` / :func:`plan_windows` -- window origins at ``stride = size - overlap``
  whose union covers the grid; the last one is aligned to the far edge (a grid smaller than
  a window gets one window, padded by the reader).
* :func:`plan_blocks` -- the grid cut into blocks whose cores are multiples of the stride.
  Each window belongs to the block holding its origin, so every window runs exactly once.
  A block's windows reach at most ``overlap`` pixels past its core into the blocks to its
  right and below (its *spill*), never further.

Prediction (:mod:`geotiler.predict`), evaluation and polygonizing (:mod:`geotiler.polygons`)
all walk a grid with these blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Block-wise processing (predict, evaluate, polygonizing): square blocks of BLOCK_PX px read
# with HALO_PX px around them. The halo must exceed the largest building (px) so a building
# crossing a block border is whole in the block that owns it; 256 px is 128 m at 0.5 m GSD.
BLOCK_PX = 2048
HALO_PX = 256


def axis_starts(length: int, size: int, stride: int) -> list[int]:
    """Window origins along one axis: 0, stride, 2 stride, ... and ``length - size`` last.

    The union of ``[s, s + size)`` covers ``[0, length)``; neighbours overlap by at least
    ``size - stride``. When ``length <= size`` there is a single window at 0 (it runs past
    the edge and is padded by whoever reads it).
    """
    if length < 1 or size < 1 or not 0 < stride <= size:
        raise ValueError(f"bad window axis: length={length} size={size} stride={stride}")
    if length <= size:
        return [0]
    last = length - size
    starts = list(range(0, last, stride))
    starts.append(last)
    return starts


def plan_windows(height: int, width: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """(row, col) origins of every window over a ``height`` x ``width`` grid, row-major."""
    stride = size - overlap
    rows = axis_starts(height, size, stride)
    cols = axis_starts(width, size, stride)
    return [(r, c) for r in rows for c in cols]


@dataclass(frozen=True)
class Rect:
    """Half-open pixel rectangle ``[row0, row1) x [col0, col1)`` of the grid."""

    row0: int
    row1: int
    col0: int
    col1: int

    @property
    def height(self) -> int:
        return self.row1 - self.row0

    @property
    def width(self) -> int:
        return self.col1 - self.col0

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    def grow(self, halo: int, height: int, width: int) -> Rect:
        """This rectangle grown by ``halo`` pixels on every side, clipped to the grid."""
        return Rect(max(0, self.row0 - halo), min(height, self.row1 + halo),
                    max(0, self.col0 - halo), min(width, self.col1 + halo))

    def contains(self, row: float, col: float) -> bool:
        return self.row0 <= row < self.row1 and self.col0 <= col < self.col1


@dataclass(frozen=True)
class Block:
    """One block of the plan: its core, the windows it owns and what they cover."""

    index: tuple[int, int]
    core: Rect
    extent: Rect  # union of the owned windows, clipped to the grid (starts at the core)
    windows: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class BlockPlan:
    """Windows of a grid grouped into blocks (see module docstring)."""

    height: int
    width: int
    size: int
    overlap: int
    row_edges: tuple[int, ...]  # block core boundaries, first 0, last height
    col_edges: tuple[int, ...]

    @property
    def stride(self) -> int:
        return self.size - self.overlap

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.row_edges) - 1, len(self.col_edges) - 1)

    @property
    def indexes(self) -> list[tuple[int, int]]:
        rows, cols = self.shape
        return [(i, j) for i in range(rows) for j in range(cols)]

    def core(self, i: int, j: int) -> Rect:
        return Rect(self.row_edges[i], self.row_edges[i + 1],
                    self.col_edges[j], self.col_edges[j + 1])

    def block(self, i: int, j: int) -> Block:
        core = self.core(i, j)
        rows = [r for r in axis_starts(self.height, self.size, self.stride)
                if core.row0 <= r < core.row1]
        cols = [c for c in axis_starts(self.width, self.size, self.stride)
                if core.col0 <= c < core.col1]
        windows = tuple((r, c) for r in rows for c in cols)
        if windows:
            extent = Rect(core.row0, min(self.height, max(rows) + self.size),
                          core.col0, min(self.width, max(cols) + self.size))
        else:  # pragma: no cover - plan_blocks never makes a block without windows
            extent = core
        return Block((i, j), core, extent, windows)

    def blocks(self) -> list[Block]:
        return [self.block(i, j) for i, j in self.indexes]

    @property
    def num_windows(self) -> int:
        return len(axis_starts(self.height, self.size, self.stride)) * len(
            axis_starts(self.width, self.size, self.stride))

    def incoming(self, i: int, j: int) -> tuple[int, int]:
        """Rows and columns at the top and left of block (i, j)'s core that its upper and
        left neighbours' windows reach (their spills)."""
        core = self.core(i, j)
        top = self.block(i - 1, j).extent.row1 - core.row0 if i > 0 else 0
        left = self.block(i, j - 1).extent.col1 - core.col0 if j > 0 else 0
        return top, left

    def neighbours(self, i: int, j: int, reach: int = 1) -> list[tuple[int, int]]:
        """Block indexes within ``reach`` blocks of (i, j), itself included."""
        rows, cols = self.shape
        return [(a, b) for a in range(max(0, i - reach), min(rows, i + reach + 1))
                for b in range(max(0, j - reach), min(cols, j + reach + 1))]


def _edges(length: int, size: int, core: int) -> tuple[int, ...]:
    edges = list(range(0, length, core))
    # A last core shorter than a window owns no window origin: merge it into the one before.
    if len(edges) > 1 and length - edges[-1] < size:
        edges.pop()
    edges.append(length)
    return tuple(edges)


def plan_blocks(height: int, width: int, size: int, overlap: int, block: int) -> BlockPlan:
    """Cut a ``height`` x ``width`` grid into blocks of about ``block`` pixels.

    The core side is ``block`` rounded to a multiple of the stride (and at least one window),
    so window origins fall on core borders; a short last row/column of blocks is merged
    into the one before it.
    """
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be in [0, size), got {overlap} for size {size}")
    if height < 1 or width < 1:
        raise ValueError(f"grid must be at least 1 x 1, got {height} x {width}")
    stride = size - overlap
    core = max(math.ceil(size / stride), round(block / stride), 1) * stride
    return BlockPlan(height, width, size, overlap,
                     _edges(height, size, core), _edges(width, size, core))

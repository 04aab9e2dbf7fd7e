"""Sliding windows over a raster grid, blended without seams, planned block by block.

Pure numpy; no raster or Dask knowledge. The pieces:

* :func:`window_weights` — a smooth 2-D window (Hann or linear ramp) with a floor, so the
  pixels at the raster's edge, seen by one window only, still get a weight.
* :func:`axis_starts` / :func:`plan_windows` — window origins at ``stride = size - overlap``
  whose union covers the grid; the last one is aligned to the far edge (a grid smaller than
  a window gets one window, padded by the reader).
* :func:`plan_blocks` — the grid cut into blocks whose cores are multiples of the stride.
  Each window belongs to the block holding its origin, so every window runs exactly once.
  A block's windows reach at most ``overlap`` pixels past its core into the blocks to its
  right and below (its *spill*), never further.
* :class:`Accumulator` — the weighted sum (K channels) and weight of a block's windows over
  its extent; :meth:`Accumulator.pieces` cuts it into the core and the three spills that
  :func:`merge_core` adds into the neighbours' cores. Summing in any order gives the same
  result as blending the whole raster at once.
* :func:`compact_core` / :func:`complete_core` — the same, for a core that waits for its
  neighbours: everything but its first rows and columns (where the upper and left
  neighbours' spills land) is final at once and kept as uint8, so a waiting block holds
  about a sixth of its float sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import cv2
import numpy as np

WindowKind = Literal["hann", "linear"]
WINDOW_KINDS: tuple[WindowKind, ...] = ("hann", "linear")


def window_weights(size: int, kind: WindowKind = "hann", floor: float = 0.01) -> np.ndarray:
    """A (size, size) float32 weight window, highest in the middle, never below ``floor``.

    ``hann``: the outer product of ``sin(pi (i + 0.5) / size)**2``; ``linear``: of a
    triangle ramp ``min(i + 0.5, size - i - 0.5) / (size / 2)``. Both are symmetric, so a
    window's weight is the same whichever way the grid runs.
    """
    if size < 1:
        raise ValueError(f"window size must be positive, got {size}")
    if not 0 < floor <= 1:
        raise ValueError(f"window floor must be in (0, 1], got {floor}")
    i = np.arange(size, dtype=np.float64) + 0.5
    if kind == "hann":
        ramp = np.sin(np.pi * i / size) ** 2
    elif kind == "linear":
        ramp = np.minimum(i, size - i) / (size / 2)
    else:
        raise ValueError(f"window must be one of {WINDOW_KINDS}, got {kind!r}")
    weights = np.maximum(np.outer(ramp, ramp), floor)
    return weights.astype(np.float32)


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


class Pieces(NamedTuple):
    """A block's accumulation cut along its core: each (K + 1, h, w), weight last."""

    core: np.ndarray
    right: np.ndarray  # core rows, columns past the core (to the block on the right)
    bottom: np.ndarray  # rows past the core, core columns (to the block below)
    corner: np.ndarray  # rows and columns past the core (to the block below-right)


class Accumulator:
    """Weighted sum of window outputs over a block's extent; the weight is the last channel."""

    def __init__(self, extent: Rect, channels: int, weights: np.ndarray) -> None:
        self.extent = extent
        self.channels = channels
        self.weights = weights
        self.data = np.zeros((channels + 1, extent.height, extent.width), dtype=np.float32)

    def add(self, probs: np.ndarray, origins: list[tuple[int, int]] | tuple[tuple[int, int], ...]
            ) -> None:
        """Add (N, K, S, S) window outputs at grid origins (row, col), cropped to the extent."""
        size = self.weights.shape[0]
        ext = self.extent
        for out, (row, col) in zip(probs, origins, strict=True):
            r0, r1 = max(row, ext.row0), min(row + size, ext.row1)
            c0, c1 = max(col, ext.col0), min(col + size, ext.col1)
            if r0 >= r1 or c0 >= c1:
                continue
            w = self.weights[r0 - row:r1 - row, c0 - col:c1 - col]
            target = self.data[:, r0 - ext.row0:r1 - ext.row0, c0 - ext.col0:c1 - ext.col0]
            target[:-1] += out[:, r0 - row:r1 - row, c0 - col:c1 - col] * w
            target[-1] += w

    def pieces(self, core: Rect) -> Pieces:
        h, w = core.height, core.width
        d = self.data
        return Pieces(d[:, :h, :w], d[:, :h, w:], d[:, h:, :w], d[:, h:, w:])


def merge_core(core: np.ndarray, left: np.ndarray | None = None, up: np.ndarray | None = None,
               upleft: np.ndarray | None = None) -> np.ndarray:
    """A block's core sum plus the spills of its left, upper and upper-left neighbours.

    ``left`` is the left neighbour's ``right`` piece, ``up`` the upper one's ``bottom``,
    ``upleft`` the diagonal one's ``corner``; each lands in the core's first rows/columns.
    Returns a new (K + 1, h, w) array; the inputs are not modified.
    """
    total = core.copy()
    if left is not None and left.size:
        total[:, :, :left.shape[2]] += left
    if up is not None and up.size:
        total[:, :up.shape[1], :] += up
    if upleft is not None and upleft.size:
        total[:, :upleft.shape[1], :upleft.shape[2]] += upleft
    return total


class CoreParts(NamedTuple):
    """A block's core while it waits for its neighbours (see :func:`compact_core`)."""

    probs: np.ndarray  # (K, h, w) uint8, final except the first `top` rows / `left` columns
    top: np.ndarray  # (K + 1, top, w) the block's own sums of its first rows
    left: np.ndarray  # (K + 1, h, left) the block's own sums of its first columns


def compact_core(core: np.ndarray, top: int, left: int) -> CoreParts:
    """Finalize what a (K + 1, h, w) core sum can finalize alone; keep the sums of the
    ``top`` rows and ``left`` columns that the neighbours' spills still add to."""
    return CoreParts(sums_to_uint8(core), core[:, :top].copy(), core[:, :, :left].copy())


def complete_core(parts: CoreParts, left: np.ndarray | None = None,
                  up: np.ndarray | None = None, upleft: np.ndarray | None = None
                  ) -> np.ndarray:
    """(K, h, w) uint8 probabilities of a compacted core plus its neighbours' spills.

    Same arguments and result as ``sums_to_uint8(merge_core(...))`` on the full sums.
    """
    probs = parts.probs.copy()
    t, w = parts.top.shape[1], parts.left.shape[2]
    for name, piece, shape in (("up", up, (t, probs.shape[2])), ("left", left, (probs.shape[1], w)),
                               ("upleft", upleft, (t, w))):
        if piece is not None and piece.size and piece.shape[1:] != shape:
            raise ValueError(f"{name} spill {piece.shape[1:]} does not fit the core's {shape}")
    if t:
        top = parts.top.copy()
        if up is not None and up.size:
            top += up
        if w and left is not None and left.size:
            top[:, :, :w] += left[:, :t]
        if w and upleft is not None and upleft.size:
            top[:, :, :w] += upleft
        probs[:, :t] = sums_to_uint8(top)
    if w:
        side = parts.left[:, t:].copy()
        if left is not None and left.size:
            side += left[:, t:]
        probs[:, t:, :w] = sums_to_uint8(side)
    return probs


def normalize(total: np.ndarray) -> np.ndarray:
    """(K + 1, h, w) weighted sums -> (K, h, w) float32 means; 0 where no window ran."""
    weight = total[-1]
    out = np.zeros(total[:-1].shape, dtype=np.float32)
    np.divide(total[:-1], weight, out=out, where=weight > 0)
    return out


def to_uint8(probs: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] -> 0..255, rounded to nearest (one pass in OpenCV)."""
    flat = np.ascontiguousarray(probs, dtype=np.float32).reshape(-1, probs.shape[-1])
    scaled: np.ndarray = cv2.multiply(flat, 255.0, dtype=cv2.CV_8U)  # type: ignore[call-overload]
    return scaled.reshape(probs.shape)


def sums_to_uint8(total: np.ndarray) -> np.ndarray:
    """(K + 1, h, w) weighted sums -> (K, h, w) uint8 0..255; 0 where no window ran.

    Equal to ``to_uint8(normalize(total))`` (same rounding) in one pass per channel:
    2-3x faster, which matters because every output pixel goes through it.
    """
    weight = total[-1]
    scale = np.zeros(weight.shape, dtype=np.float32)
    np.divide(np.float32(255.0), weight, out=scale, where=weight > 0)
    out = np.empty(total[:-1].shape, dtype=np.uint8)
    for k in range(total.shape[0] - 1):
        cv2.multiply(np.ascontiguousarray(total[k], dtype=np.float32), scale, dst=out[k],
                     dtype=cv2.CV_8U)
    return out


def threshold_uint8(threshold: float) -> int:
    """The uint8 level at or above which a stored probability counts as ``>= threshold``."""
    return int(min(255, max(0, math.ceil(threshold * 255.0 - 1e-9))))

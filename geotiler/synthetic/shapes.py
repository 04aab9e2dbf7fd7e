"""Pixel geometry shared by planning and rendering: the fixed-point vertex grid, placements,
the planned-building record, polygons packed into flat arrays, and a bounding-box index for
selecting what meets a block.

Coordinates are global pixel coordinates (x right, y down; pixel i spans [i, i + 1)).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
F32 = NDArray[np.float32]
# (x, y, angle): a placement in the grid frame, metres and radians.
Placement = tuple[float, float, float]

SHIFT = 4  # vertices on a 1/16 px grid (also cv2's fixed-point bits)
ONE = 1 << SHIFT
QUANT = 64  # footprint vertices sit at odd multiples of 1/128 px: never on a pixel centre
HALO = 8  # px rendered around each block so blurs and neighbours match across blocks


@dataclass
class Building:
    outline: FloatArray  # (N, 2) pixel coordinates, quantized
    holes: list[FloatArray]
    parts: list[tuple[float, float, float, float, float, float]]  # cx, cy, ux, uy, a, b (px)
    shape: int  # index into ROOF_SHAPES
    colour: tuple[float, float, float]
    kind: str
    roof: str
    height: float
    details: list[tuple[int, FloatArray, tuple[float, float, float]]] = field(
        default_factory=list
    )  # (0 darken / 1 paint, polygon px, colour or (factor, 0, 0))


@dataclass
class Index:
    """Objects of one kind with their pixel bounding boxes, for per-block selection."""

    boxes: FloatArray  # (N, 4) xmin, ymin, xmax, ymax in px

    def select(self, c0: int, r0: int, c1: int, r1: int) -> NDArray[np.intp]:
        b = self.boxes
        if not len(b):
            return np.zeros(0, dtype=np.intp)
        hit = (b[:, 2] >= c0) & (b[:, 0] <= c1) & (b[:, 3] >= r0) & (b[:, 1] <= r1)
        return np.flatnonzero(hit)


def ring(px: FloatArray) -> FloatArray:
    """A closed ring with vertices snapped to 1/16 px (exact in binary floating point)."""
    q = np.rint(px * ONE) / ONE
    return np.concatenate([q, q[:1]])


def quantize(px: FloatArray) -> FloatArray:
    return (np.floor(px * QUANT) + 0.5) / QUANT


@dataclass
class Polys:
    """Many polygons (closed rings, pixel coordinates) packed into two arrays."""

    xy: FloatArray  # (M, 2) vertices of all rings
    ends: NDArray[np.int64]  # (N + 1,) ring i is xy[ends[i]:ends[i + 1]]

    def __len__(self) -> int:
        return len(self.ends) - 1

    def ring(self, i: int) -> FloatArray:
        return self.xy[self.ends[i]:self.ends[i + 1]]

    def boxes(self) -> FloatArray:
        """(N, 4) bounding boxes xmin, ymin, xmax, ymax."""
        if not len(self):
            return np.zeros((0, 4))
        lo = np.minimum.reduceat(self.xy, self.ends[:-1], axis=0)
        hi = np.maximum.reduceat(self.xy, self.ends[:-1], axis=0)
        return np.concatenate([lo, hi], axis=1)

    def take(self, order: NDArray[np.intp]) -> Polys:
        """The rings in a new order."""
        lengths = np.diff(self.ends)[order]
        ends = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        gather = np.repeat(self.ends[:-1][order] - ends[:-1], lengths) + np.arange(ends[-1])
        return Polys(self.xy[gather], ends)


class PolyStore:
    """A compact, growing list of polygons: 16 bytes a vertex, no object per polygon."""

    def __init__(self) -> None:
        self.xy = array("d")
        self.ends = array("q", [0])

    def add(self, px: FloatArray) -> None:
        self.xy.frombytes(ring(px).tobytes())
        self.ends.append(len(self.xy) // 2)

    def __len__(self) -> int:
        return len(self.ends) - 1

    def packed(self) -> Polys:
        xy = np.frombuffer(self.xy, dtype=np.float64).reshape(-1, 2).copy()
        return Polys(xy, np.frombuffer(self.ends, dtype=np.int64).copy())

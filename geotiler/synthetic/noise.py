"""Per-pixel randomness that depends only on a pixel's global position: a lattice hash and
smooth value noise built on it. Blocks rendered separately therefore agree to the pixel."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from geotiler.synthetic.shapes import F32


def lattice_hash(xs: NDArray[np.int64], ys: NDArray[np.int64], key: int) -> NDArray[np.uint32]:
    """A well-mixed 32-bit hash of integer lattice coordinates (xs row, ys column)."""
    y = (ys.astype(np.uint32) * np.uint32(0x165667B1)) ^ np.uint32(key & 0xFFFFFFFF)
    y ^= y >> np.uint32(15)
    y *= np.uint32(0x2C1B3C6D)
    h = xs.astype(np.uint32) * np.uint32(0x27D4EB2F) + y
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x2C1B3C6D)
    h ^= h >> np.uint32(12)
    h *= np.uint32(0x297A2D39)
    h ^= h >> np.uint32(15)
    return h


def value_noise(r0: int, r1: int, c0: int, c1: int, cell: int, key: int) -> F32:
    """Smooth value noise in [-1, 1] with features ``cell`` px wide, a function of the
    global pixel position only."""
    ys, xs = np.arange(r0, r1), np.arange(c0, c1)
    iy0, ix0 = r0 // cell, c0 // cell
    lat = lattice_hash(np.arange(ix0, (c1 - 1) // cell + 2)[None, :],
                       np.arange(iy0, (r1 - 1) // cell + 2)[:, None], key)
    lat_f = (lat >> np.uint32(8)).astype(np.float32) * np.float32(2.0 / (1 << 24)) - 1
    tx = ((xs % cell) / cell).astype(np.float32)
    ty = ((ys % cell) / cell).astype(np.float32)
    tx = tx * tx * (3 - 2 * tx)
    ty = ty * ty * (3 - 2 * ty)
    jx = xs // cell - ix0
    jy = ys // cell - iy0
    rows = lat_f[:, jx] * (1 - tx) + lat_f[:, jx + 1] * tx
    out = rows[jy] * (1 - ty)[:, None] + rows[jy + 1] * ty[:, None]
    return out.astype(np.float32, copy=False)

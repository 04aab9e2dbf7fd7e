"""Trees: crowns drawn as shaded domes and their shadows thrown away from the sun.

Each tree is drawn in a patch placed by the tree alone (or tested pixel centre by pixel centre
in global coordinates), so blocks rendered separately agree to the pixel.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from geotiler.synthetic.noise import value_noise
from geotiler.synthetic.palette import TREE_TONES
from geotiler.synthetic.plan import Plan
from geotiler.synthetic.shapes import F32, ONE, SHIFT, FloatArray
from geotiler.synthetic.spec import SceneSpec


def _patch(x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
    """An integer pixel window around a float box; a function of the box alone."""
    ox, oy = math.floor(x0) - 1, math.floor(y0) - 1
    return ox, oy, math.ceil(x1) + 2 - ox, math.ceil(y1) + 2 - oy


def _fx(v: float) -> int:
    """A pixel coordinate (pixel i spans [i, i+1)) in cv2's fixed point (centres at ints)."""
    return round((v - 0.5) * ONE)


def _paste(dst: NDArray[Any], src: NDArray[Any], ox: int, oy: int, c0: int, r0: int,
           how: str) -> None:
    """Paste a patch whose top-left is at global (ox, oy) into a block at (c0, r0)."""
    h, w = dst.shape[:2]
    x0, y0 = max(ox, c0), max(oy, r0)
    x1, y1 = min(ox + src.shape[1], c0 + w), min(oy + src.shape[0], r0 + h)
    if x0 >= x1 or y0 >= y1:
        return
    d = dst[y0 - r0:y1 - r0, x0 - c0:x1 - c0]
    s = src[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    if how == "max":
        np.maximum(d, s, out=d)
    else:
        mask = s > 0
        d[mask] = s[mask]


def stamp_tree_shadows(spec: SceneSpec, trees: FloatArray, shadow: NDArray[np.uint8],
                       c0: int, r0: int) -> None:
    """Tree shadows: the crown's ellipse thrown away from the sun, joined by the trunk.

    Each is drawn in a patch placed by the tree alone, so blocks agree to the pixel.
    """
    sun = math.radians(spec.sun_azimuth)
    stretch = 1.0 / math.sin(math.radians(spec.sun_elevation))
    angle = math.degrees(math.atan2(math.cos(sun), -math.sin(sun)))
    for x, y, r, _, dx, dy in trees:
        big = r * stretch
        ox, oy, pw, ph = _patch(min(x, x + dx) - big, min(y, y + dy) - big,
                                max(x, x + dx) + big, max(y, y + dy) + big)
        patch = np.zeros((ph, pw), dtype=np.uint8)
        centre = (_fx(x + dx - ox), _fx(y + dy - oy))
        cv2.ellipse(patch, centre, (round(big * ONE), round(r * ONE)), angle, 0,
                    360, 255, -1, cv2.LINE_8, SHIFT)
        cv2.line(patch, (_fx(x - ox), _fx(y - oy)), centre, 255, 1, cv2.LINE_8, SHIFT)
        _paste(shadow, patch, ox, oy, c0, r0, "max")


def paint_trees(plan: Plan, canvas: F32, trees: FloatArray, c0: int, r0: int, key: int,
                fine_a: F32) -> None:
    """Crowns as domes, later trees in front, shaded like a hillshade of the canopy.

    Vectorised over all trees of the block: every (tree, pixel) pair in a square around
    each tree, a pixel-centre-in-disc test in global coordinates (so blocks agree to the
    pixel), and the front-most tree of each pixel by ``np.maximum.at``.
    """
    h, w = canvas.shape[:2]
    x, y, r = trees[:, 0], trees[:, 1], trees[:, 2]
    size = math.ceil(2 * r.max()) + 3
    steps = np.arange(size)
    gx = np.floor(x - r).astype(np.int64)[:, None, None] - 1 + steps[None, None, :]
    gy = np.floor(y - r).astype(np.int64)[:, None, None] - 1 + steps[None, :, None]
    ddx = gx + 0.5 - x[:, None, None]
    ddy = gy + 0.5 - y[:, None, None]
    inside = ((ddx * ddx + ddy * ddy < (r * r)[:, None, None])
              & (gx >= c0) & (gx < c0 + w) & (gy >= r0) & (gy < r0 + h))
    which = np.broadcast_to(np.arange(1, len(trees) + 1, dtype=np.int32)[:, None, None],
                            inside.shape)[inside]
    flat = ((gy - r0) * w + (gx - c0))[inside]
    front = np.zeros(h * w, dtype=np.int32)
    np.maximum.at(front, flat, which)
    front = front.reshape(h, w)
    yy, xx = np.nonzero(front)
    if not len(yy):
        return
    k = front[yy, xx] - 1
    dx2 = (xx + c0 + 0.5 - x[k]) ** 2 + (yy + r0 + 0.5 - y[k]) ** 2
    height = np.zeros((h, w), dtype=np.float32)
    height[yy, xx] = np.sqrt(np.maximum(r[k] ** 2 - dx2, 0.0)) + 0.5
    tone = np.zeros((h, w), dtype=np.uint8)
    tone[yy, xx] = trees[k, 3].astype(np.uint8) + 1
    leaf = value_noise(r0, r0 + h, c0, c0 + w, 3, key)
    height += leaf * 0.6 * (height > 0)
    hb = cv2.GaussianBlur(height, (5, 5), 1.0)
    mask = (tone > 0) & (hb > 0.5 + 0.5 * leaf)
    if not np.any(mask):
        return
    slope_x = np.zeros_like(hb)
    slope_y = np.zeros_like(hb)
    slope_x[:, 1:-1] = (hb[:, 2:] - hb[:, :-2]) * 0.5
    slope_y[1:-1, :] = (hb[2:, :] - hb[:-2, :]) * 0.5
    sun, el = math.radians(plan.spec.sun_azimuth), math.radians(plan.spec.sun_elevation)
    lx, ly, lz = math.sin(sun) * math.cos(el), -math.cos(sun) * math.cos(el), math.sin(el)
    yy, xx = np.nonzero(mask)
    gxs, gys = slope_x[yy, xx], slope_y[yy, xx]
    shade = (-gxs * lx - gys * ly + lz) / np.sqrt(gxs * gxs + gys * gys + 1.0) / lz
    shade = np.clip(shade, 0.35, 1.35) * (1.0 + 0.22 * leaf[yy, xx] + 0.1 * fine_a[yy, xx])
    canvas[yy, xx] = TREE_TONES[tone[yy, xx] - 1] * shade[:, None]

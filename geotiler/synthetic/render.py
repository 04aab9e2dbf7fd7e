"""Rendering one block of the raster from the plan.

Ground (grass, dry and bare patches), painted ground cover, soft bluish shadows of buildings,
cars, hedges and trees, roofs shaded by facet and sun, rooftop details, tree crowns, a slight
blur and sensor noise. Polygons are burnt with GDAL, which tests pixel centres against the
exact edges, so an object burns the same pixels in whichever block it is rendered.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import rasterio.features
from affine import Affine
from numpy.typing import NDArray

from geotiler.synthetic.noise import lattice_hash, value_noise
from geotiler.synthetic.palette import BARE, DRY, GRASS, LUSH, SHADOW_RGB, TEXTURE, Z_RAISED
from geotiler.synthetic.plan import Plan
from geotiler.synthetic.shapes import F32, Polys
from geotiler.synthetic.trees import paint_trees, stamp_tree_shadows


def burn(polys: Polys, which: NDArray[np.intp], values: NDArray[Any],
         shape: tuple[int, int], c0: int, r0: int, dtype: str) -> NDArray[Any]:
    """Burn polygons given in global pixel coordinates with GDAL, later ones on top.

    GDAL tests pixel centres against the exact edges, so a polygon burns the same pixels
    whichever block it is burnt in (cv2's incremental edge walk does not, near block edges).
    """
    shapes = (({"type": "Polygon", "coordinates": [polys.ring(i).tolist()]}, int(v))
              for i, v in zip(which, values, strict=True))
    out: NDArray[Any] = rasterio.features.rasterize(
        shapes, out_shape=shape, transform=Affine.translation(c0, r0), fill=0, dtype=dtype)
    return out


def render_block(plan: Plan, r0: int, r1: int, c0: int, c1: int
                  ) -> tuple[NDArray[np.uint8], NDArray[np.int32]]:
    """Render rows r0:r1, cols c0:c1 (halo included by the caller).

    Returns the (h, w, 3) uint8 image and the (h, w) roof id raster (building index + 1).
    """
    spec = plan.spec
    h, w = r1 - r0, c1 - c0
    seed = spec.seed * 0x9E3779B1

    def keyed(k: int) -> int:
        return (seed + k * 0x85EBCA77) & 0xFFFFFFFF

    fine = lattice_hash(np.arange(c0, c1)[None, :], np.arange(r0, r1)[:, None], keyed(1))
    fine_a = ((fine & np.uint32(0xFF)).astype(np.float32)
              + ((fine >> np.uint32(8)) & np.uint32(0xFF)).astype(np.float32)) / 255.0 - 1.0
    mid = value_noise(r0, r1, c0, c1, 5, keyed(2))

    # Ground: grass between green and dry, bare patches, clumpy texture.
    n1 = value_noise(r0, r1, c0, c1, 400, keyed(3))
    n2 = value_noise(r0, r1, c0, c1, 90, keyed(4))
    n3 = value_noise(r0, r1, c0, c1, 24, keyed(5))
    dry = np.clip(0.45 + 0.5 * n1 + 0.3 * n2, 0.0, 1.0)
    bare = np.clip((0.55 * n2 + 0.5 * n3 - 0.6) * 3.0, 0.0, 0.85)
    lush = np.clip(0.5 * n2 + 0.4 * n3, 0.0, 0.6)
    tex = 1.0 + 0.10 * mid + 0.07 * fine_a + 0.05 * n3
    canvas = np.empty((h, w, 3), dtype=np.float32)
    for c in range(3):  # one channel at a time: fewer, cache-friendlier passes
        grass, dry_, lush_, bare_ = (float(v[c]) for v in (GRASS, DRY, LUSH, BARE))
        band = grass + (dry_ - grass) * dry
        band += (lush_ - band) * lush
        band += (bare_ - band) * bare
        band *= tex
        canvas[..., c] = band
    noises = (mid, fine_a, n3)

    # Painted ground cover.
    sel_paint = plan.paint_index.select(c0, r0, c1, r1)
    raised = plan.paint_z[sel_paint] >= Z_RAISED
    _paint_polygons(plan, canvas, sel_paint[~raised], c0, r0, noises)

    # Shadows of buildings, cars and trees, soft-edged, bluish, on the ground only.
    sel = plan.caster_index.select(c0, r0, c1, r1)
    shadow = burn(plan.casters, sel, np.full(len(sel), 255), (h, w), c0, r0, "uint8")
    trees = plan.trees[plan.tree_index.select(c0, r0, c1, r1)]
    stamp_tree_shadows(plan.spec, trees, shadow, c0, r0)
    if np.any(shadow):
        soft = cv2.GaussianBlur(shadow, (5, 5), 1.0).astype(np.float32) / 255.0
        canvas *= 1.0 - soft[..., None] * (1.0 - SHADOW_RGB)
    _paint_polygons(plan, canvas, sel_paint[raised], c0, r0, noises)

    # Roofs: burnt with GDAL from the footprint polygons themselves.
    ids = np.zeros((h, w), dtype=np.int32)
    sel = plan.building_index.select(c0, r0, c1, r1)
    if len(sel):
        block_tf = spec.transform * Affine.translation(c0, r0)
        ids = rasterio.features.rasterize(
            ((plan.footprints[i], int(i) + 1) for i in sel), out_shape=(h, w),
            transform=block_tf, fill=0, dtype="int32")
        _paint_roofs(plan, canvas, ids, r0, c0, noises)
        _paint_details(plan, canvas, ids, c0, r0, c1, r1)

    # Trees on top of everything, shaded from their own canopy height.
    if len(trees):
        paint_trees(plan, canvas, trees, c0, r0, keyed(6), fine_a)

    canvas = cv2.GaussianBlur(canvas, (3, 3), 0.55).astype(np.float32, copy=False)
    for c, bit in enumerate((16, 21, 26)):  # sensor noise, +-1.5 DN
        noise = ((fine >> np.uint32(bit)) & np.uint32(0x3F)).astype(np.float32)
        noise *= np.float32(3.0 / 63.0)
        canvas[..., c] += noise - np.float32(1.0)  # +0.5 rounds when cast below
    np.clip(canvas, 1.0, 255.0, out=canvas)
    return canvas.astype(np.uint8), ids


def _paint_polygons(plan: Plan, canvas: F32, which: NDArray[np.intp], c0: int, r0: int,
                    noises: tuple[F32, F32, F32]) -> None:
    """Fill painted polygons in order, then give each its material's texture."""
    if not len(which):
        return
    index = burn(plan.paints, which, np.arange(1, len(which) + 1), canvas.shape[:2], c0,
                 r0, "int32")
    yy, xx = np.nonzero(index)
    k = which[index[yy, xx] - 1]
    colours = plan.paint_colour
    amp = TEXTURE[plan.paint_material[k]]
    mid, fine_a, n3 = (n[yy, xx] for n in noises)
    tex = 1.0 + amp[:, 0] * mid + amp[:, 1] * fine_a + amp[:, 2] * n3
    canvas[yy, xx] = colours[k] * tex[:, None]


def _paint_roofs(plan: Plan, canvas: F32, ids: NDArray[np.int32], r0: int, c0: int,
                 noises: tuple[F32, F32, F32]) -> None:
    yy, xx = np.nonzero(ids)
    gid = ids[yy, xx] - 1
    px = (xx + c0 + 0.5).astype(np.float64)
    py = (yy + r0 + 0.5).astype(np.float64)
    pt = plan.part_table
    part = plan.part_start[gid]
    for k in range(1, int(plan.part_count[gid].max(initial=1))):
        sub = np.flatnonzero(plan.part_count[gid] > k)
        cand = plan.part_start[gid[sub]] + k
        du = (px[sub] - pt[cand, 0]) * pt[cand, 2] + (py[sub] - pt[cand, 1]) * pt[cand, 3]
        dv = -(px[sub] - pt[cand, 0]) * pt[cand, 3] + (py[sub] - pt[cand, 1]) * pt[cand, 2]
        inside = (np.abs(du) <= pt[cand, 4]) & (np.abs(dv) <= pt[cand, 5])
        part[sub[inside]] = cand[inside]
    cx, cy, ux, uy, a, b = (pt[part, i] for i in range(6))
    du = (px - cx) * ux + (py - cy) * uy
    dv = -(px - cx) * uy + (py - cy) * ux
    shapes = plan.shapes[gid]
    sun = math.radians(plan.spec.sun_azimuth)
    sx, sy = math.sin(sun), -math.cos(sun)  # towards the sun, +y south
    # Facet normals (horizontal part): gable faces across the ridge; hip also at the ends.
    across = np.sign(dv) * (-uy * sx + ux * sy)
    ends = np.sign(du) * (ux * sx + uy * sy)
    lit = np.where((shapes == 1) & (a - np.abs(du) < b - np.abs(dv)), ends, across)
    shade = np.where(shapes == 2, 1.0, 1.0 + 0.24 * lit)
    ridge = (shapes == 0) & (np.abs(dv) < 0.75)
    shade = np.where(ridge, shade * 1.07, shade)
    edge_dist = np.minimum(a - np.abs(du), b - np.abs(dv))
    shade = np.where((shapes == 2) & (edge_dist < 1.5), shade * 0.9, shade)
    # Eaves: a darker rim wherever the neighbour is another roof or the ground.
    rim = np.zeros(ids.shape, dtype=bool)
    rim[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    rim[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    rim[1:, :] |= ids[1:, :] != ids[:-1, :]
    rim[:-1, :] |= ids[:-1, :] != ids[1:, :]
    shade = np.where(rim[yy, xx], shade * 0.82, shade)
    mid, fine_a, n3 = (n[yy, xx] for n in noises)
    grain = np.where(shapes == 2, 0.06, 0.035)
    tex = 1.0 + 0.04 * mid + grain * fine_a + 0.05 * n3
    canvas[yy, xx] = plan.colours[gid] * (shade * tex).astype(np.float32)[:, None]


def _paint_details(plan: Plan, canvas: F32, ids: NDArray[np.int32], c0: int, r0: int,
                   c1: int, r1: int) -> None:
    """Rooftop boxes and their small shadows, only on their own roof."""
    sel = plan.detail_index.select(c0, r0, c1, r1)
    if not len(sel):
        return
    for kind in (0, 1):
        which = sel[plan.detail_kind[sel] == kind]
        if not len(which):
            continue
        index = burn(plan.details, which, np.arange(1, len(which) + 1), ids.shape, c0, r0,
                     "int32")
        owner = np.concatenate([[0], plan.detail_owner[which]]).astype(np.int32)[index]
        yy, xx = np.nonzero((owner == ids) & (index > 0))
        k = which[index[yy, xx] - 1]
        if kind == 0:
            canvas[yy, xx] *= plan.detail_colour[k, :1]
        else:
            canvas[yy, xx] = plan.detail_colour[k]

"""The scene under construction: :class:`Sketch` places things in the road grid's frame.

A sketch holds the one seeded random generator and the frame (metres, rotated by the grid
angle, centred on the raster) and collects what the layout modules add: painted ground
polygons, buildings, trees, and shadow casters, all in pixel coordinates. The layout itself
(:mod:`~geotiler.synthetic.streets`, :mod:`~geotiler.synthetic.houses`,
:mod:`~geotiler.synthetic.lots`) is plain functions that take the sketch; every random draw
goes through ``sketch.rng`` in a fixed order, so a spec always gives the same scene.
"""

from __future__ import annotations

import math
from array import array

import cv2
import numpy as np

from geotiler.synthetic.palette import (
    CAR_COLOURS,
    M_CAR,
    M_HEDGE,
    TREE_TONES,
    Z_CAR,
    Z_GLASS,
    Z_HEDGE,
)
from geotiler.synthetic.shapes import Building, FloatArray, Placement, PolyStore, quantize
from geotiler.synthetic.spec import ROOF_COLOURS, ROOF_SHAPES, SceneSpec


class Sketch:
    """The scene under construction, in a grid frame (metres, rotated by the grid angle).

    Attributes:
        spec: what is generated. rng: the one random generator (seeded by ``spec.seed``).
        paints, paint_attrs: painted ground polygons (px) and their z, material and RGB.
        buildings: the planned buildings (px outlines, roof parts, details).
        trees: x, y, radius (px), tone, shadow dx, dy (px) per tree, flat.
        casters: polygons (px) that cast shadows: buildings, cars, hedges.
    """

    def __init__(self, spec: SceneSpec) -> None:
        self.spec = spec
        self.rng = np.random.default_rng(spec.seed)
        angle = spec.grid_angle
        if angle is None:
            angle = 0.0 if self.rng.random() < 0.25 else float(self.rng.uniform(-35, 35))
        self.theta = math.radians(angle)
        self.cos, self.sin = math.cos(self.theta), math.sin(self.theta)
        self.cx, self.cy = spec.width / 2.0, spec.height / 2.0
        az, el = math.radians(spec.sun_azimuth), math.radians(spec.sun_elevation)
        # Shadow offset in px per metre of height (away from the sun; +y is south).
        self.shadow = np.array((-math.sin(az), math.cos(az))) / math.tan(el) / spec.gsd
        self.paints = PolyStore()
        self.paint_attrs = array("f")  # z, material, r, g, b per paint
        self.buildings: list[Building] = []
        self.trees = array("d")  # x, y, r, tone, shadow dx, dy per tree
        self.casters = PolyStore()
        p = min(1.0, spec.building_density)
        self.p_build = 0.88 * p
        self.plot_scale = 1.0 / max(1.0, spec.building_density)

    def px(self, where: Placement, pts: FloatArray) -> FloatArray:
        """Local metres at a placement -> pixel coordinates."""
        ox, oy, ca, sa = self._frame(where)
        u, v = pts[:, 0], pts[:, 1]
        out = np.empty_like(pts, dtype=np.float64)
        # Element-wise on purpose: a matrix product may round shared vertices of
        # touching houses differently depending on their row.
        out[:, 0] = ox + (ca * u - sa * v)
        out[:, 1] = oy + (sa * u + ca * v)
        return out

    def px1(self, where: Placement, u: float, v: float) -> tuple[float, float]:
        """One local point -> pixel coordinates (no numpy: this is called a lot)."""
        ox, oy, ca, sa = self._frame(where)
        return ox + ca * u - sa * v, oy + sa * u + ca * v

    def _frame(self, where: Placement) -> tuple[float, float, float, float]:
        x, y, a = where
        g = self.spec.gsd
        ox = self.cx + (self.cos * x - self.sin * y) / g
        oy = self.cy + (self.sin * x + self.cos * y) / g
        return ox, oy, math.cos(self.theta + a) / g, math.sin(self.theta + a) / g

    def axis(self, where: Placement, along_u: bool) -> tuple[float, float]:
        a = self.theta + where[2] + (0.0 if along_u else math.pi / 2)
        return math.cos(a), math.sin(a)

    @staticmethod
    def rect(cu: float, cv: float, hu: float, hv: float) -> FloatArray:
        return np.array([(cu - hu, cv - hv), (cu + hu, cv - hv), (cu + hu, cv + hv),
                         (cu - hu, cv + hv)])

    def paint(self, z: int, material: int, colour: tuple[float, float, float],
              where: Placement, pts: FloatArray) -> None:
        self.paints.add(self.px(where, pts))
        self.paint_attrs.extend((z, material, *colour))

    def jitter(self, colour: tuple[float, ...], amount: float) -> tuple[float, float, float]:
        """The colour, a little brighter or darker and a little off in hue."""
        u = self.rng.random(4).tolist()
        f = 1.0 + amount * (2 * u[0] - 1)
        c = [min(250.0, v * f * (1.0 + 0.06 * (x - 0.5))) for v, x in zip(colour, u[1:],
                                                                          strict=False)]
        return (c[0], c[1], c[2])

    def add_tree(self, where: Placement, u: float, v: float, radius: float) -> None:
        spec, rng = self.spec, self.rng
        p = self.px1(where, u, v)
        r = radius / spec.gsd
        height = 2.0 * radius + rng.uniform(1.0, 4.0)
        tone = float(rng.integers(0, len(TREE_TONES)))
        dx, dy = self.shadow * (height - radius)
        self.trees.extend((p[0], p[1], r, tone, float(dx), float(dy)))
        if radius > 2.5 and rng.random() < 0.5:  # a lobed, irregular crown
            for _ in range(int(rng.integers(1, 4))):
                ang = rng.uniform(0, 2 * math.pi)
                dist = rng.uniform(0.4, 0.7) * r
                lx, ly = p[0] + dist * math.cos(ang), p[1] + dist * math.sin(ang)
                lr = r * rng.uniform(0.5, 0.75)
                self.trees.extend((lx, ly, lr, tone, float(dx), float(dy)))

    def add_building(self, where: Placement, outline: FloatArray,
                     parts: list[tuple[float, float, float, float, bool]], *, kind: str,
                     roof: str, shape: str, height: float,
                     holes: list[FloatArray] | None = None,
                     colour: tuple[float, float, float] | None = None) -> Building:
        """Add a building given in local metres; parts are (cu, cv, hu, hv, ridge_along_u)."""
        g = self.spec.gsd
        px_parts: list[tuple[float, float, float, float, float, float]] = []
        for cu, cv, hu, hv, along_u in parts:
            c = self.px1(where, cu, cv)
            ux, uy = self.axis(where, along_u)
            a, b = (hu, hv) if along_u else (hv, hu)
            px_parts.append((float(c[0]), float(c[1]), ux, uy, a / g, b / g))
            corners = self.px(where, self.rect(cu, cv, hu, hv))
            both = np.concatenate([corners, corners + self.shadow * height]).astype(np.float32)
            self.casters.add(cv2.convexHull(both)[:, 0, :].astype(np.float64))
        if colour is None:
            colour = self.jitter(ROOF_COLOURS[roof], 0.07)
        building = Building(
            outline=quantize(self.px(where, outline)),
            holes=[quantize(self.px(where, h)) for h in holes or []],
            parts=px_parts, shape=ROOF_SHAPES.index(shape), colour=colour,
            kind=kind, roof=roof, height=height,
        )
        self.buildings.append(building)
        return building

    def add_detail(self, b: Building, where: Placement, cu: float, cv: float, hu: float,
                   hv: float, colour: tuple[float, float, float], tall: float) -> None:
        """A rooftop box (HVAC, chimney, panel) with its own small shadow."""
        if tall > 0:
            shadow = self.px(where, self.rect(cu, cv, hu, hv)) + self.shadow * tall
            b.details.append((0, shadow, (0.62, 0.0, 0.0)))
        b.details.append((1, self.px(where, self.rect(cu, cv, hu, hv)), colour))

    def pick(self, weights: dict[str, float]) -> str:
        """One of the keys, drawn with the given relative weights."""
        x = self.rng.random() * sum(weights.values())
        for name, w in weights.items():
            x -= w
            if x < 0:
                return name
        return name

    def add_car(self, where: Placement, u: float, v: float, angle: float) -> None:
        rng = self.rng
        w: Placement = (where[0] + math.cos(where[2]) * u - math.sin(where[2]) * v,
                        where[1] + math.sin(where[2]) * u + math.cos(where[2]) * v,
                        where[2] + angle + float(rng.normal(0, 0.03)))
        colour = CAR_COLOURS[int(rng.integers(0, len(CAR_COLOURS)))]
        body = self.rect(0, 0, 2.25, 0.9)
        self.paint(Z_CAR, M_CAR, self.jitter(colour, 0.06), w, body)
        glass = tuple(0.35 * c + 12 for c in colour)
        self.paint(Z_GLASS, M_CAR, (glass[0], glass[1], glass[2]), w,
                   self.rect(0.2, 0, 0.9, 0.7))
        corners = self.px(w, body)
        both = np.concatenate([corners, corners + self.shadow * 1.5]).astype(np.float32)
        self.casters.add(cv2.convexHull(both)[:, 0, :].astype(np.float64))

    @staticmethod
    def sub(where: Placement, u: float, v: float, angle: float = 0.0) -> Placement:
        x, y, a = where
        return (x + math.cos(a) * u - math.sin(a) * v, y + math.sin(a) * u + math.cos(a) * v,
                a + angle)

    def fits(self, pts: FloatArray, hu: float, v0: float, v1: float) -> bool:
        return bool(np.all(np.abs(pts[:, 0]) <= hu) and np.all(pts[:, 1] >= v0)
                    and np.all(pts[:, 1] <= v1))

    @staticmethod
    def local(pts: FloatArray, u: float, v: float, angle: float) -> FloatArray:
        c, s = math.cos(angle), math.sin(angle)
        return np.stack([u + c * pts[:, 0] - s * pts[:, 1], v + s * pts[:, 0] + c * pts[:, 1]],
                        axis=1)

    def hedge(self, where: Placement, u0: float, v0: float, u1: float, v1: float) -> None:
        """A clipped hedge about 0.9 m wide from (u0, v0) to (u1, v1), with its shadow."""
        length = math.hypot(u1 - u0, v1 - v0)
        if length < 1.0:
            return
        mid = self.sub(where, (u0 + u1) / 2, (v0 + v1) / 2, math.atan2(v1 - v0, u1 - u0))
        pts = self.rect(0, 0, length / 2, 0.45)
        tone = float(self.rng.uniform(0.8, 1.15))
        self.paint(Z_HEDGE, M_HEDGE, (52 * tone, 76 * tone, 40 * tone), mid, pts)
        self.casters.add(self.px(mid, pts) + self.shadow * 1.6)

    def place(self, taken: list[tuple[float, float, float, float]], length: float,
              depth: float, hu: float, hv: float, gap: float) -> tuple[float, float] | None:
        """Random centre for a box of half sizes (hu, hv) clear of ``taken`` boxes."""
        rng = self.rng
        if hu * 2 + 6 > length or hv * 2 + 6 > depth:
            return None
        for _ in range(12):
            u = float(rng.uniform(-length / 2 + hu + 3, length / 2 - hu - 3))
            v = float(rng.uniform(-depth / 2 + hv + 3, depth / 2 - hv - 3))
            box = (u - hu - gap, v - hv - gap, u + hu + gap, v + hv + gap)
            if all(box[2] <= t[0] or box[0] >= t[2] or box[3] <= t[1] or box[1] >= t[3]
                   for t in taken):
                taken.append((u - hu, v - hv, u + hu, v + hv))
                return u, v
        return None

    def scatter_trees(self, where: Placement, taken: list[tuple[float, float, float, float]],
                      length: float, depth: float, n: int) -> None:
        rng = self.rng
        for _ in range(int(n * self.spec.tree_density)):
            u = float(rng.uniform(-length / 2, length / 2))
            v = float(rng.uniform(-depth / 2, depth / 2))
            if not any(t[0] < u < t[2] and t[1] < v < t[3] for t in taken):
                self.add_tree(where, u, v, float(rng.uniform(2, 5)))

"""Blocks of large buildings and open ground: flats, shops, industry (with parking lots and
yards), parks (paths, courts, ponds, tree clumps) and fields.

Each function takes the :class:`~geotiler.synthetic.sketch.Sketch` and a block's centre
placement, length and depth in metres.
"""

from __future__ import annotations

import math

import numpy as np

from geotiler.synthetic.houses import roof_details
from geotiler.synthetic.palette import (
    M_ASPHALT,
    M_CLAY,
    M_CONCRETE,
    M_GRAVEL,
    M_MARK,
    M_SOIL,
    M_WATER,
    Z_DRIVE,
    Z_LOT,
    Z_MARK,
    Z_PAD,
    Z_SOIL,
    Z_WATER,
)
from geotiler.synthetic.shapes import Placement
from geotiler.synthetic.sketch import Sketch


def big_building(sk: Sketch, where: Placement, taken: list[tuple[float, float, float, float]],
                 length: float, depth: float, size: tuple[float, float, float, float],
                 kind: str, roofs: dict[str, float], flat: float,
                 heights: tuple[float, float]) -> None:
    """One large building (slab, L, U or courtyard block) at a free spot of the block, with
    rooftop details; ``size`` is (min, max length, min, max depth) in metres."""
    rng = sk.rng
    if rng.random() >= min(1.0, sk.spec.building_density):
        return
    a = float(rng.uniform(size[0], size[1])) / 2
    b = float(rng.uniform(size[2], size[3])) / 2
    turn = rng.random() < 0.3
    angle = math.pi / 2 if turn else 0.0
    if rng.random() < 0.12:
        angle = float(rng.uniform(-0.5, 0.5))
    # Bounding box in the block frame of the rotated footprint.
    c, s = abs(math.cos(angle)), abs(math.sin(angle))
    shape_r = rng.random()
    extra = 0.0
    if kind == "block" and shape_r < 0.35:
        extra = float(rng.uniform(6, 14))
    hb = b + extra / 2
    bu, bv = c * a + s * hb, s * a + c * hb
    spot = sk.place(taken, length, depth, bu, bv, 8.0)
    if spot is None:
        return
    roof = sk.pick(roofs)
    shape = "flat" if rng.random() < flat else ("hip" if rng.random() < 0.6 else "gable")
    height = float(rng.uniform(*heights))
    centre = sk.sub(where, spot[0], spot[1], angle)
    t = min(b * 2, 14.0)
    if extra and shape_r < 0.15 and a > 18 and b > 14:  # courtyard block
        hb = b + extra / 2
        t = min(t, hb - 4.0, a - 4.0)
        outline = sk.rect(0, 0, a, hb)
        hole = sk.rect(0, 0, a - t, hb - t)
        parts = [(0.0, -hb + t / 2, a, t / 2, True), (0.0, hb - t / 2, a, t / 2, True),
                 (-a + t / 2, 0.0, t / 2, hb - t, False), (a - t / 2, 0.0, t / 2, hb - t,
                                                           False)]
        bld = sk.add_building(centre, outline, parts, kind=kind, roof=roof, shape=shape,
                              height=height, holes=[hole])
        for _ in range(int(rng.integers(0, 3) * sk.spec.tree_density)):
            sk.add_tree(centre, float(rng.uniform(-a + t + 2, a - t - 2)),
                        float(rng.uniform(-hb + t + 2, hb - t - 2)),
                        float(rng.uniform(2, 4)))
    elif extra:  # L or U: wings towards +v
        ww = min(float(rng.uniform(10, 14)), a * 0.6)
        top, bot = -hb, -hb + 2 * b
        if shape_r < 0.25:
            outline = np.array([(-a, top), (a, top), (a, hb), (a - ww, hb), (a - ww, bot),
                                (-a, bot)])
            parts = [(0.0, top + b, a, b, True), (a - ww / 2, bot + extra / 2, ww / 2,
                                                  extra / 2, False)]
        else:
            outline = np.array([(-a, top), (a, top), (a, hb), (a - ww, hb), (a - ww, bot),
                                (-a + ww, bot), (-a + ww, hb), (-a, hb)])
            parts = [(0.0, top + b, a, b, True),
                     (a - ww / 2, bot + extra / 2, ww / 2, extra / 2, False),
                     (-a + ww / 2, bot + extra / 2, ww / 2, extra / 2, False)]
        bld = sk.add_building(centre, outline, parts, kind=kind, roof=roof, shape=shape,
                              height=height)
    else:
        parts = [(0.0, 0.0, a, b, a >= b)]
        bld = sk.add_building(centre, sk.rect(0, 0, a, b), parts, kind=kind, roof=roof,
                              shape=shape, height=height)
    roof_details(sk, bld, centre, parts[0])


def _parking(sk: Sketch, where: Placement, taken: list[tuple[float, float, float, float]],
             length: float, depth: float, rows: int) -> None:
    rng = sk.rng
    stalls = int(rng.integers(4, 16))
    hu, hv = stalls * 1.25 + 1.0, rows * 5.0 / 2 + (3.0 if rows > 1 else 0.0) + 1.0
    spot = sk.place(taken, length, depth, hu, hv, 2.0)
    if spot is None:
        return
    lot = sk.sub(where, spot[0], spot[1])
    tone = float(rng.uniform(80, 105))
    sk.paint(Z_LOT, M_ASPHALT, (tone, tone, tone * 1.02), lot, sk.rect(0, 0, hu, hv))
    line = (0.5 * tone + 100, 0.5 * tone + 100, 0.5 * tone + 98)
    for r in range(rows):
        vc = -hv + 1.0 + 2.5 + r * (5.0 + 6.0 if rows > 1 else 0.0)
        vc = min(vc, hv - 3.5)
        for i in range(stalls + 1):
            uu = -hu + 1.0 + i * 2.5
            sk.paint(Z_MARK, M_MARK, line, lot, sk.rect(uu, vc, 0.12, 2.3))
            if i < stalls and rng.random() < 0.6:
                sk.add_car(lot, uu + 1.25, vc, math.pi / 2 + (math.pi if rng.random() < 0.5
                                                              else 0.0))


def use_flats(sk: Sketch, where: Placement, length: float, depth: float) -> None:
    """Blocks of flats with parking lots and scattered trees."""
    rng = sk.rng
    taken: list[tuple[float, float, float, float]] = []
    for _ in range(int(rng.integers(2, 7))):
        big_building(sk, where, taken, length, depth, (22, 60, 11, 16), "block",
                     {"light_grey": 0.3, "dark_grey": 0.25, "white": 0.15,
                      "terracotta": 0.2, "brown": 0.1}, 0.6, (12, 24))
    for _ in range(int(rng.integers(1, 4))):
        _parking(sk, where, taken, length, depth, int(rng.integers(1, 3)))
    sk.scatter_trees(where, taken, length, depth, int(length * depth / 180))


def use_shops(sk: Sketch, where: Placement, length: float, depth: float) -> None:
    """One or two large flat-roofed shops with big parking lots."""
    rng = sk.rng
    taken: list[tuple[float, float, float, float]] = []
    for _ in range(int(rng.integers(1, 3))):
        big_building(sk, where, taken, length, depth, (20, 45, 16, 40), "block",
                     {"light_grey": 0.5, "white": 0.3, "dark_grey": 0.2}, 0.9, (6, 10))
    for _ in range(int(rng.integers(2, 5))):
        _parking(sk, where, taken, length, depth, 2)
    sk.scatter_trees(where, taken, length, depth, int(length * depth / 500))


def use_industry(sk: Sketch, where: Placement, length: float, depth: float) -> None:
    """Industrial halls on a concrete pad, with parking, bare yards and a few trees."""
    rng = sk.rng
    taken: list[tuple[float, float, float, float]] = []
    sk.paint(Z_PAD, M_CONCRETE, sk.jitter((168, 165, 158), 0.06), where,
             sk.rect(float(rng.uniform(-5, 5)), 0, length / 2 - rng.uniform(3, 20),
                     depth / 2 - rng.uniform(3, 12)))
    for _ in range(int(rng.integers(1, 5))):
        big_building(sk, where, taken, length, depth, (30, 90, 20, 50), "industrial",
                     {"light_grey": 0.45, "white": 0.3, "dark_grey": 0.25}, 0.85,
                     (7, 12))
    for _ in range(int(rng.integers(0, 3))):
        _parking(sk, where, taken, length, depth, int(rng.integers(1, 3)))
    for _ in range(int(rng.integers(0, 3))):
        hu, hv = float(rng.uniform(5, 15)), float(rng.uniform(5, 12))
        spot = sk.place(taken, length, depth, hu, hv, 1.0)
        if spot:
            sk.paint(Z_SOIL, M_SOIL, sk.jitter((140, 120, 92), 0.1), where,
                     sk.rect(spot[0], spot[1], hu, hv))
    sk.scatter_trees(where, taken, length, depth, int(length * depth / 900))


def use_park(sk: Sketch, where: Placement, length: float, depth: float) -> None:
    """A park: gravel paths, a sports court or a pond, maybe a pavilion, tree clumps."""
    rng = sk.rng
    taken: list[tuple[float, float, float, float]] = []
    gravel = sk.jitter((176, 166, 146), 0.05)
    ang = math.atan2(depth, length)
    diag = math.hypot(length, depth) / 2
    sk.paint(Z_DRIVE, M_GRAVEL, gravel, sk.sub(where, 0, 0, ang if rng.random() < 0.5
                                               else -ang),
             sk.rect(0, 0, diag, 1.2))
    if rng.random() < 0.5:
        sk.paint(Z_DRIVE, M_GRAVEL, gravel, where, sk.rect(0, 0, length / 2, 1.2))
    r = rng.random()
    if r < 0.35:  # sports court: clay or green with white lines
        hu, hv = 18.0, 9.0
        spot = sk.place(taken, length, depth, hu, hv, 3.0)
        if spot:
            clay = rng.random() < 0.6
            colour = (164.0, 92.0, 66.0) if clay else (72.0, 122.0, 84.0)
            court = sk.sub(where, spot[0], spot[1])
            sk.paint(Z_LOT, M_CLAY, sk.jitter(colour, 0.05), court,
                     sk.rect(0, 0, hu, hv))
            white = (215.0, 215.0, 210.0)
            for uu in (-hu + 1, 0.0, hu - 1):
                sk.paint(Z_MARK, M_MARK, white, court, sk.rect(uu, 0, 0.2, hv - 1))
            for vv in (-hv + 1, hv - 1):
                sk.paint(Z_MARK, M_MARK, white, court, sk.rect(0, vv, hu - 1, 0.2))
    elif r < 0.6:  # pond
        hu, hv = float(rng.uniform(8, 20)), float(rng.uniform(6, 12))
        spot = sk.place(taken, length, depth, hu, hv, 3.0)
        if spot:
            t = np.linspace(0, 2 * math.pi, 20, endpoint=False)
            k = 1.0 + 0.12 * np.sin(3 * t + rng.uniform(0, 6))
            pond = np.stack([hu * k * np.cos(t), hv * k * np.sin(t)], axis=1)
            sk.paint(Z_WATER, M_WATER, sk.jitter((58, 78, 74), 0.08),
                     sk.sub(where, spot[0], spot[1]), pond)
    if rng.random() < 0.2:
        big_building(sk, where, taken, length, depth, (8, 14, 6, 10), "house",
                     {"terracotta": 0.4, "dark_grey": 0.3, "brown": 0.3}, 0.1, (4, 6))
    for _ in range(int(rng.integers(3, 9) * sk.spec.tree_density)):
        cu = float(rng.uniform(-length / 2, length / 2))
        cv = float(rng.uniform(-depth / 2, depth / 2))
        for _ in range(int(rng.integers(4, 18))):
            u = float(np.clip(cu + rng.normal(0, 9), -length / 2, length / 2))
            v = float(np.clip(cv + rng.normal(0, 7), -depth / 2, depth / 2))
            if not any(t[0] < u < t[2] and t[1] < v < t[3] for t in taken):
                sk.add_tree(where, u, v, float(rng.uniform(2.5, 6)))
    sk.scatter_trees(where, taken, length, depth, int(length * depth / 400))


def use_field(sk: Sketch, where: Placement, length: float, depth: float) -> None:
    """A ploughed or dry field with a line of trees along one edge."""
    rng = sk.rng
    colour = (132, 112, 84) if rng.random() < 0.5 else (150, 146, 98)
    sk.paint(Z_SOIL, M_SOIL, sk.jitter(colour, 0.08), where,
             sk.rect(0, 0, length / 2 - 2, depth / 2 - 2))
    u = -length / 2
    while u < length / 2:
        if rng.random() < sk.spec.tree_density:
            sk.add_tree(where, u, -depth / 2 + 1, float(rng.uniform(1.5, 3.5)))
        u += float(rng.uniform(3, 9))

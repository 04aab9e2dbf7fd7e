"""Residential blocks: detached houses on plots (with L-shapes, semis, sheds, pools,
driveways, hedges and garden trees) and lines of terraced houses with back gardens, plus the
rooftop details (HVAC boxes, solar panels, chimneys) shared with the larger buildings.

Each function takes the :class:`~geotiler.synthetic.sketch.Sketch` and a placement in its
grid frame; lengths are in metres.
"""

from __future__ import annotations

import math

import numpy as np

from geotiler.synthetic.palette import (
    M_CONCRETE,
    M_PAVING,
    M_SOIL,
    M_WATER,
    Z_DRIVE,
    Z_LOT,
    Z_SOIL,
    Z_WATER,
)
from geotiler.synthetic.shapes import Building, Placement
from geotiler.synthetic.sketch import Sketch
from geotiler.synthetic.spec import ROOF_COLOURS


def _sides(sk: Sketch, where: Placement, length: float, depth: float,
           min_depth: float) -> list[tuple[Placement, float]]:
    """Plot rows along the block's long sides: (front-centre placement, depth)."""
    x, y, a = where
    if depth >= 2 * min_depth:
        out = []
        for sign in (-1.0, 1.0):
            fx = x - math.sin(a) * sign * depth / 2
            fy = y + math.cos(a) * sign * depth / 2
            ang = a if sign < 0 else a + math.pi
            out.append(((fx, fy, ang), depth / 2))
        return out
    fx, fy = x + math.sin(a) * depth / 2, y - math.cos(a) * depth / 2
    return [((fx, fy, a), depth)]


def use_houses(sk: Sketch, where: Placement, length: float, depth: float) -> None:
    """Detached and semi-detached houses on plots along both long sides of the block."""
    rng = sk.rng
    for front, pd in _sides(sk, where, length, depth, 22.0):
        u = -length / 2
        while u < length / 2 - 9:
            pw = float(rng.uniform(18, 30)) * sk.plot_scale
            pw = max(pw, 9.5)
            if length / 2 - (u + pw) < 9:
                pw = length / 2 - u
            _house_plot(sk, sk.sub(front, u + pw / 2, 0.0), pw, pd)
            u += pw


def _house_plot(sk: Sketch, plot: Placement, pw: float, pd: float) -> None:
    """One residential plot: front edge centred at ``plot``, u along the street,
    v from 0 (street) to ``pd`` (back)."""
    rng = sk.rng
    td = sk.spec.tree_density
    for _ in range(int(rng.poisson(1.6 * td))):
        sk.add_tree(plot, float(rng.uniform(-pw / 2, pw / 2)), float(rng.uniform(1, pd)),
                    float(rng.uniform(1.5, 4.5)))
    if rng.random() < 0.25:
        sk.hedge(plot, pw / 2, 1.0, pw / 2, pd - 0.6)
    if rng.random() < 0.15:
        sk.hedge(plot, -pw / 2, pd - 0.6, pw / 2, pd - 0.6)
    if rng.random() > sk.p_build or pw < 9:
        if rng.random() < 0.3:
            sk.paint(Z_SOIL, M_SOIL, sk.jitter((128, 110, 84), 0.1), plot,
                     sk.rect(0, pd / 2, pw / 2 - 1, pd / 2 - 1))
        return
    r = rng.random()
    w = min(pw - 3.0, float(rng.uniform(8, 14)))
    d = min(pd * 0.55, float(rng.uniform(8, 12.5)))
    semi = r < 0.08 and pw >= 15
    if semi:
        w = min(pw - 3.0, 2 * float(rng.uniform(6.5, 9)))
    if w < 6 or d < 6:
        return
    roof = sk.pick({"terracotta": 0.36, "dark_grey": 0.26, "brown": 0.15,
                    "light_grey": 0.15, "white": 0.08})
    shape = sk.pick({"gable": 0.55, "hip": 0.35, "flat": 0.10})
    hu, hv = w / 2, d / 2
    wing = 0.0
    if not semi and 0.08 <= r < 0.34:
        ww = w * float(rng.uniform(0.35, 0.55))
        wing = float(rng.uniform(3.0, 6.0))
        if rng.random() < 0.5:
            outline = np.array([(-hu, -hv), (hu, -hv), (hu, hv + wing), (hu - ww, hv + wing),
                                (hu - ww, hv), (-hu, hv)])
            wcu = hu - ww / 2
        else:
            outline = np.array([(-hu, -hv), (hu, -hv), (hu, hv), (-hu + ww, hv),
                                (-hu + ww, hv + wing), (-hu, hv + wing)])
            wcu = -hu + ww / 2
        parts = [(0.0, 0.0, hu, hv, hu >= hv), (wcu, hv + wing / 2, ww / 2, wing / 2, False)]
    else:
        outline = sk.rect(0, 0, hu, hv)
        parts = [(0.0, 0.0, hu, hv, hu >= hv)]
    setback = float(rng.uniform(3, 7))
    if setback + d + wing > pd - 2:
        setback = pd - 2 - d - wing
    if setback < 1.0:
        return
    angle = float(rng.normal(0, 0.025))
    if not semi and rng.random() < 0.14:
        angle = float(rng.uniform(-0.6, 0.6))
    slack = max(0.0, pw / 2 - 1.5 - hu)
    cu = float(rng.uniform(-slack, slack))
    cv = setback + hv
    local = sk.local(outline, cu, cv, angle)
    if not sk.fits(local, pw / 2 - 1.0, 1.0, pd - 1.0):
        angle = float(rng.normal(0, 0.02))
        local = sk.local(outline, cu, cv, angle)
        if not sk.fits(local, pw / 2 - 1.0, 1.0, pd - 1.0):
            return
    house = sk.sub(plot, cu, cv, angle)
    height = float(rng.uniform(5, 9))
    kind = "L" if len(outline) > 4 else "house"
    if semi:
        colour = sk.jitter(ROOF_COLOURS[roof], 0.06)
        for sgn in (-1.0, 1.0):
            unit = np.array([(0.0, -hv), (sgn * hu, -hv), (sgn * hu, hv), (0.0, hv)])
            if sgn > 0:
                unit = unit[::-1]
            sk.add_building(house, unit, [(sgn * hu / 2, 0.0, hu / 2, hv, True)],
                            kind="row", roof=roof, shape="gable" if shape == "flat"
                            else shape, height=height,
                            colour=sk.jitter(colour, 0.04))
    else:
        b = sk.add_building(house, outline, parts, kind=kind, roof=roof, shape=shape,
                            height=height)
        roof_details(sk, b, house, parts[0])
    box = (local[:, 0].min(), local[:, 1].min(), local[:, 0].max(), local[:, 1].max())
    if rng.random() < 0.6:  # driveway from the street to the house
        side = 1.0 if cu + hu + 4.5 < pw / 2 else -1.0
        du = cu + side * (hu + 1.9)
        if abs(du) + 1.5 < pw / 2:
            colour = sk.jitter((170, 166, 158) if rng.random() < 0.6 else (96, 96, 98),
                               0.06)
            sk.paint(Z_DRIVE, M_CONCRETE, colour, plot,
                     sk.rect(du, (setback + d * 0.5) / 2, 1.5, (setback + d * 0.5) / 2))
    if rng.random() < 0.2 and box[3] + 3.6 < pd - 1:  # patio behind the house
        sk.paint(Z_LOT, M_PAVING, sk.jitter((176, 164, 150), 0.08), plot,
                 sk.rect(cu, box[3] + 1.9, min(hu * 0.6, pw / 2 - 1.5), 1.6))
        box = (box[0], box[1], box[2], box[3] + 3.6)
    if rng.random() < 0.25:  # shed or garage in the back garden
        for _ in range(4):
            sw, sd = float(rng.uniform(2.5, 6.0)), float(rng.uniform(2.5, 5.0))
            ulo, vlo, vhi = -pw / 2 + 1 + sw / 2, box[3] + 1.2 + sd / 2, pd - 0.8 - sd / 2
            if ulo >= 0 or vlo >= vhi:
                continue
            su, sv = float(rng.uniform(ulo, -ulo)), float(rng.uniform(vlo, vhi))
            shed = sk.local(sk.rect(0, 0, sw / 2, sd / 2), su, sv, angle)
            if sk.fits(shed, pw / 2 - 0.5, box[3] + 1.0, pd - 0.5):
                sroof = sk.pick({"dark_grey": 0.4, "brown": 0.2, "terracotta": 0.2,
                                 "light_grey": 0.2})
                sk.add_building(sk.sub(plot, su, sv, angle), sk.rect(0, 0, sw / 2, sd / 2),
                                [(0, 0, sw / 2, sd / 2, sw >= sd)], kind="shed",
                                roof=sroof, shape="flat" if rng.random() < 0.5
                                else "gable", height=float(rng.uniform(2.5, 3.5)))
                box = (box[0], box[1], box[2], max(box[3], sv + sd / 2))
                break
    elif rng.random() < 0.25:  # pool
        pw2, pd2 = float(rng.uniform(1.8, 2.6)), float(rng.uniform(3.5, 5.0))
        pv = box[3] + 2.0 + pd2
        if pv + pd2 + 1.0 < pd and pw2 * 2 + 3 < pw:
            pu = float(rng.uniform(-pw / 2 + 1.5 + pw2, pw / 2 - 1.5 - pw2))
            sk.paint(Z_LOT, M_CONCRETE, sk.jitter((196, 192, 184), 0.04), plot,
                     sk.rect(pu, pv, pw2 + 0.6, pd2 + 0.6))
            sk.paint(Z_WATER, M_WATER, sk.jitter((72, 168, 196), 0.08), plot,
                     sk.rect(pu, pv, pw2, pd2))


def roof_details(sk: Sketch, b: Building, where: Placement,
                 part: tuple[float, float, float, float, bool]) -> None:
    rng = sk.rng
    cu, cv, hu, hv, along_u = part
    if b.shape == 2:  # flat: HVAC boxes
        for _ in range(int(rng.integers(0, 4 if hu * hv < 100 else 9))):
            s1, s2 = float(rng.uniform(0.6, 2.0)), float(rng.uniform(0.6, 1.6))
            if hu - s1 - 1.0 <= 0 or hv - s2 - 1.0 <= 0:
                continue
            u = cu + float(rng.uniform(-(hu - s1 - 1.0), hu - s1 - 1.0))
            v = cv + float(rng.uniform(-(hv - s2 - 1.0), hv - s2 - 1.0))
            grey = float(rng.uniform(150, 215))
            sk.add_detail(b, where, u, v, s1, s2, (grey, grey, grey * 0.98),
                          float(rng.uniform(0.8, 2.0)))
    elif rng.random() < 0.14 and min(hu, hv) > 3.0:  # solar panels on one roof face
        long_h, short_h = (hu, hv) if along_u else (hv, hu)
        off = -short_h / 2 if rng.random() < 0.5 else short_h / 2
        pl, ps = long_h * float(rng.uniform(0.4, 0.7)), short_h * 0.32
        colour = sk.jitter((46, 54, 78), 0.1)
        if along_u:
            sk.add_detail(b, where, cu, cv + off, pl, ps, colour, 0.0)
        else:
            sk.add_detail(b, where, cu + off, cv, ps, pl, colour, 0.0)
    elif rng.random() < 0.3:  # chimney
        u = cu + float(rng.uniform(-hu * 0.6, hu * 0.6))
        v = cv + float(rng.uniform(-hv * 0.6, hv * 0.6))
        sk.add_detail(b, where, u, v, 0.45, 0.45, (70.0, 58.0, 52.0), 1.2)


def use_rows(sk: Sketch, where: Placement, length: float, depth: float) -> None:
    """Parallel lines of terraced houses, each with back gardens and a footpath."""
    rng = sk.rng
    lines: list[tuple[float, float, float]] = []  # (front v, house depth, garden depth)
    v = -depth / 2 + float(rng.uniform(3.0, 5.0))
    while v + 9 + 4 <= depth / 2:
        d = min(float(rng.uniform(9, 12)), depth / 2 - v - 4)
        garden = float(rng.uniform(9, 15))
        if v + d + garden + 4.5 + 9 + 4 > depth / 2:  # no room for another line
            garden = depth / 2 - v - d
        lines.append((v, d, garden))
        v += d + garden + 4.5
    for k, (v, d, garden) in enumerate(lines):
        if k:  # footpath in front of every line but the first (that has the street)
            sk.paint(Z_DRIVE, M_PAVING, sk.jitter((166, 160, 150), 0.05), where,
                     sk.rect(0, v - 2.6, length / 2, 1.1))
        _row_line(sk, sk.sub(where, 0.0, v), length, d, garden)


def _row_line(sk: Sketch, front: Placement, length: float, d: float, garden: float) -> None:
    """Rows of touching houses along u, fronts at v=0, gardens from v=d to d+garden."""
    rng = sk.rng
    hedges = rng.random() < 0.4
    u = -length / 2 + float(rng.uniform(1, 5))
    while True:
        n = int(rng.integers(3, 10))
        uw = float(rng.uniform(6.0, 9.0)) * math.sqrt(sk.plot_scale)
        n = min(n, int((length / 2 - 1.5 - u) / uw))
        if n < 2:
            break
        total = n * uw
        if rng.random() > sk.p_build:
            sk.scatter_trees(sk.sub(front, u + total / 2, d / 2), [], total, d, 3)
            u += total + float(rng.uniform(3, 9))
            continue
        row = sk.sub(front, u + total / 2, d / 2, float(rng.normal(0, 0.008)))
        edges = -total / 2 + uw * np.arange(n + 1)
        roof = sk.pick({"terracotta": 0.4, "dark_grey": 0.3, "brown": 0.2,
                        "light_grey": 0.1})
        shape = "gable" if rng.random() < 0.8 else "flat"
        base = sk.jitter(ROOF_COLOURS[roof], 0.05)
        height = float(rng.uniform(7, 10))
        for i in range(n):
            u0, u1 = float(edges[i]), float(edges[i + 1])
            unit = np.array([(u0, -d / 2), (u1, -d / 2), (u1, d / 2), (u0, d / 2)])
            uroof, colour = roof, sk.jitter(base, 0.05)
            if rng.random() < 0.1:
                uroof = sk.pick({"terracotta": 1, "dark_grey": 1, "brown": 1})
                colour = sk.jitter(ROOF_COLOURS[uroof], 0.05)
            b = sk.add_building(row, unit, [((u0 + u1) / 2, 0.0, uw / 2, d / 2, True)],
                                kind="row", roof=uroof, shape=shape, height=height,
                                colour=colour)
            if shape == "gable" and rng.random() < 0.25:
                sk.add_detail(b, row, (u0 + u1) / 2 + uw * 0.3, -d / 4, 0.4, 0.4,
                              (72.0, 60.0, 54.0), 1.0)
            back = sk.sub(row, (u0 + u1) / 2, d / 2)  # garden frame, v into garden
            if rng.random() < 0.4:
                sk.paint(Z_LOT, M_PAVING, sk.jitter((172, 160, 146), 0.08), back,
                         sk.rect(0, 1.5, uw / 2 - 0.6, 1.3))
            if hedges and i < n - 1:
                sk.hedge(back, uw / 2, 0.3, uw / 2, garden - 0.5)
            if garden > 6 and rng.random() < 0.1:
                sk.add_building(back, sk.rect(0, garden - 2.0, 1.2, 1.2),
                                [(0, garden - 2.0, 1.2, 1.2, True)], kind="shed",
                                roof="dark_grey", shape="flat", height=2.5)
            if garden > 3 and rng.random() < 0.5 * sk.spec.tree_density:
                sk.add_tree(back, float(rng.uniform(-uw / 2, uw / 2)),
                            float(rng.uniform(2, garden)), float(rng.uniform(1.5, 3.5)))
        if hedges:
            sk.hedge(sk.sub(row, 0, d / 2), -total / 2, garden - 0.5, total / 2,
                     garden - 0.5)
        sk.paint(Z_DRIVE, M_PAVING, sk.jitter((160, 154, 146), 0.05), row,
                 sk.rect(0, -d / 2 - 1.6, total / 2, 0.9))
        u += total + float(rng.uniform(3, 9))

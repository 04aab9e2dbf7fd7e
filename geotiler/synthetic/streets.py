"""The road grid and its blocks: where the streets run and what each block between them is.

Roads run along and across the grid frame at jittered spacings (``SceneSpec.block_length_m``
and ``block_depth_m``), some main roads with markings, most with sidewalks, parked cars and
street trees. Each visible block between roads gets one land use, drawn by weight, and is
laid out by :mod:`~geotiler.synthetic.houses` or :mod:`~geotiler.synthetic.lots`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType

from geotiler.synthetic.houses import use_houses, use_rows
from geotiler.synthetic.lots import use_field, use_flats, use_industry, use_park, use_shops
from geotiler.synthetic.palette import M_ASPHALT, M_MARK, M_PAVING, Z_MARK, Z_ROAD, Z_WALK
from geotiler.synthetic.shapes import Placement
from geotiler.synthetic.sketch import Sketch

#: Land uses by name: each lays out one block (centre placement, length, depth in metres).
LAND_USES: Mapping[str, Callable[[Sketch, Placement, float, float], None]] = MappingProxyType({
    "houses": use_houses, "rows": use_rows, "flats": use_flats, "industry": use_industry,
    "shops": use_shops, "park": use_park, "field": use_field,
})


def lay_out(sk: Sketch) -> None:
    """Lay the road grid over the raster (plus a margin) and fill every visible block."""
    spec, rng = sk.spec, sk.rng
    radius = 0.5 * math.hypot(spec.width, spec.height) * spec.gsd + 40.0
    along = _positions(sk, radius, spec.block_length_m)  # roads crossing u (vertical)
    across = _positions(sk, radius, spec.block_depth_m)  # roads along u (horizontal)
    vroads = [_road_kind(sk) for _ in along]
    hroads = [_road_kind(sk) for _ in across]
    present = [[r[3] or rng.random() < 0.8 for _ in across] for r in vroads]
    for j, v in enumerate(across):
        for k in range(len(along) - 1):
            u0, u1 = along[k], along[k + 1]
            _road(sk, (0.5 * (u0 + u1), v, 0.0), u1 - u0, hroads[j],
                  (vroads[k][0], vroads[k + 1][0]))
    for k, u in enumerate(along):
        for j in range(len(across) - 1):
            if present[k][j]:
                v0, v1 = across[j], across[j + 1]
                _road(sk, (u, 0.5 * (v0 + v1), math.pi / 2), v1 - v0, vroads[k],
                      (hroads[j][0], hroads[j + 1][0]))
    for j in range(len(across) - 1):
        ks = [k for k in range(len(along)) if present[k][j]]
        for ka, kb in itertools.pairwise(ks):
            u0 = along[ka] + vroads[ka][0] / 2
            u1 = along[kb] - vroads[kb][0] / 2
            v0 = across[j] + hroads[j][0] / 2
            v1 = across[j + 1] - hroads[j + 1][0] / 2
            where = (0.5 * (u0 + u1), 0.5 * (v0 + v1), 0.0)
            if _visible(sk, where, u1 - u0, v1 - v0):
                _block(sk, where, u1 - u0, v1 - v0)


def _positions(sk: Sketch, radius: float, spacing: float) -> list[float]:
    pos = [-radius - sk.rng.uniform(0.2, 1.0) * spacing]
    while pos[-1] < radius + spacing:
        pos.append(pos[-1] + spacing * sk.rng.uniform(0.75, 1.3))
    return pos


def _road_kind(sk: Sketch) -> tuple[float, float, bool, bool]:
    """(corridor width, asphalt width, sidewalks, main road)."""
    if sk.rng.random() < 0.2:
        asphalt = float(sk.rng.uniform(10, 13))
        return asphalt + 5.0, asphalt, True, True
    asphalt = float(sk.rng.uniform(5.5, 7.0))
    if sk.rng.random() < 0.65:
        return asphalt + 3.6, asphalt, True, False
    return asphalt + 1.0, asphalt, False, False


def _visible(sk: Sketch, where: Placement, length: float, depth: float) -> bool:
    p = sk.px(where, sk.rect(0, 0, length / 2 + 10, depth / 2 + 10))
    return bool(p[:, 0].max() > 0 and p[:, 0].min() < sk.spec.width
                and p[:, 1].max() > 0 and p[:, 1].min() < sk.spec.height)


def _road(sk: Sketch, where: Placement, length: float, kind: tuple[float, float, bool, bool],
          ends: tuple[float, float]) -> None:
    """A road segment centred at ``where`` running along its local u."""
    corridor, asphalt, walks, main = kind
    if not _visible(sk, where, length + corridor, corridor):
        return
    rng = sk.rng
    tone = float(rng.uniform(78, 100))
    half = length / 2
    if walks:
        sk.paint(Z_WALK, M_PAVING, sk.jitter((158, 156, 150), 0.05), where,
                 sk.rect(0, 0, half + corridor / 2, corridor / 2))
    sk.paint(Z_ROAD, M_ASPHALT, (tone, tone, tone * 1.02), where,
             sk.rect(0, 0, half + asphalt / 2, asphalt / 2))
    start, stop = -half + ends[0] / 2 + 2.0, half - ends[1] / 2 - 2.0
    if main and stop > start:
        mark = (0.45 * tone + 0.55 * 215, 0.45 * tone + 0.55 * 215, 0.45 * tone + 0.55 * 205)
        u = start
        while u + 3.0 < stop:
            sk.paint(Z_MARK, M_MARK, mark, where, sk.rect(u + 1.5, 0, 1.5, 0.25))
            u += 9.0
    if not main and walks and stop > start:
        # Cars parked along the kerb.
        for side in (-1, 1):
            u = start + rng.uniform(0, 6)
            while u + 5 < stop:
                if rng.random() < 0.12:
                    sk.add_car(where, u + 2.5, side * (asphalt / 2 - 1.2), 0.0)
                u += 6.0
    if walks and rng.random() < 0.35 * sk.spec.tree_density and stop > start:
        for side in (-1, 1):
            u = start + rng.uniform(0, 5)
            while u < stop:
                sk.add_tree(where, u, side * (corridor / 2 - 0.3),
                            float(rng.uniform(2.2, 4.2)))
                u += float(rng.uniform(8, 12))


def _block(sk: Sketch, where: Placement, length: float, depth: float) -> None:
    big = length * depth > 2.2 * sk.spec.block_length_m * sk.spec.block_depth_m * 0.6
    uses = {"houses": 0.57, "rows": 0.055, "flats": 0.09, "industry": 0.06,
            "shops": 0.06, "park": 0.08, "field": 0.04}
    if big:
        uses.update(industry=0.15, park=0.15, flats=0.15)
    if depth < 24:
        uses = {"park": 1.0}
    use = sk.pick(uses)
    LAND_USES[use](sk, where, length, depth)

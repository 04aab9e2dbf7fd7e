"""The plan: the whole scene as vectors, packed for rendering block by block.

:func:`make_plan` runs the layout (:func:`geotiler.synthetic.streets.lay_out`) on a fresh
:class:`~geotiler.synthetic.sketch.Sketch`, clips the buildings to the valid area (these are
the footprints written to the vector file), sorts the painted polygons by paint order and
indexes everything by pixel bounding box. The plan depends only on the spec, never on how the
raster is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import NDArray

from geotiler.synthetic.shapes import (
    F32,
    HALO,
    Building,
    FloatArray,
    Index,
    Polys,
    PolyStore,
)
from geotiler.synthetic.sketch import Sketch
from geotiler.synthetic.spec import SceneSpec
from geotiler.synthetic.streets import lay_out


@dataclass
class Plan:
    """The scene as vectors, ready to render block by block."""

    spec: SceneSpec
    footprints: NDArray[np.object_]  # shapely polygons, map coordinates, clipped
    kinds: list[str]
    roofs: list[str]
    heights: NDArray[np.float32]
    shapes: NDArray[np.int8]  # roof shape of each building
    colours: F32  # roof colour of each building
    building_index: Index
    part_table: FloatArray  # (P, 6) cx, cy, ux, uy, a, b
    part_start: NDArray[np.intp]  # first part of each building
    part_count: NDArray[np.intp]
    paints: Polys  # sorted by z
    paint_z: NDArray[np.int8]
    paint_material: NDArray[np.intp]
    paint_colour: F32
    paint_index: Index
    casters: Polys
    caster_index: Index
    trees: FloatArray  # (N, 6): x, y, r (px), tone, shadow dx, dy (px)
    tree_index: Index
    details: Polys
    detail_owner: NDArray[np.int32]  # building index + 1
    detail_kind: NDArray[np.int8]  # 0 darkens by colour[0], 1 paints colour
    detail_colour: F32
    detail_index: Index


def make_plan(spec: SceneSpec) -> Plan:
    """Lay out the whole scene as vectors (deterministic in ``spec``)."""
    planner = Sketch(spec)
    lay_out(planner)
    buildings, footprints = _footprints(spec, planner.buildings)
    del planner.buildings

    attrs = np.frombuffer(planner.paint_attrs, dtype=np.float32).reshape(-1, 5)
    order = np.argsort(attrs[:, 0], kind="stable")
    paints = planner.paints.packed().take(order)
    attrs = attrs[order]
    del planner.paints, planner.paint_attrs

    details = PolyStore()
    owner, kind, colour = [], [], []
    for i, b in enumerate(buildings):
        for k, pts, c in b.details:
            details.add(pts)
            owner.append(i + 1)
            kind.append(k)
            colour.append(c)
    detail_polys = details.packed()
    casters = planner.casters.packed()

    t = np.frombuffer(planner.trees, dtype=np.float64).reshape(-1, 6)
    tree_boxes = np.stack([
        np.minimum(t[:, 0], t[:, 0] + t[:, 4]) - 1.6 * t[:, 2] - 2,
        np.minimum(t[:, 1], t[:, 1] + t[:, 5]) - 1.6 * t[:, 2] - 2,
        np.maximum(t[:, 0], t[:, 0] + t[:, 4]) + 1.6 * t[:, 2] + 2,
        np.maximum(t[:, 1], t[:, 1] + t[:, 5]) + 1.6 * t[:, 2] + 2,
    ], axis=1)
    keep = ((tree_boxes[:, 2] >= -HALO) & (tree_boxes[:, 0] <= spec.width + HALO)
            & (tree_boxes[:, 3] >= -HALO) & (tree_boxes[:, 1] <= spec.height + HALO))
    part_count = np.array([len(b.parts) for b in buildings], dtype=np.intp)
    return Plan(
        spec=spec, footprints=footprints,
        kinds=[b.kind for b in buildings], roofs=[b.roof for b in buildings],
        heights=np.array([b.height for b in buildings], dtype=np.float32),
        shapes=np.array([b.shape for b in buildings], dtype=np.int8),
        colours=np.array([b.colour for b in buildings], dtype=np.float32).reshape(-1, 3),
        building_index=Index(_pixel_boxes(spec, footprints)),
        part_table=np.array([p for b in buildings for p in b.parts],
                            dtype=np.float64).reshape(-1, 6),
        part_start=np.concatenate([[0], np.cumsum(part_count)[:-1]]).astype(np.intp),
        part_count=part_count,
        paints=paints, paint_z=attrs[:, 0].astype(np.int8),
        paint_material=attrs[:, 1].astype(np.intp), paint_colour=attrs[:, 2:].copy(),
        paint_index=Index(paints.boxes()),
        casters=casters, caster_index=Index(casters.boxes()),
        trees=t[keep].copy(), tree_index=Index(tree_boxes[keep]),
        details=detail_polys, detail_owner=np.array(owner, dtype=np.int32),
        detail_kind=np.array(kind, dtype=np.int8),
        detail_colour=np.array(colour, dtype=np.float32).reshape(-1, 3),
        detail_index=Index(detail_polys.boxes()),
    )


def _pixel_boxes(spec: SceneSpec, geoms: NDArray[np.object_]) -> FloatArray:
    """Bounding boxes in pixels (xmin, ymin, xmax, ymax) of geometries in map units."""
    minx, miny, maxx, maxy = shapely.bounds(geoms).reshape(-1, 4).T
    g = spec.gsd
    return np.stack([(minx - spec.origin_x) / g, (spec.origin_y - maxy) / g,
                     (maxx - spec.origin_x) / g, (spec.origin_y - miny) / g], axis=1)


def _footprints(spec: SceneSpec, planned: list[Building]
                ) -> tuple[list[Building], NDArray[np.object_]]:
    """The planned buildings that show, with their footprints in map coordinates.

    Buildings crossing the edge of the valid area (the raster less any nodata border) are
    clipped to it; slivers under 4 m² are dropped, so are invalid plans (none expected).
    """
    if not planned:
        return [], np.array([], dtype=object)
    valid_w = spec.width - spec.nodata_border
    coords = np.concatenate([b.outline for b in planned])
    which = np.repeat(np.arange(len(planned)), [len(b.outline) for b in planned])
    polys = shapely.polygons(shapely.linearrings(coords, indices=which))
    for i, b in enumerate(planned):
        if b.holes:
            polys[i] = shapely.Polygon(b.outline, b.holes)
    xmin, ymin, xmax, ymax = shapely.bounds(polys).T
    inside = (xmin >= 0) & (ymin >= 0) & (xmax <= valid_w) & (ymax <= spec.height)
    touching = (xmin < valid_w) & (xmax > 0) & (ymin < spec.height) & (ymax > 0)
    keep = shapely.is_valid(polys) & touching
    box = shapely.box(0, 0, valid_w, spec.height)
    for j in np.flatnonzero(keep & ~inside):
        clipped = shapely.intersection(polys[j], box)
        pieces = [p for p in getattr(clipped, "geoms", [clipped])
                  if isinstance(p, shapely.Polygon) and not p.is_empty]
        poly = max(pieces, key=lambda p: p.area) if pieces else None
        if poly is None or poly.area * spec.gsd**2 < 4.0:
            keep[j] = False
        else:
            polys[j] = poly
    g = spec.gsd
    on_map = shapely.transform(polys[keep], lambda c: c * (g, -g) + (spec.origin_x,
                                                                     spec.origin_y))
    return [b for b, k in zip(planned, keep, strict=True) if k], on_map

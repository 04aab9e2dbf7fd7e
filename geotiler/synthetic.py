"""Synthetic aerial scenes: an RGB GeoTIFF and the building footprints that match it.

Why: tests, demos and benchmarks need imagery whose ground truth is exact, that anyone can
regenerate, and that looks enough like a 0.5 m orthophoto (roads, trees, shadows, touching
row houses, grey things that are not buildings) that a segmentation model has to learn
something real from it.

How: :func:`make_scene` first *plans* the whole scene as vectors (a road grid rotated by a
random angle, blocks with a land use each, plots, buildings, trees, cars), using one seeded
random generator, so the plan never depends on how the raster is written. It then *renders*
the raster block by block (``SceneSpec.block_size`` pixels square, plus a small halo),
drawing only the objects whose bounding box meets the block. Every per-pixel texture is a
hash of the pixel's global position, so a block renders the same pixels whatever the block
size: memory stays bounded and the output is byte-identical for a given spec.

Roofs are burnt with GDAL (:func:`rasterio.features.rasterize`) from the very polygons that
are written to the vector file, with vertices on a dyadic grid, so rasterizing the footprint
file onto the raster's grid gives exactly the roof pixels (trees may still overhang them,
as in real imagery).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import time
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import cv2
import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from numpy.typing import NDArray
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.windows import Window

from geotiler.errors import ConfigError, OutputError

log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
F32 = NDArray[np.float32]
# (x, y, angle): a placement in the grid frame, metres and radians.
Placement = tuple[float, float, float]

#: Roof colour names (the ``roof`` attribute) and their RGB.
ROOF_COLOURS: Mapping[str, tuple[float, float, float]] = MappingProxyType({
    "terracotta": (172.0, 84.0, 62.0),
    "dark_grey": (84.0, 86.0, 92.0),
    "light_grey": (168.0, 168.0, 164.0),
    "brown": (118.0, 86.0, 66.0),
    "white": (224.0, 224.0, 218.0),
})
ROOF_SHAPES: tuple[str, ...] = ("gable", "hip", "flat")
#: Vector formats by file extension: (pyogrio driver or "parquet", layer name or None).
VECTOR_FORMATS: Mapping[str, tuple[str, str | None]] = MappingProxyType({
    ".gpkg": ("GPKG", "buildings"),
    ".geojson": ("GeoJSON", None),
    ".json": ("GeoJSON", None),
    ".shp": ("ESRI Shapefile", None),
    ".fgb": ("FlatGeobuf", None),
    ".parquet": ("parquet", None),
    ".geoparquet": ("parquet", None),
})

_SHIFT = 4  # vertices on a 1/16 px grid (also cv2's fixed-point bits)
_ONE = 1 << _SHIFT
_QUANT = 64  # footprint vertices sit at odd multiples of 1/128 px: never on a pixel centre
_HALO = 8  # px rendered around each block so blurs and neighbours match across blocks

# Ground materials: texture amplitudes (mid-frequency, fine, low-frequency) per material.
_M_GROUND, _M_SOIL, _M_CONCRETE, _M_ASPHALT, _M_PAVING = 0, 1, 2, 3, 4
_M_MARK, _M_WATER, _M_CAR, _M_GRAVEL, _M_CLAY, _M_HEDGE = 5, 6, 7, 8, 9, 10
_TEXTURE = np.array(
    [
        (0.00, 0.00, 0.00),  # ground: has its own texture
        (0.08, 0.07, 0.10),  # soil
        (0.025, 0.035, 0.05),  # concrete
        (0.05, 0.07, 0.07),  # asphalt
        (0.06, 0.05, 0.04),  # paving
        (0.03, 0.04, 0.00),  # markings
        (0.03, 0.015, 0.05),  # water
        (0.00, 0.015, 0.00),  # car
        (0.06, 0.09, 0.05),  # gravel
        (0.04, 0.05, 0.04),  # clay court
        (0.30, 0.16, 0.06),  # hedge
    ],
    dtype=np.float32,
)
# Painting order (lower first). From _Z_RAISED on, paint goes on after the shadows, so
# that things standing above the ground are not darkened by their own shadow.
_Z_SOIL, _Z_PAD, _Z_LOT, _Z_DRIVE, _Z_WALK, _Z_ROAD = 0, 1, 2, 3, 4, 5
_Z_MARK, _Z_WATER, _Z_RAISED, _Z_CAR, _Z_GLASS, _Z_HEDGE = 6, 7, 8, 8, 9, 10

_GRASS = np.array((86.0, 108.0, 56.0), dtype=np.float32)
_DRY = np.array((138.0, 136.0, 92.0), dtype=np.float32)
_LUSH = np.array((62.0, 88.0, 48.0), dtype=np.float32)
_BARE = np.array((132.0, 114.0, 88.0), dtype=np.float32)
_TREE_TONES = np.array(
    [(46, 70, 36), (58, 82, 40), (40, 60, 44), (66, 88, 46), (52, 66, 34)], dtype=np.float32
)
_SHADOW_RGB = np.array((0.36, 0.40, 0.50), dtype=np.float32)
_CAR_COLOURS = (
    (215, 215, 212), (30, 32, 36), (150, 152, 156), (110, 112, 118), (150, 30, 30),
    (40, 60, 120), (200, 200, 190), (70, 80, 70),
)


@dataclass(frozen=True)
class SceneSpec:
    """What to generate. The one place the generator's defaults live.

    Attributes:
        width, height: raster size in pixels.
        gsd: ground sample distance, metres per pixel.
        crs: a projected CRS in metres (default: UTM zone 33N).
        origin_x, origin_y: easting and northing of the raster's top-left corner.
        seed: seeds everything; same spec, same bytes.
        building_density: multiplier on buildings per area; 1.0 gives about 720 per km²
            (about 190 in a 1024 px square at 0.5 m). Below 1 plots stay empty more often,
            above 1 plots get narrower.
        tree_density: multiplier on the number of trees.
        block_length_m, block_depth_m: mean spacing of the road grid along and across.
        grid_angle: rotation of the road grid in degrees; ``None`` draws it from the seed.
        sun_azimuth, sun_elevation: degrees; shadows fall away from the sun (default from
            the north-west, so shadows fall to the south-east).
        nodata_border: width in px of a band of nodata (0) pixels on the right edge; when
            > 0 the GeoTIFF declares nodata=0, otherwise it declares no nodata.
        block_size: side in px of the square blocks rendered and written at a time;
            memory grows with its square, not with the raster. Multiples of 256 (the
            GeoTIFF tile size) write fastest.
    """

    width: int
    height: int
    gsd: float = 0.5
    crs: str = "EPSG:32633"
    origin_x: float = 601000.0
    origin_y: float = 5340000.0
    seed: int = 0
    building_density: float = 1.0
    tree_density: float = 1.0
    block_length_m: float = 150.0
    block_depth_m: float = 95.0
    grid_angle: float | None = None
    sun_azimuth: float = 315.0
    sun_elevation: float = 50.0
    nodata_border: int = 0
    block_size: int = 1024

    def __post_init__(self) -> None:
        if not (1 <= self.width <= 1 << 20 and 1 <= self.height <= 1 << 20):
            raise ConfigError(f"width and height must be 1..1048576 px, got "
                              f"{self.width}x{self.height}")
        if not 0.05 <= self.gsd <= 10:
            raise ConfigError(f"gsd must be 0.05..10 m/px, got {self.gsd}")
        try:
            crs = CRS.from_user_input(self.crs)
        except CRSError as err:
            raise ConfigError(f"crs {self.crs!r} is not a CRS GDAL knows: {err}") from None
        if not crs.is_projected:
            raise ConfigError(f"crs must be projected (metres), got {self.crs!r}; "
                              "use a UTM zone such as EPSG:32633")
        for name in ("building_density", "tree_density"):
            if not 0.0 <= getattr(self, name) <= 4.0:
                raise ConfigError(f"{name} must be in [0, 4], got {getattr(self, name)}")
        if self.block_length_m < 40 or self.block_depth_m < 30:
            raise ConfigError("block_length_m must be >= 40 and block_depth_m >= 30, got "
                              f"{self.block_length_m} and {self.block_depth_m}")
        if not 5.0 <= self.sun_elevation <= 85.0:
            raise ConfigError(f"sun_elevation must be 5..85 degrees, got {self.sun_elevation}")
        if not 0 <= self.nodata_border < self.width:
            raise ConfigError(f"nodata_border must be in [0, width={self.width}), "
                              f"got {self.nodata_border}")
        if not 32 <= self.block_size <= 8192:
            raise ConfigError(f"block_size must be 32..8192 px, got {self.block_size}")

    @property
    def transform(self) -> Affine:
        """The raster's north-up geotransform."""
        return Affine(self.gsd, 0.0, self.origin_x, 0.0, -self.gsd, self.origin_y)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the raster in the CRS."""
        return (self.origin_x, self.origin_y - self.height * self.gsd,
                self.origin_x + self.width * self.gsd, self.origin_y)



#: The repository's sample scene (``sample_data/``): 1024 x 1024 px at 0.5 m (512 m square)
#: in UTM zone 33N. The seed was picked for a representative mix: detached houses,
#: L-shapes, terraced rows of touching houses, flats, a park, parking lots and a pool or two.
SAMPLE_SPEC = SceneSpec(width=1024, height=1024, gsd=0.5, crs="EPSG:32633",
                        origin_x=601000.0, origin_y=5340000.0, seed=28)


@dataclass(frozen=True)
class SceneSummary:
    """What :func:`make_scene` wrote."""

    tif_path: Path
    vector_path: Path
    n_buildings: int
    n_trees: int
    width: int
    height: int
    crs: str
    bounds: tuple[float, float, float, float]


@dataclass
class _Building:
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
class _Index:
    """Objects of one kind with their pixel bounding boxes, for per-block selection."""

    boxes: FloatArray  # (N, 4) xmin, ymin, xmax, ymax in px

    def select(self, c0: int, r0: int, c1: int, r1: int) -> NDArray[np.intp]:
        b = self.boxes
        if not len(b):
            return np.zeros(0, dtype=np.intp)
        hit = (b[:, 2] >= c0) & (b[:, 0] <= c1) & (b[:, 3] >= r0) & (b[:, 1] <= r1)
        return np.flatnonzero(hit)


def _ring(px: FloatArray) -> FloatArray:
    """A closed ring with vertices snapped to 1/16 px (exact in binary floating point)."""
    q = np.rint(px * _ONE) / _ONE
    return np.concatenate([q, q[:1]])


def _quantize(px: FloatArray) -> FloatArray:
    return (np.floor(px * _QUANT) + 0.5) / _QUANT


@dataclass
class _Polys:
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

    def take(self, order: NDArray[np.intp]) -> _Polys:
        """The rings in a new order."""
        lengths = np.diff(self.ends)[order]
        ends = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        gather = np.repeat(self.ends[:-1][order] - ends[:-1], lengths) + np.arange(ends[-1])
        return _Polys(self.xy[gather], ends)


class _PolyStore:
    """A compact, growing list of polygons: 16 bytes a vertex, no object per polygon."""

    def __init__(self) -> None:
        self.xy = array("d")
        self.ends = array("q", [0])

    def add(self, px: FloatArray) -> None:
        self.xy.frombytes(_ring(px).tobytes())
        self.ends.append(len(self.xy) // 2)

    def __len__(self) -> int:
        return len(self.ends) - 1

    def packed(self) -> _Polys:
        xy = np.frombuffer(self.xy, dtype=np.float64).reshape(-1, 2).copy()
        return _Polys(xy, np.frombuffer(self.ends, dtype=np.int64).copy())


@dataclass
class _Plan:
    """The scene as vectors, ready to render block by block."""

    spec: SceneSpec
    footprints: NDArray[np.object_]  # shapely polygons, map coordinates, clipped
    kinds: list[str]
    roofs: list[str]
    heights: NDArray[np.float32]
    shapes: NDArray[np.int8]  # roof shape of each building
    colours: F32  # roof colour of each building
    building_index: _Index
    part_table: FloatArray  # (P, 6) cx, cy, ux, uy, a, b
    part_start: NDArray[np.intp]  # first part of each building
    part_count: NDArray[np.intp]
    paints: _Polys  # sorted by z
    paint_z: NDArray[np.int8]
    paint_material: NDArray[np.intp]
    paint_colour: F32
    paint_index: _Index
    casters: _Polys
    caster_index: _Index
    trees: FloatArray  # (N, 6): x, y, r (px), tone, shadow dx, dy (px)
    tree_index: _Index
    details: _Polys
    detail_owner: NDArray[np.int32]  # building index + 1
    detail_kind: NDArray[np.int8]  # 0 darkens by colour[0], 1 paints colour
    detail_colour: F32
    detail_index: _Index


class _Planner:
    """Lays the scene out in a grid frame (metres, rotated by the grid angle)."""

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
        self.paints = _PolyStore()
        self.paint_attrs = array("f")  # z, material, r, g, b per paint
        self.buildings: list[_Building] = []
        self.trees = array("d")  # x, y, r, tone, shadow dx, dy per tree
        self.casters = _PolyStore()
        p = min(1.0, spec.building_density)
        self.p_build = 0.88 * p
        self.plot_scale = 1.0 / max(1.0, spec.building_density)

    # -- geometry helpers --------------------------------------------------------------
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
        tone = float(rng.integers(0, len(_TREE_TONES)))
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
                     colour: tuple[float, float, float] | None = None) -> _Building:
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
        building = _Building(
            outline=_quantize(self.px(where, outline)),
            holes=[_quantize(self.px(where, h)) for h in holes or []],
            parts=px_parts, shape=ROOF_SHAPES.index(shape), colour=colour,
            kind=kind, roof=roof, height=height,
        )
        self.buildings.append(building)
        return building

    def add_detail(self, b: _Building, where: Placement, cu: float, cv: float, hu: float,
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

    # -- the road grid -------------------------------------------------------------------
    def plan(self) -> None:
        spec, rng = self.spec, self.rng
        radius = 0.5 * math.hypot(spec.width, spec.height) * spec.gsd + 40.0
        along = self._positions(radius, spec.block_length_m)  # roads crossing u (vertical)
        across = self._positions(radius, spec.block_depth_m)  # roads along u (horizontal)
        vroads = [self._road_kind() for _ in along]
        hroads = [self._road_kind() for _ in across]
        present = [[r[3] or rng.random() < 0.8 for _ in across] for r in vroads]
        for j, v in enumerate(across):
            for k in range(len(along) - 1):
                u0, u1 = along[k], along[k + 1]
                self._road((0.5 * (u0 + u1), v, 0.0), u1 - u0, hroads[j],
                           (vroads[k][0], vroads[k + 1][0]))
        for k, u in enumerate(along):
            for j in range(len(across) - 1):
                if present[k][j]:
                    v0, v1 = across[j], across[j + 1]
                    self._road((u, 0.5 * (v0 + v1), math.pi / 2), v1 - v0, vroads[k],
                               (hroads[j][0], hroads[j + 1][0]))
        for j in range(len(across) - 1):
            ks = [k for k in range(len(along)) if present[k][j]]
            for ka, kb in itertools.pairwise(ks):
                u0 = along[ka] + vroads[ka][0] / 2
                u1 = along[kb] - vroads[kb][0] / 2
                v0 = across[j] + hroads[j][0] / 2
                v1 = across[j + 1] - hroads[j + 1][0] / 2
                where = (0.5 * (u0 + u1), 0.5 * (v0 + v1), 0.0)
                if self._visible(where, u1 - u0, v1 - v0):
                    self._block(where, u1 - u0, v1 - v0)

    def _positions(self, radius: float, spacing: float) -> list[float]:
        pos = [-radius - self.rng.uniform(0.2, 1.0) * spacing]
        while pos[-1] < radius + spacing:
            pos.append(pos[-1] + spacing * self.rng.uniform(0.75, 1.3))
        return pos

    def _road_kind(self) -> tuple[float, float, bool, bool]:
        """(corridor width, asphalt width, sidewalks, main road)."""
        if self.rng.random() < 0.2:
            asphalt = float(self.rng.uniform(10, 13))
            return asphalt + 5.0, asphalt, True, True
        asphalt = float(self.rng.uniform(5.5, 7.0))
        if self.rng.random() < 0.65:
            return asphalt + 3.6, asphalt, True, False
        return asphalt + 1.0, asphalt, False, False

    def _visible(self, where: Placement, length: float, depth: float) -> bool:
        p = self.px(where, self.rect(0, 0, length / 2 + 10, depth / 2 + 10))
        return bool(p[:, 0].max() > 0 and p[:, 0].min() < self.spec.width
                    and p[:, 1].max() > 0 and p[:, 1].min() < self.spec.height)

    def _road(self, where: Placement, length: float, kind: tuple[float, float, bool, bool],
              ends: tuple[float, float]) -> None:
        """A road segment centred at ``where`` running along its local u."""
        corridor, asphalt, walks, main = kind
        if not self._visible(where, length + corridor, corridor):
            return
        rng = self.rng
        tone = float(rng.uniform(78, 100))
        half = length / 2
        if walks:
            self.paint(_Z_WALK, _M_PAVING, self.jitter((158, 156, 150), 0.05), where,
                       self.rect(0, 0, half + corridor / 2, corridor / 2))
        self.paint(_Z_ROAD, _M_ASPHALT, (tone, tone, tone * 1.02), where,
                   self.rect(0, 0, half + asphalt / 2, asphalt / 2))
        start, stop = -half + ends[0] / 2 + 2.0, half - ends[1] / 2 - 2.0
        if main and stop > start:
            mark = (0.45 * tone + 0.55 * 215, 0.45 * tone + 0.55 * 215, 0.45 * tone + 0.55 * 205)
            u = start
            while u + 3.0 < stop:
                self.paint(_Z_MARK, _M_MARK, mark, where, self.rect(u + 1.5, 0, 1.5, 0.25))
                u += 9.0
        if not main and walks and stop > start:
            # Cars parked along the kerb.
            for side in (-1, 1):
                u = start + rng.uniform(0, 6)
                while u + 5 < stop:
                    if rng.random() < 0.12:
                        self._car(where, u + 2.5, side * (asphalt / 2 - 1.2), 0.0)
                    u += 6.0
        if walks and rng.random() < 0.35 * self.spec.tree_density and stop > start:
            for side in (-1, 1):
                u = start + rng.uniform(0, 5)
                while u < stop:
                    self.add_tree(where, u, side * (corridor / 2 - 0.3),
                                  float(rng.uniform(2.2, 4.2)))
                    u += float(rng.uniform(8, 12))

    def _car(self, where: Placement, u: float, v: float, angle: float) -> None:
        rng = self.rng
        w: Placement = (where[0] + math.cos(where[2]) * u - math.sin(where[2]) * v,
                        where[1] + math.sin(where[2]) * u + math.cos(where[2]) * v,
                        where[2] + angle + float(rng.normal(0, 0.03)))
        colour = _CAR_COLOURS[int(rng.integers(0, len(_CAR_COLOURS)))]
        body = self.rect(0, 0, 2.25, 0.9)
        self.paint(_Z_CAR, _M_CAR, self.jitter(colour, 0.06), w, body)
        glass = tuple(0.35 * c + 12 for c in colour)
        self.paint(_Z_GLASS, _M_CAR, (glass[0], glass[1], glass[2]), w,
                   self.rect(0.2, 0, 0.9, 0.7))
        corners = self.px(w, body)
        both = np.concatenate([corners, corners + self.shadow * 1.5]).astype(np.float32)
        self.casters.add(cv2.convexHull(both)[:, 0, :].astype(np.float64))

    # -- blocks --------------------------------------------------------------------------
    def _block(self, where: Placement, length: float, depth: float) -> None:
        big = length * depth > 2.2 * self.spec.block_length_m * self.spec.block_depth_m * 0.6
        uses = {"houses": 0.57, "rows": 0.055, "flats": 0.09, "industry": 0.06,
                "shops": 0.06, "park": 0.08, "field": 0.04}
        if big:
            uses.update(industry=0.15, park=0.15, flats=0.15)
        if depth < 24:
            uses = {"park": 1.0}
        use = self.pick(uses)
        getattr(self, f"_use_{use}")(where, length, depth)

    def _sides(self, where: Placement, length: float, depth: float,
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

    @staticmethod
    def _sub(where: Placement, u: float, v: float, angle: float = 0.0) -> Placement:
        x, y, a = where
        return (x + math.cos(a) * u - math.sin(a) * v, y + math.sin(a) * u + math.cos(a) * v,
                a + angle)

    def _use_houses(self, where: Placement, length: float, depth: float) -> None:
        rng = self.rng
        for front, pd in self._sides(where, length, depth, 22.0):
            u = -length / 2
            while u < length / 2 - 9:
                pw = float(rng.uniform(18, 30)) * self.plot_scale
                pw = max(pw, 9.5)
                if length / 2 - (u + pw) < 9:
                    pw = length / 2 - u
                self._house_plot(self._sub(front, u + pw / 2, 0.0), pw, pd)
                u += pw

    def _fits(self, pts: FloatArray, hu: float, v0: float, v1: float) -> bool:
        return bool(np.all(np.abs(pts[:, 0]) <= hu) and np.all(pts[:, 1] >= v0)
                    and np.all(pts[:, 1] <= v1))

    @staticmethod
    def _local(pts: FloatArray, u: float, v: float, angle: float) -> FloatArray:
        c, s = math.cos(angle), math.sin(angle)
        return np.stack([u + c * pts[:, 0] - s * pts[:, 1], v + s * pts[:, 0] + c * pts[:, 1]],
                        axis=1)

    def _house_plot(self, plot: Placement, pw: float, pd: float) -> None:
        """One residential plot: front edge centred at ``plot``, u along the street,
        v from 0 (street) to ``pd`` (back)."""
        rng = self.rng
        td = self.spec.tree_density
        for _ in range(int(rng.poisson(1.6 * td))):
            self.add_tree(plot, float(rng.uniform(-pw / 2, pw / 2)), float(rng.uniform(1, pd)),
                          float(rng.uniform(1.5, 4.5)))
        if rng.random() < 0.25:
            self.hedge(plot, pw / 2, 1.0, pw / 2, pd - 0.6)
        if rng.random() < 0.15:
            self.hedge(plot, -pw / 2, pd - 0.6, pw / 2, pd - 0.6)
        if rng.random() > self.p_build or pw < 9:
            if rng.random() < 0.3:
                self.paint(_Z_SOIL, _M_SOIL, self.jitter((128, 110, 84), 0.1), plot,
                           self.rect(0, pd / 2, pw / 2 - 1, pd / 2 - 1))
            return
        r = rng.random()
        w = min(pw - 3.0, float(rng.uniform(8, 14)))
        d = min(pd * 0.55, float(rng.uniform(8, 12.5)))
        semi = r < 0.08 and pw >= 15
        if semi:
            w = min(pw - 3.0, 2 * float(rng.uniform(6.5, 9)))
        if w < 6 or d < 6:
            return
        roof = self.pick({"terracotta": 0.36, "dark_grey": 0.26, "brown": 0.15,
                               "light_grey": 0.15, "white": 0.08})
        shape = self.pick({"gable": 0.55, "hip": 0.35, "flat": 0.10})
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
            outline = self.rect(0, 0, hu, hv)
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
        local = self._local(outline, cu, cv, angle)
        if not self._fits(local, pw / 2 - 1.0, 1.0, pd - 1.0):
            angle = float(rng.normal(0, 0.02))
            local = self._local(outline, cu, cv, angle)
            if not self._fits(local, pw / 2 - 1.0, 1.0, pd - 1.0):
                return
        house = self._sub(plot, cu, cv, angle)
        height = float(rng.uniform(5, 9))
        kind = "L" if len(outline) > 4 else "house"
        if semi:
            colour = self.jitter(ROOF_COLOURS[roof], 0.06)
            for sgn in (-1.0, 1.0):
                unit = np.array([(0.0, -hv), (sgn * hu, -hv), (sgn * hu, hv), (0.0, hv)])
                if sgn > 0:
                    unit = unit[::-1]
                self.add_building(house, unit, [(sgn * hu / 2, 0.0, hu / 2, hv, True)],
                                  kind="row", roof=roof, shape="gable" if shape == "flat"
                                  else shape, height=height,
                                  colour=self.jitter(colour, 0.04))
        else:
            b = self.add_building(house, outline, parts, kind=kind, roof=roof, shape=shape,
                                  height=height)
            self._roof_details(b, house, parts[0])
        box = (local[:, 0].min(), local[:, 1].min(), local[:, 0].max(), local[:, 1].max())
        if rng.random() < 0.6:  # driveway from the street to the house
            side = 1.0 if cu + hu + 4.5 < pw / 2 else -1.0
            du = cu + side * (hu + 1.9)
            if abs(du) + 1.5 < pw / 2:
                colour = self.jitter((170, 166, 158) if rng.random() < 0.6 else (96, 96, 98),
                                     0.06)
                self.paint(_Z_DRIVE, _M_CONCRETE, colour, plot,
                           self.rect(du, (setback + d * 0.5) / 2, 1.5, (setback + d * 0.5) / 2))
        if rng.random() < 0.2 and box[3] + 3.6 < pd - 1:  # patio behind the house
            self.paint(_Z_LOT, _M_PAVING, self.jitter((176, 164, 150), 0.08), plot,
                       self.rect(cu, box[3] + 1.9, min(hu * 0.6, pw / 2 - 1.5), 1.6))
            box = (box[0], box[1], box[2], box[3] + 3.6)
        if rng.random() < 0.25:  # shed or garage in the back garden
            for _ in range(4):
                sw, sd = float(rng.uniform(2.5, 6.0)), float(rng.uniform(2.5, 5.0))
                ulo, vlo, vhi = -pw / 2 + 1 + sw / 2, box[3] + 1.2 + sd / 2, pd - 0.8 - sd / 2
                if ulo >= 0 or vlo >= vhi:
                    continue
                su, sv = float(rng.uniform(ulo, -ulo)), float(rng.uniform(vlo, vhi))
                shed = self._local(self.rect(0, 0, sw / 2, sd / 2), su, sv, angle)
                if self._fits(shed, pw / 2 - 0.5, box[3] + 1.0, pd - 0.5):
                    sroof = self.pick({"dark_grey": 0.4, "brown": 0.2, "terracotta": 0.2,
                                            "light_grey": 0.2})
                    self.add_building(self._sub(plot, su, sv, angle), self.rect(0, 0, sw / 2,
                                      sd / 2), [(0, 0, sw / 2, sd / 2, sw >= sd)], kind="shed",
                                      roof=sroof, shape="flat" if rng.random() < 0.5
                                      else "gable", height=float(rng.uniform(2.5, 3.5)))
                    box = (box[0], box[1], box[2], max(box[3], sv + sd / 2))
                    break
        elif rng.random() < 0.25:  # pool
            pw2, pd2 = float(rng.uniform(1.8, 2.6)), float(rng.uniform(3.5, 5.0))
            pv = box[3] + 2.0 + pd2
            if pv + pd2 + 1.0 < pd and pw2 * 2 + 3 < pw:
                pu = float(rng.uniform(-pw / 2 + 1.5 + pw2, pw / 2 - 1.5 - pw2))
                self.paint(_Z_LOT, _M_CONCRETE, self.jitter((196, 192, 184), 0.04), plot,
                           self.rect(pu, pv, pw2 + 0.6, pd2 + 0.6))
                self.paint(_Z_WATER, _M_WATER, self.jitter((72, 168, 196), 0.08), plot,
                           self.rect(pu, pv, pw2, pd2))

    def _roof_details(self, b: _Building, where: Placement,
                      part: tuple[float, float, float, float, bool]) -> None:
        rng = self.rng
        cu, cv, hu, hv, along_u = part
        if b.shape == 2:  # flat: HVAC boxes
            for _ in range(int(rng.integers(0, 4 if hu * hv < 100 else 9))):
                s1, s2 = float(rng.uniform(0.6, 2.0)), float(rng.uniform(0.6, 1.6))
                if hu - s1 - 1.0 <= 0 or hv - s2 - 1.0 <= 0:
                    continue
                u = cu + float(rng.uniform(-(hu - s1 - 1.0), hu - s1 - 1.0))
                v = cv + float(rng.uniform(-(hv - s2 - 1.0), hv - s2 - 1.0))
                grey = float(rng.uniform(150, 215))
                self.add_detail(b, where, u, v, s1, s2, (grey, grey, grey * 0.98),
                                float(rng.uniform(0.8, 2.0)))
        elif rng.random() < 0.14 and min(hu, hv) > 3.0:  # solar panels on one roof face
            long_h, short_h = (hu, hv) if along_u else (hv, hu)
            off = -short_h / 2 if rng.random() < 0.5 else short_h / 2
            pl, ps = long_h * float(rng.uniform(0.4, 0.7)), short_h * 0.32
            colour = self.jitter((46, 54, 78), 0.1)
            if along_u:
                self.add_detail(b, where, cu, cv + off, pl, ps, colour, 0.0)
            else:
                self.add_detail(b, where, cu + off, cv, ps, pl, colour, 0.0)
        elif rng.random() < 0.3:  # chimney
            u = cu + float(rng.uniform(-hu * 0.6, hu * 0.6))
            v = cv + float(rng.uniform(-hv * 0.6, hv * 0.6))
            self.add_detail(b, where, u, v, 0.45, 0.45, (70.0, 58.0, 52.0), 1.2)

    def _use_rows(self, where: Placement, length: float, depth: float) -> None:
        """Parallel lines of terraced houses, each with back gardens and a footpath."""
        rng = self.rng
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
                self.paint(_Z_DRIVE, _M_PAVING, self.jitter((166, 160, 150), 0.05), where,
                           self.rect(0, v - 2.6, length / 2, 1.1))
            self._row_line(self._sub(where, 0.0, v), length, d, garden)

    def _row_line(self, front: Placement, length: float, d: float, garden: float) -> None:
        """Rows of touching houses along u, fronts at v=0, gardens from v=d to d+garden."""
        rng = self.rng
        hedges = rng.random() < 0.4
        u = -length / 2 + float(rng.uniform(1, 5))
        while True:
            n = int(rng.integers(3, 10))
            uw = float(rng.uniform(6.0, 9.0)) * math.sqrt(self.plot_scale)
            n = min(n, int((length / 2 - 1.5 - u) / uw))
            if n < 2:
                break
            total = n * uw
            if rng.random() > self.p_build:
                self._scatter_trees(self._sub(front, u + total / 2, d / 2), [], total, d, 3)
                u += total + float(rng.uniform(3, 9))
                continue
            row = self._sub(front, u + total / 2, d / 2, float(rng.normal(0, 0.008)))
            edges = -total / 2 + uw * np.arange(n + 1)
            roof = self.pick({"terracotta": 0.4, "dark_grey": 0.3, "brown": 0.2,
                                   "light_grey": 0.1})
            shape = "gable" if rng.random() < 0.8 else "flat"
            base = self.jitter(ROOF_COLOURS[roof], 0.05)
            height = float(rng.uniform(7, 10))
            for i in range(n):
                u0, u1 = float(edges[i]), float(edges[i + 1])
                unit = np.array([(u0, -d / 2), (u1, -d / 2), (u1, d / 2), (u0, d / 2)])
                uroof, colour = roof, self.jitter(base, 0.05)
                if rng.random() < 0.1:
                    uroof = self.pick({"terracotta": 1, "dark_grey": 1, "brown": 1})
                    colour = self.jitter(ROOF_COLOURS[uroof], 0.05)
                b = self.add_building(row, unit, [((u0 + u1) / 2, 0.0, uw / 2, d / 2, True)],
                                      kind="row", roof=uroof, shape=shape, height=height,
                                      colour=colour)
                if shape == "gable" and rng.random() < 0.25:
                    self.add_detail(b, row, (u0 + u1) / 2 + uw * 0.3, -d / 4, 0.4, 0.4,
                                    (72.0, 60.0, 54.0), 1.0)
                back = self._sub(row, (u0 + u1) / 2, d / 2)  # garden frame, v into garden
                if rng.random() < 0.4:
                    self.paint(_Z_LOT, _M_PAVING, self.jitter((172, 160, 146), 0.08), back,
                               self.rect(0, 1.5, uw / 2 - 0.6, 1.3))
                if hedges and i < n - 1:
                    self.hedge(back, uw / 2, 0.3, uw / 2, garden - 0.5)
                if garden > 6 and rng.random() < 0.1:
                    self.add_building(back, self.rect(0, garden - 2.0, 1.2, 1.2),
                                      [(0, garden - 2.0, 1.2, 1.2, True)], kind="shed",
                                      roof="dark_grey", shape="flat", height=2.5)
                if garden > 3 and rng.random() < 0.5 * self.spec.tree_density:
                    self.add_tree(back, float(rng.uniform(-uw / 2, uw / 2)),
                                  float(rng.uniform(2, garden)), float(rng.uniform(1.5, 3.5)))
            if hedges:
                self.hedge(self._sub(row, 0, d / 2), -total / 2, garden - 0.5, total / 2,
                           garden - 0.5)
            self.paint(_Z_DRIVE, _M_PAVING, self.jitter((160, 154, 146), 0.05), row,
                       self.rect(0, -d / 2 - 1.6, total / 2, 0.9))
            u += total + float(rng.uniform(3, 9))

    def hedge(self, where: Placement, u0: float, v0: float, u1: float, v1: float) -> None:
        """A clipped hedge about 0.9 m wide from (u0, v0) to (u1, v1), with its shadow."""
        length = math.hypot(u1 - u0, v1 - v0)
        if length < 1.0:
            return
        mid = self._sub(where, (u0 + u1) / 2, (v0 + v1) / 2, math.atan2(v1 - v0, u1 - u0))
        pts = self.rect(0, 0, length / 2, 0.45)
        tone = float(self.rng.uniform(0.8, 1.15))
        self.paint(_Z_HEDGE, _M_HEDGE, (52 * tone, 76 * tone, 40 * tone), mid, pts)
        self.casters.add(self.px(mid, pts) + self.shadow * 1.6)

    def _place(self, taken: list[tuple[float, float, float, float]], length: float,
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

    def _big_building(self, where: Placement, taken: list[tuple[float, float, float, float]],
                      length: float, depth: float, size: tuple[float, float, float, float],
                      kind: str, roofs: dict[str, float], flat: float,
                      heights: tuple[float, float]) -> None:
        rng = self.rng
        if rng.random() >= min(1.0, self.spec.building_density):
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
        spot = self._place(taken, length, depth, bu, bv, 8.0)
        if spot is None:
            return
        roof = self.pick(roofs)
        shape = "flat" if rng.random() < flat else ("hip" if rng.random() < 0.6 else "gable")
        height = float(rng.uniform(*heights))
        centre = self._sub(where, spot[0], spot[1], angle)
        t = min(b * 2, 14.0)
        if extra and shape_r < 0.15 and a > 18 and b > 14:  # courtyard block
            hb = b + extra / 2
            t = min(t, hb - 4.0, a - 4.0)
            outline = self.rect(0, 0, a, hb)
            hole = self.rect(0, 0, a - t, hb - t)
            parts = [(0.0, -hb + t / 2, a, t / 2, True), (0.0, hb - t / 2, a, t / 2, True),
                     (-a + t / 2, 0.0, t / 2, hb - t, False), (a - t / 2, 0.0, t / 2, hb - t,
                                                               False)]
            bld = self.add_building(centre, outline, parts, kind=kind, roof=roof, shape=shape,
                                    height=height, holes=[hole])
            for _ in range(int(rng.integers(0, 3) * self.spec.tree_density)):
                self.add_tree(centre, float(rng.uniform(-a + t + 2, a - t - 2)),
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
            bld = self.add_building(centre, outline, parts, kind=kind, roof=roof, shape=shape,
                                    height=height)
        else:
            parts = [(0.0, 0.0, a, b, a >= b)]
            bld = self.add_building(centre, self.rect(0, 0, a, b), parts, kind=kind, roof=roof,
                                    shape=shape, height=height)
        self._roof_details(bld, centre, parts[0])

    def _parking(self, where: Placement, taken: list[tuple[float, float, float, float]],
                 length: float, depth: float, rows: int) -> None:
        rng = self.rng
        stalls = int(rng.integers(4, 16))
        hu, hv = stalls * 1.25 + 1.0, rows * 5.0 / 2 + (3.0 if rows > 1 else 0.0) + 1.0
        spot = self._place(taken, length, depth, hu, hv, 2.0)
        if spot is None:
            return
        lot = self._sub(where, spot[0], spot[1])
        tone = float(rng.uniform(80, 105))
        self.paint(_Z_LOT, _M_ASPHALT, (tone, tone, tone * 1.02), lot, self.rect(0, 0, hu, hv))
        line = (0.5 * tone + 100, 0.5 * tone + 100, 0.5 * tone + 98)
        for r in range(rows):
            vc = -hv + 1.0 + 2.5 + r * (5.0 + 6.0 if rows > 1 else 0.0)
            vc = min(vc, hv - 3.5)
            for i in range(stalls + 1):
                uu = -hu + 1.0 + i * 2.5
                self.paint(_Z_MARK, _M_MARK, line, lot, self.rect(uu, vc, 0.12, 2.3))
                if i < stalls and rng.random() < 0.6:
                    self._car(lot, uu + 1.25, vc, math.pi / 2 + (math.pi if rng.random() < 0.5
                                                                 else 0.0))

    def _scatter_trees(self, where: Placement, taken: list[tuple[float, float, float, float]],
                       length: float, depth: float, n: int) -> None:
        rng = self.rng
        for _ in range(int(n * self.spec.tree_density)):
            u = float(rng.uniform(-length / 2, length / 2))
            v = float(rng.uniform(-depth / 2, depth / 2))
            if not any(t[0] < u < t[2] and t[1] < v < t[3] for t in taken):
                self.add_tree(where, u, v, float(rng.uniform(2, 5)))

    def _use_flats(self, where: Placement, length: float, depth: float) -> None:
        rng = self.rng
        taken: list[tuple[float, float, float, float]] = []
        for _ in range(int(rng.integers(2, 7))):
            self._big_building(where, taken, length, depth, (22, 60, 11, 16), "block",
                               {"light_grey": 0.3, "dark_grey": 0.25, "white": 0.15,
                                "terracotta": 0.2, "brown": 0.1}, 0.6, (12, 24))
        for _ in range(int(rng.integers(1, 4))):
            self._parking(where, taken, length, depth, int(rng.integers(1, 3)))
        self._scatter_trees(where, taken, length, depth, int(length * depth / 180))

    def _use_shops(self, where: Placement, length: float, depth: float) -> None:
        rng = self.rng
        taken: list[tuple[float, float, float, float]] = []
        for _ in range(int(rng.integers(1, 3))):
            self._big_building(where, taken, length, depth, (20, 45, 16, 40), "block",
                               {"light_grey": 0.5, "white": 0.3, "dark_grey": 0.2}, 0.9, (6, 10))
        for _ in range(int(rng.integers(2, 5))):
            self._parking(where, taken, length, depth, 2)
        self._scatter_trees(where, taken, length, depth, int(length * depth / 500))

    def _use_industry(self, where: Placement, length: float, depth: float) -> None:
        rng = self.rng
        taken: list[tuple[float, float, float, float]] = []
        self.paint(_Z_PAD, _M_CONCRETE, self.jitter((168, 165, 158), 0.06), where,
                   self.rect(float(rng.uniform(-5, 5)), 0, length / 2 - rng.uniform(3, 20),
                             depth / 2 - rng.uniform(3, 12)))
        for _ in range(int(rng.integers(1, 5))):
            self._big_building(where, taken, length, depth, (30, 90, 20, 50), "industrial",
                               {"light_grey": 0.45, "white": 0.3, "dark_grey": 0.25}, 0.85,
                               (7, 12))
        for _ in range(int(rng.integers(0, 3))):
            self._parking(where, taken, length, depth, int(rng.integers(1, 3)))
        for _ in range(int(rng.integers(0, 3))):
            hu, hv = float(rng.uniform(5, 15)), float(rng.uniform(5, 12))
            spot = self._place(taken, length, depth, hu, hv, 1.0)
            if spot:
                self.paint(_Z_SOIL, _M_SOIL, self.jitter((140, 120, 92), 0.1), where,
                           self.rect(spot[0], spot[1], hu, hv))
        self._scatter_trees(where, taken, length, depth, int(length * depth / 900))

    def _use_park(self, where: Placement, length: float, depth: float) -> None:
        rng = self.rng
        taken: list[tuple[float, float, float, float]] = []
        gravel = self.jitter((176, 166, 146), 0.05)
        ang = math.atan2(depth, length)
        diag = math.hypot(length, depth) / 2
        self.paint(_Z_DRIVE, _M_GRAVEL, gravel, self._sub(where, 0, 0, ang if rng.random() < 0.5
                                                          else -ang),
                   self.rect(0, 0, diag, 1.2))
        if rng.random() < 0.5:
            self.paint(_Z_DRIVE, _M_GRAVEL, gravel, where, self.rect(0, 0, length / 2, 1.2))
        r = rng.random()
        if r < 0.35:  # sports court: clay or green with white lines
            hu, hv = 18.0, 9.0
            spot = self._place(taken, length, depth, hu, hv, 3.0)
            if spot:
                clay = rng.random() < 0.6
                colour = (164.0, 92.0, 66.0) if clay else (72.0, 122.0, 84.0)
                court = self._sub(where, spot[0], spot[1])
                self.paint(_Z_LOT, _M_CLAY, self.jitter(colour, 0.05), court,
                           self.rect(0, 0, hu, hv))
                white = (215.0, 215.0, 210.0)
                for uu in (-hu + 1, 0.0, hu - 1):
                    self.paint(_Z_MARK, _M_MARK, white, court, self.rect(uu, 0, 0.2, hv - 1))
                for vv in (-hv + 1, hv - 1):
                    self.paint(_Z_MARK, _M_MARK, white, court, self.rect(0, vv, hu - 1, 0.2))
        elif r < 0.6:  # pond
            hu, hv = float(rng.uniform(8, 20)), float(rng.uniform(6, 12))
            spot = self._place(taken, length, depth, hu, hv, 3.0)
            if spot:
                t = np.linspace(0, 2 * math.pi, 20, endpoint=False)
                k = 1.0 + 0.12 * np.sin(3 * t + rng.uniform(0, 6))
                pond = np.stack([hu * k * np.cos(t), hv * k * np.sin(t)], axis=1)
                self.paint(_Z_WATER, _M_WATER, self.jitter((58, 78, 74), 0.08),
                           self._sub(where, spot[0], spot[1]), pond)
        if rng.random() < 0.2:
            self._big_building(where, taken, length, depth, (8, 14, 6, 10), "house",
                               {"terracotta": 0.4, "dark_grey": 0.3, "brown": 0.3}, 0.1, (4, 6))
        for _ in range(int(rng.integers(3, 9) * self.spec.tree_density)):
            cu = float(rng.uniform(-length / 2, length / 2))
            cv = float(rng.uniform(-depth / 2, depth / 2))
            for _ in range(int(rng.integers(4, 18))):
                u = float(np.clip(cu + rng.normal(0, 9), -length / 2, length / 2))
                v = float(np.clip(cv + rng.normal(0, 7), -depth / 2, depth / 2))
                if not any(t[0] < u < t[2] and t[1] < v < t[3] for t in taken):
                    self.add_tree(where, u, v, float(rng.uniform(2.5, 6)))
        self._scatter_trees(where, taken, length, depth, int(length * depth / 400))

    def _use_field(self, where: Placement, length: float, depth: float) -> None:
        rng = self.rng
        colour = (132, 112, 84) if rng.random() < 0.5 else (150, 146, 98)
        self.paint(_Z_SOIL, _M_SOIL, self.jitter(colour, 0.08), where,
                   self.rect(0, 0, length / 2 - 2, depth / 2 - 2))
        u = -length / 2
        while u < length / 2:
            if rng.random() < self.spec.tree_density:
                self.add_tree(where, u, -depth / 2 + 1, float(rng.uniform(1.5, 3.5)))
            u += float(rng.uniform(3, 9))


def _plan(spec: SceneSpec) -> _Plan:
    """Lay out the whole scene as vectors (deterministic in ``spec``)."""
    planner = _Planner(spec)
    planner.plan()
    buildings, footprints = _footprints(spec, planner.buildings)
    del planner.buildings

    attrs = np.frombuffer(planner.paint_attrs, dtype=np.float32).reshape(-1, 5)
    order = np.argsort(attrs[:, 0], kind="stable")
    paints = planner.paints.packed().take(order)
    attrs = attrs[order]
    del planner.paints, planner.paint_attrs

    details = _PolyStore()
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
    keep = ((tree_boxes[:, 2] >= -_HALO) & (tree_boxes[:, 0] <= spec.width + _HALO)
            & (tree_boxes[:, 3] >= -_HALO) & (tree_boxes[:, 1] <= spec.height + _HALO))
    part_count = np.array([len(b.parts) for b in buildings], dtype=np.intp)
    return _Plan(
        spec=spec, footprints=footprints,
        kinds=[b.kind for b in buildings], roofs=[b.roof for b in buildings],
        heights=np.array([b.height for b in buildings], dtype=np.float32),
        shapes=np.array([b.shape for b in buildings], dtype=np.int8),
        colours=np.array([b.colour for b in buildings], dtype=np.float32).reshape(-1, 3),
        building_index=_Index(_pixel_boxes(spec, footprints)),
        part_table=np.array([p for b in buildings for p in b.parts],
                            dtype=np.float64).reshape(-1, 6),
        part_start=np.concatenate([[0], np.cumsum(part_count)[:-1]]).astype(np.intp),
        part_count=part_count,
        paints=paints, paint_z=attrs[:, 0].astype(np.int8),
        paint_material=attrs[:, 1].astype(np.intp), paint_colour=attrs[:, 2:].copy(),
        paint_index=_Index(paints.boxes()),
        casters=casters, caster_index=_Index(casters.boxes()),
        trees=t[keep].copy(), tree_index=_Index(tree_boxes[keep]),
        details=detail_polys, detail_owner=np.array(owner, dtype=np.int32),
        detail_kind=np.array(kind, dtype=np.int8),
        detail_colour=np.array(colour, dtype=np.float32).reshape(-1, 3),
        detail_index=_Index(detail_polys.boxes()),
    )


def _pixel_boxes(spec: SceneSpec, geoms: NDArray[np.object_]) -> FloatArray:
    """Bounding boxes in pixels (xmin, ymin, xmax, ymax) of geometries in map units."""
    minx, miny, maxx, maxy = shapely.bounds(geoms).reshape(-1, 4).T
    g = spec.gsd
    return np.stack([(minx - spec.origin_x) / g, (spec.origin_y - maxy) / g,
                     (maxx - spec.origin_x) / g, (spec.origin_y - miny) / g], axis=1)


def _footprints(spec: SceneSpec, planned: list[_Building]
                ) -> tuple[list[_Building], NDArray[np.object_]]:
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


# -- rendering -------------------------------------------------------------------------


def _hash(xs: NDArray[np.int64], ys: NDArray[np.int64], key: int) -> NDArray[np.uint32]:
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


def _noise(r0: int, r1: int, c0: int, c1: int, cell: int, key: int) -> F32:
    """Smooth value noise in [-1, 1] with features ``cell`` px wide, a function of the
    global pixel position only."""
    ys, xs = np.arange(r0, r1), np.arange(c0, c1)
    iy0, ix0 = r0 // cell, c0 // cell
    lat = _hash(np.arange(ix0, (c1 - 1) // cell + 2)[None, :],
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


def _burn(polys: _Polys, which: NDArray[np.intp], values: NDArray[Any],
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


def _render_block(plan: _Plan, r0: int, r1: int, c0: int, c1: int
                  ) -> tuple[NDArray[np.uint8], NDArray[np.int32]]:
    """Render rows r0:r1, cols c0:c1 (halo included by the caller).

    Returns the (h, w, 3) uint8 image and the (h, w) roof id raster (building index + 1).
    """
    spec = plan.spec
    h, w = r1 - r0, c1 - c0
    seed = spec.seed * 0x9E3779B1

    def keyed(k: int) -> int:
        return (seed + k * 0x85EBCA77) & 0xFFFFFFFF

    fine = _hash(np.arange(c0, c1)[None, :], np.arange(r0, r1)[:, None], keyed(1))
    fine_a = ((fine & np.uint32(0xFF)).astype(np.float32)
              + ((fine >> np.uint32(8)) & np.uint32(0xFF)).astype(np.float32)) / 255.0 - 1.0
    mid = _noise(r0, r1, c0, c1, 5, keyed(2))

    # Ground: grass between green and dry, bare patches, clumpy texture.
    n1 = _noise(r0, r1, c0, c1, 400, keyed(3))
    n2 = _noise(r0, r1, c0, c1, 90, keyed(4))
    n3 = _noise(r0, r1, c0, c1, 24, keyed(5))
    dry = np.clip(0.45 + 0.5 * n1 + 0.3 * n2, 0.0, 1.0)
    bare = np.clip((0.55 * n2 + 0.5 * n3 - 0.6) * 3.0, 0.0, 0.85)
    lush = np.clip(0.5 * n2 + 0.4 * n3, 0.0, 0.6)
    tex = 1.0 + 0.10 * mid + 0.07 * fine_a + 0.05 * n3
    canvas = np.empty((h, w, 3), dtype=np.float32)
    for c in range(3):  # one channel at a time: fewer, cache-friendlier passes
        grass, dry_, lush_, bare_ = (float(v[c]) for v in (_GRASS, _DRY, _LUSH, _BARE))
        band = grass + (dry_ - grass) * dry
        band += (lush_ - band) * lush
        band += (bare_ - band) * bare
        band *= tex
        canvas[..., c] = band
    noises = (mid, fine_a, n3)

    # Painted ground cover.
    sel_paint = plan.paint_index.select(c0, r0, c1, r1)
    raised = plan.paint_z[sel_paint] >= _Z_RAISED
    _paint_polygons(plan, canvas, sel_paint[~raised], c0, r0, noises)

    # Shadows of buildings, cars and trees, soft-edged, bluish, on the ground only.
    sel = plan.caster_index.select(c0, r0, c1, r1)
    shadow = _burn(plan.casters, sel, np.full(len(sel), 255), (h, w), c0, r0, "uint8")
    trees = plan.trees[plan.tree_index.select(c0, r0, c1, r1)]
    _stamp_tree_shadows(plan.spec, trees, shadow, c0, r0)
    if np.any(shadow):
        soft = cv2.GaussianBlur(shadow, (5, 5), 1.0).astype(np.float32) / 255.0
        canvas *= 1.0 - soft[..., None] * (1.0 - _SHADOW_RGB)
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
        _paint_trees(plan, canvas, trees, c0, r0, keyed(6), fine_a)

    canvas = cv2.GaussianBlur(canvas, (3, 3), 0.55).astype(np.float32, copy=False)
    for c, bit in enumerate((16, 21, 26)):  # sensor noise, +-1.5 DN
        noise = ((fine >> np.uint32(bit)) & np.uint32(0x3F)).astype(np.float32)
        noise *= np.float32(3.0 / 63.0)
        canvas[..., c] += noise - np.float32(1.0)  # +0.5 rounds when cast below
    np.clip(canvas, 1.0, 255.0, out=canvas)
    return canvas.astype(np.uint8), ids


def _paint_polygons(plan: _Plan, canvas: F32, which: NDArray[np.intp], c0: int, r0: int,
                    noises: tuple[F32, F32, F32]) -> None:
    """Fill painted polygons in order, then give each its material's texture."""
    if not len(which):
        return
    index = _burn(plan.paints, which, np.arange(1, len(which) + 1), canvas.shape[:2], c0,
                  r0, "int32")
    yy, xx = np.nonzero(index)
    k = which[index[yy, xx] - 1]
    colours = plan.paint_colour
    amp = _TEXTURE[plan.paint_material[k]]
    mid, fine_a, n3 = (n[yy, xx] for n in noises)
    tex = 1.0 + amp[:, 0] * mid + amp[:, 1] * fine_a + amp[:, 2] * n3
    canvas[yy, xx] = colours[k] * tex[:, None]


def _paint_roofs(plan: _Plan, canvas: F32, ids: NDArray[np.int32], r0: int, c0: int,
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


def _paint_details(plan: _Plan, canvas: F32, ids: NDArray[np.int32], c0: int, r0: int,
                   c1: int, r1: int) -> None:
    """Rooftop boxes and their small shadows, only on their own roof."""
    sel = plan.detail_index.select(c0, r0, c1, r1)
    if not len(sel):
        return
    for kind in (0, 1):
        which = sel[plan.detail_kind[sel] == kind]
        if not len(which):
            continue
        index = _burn(plan.details, which, np.arange(1, len(which) + 1), ids.shape, c0, r0,
                      "int32")
        owner = np.concatenate([[0], plan.detail_owner[which]]).astype(np.int32)[index]
        yy, xx = np.nonzero((owner == ids) & (index > 0))
        k = which[index[yy, xx] - 1]
        if kind == 0:
            canvas[yy, xx] *= plan.detail_colour[k, :1]
        else:
            canvas[yy, xx] = plan.detail_colour[k]


def _patch(x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
    """An integer pixel window around a float box; a function of the box alone."""
    ox, oy = math.floor(x0) - 1, math.floor(y0) - 1
    return ox, oy, math.ceil(x1) + 2 - ox, math.ceil(y1) + 2 - oy


def _fx(v: float) -> int:
    """A pixel coordinate (pixel i spans [i, i+1)) in cv2's fixed point (centres at ints)."""
    return round((v - 0.5) * _ONE)


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


def _stamp_tree_shadows(spec: SceneSpec, trees: FloatArray, shadow: NDArray[np.uint8],
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
        cv2.ellipse(patch, centre, (round(big * _ONE), round(r * _ONE)), angle, 0,
                    360, 255, -1, cv2.LINE_8, _SHIFT)
        cv2.line(patch, (_fx(x - ox), _fx(y - oy)), centre, 255, 1, cv2.LINE_8, _SHIFT)
        _paste(shadow, patch, ox, oy, c0, r0, "max")


def _paint_trees(plan: _Plan, canvas: F32, trees: FloatArray, c0: int, r0: int, key: int,
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
    leaf = _noise(r0, r0 + h, c0, c0 + w, 3, key)
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
    canvas[yy, xx] = _TREE_TONES[tone[yy, xx] - 1] * shade[:, None]


# -- writing ---------------------------------------------------------------------------


def _profile(spec: SceneSpec) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": spec.width, "height": spec.height, "count": 3,
        "dtype": "uint8", "crs": CRS.from_user_input(spec.crs), "transform": spec.transform,
        "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
        "predictor": 2, "photometric": "RGB", "interleave": "pixel", "BIGTIFF": "IF_SAFER",
    }
    if spec.nodata_border > 0:
        profile["nodata"] = 0
    return profile


def _write_vector(frame: gpd.GeoDataFrame, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix not in VECTOR_FORMATS:
        raise ConfigError(f"cannot tell the vector format of {path.name!r}: use one of "
                          f"{', '.join(sorted(VECTOR_FORMATS))}")
    driver, layer = VECTOR_FORMATS[suffix]
    if driver == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError("writing GeoParquet needs pyarrow: pip install pyarrow "
                              "(or write .gpkg instead)") from None
        frame.to_parquet(path)
        return
    frame.to_file(path, driver=driver, layer=layer, engine="pyogrio")


def _remove(path: Path) -> None:
    """Delete ``path`` and, for a shapefile, its sidecar files."""
    sidecars = (".shx", ".dbf", ".prj", ".cpg") if path.suffix.lower() == ".shp" else ()
    for p in [path, *(path.with_suffix(s) for s in sidecars)]:
        p.unlink(missing_ok=True)


def _footprints_frame(plan: _Plan) -> gpd.GeoDataFrame:
    """The planned footprints as a GeoDataFrame (id, kind, roof, roof_shape, height_m)."""
    return gpd.GeoDataFrame(
        {
            "id": np.arange(1, len(plan.kinds) + 1, dtype=np.int64),
            "kind": plan.kinds,
            "roof": plan.roofs,
            "roof_shape": [ROOF_SHAPES[x] for x in plan.shapes],
            "height_m": np.round(plan.heights.astype(np.float64), 1),
        },
        geometry=plan.footprints, crs=plan.spec.crs,
    )


def make_scene(tif_path: str | os.PathLike[str], vector_path: str | os.PathLike[str],
               spec: SceneSpec) -> SceneSummary:
    """Generate a synthetic aerial scene: an RGB GeoTIFF and its building footprints.

    The raster is 3-band uint8, tiled 256 px, deflate + horizontal predictor; the
    footprints go to ``vector_path`` in the raster's CRS, format chosen by extension
    (.gpkg with layer ``buildings``, .geojson, .shp, .fgb, .parquet). Existing files are
    replaced; a failed or interrupted run removes what it had written.
    """
    tif_path, vector_path = Path(tif_path), Path(vector_path)
    if vector_path.suffix.lower() not in VECTOR_FORMATS:
        raise ConfigError(f"cannot tell the vector format of {vector_path.name!r}: use one "
                          f"of {', '.join(sorted(VECTOR_FORMATS))}")
    for p in (tif_path, vector_path):
        if not p.parent.is_dir():
            raise OutputError(f"output folder {p.parent} does not exist; create it first")
    start = time.perf_counter()
    plan = _plan(spec)
    log.info("planned %d buildings, %d trees in %.1fs", len(plan.kinds), len(plan.trees),
             time.perf_counter() - start)
    partial = tif_path.with_name(tif_path.name + ".partial")
    try:
        _write_raster(plan, partial)
        _remove(vector_path)
        _write_vector(_footprints_frame(plan), vector_path)
        os.replace(partial, tif_path)
    except BaseException:  # Ctrl-C included: leave no half-written output behind
        partial.unlink(missing_ok=True)
        _remove(vector_path)
        raise
    log.info("wrote %s and %s in %.1fs", tif_path, vector_path, time.perf_counter() - start)
    return SceneSummary(
        tif_path=tif_path, vector_path=vector_path, n_buildings=len(plan.kinds),
        n_trees=len(plan.trees), width=spec.width, height=spec.height, crs=spec.crs,
        bounds=spec.bounds,
    )


def _write_raster(plan: _Plan, path: Path) -> None:
    spec = plan.spec
    bs = spec.block_size
    # Bounded GDAL block cache (bytes; rasterio takes an int): the written tiles are
    # flushed as it fills instead of piling up in memory. rasterize() also uses it, and
    # slows down badly when it is smaller than one block.
    cache = max(128 << 20, 16 * bs * bs * 4)
    valid_w = spec.width - spec.nodata_border
    n_blocks = math.ceil(spec.height / bs) * math.ceil(spec.width / bs)
    done = 0
    with rasterio.Env(GDAL_CACHEMAX=cache), rasterio.open(path, "w", **_profile(spec)) as dst:
        # Say how the raster was made (the spec regenerates it).
        dst.update_tags(GEOTILER_SYNTHETIC=json.dumps(dataclasses.asdict(spec), sort_keys=True))
        for r0 in range(0, spec.height, bs):
            r1 = min(spec.height, r0 + bs)
            for c0 in range(0, spec.width, bs):
                c1 = min(spec.width, c0 + bs)
                hr0, hc0 = max(0, r0 - _HALO), max(0, c0 - _HALO)
                hr1, hc1 = min(spec.height, r1 + _HALO), min(spec.width, c1 + _HALO)
                rgb, _ = _render_block(plan, hr0, hr1, hc0, hc1)
                block = rgb[r0 - hr0:r1 - hr0, c0 - hc0:c1 - hc0]
                if c1 > valid_w:
                    block[:, max(0, valid_w - c0):] = 0
                dst.write(np.ascontiguousarray(block.transpose(2, 0, 1)),
                          window=Window(c0, r0, c1 - c0, r1 - r0))
                done += 1
                log.debug("block %d/%d rendered", done, n_blocks)

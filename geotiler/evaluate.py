"""Compare predicted buildings with reference footprints.

``PRED`` is a mask GeoTIFF (non-zero = building; its nodata, if any, is left out) or a
polygon layer (``buildings`` if the file has it, else its first layer). ``TRUTH`` is any
footprint layer in any CRS: it is reprojected to the prediction's CRS and repaired.

Metrics (counts are summed over the grid block by block, then scored once; the pixel and
boundary helpers are :mod:`geotiler.metrics`, shared with training):

* pixel IoU, precision, recall, F1 of the building class, on the mask's grid, or for a
  polygon layer on ``raster``'s grid (default: the ``{stem}_mask.tif`` that ``predict``
  wrote beside it; without any grid the pixel scores are skipped);
* per-building precision, recall and F1: predicted and true polygons matched one to one,
  greedily by IoU descending, pairs with IoU >= 0.5 (the SpaceNet metric; candidate
  pairs from an STRtree). A mask is polygonized first (touching buildings merge);
* boundary F-score at ``tolerance`` metres (converted to pixels with the grid's GSD);
* the seed's four scores: pixel accuracy, mean accuracy, mean IoU and frequency-weighted
  IoU over the two classes.

Only the evaluated extent counts: truth polygons whose representative point falls outside
the grid (or, without a grid, outside the prediction layer's bounds) are ignored.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from geotiler.errors import InputError, OutputError
from geotiler.io import first_line, ground_gsd, load_footprints, open_raster
from geotiler.metrics import BoundaryCounts, Confusion, boundary_counts, confusion
from geotiler.polygons import PolygonOptions, polygonize_tiled, to_map
from geotiler.predict.plan import Rect, plan_blocks

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")
DEFAULT_LAYER = "buildings"


@dataclass
class PixelMetrics:
    tp: int
    fp: int
    fn: int
    tn: int
    iou: float
    precision: float
    recall: float
    f1: float
    pixel_accuracy: float
    mean_accuracy: float
    mean_iou: float
    fw_iou: float

    @classmethod
    def from_confusion(cls, c: Confusion) -> PixelMetrics:
        seed = c.seed_scores()
        return cls(c.tp, c.fp, c.fn, c.tn, c.iou, c.precision, c.recall, c.f1,
                   seed["pixel_accuracy"], seed["mean_accuracy"], seed["mean_iou"],
                   seed["fw_iou"])


@dataclass
class BoundaryMetrics:
    tolerance_m: float
    tolerance_px: float
    precision: float
    recall: float
    f_score: float

    @classmethod
    def from_counts(cls, b: BoundaryCounts, tolerance_m: float, tolerance_px: float
                    ) -> BoundaryMetrics:
        return cls(tolerance_m, tolerance_px, b.precision, b.recall, b.f_score)


@dataclass
class BuildingMetrics:
    predicted: int
    truth: int
    matched: int
    precision: float
    recall: float
    f1: float
    mean_iou: float  # over matched pairs
    iou_threshold: float


@dataclass
class EvalReport:
    pred: str
    truth: str
    crs: str
    grid: str | None  # the raster whose grid the pixel scores use
    pixels: PixelMetrics | None
    boundary: BoundaryMetrics | None
    buildings: BuildingMetrics
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def format_table(self) -> str:
        """A readable summary (what the CLI prints)."""
        rows: list[tuple[str, str]] = []
        b = self.buildings
        rows += [("buildings: predicted / truth / matched",
                  f"{b.predicted} / {b.truth} / {b.matched}"),
                 (f"building precision (IoU >= {b.iou_threshold:g})", f"{b.precision:.4f}"),
                 ("building recall", f"{b.recall:.4f}"),
                 ("building F1", f"{b.f1:.4f}"),
                 ("mean IoU of matched buildings", f"{b.mean_iou:.4f}")]
        if self.pixels is not None:
            p = self.pixels
            rows += [("pixel IoU", f"{p.iou:.4f}"), ("pixel precision", f"{p.precision:.4f}"),
                     ("pixel recall", f"{p.recall:.4f}"), ("pixel F1", f"{p.f1:.4f}"),
                     ("pixel accuracy (seed)", f"{p.pixel_accuracy:.4f}"),
                     ("mean accuracy (seed)", f"{p.mean_accuracy:.4f}"),
                     ("mean IoU (seed)", f"{p.mean_iou:.4f}"),
                     ("frequency-weighted IoU (seed)", f"{p.fw_iou:.4f}")]
        if self.boundary is not None:
            d = self.boundary
            rows.append((f"boundary F-score ({d.tolerance_m:g} m = {d.tolerance_px:g} px)",
                         f"{d.f_score:.4f}"))
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# --- per-building matching ------------------------------------------------------------------

def match_buildings(pred: np.ndarray, truth: np.ndarray, iou_threshold: float = 0.5
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matches of polygons at IoU >= ``iou_threshold``, greedy by IoU descending.

    Returns (pred indexes, truth indexes, IoUs) of the matched pairs.
    """
    empty = (np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp), np.empty(0))
    if len(pred) == 0 or len(truth) == 0:
        return empty
    tree = shapely.STRtree(pred)
    t_idx, p_idx = tree.query(truth, predicate="intersects")
    if len(t_idx) == 0:
        return empty
    a, b = pred[p_idx], truth[t_idx]
    inter = shapely.area(shapely.intersection(a, b))
    union = shapely.area(a) + shapely.area(b) - inter
    iou = np.divide(inter, union, out=np.zeros(len(inter)), where=union > 0)
    keep = iou >= iou_threshold
    p_idx, t_idx, iou = p_idx[keep], t_idx[keep], iou[keep]
    order = np.argsort(-iou, kind="stable")
    used_p: set[int] = set()
    used_t: set[int] = set()
    out_p, out_t, out_iou = [], [], []
    for k in order:
        p, t = int(p_idx[k]), int(t_idx[k])
        if p in used_p or t in used_t:
            continue
        used_p.add(p)
        used_t.add(t)
        out_p.append(p)
        out_t.append(t)
        out_iou.append(float(iou[k]))
    return np.array(out_p, dtype=np.intp), np.array(out_t, dtype=np.intp), np.array(out_iou)


def building_metrics(pred: np.ndarray, truth: np.ndarray, iou_threshold: float = 0.5
                     ) -> BuildingMetrics:
    """SpaceNet-style per-building precision, recall and F1 (0 where undefined)."""
    p_idx, _, iou = match_buildings(pred, truth, iou_threshold)
    n_pred, n_truth, matched = len(pred), len(truth), len(p_idx)
    precision = matched / n_pred if n_pred else 0.0
    recall = matched / n_truth if n_truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return BuildingMetrics(n_pred, n_truth, matched, precision, recall, f1,
                           float(iou.mean()) if matched else 0.0, iou_threshold)


# --- inputs ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Grid:
    """A raster's pixel grid, and how to read a prediction mask or validity from it."""

    path: Path
    crs: CRS
    transform: Affine
    width: int
    height: int
    nodata: float | None
    is_mask: bool  # the prediction itself (else only its grid and validity are used)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return rasterio.transform.array_bounds(self.height, self.width, self.transform)[:4]

    def rect_bounds(self, rect: Rect) -> tuple[float, float, float, float]:
        t = self.transform * Affine.translation(rect.col0, rect.row0)
        return rasterio.transform.array_bounds(rect.height, rect.width, t)

    def read(self, src: rasterio.DatasetReader, rect: Rect) -> tuple[np.ndarray, np.ndarray]:
        """(building, valid) booleans of a rectangle of the grid."""
        window = Window(rect.col0, rect.row0, rect.width, rect.height)
        if self.is_mask:
            data = src.read(1, window=window)
            valid = (data != self.nodata) if self.nodata is not None else np.ones(
                data.shape, dtype=bool)
            return (data != 0) & valid, valid
        valid = src.dataset_mask(window=window) > 0
        return np.zeros(valid.shape, dtype=bool), valid


def open_grid(path: Path, is_mask: bool) -> Grid:
    with open_raster(path) as src:
        if src.crs is None:
            raise InputError(f"raster {path} has no CRS; assign one with gdal_edit.py -a_srs")
        if src.transform.b != 0 or src.transform.d != 0:
            raise InputError(f"raster {path} has a rotated grid; warp it north-up first")
        return Grid(path, src.crs, src.transform, src.width, src.height,
                    src.nodata if is_mask else None, is_mask)


def read_polygons(path: Path) -> tuple[np.ndarray, CRS]:
    """Polygons of a prediction layer (``buildings`` or the first layer), repaired."""
    if not path.exists():
        raise InputError(f"prediction {path} does not exist")
    try:
        layers = [name for name, _ in pyogrio.list_layers(path)]
        layer = DEFAULT_LAYER if DEFAULT_LAYER in layers else (layers[0] if layers else None)
        frame = gpd.read_file(path, layer=layer)
    except Exception as err:  # pyogrio raises several types; the message is what matters
        raise InputError(f"cannot read prediction {path}: {first_line(err)}") from None
    if frame.crs is None:
        raise InputError(f"prediction {path} has no CRS; set one with ogr2ogr -a_srs")
    geoms = np.asarray(frame.geometry.values, dtype=object)
    geoms = geoms[~shapely.is_missing(geoms)]
    geoms = geoms[~shapely.is_empty(geoms)]
    bad = ~shapely.is_valid(geoms)
    if bad.any():
        geoms = geoms.copy()
        geoms[bad] = shapely.make_valid(geoms[bad])
    return _polygons_only(geoms), CRS.from_user_input(frame.crs.to_wkt())


def _polygons_only(geoms: np.ndarray) -> np.ndarray:
    """Single polygons: multipolygons split, non-polygonal parts dropped."""
    if len(geoms) == 0:
        return np.empty(0, dtype=object)
    parts = shapely.get_parts(geoms)
    parts = shapely.get_parts(parts)  # collections inside make_valid results
    kind = shapely.get_type_id(parts)
    polys = parts[kind == 3]
    multi = parts[kind == 6]
    if len(multi):
        polys = np.concatenate([polys, shapely.get_parts(multi)])
    return np.asarray(polys[~shapely.is_empty(polys)], dtype=object)


def _to_crs(geoms: np.ndarray, src: CRS, dst: CRS) -> np.ndarray:
    if len(geoms) == 0 or src == dst:
        return geoms
    series = gpd.GeoSeries(geoms, crs=src.to_wkt()).to_crs(dst.to_wkt())
    return np.asarray(series.values, dtype=object)


def _inside(geoms: np.ndarray, bounds: tuple[float, float, float, float]) -> np.ndarray:
    if len(geoms) == 0:
        return geoms
    pts = shapely.get_coordinates(shapely.point_on_surface(geoms))
    x, y = pts[:, 0], pts[:, 1]
    left, bottom, right, top = bounds
    return geoms[(x >= left) & (x < right) & (y > bottom) & (y <= top)]


# --- pixel scores ---------------------------------------------------------------------------

def _rasterize(tree: shapely.STRtree, geoms: np.ndarray, grid: Grid, rect: Rect) -> np.ndarray:
    bounds = grid.rect_bounds(rect)
    hits = tree.query(shapely.box(*bounds))
    if len(hits) == 0:
        return np.zeros(rect.shape, dtype=bool)
    t = grid.transform * Affine.translation(rect.col0, rect.row0)
    burnt = rasterio.features.rasterize(((g, 1) for g in geoms[hits]), out_shape=rect.shape,
                                        transform=t, fill=0, dtype="uint8")
    return burnt > 0


def _blocks(grid: Grid, block: int) -> Iterator[Rect]:
    plan = plan_blocks(grid.height, grid.width, 1, 0, block)
    for i, j in plan.indexes:
        yield plan.core(i, j)


def pixel_counts(grid: Grid, truth: np.ndarray, pred: np.ndarray | None, tolerance_px: float,
                 block: int = 2048) -> tuple[Confusion, BoundaryCounts]:
    """Confusion and boundary counts over the grid, block by block (with a halo for the
    boundary tolerance). ``pred`` polygons are rasterized unless the grid is the mask."""
    truth_tree = shapely.STRtree(truth)
    pred_tree = shapely.STRtree(pred) if pred is not None else None
    halo = math.ceil(tolerance_px) + 2
    total, edges = Confusion(), BoundaryCounts()
    with rasterio.open(grid.path) as src:
        for core in _blocks(grid, block):
            region = core.grow(halo, grid.height, grid.width)
            building, valid = grid.read(src, region)
            if pred_tree is not None and pred is not None:
                building = _rasterize(pred_tree, pred, grid, region)
            truth_mask = _rasterize(truth_tree, truth, grid, region)
            in_core = np.zeros(region.shape, dtype=bool)
            in_core[core.row0 - region.row0:core.row1 - region.row0,
                    core.col0 - region.col0:core.col1 - region.col0] = True
            counted = in_core & valid
            total = total + confusion(building, truth_mask, counted)
            edges = edges + boundary_counts(building, truth_mask, tolerance_px, counted)
    return total, edges


# --- the whole evaluation -------------------------------------------------------------------

def evaluate(pred: Path | str, truth: Path | str, raster: Path | str | None = None, *,
             tolerance: float = 1.0, iou_threshold: float = 0.5, block: int = 2048,
             halo: int = 256) -> EvalReport:
    """Score ``pred`` (mask GeoTIFF or polygon layer) against the footprints ``truth``.

    ``raster``: the grid for pixel scores when ``pred`` is polygons. ``tolerance``: boundary
    F-score tolerance in metres. ``block``/``halo``: pixels per block (memory) and the
    polygonization halo when a mask has to be polygonized.
    """
    pred_path, truth_path = Path(pred), Path(truth)
    notes: list[str] = []
    is_mask = pred_path.suffix.lower() in RASTER_SUFFIXES
    grid: Grid | None
    if is_mask:
        grid = open_grid(pred_path, is_mask=True)
        crs = grid.crs
        pred_geoms = mask_polygons(grid, block, halo)
        if raster is not None:
            notes.append("PRED is a mask: --raster is not needed and was ignored")
    else:
        pred_geoms, pred_crs = read_polygons(pred_path)
        sibling = pred_path.with_name(f"{pred_path.stem}_mask.tif")
        if raster is not None:
            grid = open_grid(Path(raster), is_mask=False)
        elif sibling.exists():
            grid = open_grid(sibling, is_mask=False)
            notes.append(f"pixel scores on the grid of {sibling.name}")
        else:
            grid = None
            notes.append("no raster grid (give --raster): pixel and boundary scores skipped")
        crs = grid.crs if grid is not None else pred_crs
        pred_geoms = _to_crs(pred_geoms, pred_crs, crs)

    footprints = load_footprints(truth_path)
    truth_geoms = _polygons_only(footprints.to_crs(crs))
    if footprints.repaired:
        notes.append(f"{footprints.repaired} invalid truth polygon(s) repaired")
    if grid is not None:
        extent = grid.bounds
    elif len(pred_geoms):
        extent = tuple(shapely.total_bounds(pred_geoms))
    else:
        extent = tuple(shapely.total_bounds(truth_geoms))
    truth_all = truth_geoms  # pixels: everything on the grid counts, even cut buildings
    n_all = len(truth_geoms)
    truth_geoms = _inside(truth_geoms, extent)
    if n_all and not len(truth_geoms):
        raise InputError(
            f"no footprint of {truth_path} lies on {pred_path} (after reprojecting to "
            f"{crs.to_string()}); are they of the same area?"
        )
    if n_all > len(truth_geoms):
        notes.append(f"{n_all - len(truth_geoms)} truth polygon(s) outside the extent ignored")

    pixels = boundary = None
    if grid is not None:
        gsd = math.sqrt(math.prod(ground_gsd(grid.crs, grid.transform, grid.width,
                                             grid.height)))
        tolerance_px = tolerance / gsd
        conf, edges = pixel_counts(grid, truth_all, None if grid.is_mask else pred_geoms,
                                   tolerance_px, block)
        pixels = PixelMetrics.from_confusion(conf)
        boundary = BoundaryMetrics.from_counts(edges, tolerance, round(tolerance_px, 3))
    pred_geoms = _inside(pred_geoms, extent)
    buildings = building_metrics(pred_geoms, truth_geoms, iou_threshold)
    return EvalReport(str(pred_path), str(truth_path), crs.to_string(),
                      str(grid.path) if grid is not None else None,
                      pixels, boundary, buildings, notes)


def save_report(report: EvalReport, path: Path | str, overwrite: bool = False) -> Path:
    """Write the report as JSON (temp name in the same directory, then rename)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; use --overwrite to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
        tmp.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def mask_polygons(grid: Grid, block: int = 2048, halo: int = 256) -> np.ndarray:
    """The buildings of a mask GeoTIFF as polygons on the map, block by block."""
    with rasterio.open(grid.path) as src:

        def read(rect: Rect) -> tuple[np.ndarray, None]:
            building, _ = grid.read(src, rect)
            return building, None

        found = polygonize_tiled(read, grid.height, grid.width, block=block, halo=halo,
                                 options=PolygonOptions(grow=0))
    return to_map(found.geoms, grid.transform)

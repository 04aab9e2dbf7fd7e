"""Plan a tile dataset and finish it: everything around the per-shard work.

:func:`plan_tiling` checks the inputs, builds each raster's grid, splits the tiles and cuts
them into :class:`~geotiler.tiles.task.ShardSpec` s, each with the few footprints it can touch.
:func:`prepare_output` makes the output directory safe to write (or resumable: an earlier
run's shards are reused only when the inputs have the same SHA-256, whatever their size and
mtime say), and :func:`finish_dataset` writes ``index.gpkg`` and ``dataset.json`` from the
shard results, or refuses a run that kept no tile, naming why. Execution of the shards
belongs to :mod:`pipelines.tile`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from geotiler import __version__
from geotiler.atomic import write_json_atomic
from geotiler.errors import ConfigError, InputError
from geotiler.io import (
    RasterInfo,
    describe_remote,
    given_twice,
    open_raster_info,
    source_digest,
    source_label,
    source_size,
)
from geotiler.tiles.config import SPLITS, TileConfig, TileReport
from geotiler.tiles.grid import (
    TileGrid,
    assign_splits,
    check_tile_gsds,
    guard_raster_overlaps,
    make_grid,
    tile_gsd,
)
from geotiler.tiles.index import write_index
from geotiler.tiles.outdir import discard_dataset, prepare_output, record_digests, source_digests
from geotiler.tiles.schema import (
    DATASET_FILE,
    FORMAT_VERSION,
    INDEX_FILE,
    DatasetInfo,
)
from geotiler.tiles.shards import SHARD_DIR
from geotiler.tiles.task import ShardResult, ShardSpec
from geotiler.vectors import load_footprints, osm_defaults

log = logging.getLogger(__name__)


@dataclass
class TilingPlan:
    """The whole dataset, decided before any pixel is read."""

    config: TileConfig
    rasters: list[RasterInfo]
    grids: list[TileGrid]
    footprints_path: Path
    shards: list[ShardSpec]
    shard_geoms: list[np.ndarray]
    report: TileReport = field(default_factory=TileReport)
    footprints_layer: str | None = None  # the layer and OGR SQL filter the footprints came
    footprints_where: str | None = None  # from (None: the file's default)

    @property
    def gsd(self) -> float:
        """Target ground sample distance in metres (of the first raster: all agree within
        2 %, checked by :func:`plan_tiling`)."""
        return tile_gsd(self.rasters[0], self.grids[0])

    def write_to(self, out_dir: Path) -> None:
        """Write the shards under ``out_dir`` instead (a replacement being staged,
        :func:`~geotiler.tiles.outdir.prepare_output`); names and contents unchanged."""
        self.shards = [dataclasses.replace(spec, path=Path(out_dir) / SHARD_DIR / spec.path.name)
                       for spec in self.shards]

    @property
    def input_paths(self) -> list[Path | str]:
        """The rasters, then the footprints."""
        return [info.path for info in self.rasters] + [self.footprints_path]

    @functools.cached_property
    def fingerprint(self) -> dict[str, Any]:
        """What must match, besides the inputs' SHA-256 (:func:`record_digests`), for a rerun
        to reuse finished shards. Computed once per run: a remote raster's identity costs a
        HEAD request, and dataset.json's source entries reuse it."""
        return {
            "config": self.config.to_dict(),
            "sources": [_stat(r.path) for r in self.rasters],
            "footprints": _stat(self.footprints_path) | self.footprints_selection(),
        }

    def footprints_selection(self) -> dict[str, str]:
        chosen = {"layer": self.footprints_layer, "where": self.footprints_where}
        return {k: v for k, v in chosen.items() if v is not None}

def _stat(path: Path | str) -> dict[str, Any]:
    """A source's identity for resuming besides its SHA-256: path and size; a remote
    raster's URL, size and ETag (one HEAD request, nothing downloaded)."""
    if isinstance(path, str):
        return describe_remote(path).to_dict()
    return {"path": str(path.resolve()), "size": source_size(path)}


def _unique_names(rasters: list[RasterInfo]) -> list[RasterInfo]:
    """Rasters with distinct names (tile keys start with them)."""
    seen: dict[str, int] = {}
    result = []
    for info in rasters:
        name = info.name
        if name in seen:
            seen[name] += 1
            name = f"{name}-{seen[name]}"
        else:
            seen[name] = 0
        result.append(info if name == info.name else dataclasses.replace(info, name=name))
    return result


def plan_tiling(
    rasters: Sequence[Path | str],
    footprints: Path | str,
    out_dir: Path | str,
    config: TileConfig,
    *,
    require_footprints: bool = False,
    footprints_layer: str | None = None,
    footprints_where: str | None = None,
) -> TilingPlan:
    """Check the inputs and decide every tile, split and shard.

    ``footprints_layer``/``footprints_where``: the footprints' layer and OGR SQL filter
    (:func:`geotiler.vectors.load_footprints`); rasters may be remote (``https://``, ``s3://``).
    """
    if not rasters:
        raise InputError("give at least one raster")
    twice = given_twice(rasters)
    if twice:
        raise ConfigError(f"raster {twice} is given twice: its tiles would count double")
    infos = _unique_names([open_raster_info(p, config.bands) for p in rasters])
    first = infos[0]
    for info in infos[1:]:
        if len(info.bands) != len(first.bands) or info.dtype != first.dtype:
            raise InputError(
                f"rasters must share band count and dtype to form one dataset: "
                f"{first.path} has {len(first.bands)} x {first.dtype}, "
                f"{info.path} has {len(info.bands)} x {info.dtype}"
            )
    grids = [make_grid(info, config) for info in infos]
    check_tile_gsds(infos, grids)
    fp = load_footprints(footprints, layer=footprints_layer, where=footprints_where)
    report = TileReport(invalid_repaired=fp.repaired)
    if fp.repaired:
        log.info("repaired %d invalid footprint polygon(s) with make_valid", fp.repaired)
    if fp.dropped:
        log.warning("%d footprint feature(s) of %s are empty or not polygons (points, "
                    "lines) and are ignored", fp.dropped, fp.path)

    splits = assign_splits([(i.name, g) for i, g in zip(infos, grids, strict=True)], config)
    splits = guard_raster_overlaps([(g, i.crs) for i, g in zip(infos, grids, strict=True)],
                                   splits)
    shard_dir = Path(out_dir) / SHARD_DIR
    pad = config.contour_width + 1
    counters = dict.fromkeys(SPLITS, 0)
    shards: list[ShardSpec] = []
    shard_geoms: list[np.ndarray] = []
    used = np.zeros(len(fp.geoms), dtype=bool)
    by_crs: dict[str, np.ndarray] = {}
    unmatched: list[str] = []  # a warning per raster without footprints
    for info, grid, labels in zip(infos, grids, splits, strict=True):
        crs_text = info.crs.to_string()
        if crs_text not in by_crs:
            by_crs[crs_text] = fp.to_crs(info.crs)
        geoms = by_crs[crs_text]
        tree = shapely.STRtree(geoms)
        overlapping = tree.query(shapely.box(*info.bounds), predicate="intersects")
        used[overlapping] = True
        if overlapping.size == 0:
            message = (
                f"no footprint of {fp.path} overlaps raster {source_label(info.path)} "
                f"(footprints in {fp.crs.to_string()}, raster in {crs_text}; "
                f"raster bounds {tuple(round(b, 3) for b in info.bounds)})"
            )
            if require_footprints:
                raise InputError(message)
            unmatched.append(message)
        report.skipped_overlap_guard += int(np.count_nonzero(labels == ""))
        for split in SPLITS:
            rows, cols = np.nonzero(labels == split)
            positions = list(zip(rows.tolist(), cols.tolist(), strict=True))
            for start in range(0, len(positions), config.shard_size):
                chunk = positions[start : start + config.shard_size]
                boxes = shapely.box(*np.array([grid.bounds(r, c, pad=pad) for r, c in chunk]).T)
                hits = np.unique(tree.query(boxes, predicate="intersects")[1])
                shards.append(ShardSpec(
                    path=shard_dir / f"{split}-{counters[split]:06d}.tar",
                    split=split,
                    raster=info,
                    grid=grid,
                    positions=chunk,
                    crs_text=crs_text,
                ))
                shard_geoms.append(geoms[hits])
                counters[split] += 1
    if len(unmatched) == len(infos):  # footprints in a wrong CRS, or of another area
        where = (unmatched[0] if len(infos) == 1 else
                 f"no footprint of {fp.path} overlaps any of the {len(infos)} rasters "
                 f"(footprints in {fp.crs.to_string()})")
        raise InputError(f"{where}: the tiles would hold no building to learn from; check "
                         "the footprints' CRS and area")
    for message in unmatched:
        log.warning("%s; its tiles will have empty masks", message)
    report.footprints_outside = int((~used).sum())
    if report.footprints_outside:
        log.info("%d footprint(s) lie outside every raster and are ignored",
                 report.footprints_outside)
    return TilingPlan(config, infos, grids, Path(footprints), shards, shard_geoms, report,
                      footprints_layer, footprints_where)


def _read_selection(plan: TilingPlan) -> dict[str, str]:
    """The layer and filter the footprints were read with, an OSM extract's defaults
    included (``--footprints-layer``/``--footprints-where`` as given are in the
    fingerprint)."""
    layer, where = osm_defaults(plan.footprints_path, plan.footprints_layer,
                                plan.footprints_where)
    return {k: v for k, v in (("layer", layer), ("where", where)) if v is not None}


def no_tiles_error(plan: TilingPlan, split: str | None = None) -> InputError:
    """Why a run kept no tile (``split``: no tile of that split), for the one-line error
    that ends it."""
    report, config = plan.report, plan.config
    causes = [
        (report.skipped_nodata, f"{report.skipped_nodata} had more than --max-nodata "
         f"{config.max_nodata:g} of their pixels invalid (nodata, alpha, mask or NaN)"),
        (report.skipped_selection, f"{report.skipped_selection} training tile(s) were left "
         f"out by --min-building-fraction {config.min_building_fraction:g} / --keep-empty "
         f"{config.keep_empty:g}"),
        (report.skipped_overlap_guard, f"{report.skipped_overlap_guard} overlapped tiles of "
         "another split"),
    ]
    found = [text for count, text in sorted(causes, key=lambda c: -c[0]) if count]
    sources = ", ".join(str(info.path) for info in plan.rasters)
    what = f"no {split} tile" if split else "no tile"
    return InputError(f"{what} of {sources} was kept: " + ("; ".join(found) or "none planned")
                      + "; nothing was written")


def finish_dataset(
    out_dir: Path | str,
    plan: TilingPlan,
    results: Sequence[ShardResult],
    *,
    digests: dict[Path | str, str | None] | None = None,
) -> DatasetInfo:
    """Write ``index.gpkg`` and, last, ``dataset.json`` (which marks the dataset finished).

    ``digests`` maps source paths to their SHA-256 when the caller computed them already;
    missing ones are computed here (None for remote rasters: their URL, size and ETag are
    recorded instead).

    Raises:
        InputError: no tile was kept (the shards and ``config.json`` are removed, and the
            message says which setting or input dropped the tiles).
    """
    digests = dict(digests or {})
    for path in plan.input_paths:
        if path not in digests:
            digests[path] = source_digest(path)
    out = Path(out_dir)
    report = plan.report
    records = [record for result in results for record in result.records]
    for result in results:
        report.skipped_nodata += result.skipped_nodata
        report.skipped_selection += result.skipped_selection
    if not records:
        discard_dataset(out)
        raise no_tiles_error(plan)
    for split in SPLITS:
        report.tiles[split] = sum(1 for r in records if r["split"] == split)
    if plan.config.split[0] > 0 and not report.tiles["train"]:
        # Nothing to train on, and no band statistics to normalize with.
        discard_dataset(out)
        raise no_tiles_error(plan, "train")
    empty = [s for s, f in zip(SPLITS[1:], plan.config.split[1:], strict=True)
             if f > 0 and not report.tiles[s]]
    if empty:
        log.warning("no %s tile was kept (%d tiles in all): a split block is %d x %d tiles "
                    "(--block-tiles), too big for this scene, or the held-out tiles were "
                    "dropped; use a smaller --block-tiles, or hold out a whole scene instead",
                    " or ".join(empty), len(records), plan.config.block_tiles,
                    plan.config.block_tiles)
    report.buildings = sum(r["building_count"] for r in records)
    write_index(out / INDEX_FILE, plan.rasters, records)

    count = sum(r.band_count for r in results)
    total = np.sum([r.band_sum for r in results], axis=0) if results else np.zeros(1)
    sq = np.sum([r.band_sqsum for r in results], axis=0) if results else np.zeros(1)
    n_bands = len(plan.rasters[0].bands)
    if count:
        mean = total / count
        std = np.sqrt(np.maximum(sq / count - mean**2, 0.0))
    else:
        mean, std = np.zeros(n_bands), np.ones(n_bands)
    std = np.where(std > 0, std, 1.0)
    first = plan.rasters[0]
    crs_set = {r.crs.to_string() for r in plan.rasters}
    info = DatasetInfo(
        tile_size=plan.config.size,
        gsd=round(plan.gsd, 6),
        bands=list(first.bands),
        band_names=list(first.band_names),
        dtype=first.dtype,
        mean=[round(float(m), 6) for m in mean],
        std=[round(float(s), 6) for s in std],
        mask_channels=list(plan.config.mask_channels),
        target=plan.config.target,
        counts=dict(report.tiles),
        config=plan.config.to_dict(),
        sources=[
            _source_entry(r, g, records, digests[r.path], stat)
            for r, g, stat in zip(plan.rasters, plan.grids, plan.fingerprint["sources"],
                                  strict=True)
        ],
        crs=crs_set.pop() if len(crs_set) == 1 else None,
        format_version=FORMAT_VERSION,
        extra={
            "geotiler_version": __version__,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "footprints": {
                "path": str(plan.footprints_path.resolve()),
                "size_bytes": source_size(plan.footprints_path),
                "sha256": digests[plan.footprints_path],
                **_read_selection(plan),
                "repaired": report.invalid_repaired,
                "outside_rasters": report.footprints_outside,
            },
            "buildings": report.buildings,
            "skipped": {
                "nodata": report.skipped_nodata,
                "selection": report.skipped_selection,
                "overlap_guard": report.skipped_overlap_guard,
            },
            "shards": sorted({r["shard"] for r in records}),
        },
    )
    write_json_atomic(out / DATASET_FILE, info.to_json())
    return info


def _source_entry(
    info: RasterInfo, grid: TileGrid, records: list[dict[str, Any]], digest: str | None,
    stat: dict[str, Any],
) -> dict[str, Any]:
    """dataset.json's entry of one raster; ``stat`` is its :func:`_stat` from the plan's
    fingerprint (for a remote raster: URL, size and ETag, asked once)."""
    if isinstance(info.path, str):  # remote: identified by URL, size and ETag, not hashed
        identity = {"path": stat["url"], "size_bytes": stat["size"], "etag": stat["etag"],
                    "sha256": None}
    else:
        identity = {"path": str(info.path), "size_bytes": info.path.stat().st_size,
                    "sha256": digest}
    return {
        "name": info.name,
        **identity,
        "crs": info.crs.to_string(),
        "width": info.width,
        "height": info.height,
        "native_gsd": [round(g, 6) for g in info.gsd],
        "grid": {"rows": grid.rows, "cols": grid.cols, "pixel": list(grid.pixel)},
        "tiles": sum(1 for r in records if r["source"] == info.name),
    }


__all__ = ["TilingPlan", "finish_dataset", "plan_tiling", "prepare_output", "record_digests",
           "source_digests"]

"""What ``geotiler train`` checks of its tile datasets, and decides from them, before any
network is built: every listed shard is there, the tiles hold buildings, and whether the
wall weights (:func:`trainer.losses.wall_weight`) apply to them.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from geotiler.errors import ConfigError, DatasetError
from geotiler.tiles.schema import INDEX_FILE, DatasetInfo
from geotiler.tiles.shards import list_shards
from trainer.config import DEFAULT_WALL_WEIGHT, TrainConfig

log = logging.getLogger(__name__)


def check_shards(tiles_dir: Path, info: DatasetInfo) -> None:
    """DatasetError naming the shards that ``dataset.json`` lists but that are missing or
    unfinished (no tar or no records file): training on the rest would quietly use fewer
    tiles than the dataset holds."""
    listed = info.extra.get("shards")
    if not isinstance(listed, list):
        return  # written before datasets listed their shards
    present = {path.name for path in list_shards(tiles_dir)}
    missing = [name for name in listed if name not in present]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                          else "")
        raise DatasetError(
            f"{tiles_dir}: {len(missing)} shard(s) listed in dataset.json are missing or "
            f"incomplete ({shown}); copy them back or re-run geotiler tile"
        )


def check_buildings(tiles_dirs: list[Path], infos: list[DatasetInfo]) -> None:
    """DatasetError when not one of the datasets holds a building: the usual result of
    footprints that miss the raster (another CRS or another area), which ``geotiler
    tile`` only warns about; training on it would "succeed" with val IoU 0 and a model
    that finds nothing. Datasets written before the count was recorded pass."""
    counts = [info.extra.get("buildings") for info in infos]
    if all(isinstance(n, int) and n == 0 for n in counts):
        names = ", ".join(str(d) for d in tiles_dirs)
        raise DatasetError(
            f"no building in the tiles of {names} (0 footprints drawn): nothing to learn. "
            "Check that the footprints cover the raster (their CRS and extent) and tile again"
        )


def with_wall_weight(config: TrainConfig, info: DatasetInfo) -> TrainConfig:
    """``config`` with its wall weight decided: :data:`DEFAULT_WALL_WEIGHT` for the plain
    U-Net on footprint + contour tiles, 0 for anything else; an explicit weight where it
    cannot apply is a ConfigError. The reach defaults to the tiles' contour width."""
    applies = config.arch == "unet" and list(info.mask_channels) == ["footprint", "contour"]
    weight = config.wall_weight
    if weight is None:
        weight = DEFAULT_WALL_WEIGHT if applies else 0.0
    elif weight and not applies:
        raise ConfigError(
            "--wall-weight needs the plain U-Net (--arch unet) on footprint + contour "
            f"tiles; these have {', '.join(info.mask_channels)} (tile with "
            "--contour-width > 0 and the default --target masks)")
    reach = config.wall_reach
    if weight and reach is None:
        reach = max(1, int((info.config or {}).get("contour_width", 3)))
    return dataclasses.replace(config, wall_weight=weight, wall_reach=reach)


def warn_init_mismatch(init: str, start: DatasetInfo, info: DatasetInfo) -> None:
    """Warn when the ``--init`` model's tiles differ from this run's in what the weights
    cannot see: another GSD (its features start at another scale), or the same number of
    bands in another order (e.g. BGR tiles from RGB weights)."""
    if not 0.8 < start.gsd / info.gsd < 1.25:
        log.warning("--init %s was trained on %g m tiles, these are %g m: its features start "
                    "at another scale (measured: no gain from the 1 m synthetic weights on "
                    "0.25 m tiles, README)", init, start.gsd, info.gsd)
    if start.band_names and info.band_names and start.band_names != info.band_names:
        log.warning("--init %s was trained on bands %s, these tiles have %s (used by "
                    "position)", init, ",".join(start.band_names), ",".join(info.band_names))


def warn_shared_ground(tiles_dirs: list[Path]) -> None:
    """Warn when a val or test tile of one dataset covers ground that another dataset
    trains on (the same area tiled twice, e.g. two zoom levels or dates): val IoU and the
    choice of the best epoch would see trained-on pixels. Tiles overlapping by more than
    1 % of their area count; datasets without ``index.gpkg`` are skipped."""
    if len(tiles_dirs) < 2:
        return
    import geopandas as gpd
    import numpy as np

    indexes = [(d, gpd.read_file(d / INDEX_FILE, layer="tiles"))
               for d in tiles_dirs if (d / INDEX_FILE).is_file()]
    for held_dir, held in indexes:
        held = held[held["split"].isin(["val", "test"])]
        for train_dir, other in indexes:
            if train_dir == held_dir or held.empty:
                continue
            train = other[other["split"] == "train"].to_crs(held.crs)
            left, right = train.sindex.query(held.geometry, predicate="intersects")
            shared = held.geometry.values[left].intersection(train.geometry.values[right])
            big = np.asarray(shared.area) > 0.01 * np.asarray(held.geometry.values[left].area)
            if big.any():
                log.warning("%d val/test tile(s) of %s cover ground that %s trains on: "
                            "their scores would be optimistic (tile overlapping rasters in "
                            "one `geotiler tile` run, which keeps their splits apart)",
                            len(set(left[big])), held_dir, train_dir)

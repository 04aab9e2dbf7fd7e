"""``geotiler tile``: rasters + building footprints -> georeferenced tile shards.

Options take their defaults from :class:`geotiler.tiles.config.TileConfig`; the command
builds that config and hands it to :func:`pipelines.tile.run_tiling` on the Dask scheduler
chosen by ``--scheduler``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import click

from geotiler.cli.options import (
    Finite,
    layer_options,
    overwrite_option,
    progress_option,
    scheduler_options,
)
from geotiler.tiles.config import (
    COMPRESSIONS,
    TARGETS,
    TILE_SIZES,
    TileConfig,
    parse_bands,
    parse_split,
)

log = logging.getLogger("geotiler")

_TILE = TileConfig()


def _parse_or_none(parser: Callable[[str], Any], value: str | None) -> Any:
    return None if value is None else parser(value)


def _one_footprints(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
                    ) -> str:
    """The one --footprints given (click would keep the last of several silently)."""
    if len(values) > 1:
        raise click.BadParameter(
            f"given {len(values)} times; give one file with the footprints of every raster "
            "(merge several, e.g. with ogrmerge.py -single)", param_hint="'--footprints'")
    return values[0]


@click.command()
@click.argument("rasters", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--footprints", "-f", required=True, type=click.Path(path_type=str),
              multiple=True, callback=_one_footprints,
              help="Building polygons (GPKG, GeoJSON, Shapefile, GeoParquet, OpenStreetMap "
              ".osm/.osm.pbf; any CRS): one file for all the rasters.")
@layer_options("footprints", "footprints")
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(path_type=str),
              help="Dataset directory to create (or to finish, if an identical run stopped).")
@click.option("--size", type=int, default=_TILE.size, show_default=True,
              help=f"Tile width and height in pixels ({TILE_SIZES[0]}-{TILE_SIZES[1]}). To "
              "train on them, a multiple of 2^levels of the U-Net: 32 for the small preset, "
              "256 for the full one.")
@click.option("--overlap", type=int, default=_TILE.overlap, show_default=True,
              help="Pixels shared by neighbouring tiles.")
@click.option("--gsd", type=Finite(), default=None,
              help="Target ground sample distance in metres per pixel (works for geographic "
              "CRSs too). Default: the raster's own.")
@click.option("--scale", type=Finite(), default=None,
              help="Resample factor instead of --gsd: output pixel = input pixel x SCALE "
              "(2.64 turns 675 px crops into 256 px tiles, as the seed method did).")
@click.option("--bands", default=None, metavar="1,2,3",
              help="Band numbers to keep (1-based). Default: every band that is not alpha.")
@click.option("--contour-width", type=int, default=_TILE.contour_width, show_default=True,
              help="Thickness in pixels of the building outlines drawn onto the contour mask "
              "(0: none, the channel stays empty: the 'no contours' baseline of the "
              "README's ablation).")
@click.option("--target", type=click.Choice(TARGETS), default=_TILE.target, show_default=True,
              help="'masks': footprint + contour channels; 'seed-rgb': the seed method's RGB "
              "target (white buildings, green outlines, blurred).")
@click.option("--seed-blur", type=int, default=_TILE.seed_blur, show_default=True,
              help="Gaussian blur kernel (odd px) of the seed-rgb target; 0 for none.")
@click.option("--max-nodata", type=Finite(), default=_TILE.max_nodata, show_default=True,
              help="Skip tiles with a larger fraction of invalid pixels (nodata, alpha, mask, "
              "NaN), counted over the part of the tile on the raster (edge padding does not "
              "count).")
@click.option("--min-building-fraction", type=Finite(), default=_TILE.min_building_fraction,
              show_default=True,
              help="Skip training tiles whose building pixels are less than this fraction "
              "(0-1) of the tile.")
@click.option("--keep-empty", type=Finite(), default=_TILE.keep_empty, show_default=True,
              help="Fraction of building-free training tiles to keep.")
@click.option("--split", default=",".join(str(s) for s in _TILE.split), show_default=True,
              metavar="TRAIN,VAL,TEST", help="Fractions of spatial blocks per split.")
@click.option("--block-tiles", type=int, default=_TILE.block_tiles, show_default=True,
              help="Side of a split block in tiles (tiles of one block share a split).")
@click.option("--shard-size", type=int, default=_TILE.shard_size, show_default=True,
              help="Tiles per shard file.")
@click.option("--seed", type=int, default=_TILE.seed, show_default=True,
              help="Seed of the split and of the empty-tile selection.")
@click.option("--compress", type=click.Choice(list(COMPRESSIONS)),
              default=_TILE.compress, show_default=True,
              help="Compression of tile GeoTIFFs (deflate for GDAL older than 2.3).")
@click.option("--overviews/--no-overviews", default=_TILE.overviews, show_default=True,
              help="Read at a coarser --gsd from the raster's own overviews (faster, and far "
              "fewer bytes from a remote COG), at the price of tiles that depend on how the "
              "overviews were resampled.")
@click.option("--require-footprints", is_flag=True,
              help="Fail (instead of warning) when a raster has no footprint on it.")
@overwrite_option("Replace an existing dataset in --out (kept until the new one is finished).")
@progress_option
@scheduler_options
def tile(rasters: tuple[str, ...], footprints: str, out_dir: str, split: str,
         bands: str | None, scheduler: str, workers: int | None, overwrite: bool,
         require_footprints: bool, progress: bool, footprints_layer: str | None,
         footprints_where: str | None, **options: Any) -> None:
    """Cut RASTERS and their building FOOTPRINTS into georeferenced tile shards.

    Each tile is a GeoTIFF pair (image + masks: footprint and contour outlines) inside
    OUT/shards/{split}-NNNNNN.tar; OUT/index.gpkg shows every tile in QGIS and
    OUT/dataset.json describes the dataset for `geotiler train`. Rasters are read window
    by window, so any size works; RASTERS may be https:// or s3:// URLs (cloud-optimized
    GeoTIFFs are read by range requests). Rerunning the same command finishes an
    interrupted run.

    \b
    Examples:
      geotiler tile sample_data/area.tif --footprints sample_data/buildings.gpkg --out tiles/
      geotiler tile https://example.com/scene.tif -f extract.osm.pbf -o tiles/
    """
    from pipelines.cluster import start_client
    from pipelines.tile import is_large_job

    config = TileConfig(
        split=parse_split(split),
        bands=_parse_or_none(parse_bands, bands),
        **options,
    )
    # A local cluster starts (its workers importing what a tiling task needs) while the
    # rest of the pipeline is imported and the job planned.
    with start_client(scheduler, workers, large=is_large_job(rasters, config),
                      preload=("geotiler.tiles.task",)) as client:
        from pipelines.tile import run_tiling

        report = run_tiling(
            rasters, footprints, out_dir, config, client=client, workers=workers,
            overwrite=overwrite, require_footprints=require_footprints,
            progress=progress and log.isEnabledFor(logging.INFO),
            footprints_layer=footprints_layer, footprints_where=footprints_where,
        )
    t = report.tiles
    click.echo(
        f"{sum(t.values())} tiles (train {t['train']}, val {t['val']}, test {t['test']}) with "
        f"{report.buildings} footprints drawn (a building cut by tile edges counts once "
        f"per tile) in {out_dir} in {report.seconds:.1f}s; "
        f"skipped {report.skipped_nodata} mostly-nodata, {report.skipped_selection} by "
        f"selection, {report.skipped_overlap_guard} at split borders; "
        f"{report.shards_written} shard(s) written, {report.shards_reused} reused"
    )

"""Tiling: rasters + footprints -> georeferenced tile shards (``geotiler tile``).

One module per job:

- :mod:`~geotiler.tiles.config` -- :class:`TileConfig`, every tiling default, and the run report;
- :mod:`~geotiler.tiles.grid` -- tile grid at the target GSD, spatial train/val/test split;
- :mod:`~geotiler.tiles.masks` / :mod:`~geotiler.tiles.contours` -- footprint rasterization
  and the contour enhancement (and the seed method's RGB target);
- :mod:`~geotiler.tiles.geotiff` -- small georeferenced GeoTIFF members (encode/decode);
- :mod:`~geotiler.tiles.shards` -- the tar shards (WebDataset layout): write, list, read;
- :mod:`~geotiler.tiles.task` -- one shard's work: read strips, rasterize, select, write;
- :mod:`~geotiler.tiles.plan` -- plan a run (rasters, grids, splits, shard specs) and finish it
  (``index.gpkg``, ``dataset.json``);
- :mod:`~geotiler.tiles.outdir` -- the output directory: made safe, resumed only for inputs
  of the same content (SHA-256), or discarded;
- :mod:`~geotiler.tiles.schema` -- the ``dataset.json`` contract read by training.

Nothing here knows Dask: :mod:`pipelines.tile` maps :func:`task.write_shard` over the shards.
"""

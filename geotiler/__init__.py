"""geotiler: GeoTIFFs and building footprints in, georeferenced tile shards, a segmentation
model and building polygons out.

Layout (imports flow down: ``cli`` -> ``pipelines`` -> ``trainer`` -> the library below;
nothing here imports click except :mod:`geotiler.cli`, nothing imports Dask except
:mod:`pipelines`):

- :mod:`geotiler.cli` -- the Click commands, one module per command, shared options;
- :mod:`geotiler.tiles` -- ``geotiler tile``: config, grid & splits, masks & contours, tile
  GeoTIFFs, shards, the per-shard task, planning, the ``dataset.json`` schema;
- :mod:`geotiler.predict` -- ``geotiler predict``: config, block plan, blending, the model
  grid, the job, the block steps, the COG/GeoPackage outputs;
- :mod:`geotiler.evaluate` -- ``geotiler evaluate``: pixel, per-building and boundary scores;
- :mod:`geotiler.instances` -- footprint + contour probabilities -> one label per building;
- :mod:`geotiler.polygons` -- labelled blocks -> polygons, each building once;
- :mod:`geotiler.metrics` -- confusion and boundary counts shared by training and evaluate;
- :mod:`geotiler.io` -- rasters in (windows, GSD, remote sources, digests);
- :mod:`geotiler.vectors` -- footprints and polygon layers in (layers, filters,
  OpenStreetMap extracts);
- :mod:`geotiler.remote` -- rasters over HTTPS and S3 (GDAL paths, one-line errors, ETags);
- :mod:`geotiler.styles` -- default QGIS styles of the outputs;
- :mod:`geotiler.progress` -- the one progress convention (bar, log lines, nothing);
- :mod:`geotiler.atomic` -- the one write-then-rename helper;
- :mod:`geotiler.device`, :mod:`geotiler.errors`, :mod:`geotiler.quicklook`,
  :mod:`geotiler.synthetic` (our own labelled scenes: sample data, tests, benchmarks).
"""

__version__ = "0.1.0"

"""Dask graphs over the library, and the cluster they run on.

- :mod:`pipelines.tile` -- ``geotiler tile``: one task per shard (plus the job-size guess that
  picks threads or processes, and WKB transport of footprints to workers);
- :mod:`pipelines.predict` -- ``geotiler predict``: infer/finalize/polygonize per block, the
  forward-pass thread and the per-worker model plugin;
- :mod:`pipelines.cluster` -- opening and closing the scheduler named by ``--scheduler``;
- :mod:`pipelines.progress` -- Dask work counted into :mod:`geotiler.progress`;
- :mod:`pipelines.demo` -- ``geotiler demo``: tile, train, predict, evaluate, quick-look.

The functions mapped here never know Dask exists (they live in :mod:`geotiler` and
:mod:`trainer`); libraries never start clusters, the CLI does.
"""

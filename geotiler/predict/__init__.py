"""Prediction: a raster and a model -> probabilities, a mask and building polygons.

The model is only seen through the :class:`~geotiler.predict.config.Predictor` protocol (a
batch of source-dtype windows and their validity -> probabilities), so everything here is
plain numpy/GDAL and is tested with synthetic predictors; :mod:`trainer.inference` adapts a
model file to it and :mod:`pipelines.predict` runs the steps as a Dask graph.

One module per job:

- :mod:`~geotiler.predict.config` -- :class:`PredictConfig` (every ``geotiler predict``
  default), :class:`~geotiler.predict.config.ModelInfo` and the ``Predictor`` protocol, the
  output formats' constants;
- :mod:`~geotiler.predict.plan` -- windows over the grid grouped into blocks, each window
  run once (also used by evaluation and polygonizing; holds ``BLOCK_PX``/``HALO_PX``);
- :mod:`~geotiler.predict.blend` -- Hann/linear window weights, the weighted sums of a
  block's windows, its core and spills, sums to uint8 probabilities;
- :mod:`~geotiler.predict.grid` -- the model grid over a raster (at the model's GSD, by the
  tiler's rule in :mod:`geotiler.tiles.grid`);
- :mod:`~geotiler.predict.job` -- :func:`~geotiler.predict.job.prepare`: check the inputs
  and outputs, plan the blocks, make the work directory;
- :mod:`~geotiler.predict.blocks` -- the per-block steps: infer, finalize (block files),
  settle (Otsu), polygonize;
- :mod:`~geotiler.predict.outputs` -- the COGs (through a VRT of the block files) and the
  GeoPackage, renamed into place at once (:func:`~geotiler.predict.outputs.finish`), or
  removed (:func:`~geotiler.predict.outputs.abort`).

This package's ``__init__`` imports only the light config (the CLI reads its defaults for
``geotiler --help``, which must load neither torch nor OpenCV); import the steps from their
modules.
"""

from geotiler.device import DEVICES
from geotiler.predict.config import COG_COMPRESSION, TTA_MODES, WINDOW_KINDS, PredictConfig

__all__ = ["COG_COMPRESSION", "DEVICES", "TTA_MODES", "WINDOW_KINDS", "PredictConfig"]

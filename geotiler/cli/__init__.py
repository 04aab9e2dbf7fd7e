"""The ``geotiler`` command line: thin Click commands over the library.

Laid out like rasterio's ``rasterio/rio/``, one module per job:

* :mod:`geotiler.cli.main` -- the ``geotiler`` group and the console script's entry point
  (:func:`main`): ``-v``/``-q`` become the log level (the only place logging handlers are
  configured), and library errors (:mod:`geotiler.errors`) become a one-line ``Error: ...``
  with exit 1 (bad settings and usage: exit 2; Ctrl-C: exit 130 after the library has
  removed its partial files);
* :mod:`geotiler.cli.options` -- options shared by several commands (``--overwrite``,
  ``--progress/--no-progress``, ``--scheduler``/``--workers``, ``--device``), declared once;
* :mod:`geotiler.cli.tile`, :mod:`~geotiler.cli.train`, :mod:`~geotiler.cli.predict`,
  :mod:`~geotiler.cli.evaluate`, :mod:`~geotiler.cli.demo` -- one command each. A command
  validates its flags, builds its config (option defaults come from the config dataclass),
  makes one library or pipeline call and reports.

Heavy imports (torch, cv2, dask, geopandas, rasterio) happen inside the command bodies, so
``geotiler --help`` stays instant.
"""

from geotiler.cli.main import main

__all__ = ["main"]

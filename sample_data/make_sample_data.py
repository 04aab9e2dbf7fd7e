"""Regenerate the repository's sample data: ``area.tif`` and ``buildings.gpkg``.

Usage::

    python sample_data/make_sample_data.py [OUT_DIR]

OUT_DIR defaults to this script's folder. The output is deterministic: the same
geotiler version writes the same pixels and the same footprints (see README.md here).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from geotiler.synthetic import SAMPLE_SPEC, SceneSummary, make_scene

HERE = Path(__file__).resolve().parent

__all__ = ["SAMPLE_SPEC", "make_sample_data"]


def make_sample_data(out_dir: Path = HERE) -> SceneSummary:
    """Write ``area.tif`` and ``buildings.gpkg`` into ``out_dir``."""
    return make_scene(out_dir / "area.tif", out_dir / "buildings.gpkg", SAMPLE_SPEC)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    out_dir = Path(argv[0]) if argv else HERE
    summary = make_sample_data(out_dir)
    logging.info("%d buildings in %s, raster %s", summary.n_buildings, summary.vector_path,
                 summary.tif_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Synthetic aerial scenes: an RGB GeoTIFF and the building footprints that match it.

Why: tests, demos and benchmarks need imagery whose ground truth is exact, that anyone can
regenerate, and that looks enough like a 0.5 m orthophoto (roads, trees, shadows, touching
row houses, grey things that are not buildings) that a segmentation model has to learn
something real from it.

How: :func:`make_scene` first *plans* the whole scene as vectors (a road grid rotated by a
random angle, blocks with a land use each, plots, buildings, trees, cars), using one seeded
random generator, so the plan never depends on how the raster is written. It then *renders*
the raster block by block (``SceneSpec.block_size`` pixels square, plus a small halo),
drawing only the objects whose bounding box meets the block. Every per-pixel texture is a
hash of the pixel's global position, so a block renders the same pixels whatever the block
size: memory stays bounded and the output is byte-identical for a given spec.

Roofs are burnt with GDAL (:func:`rasterio.features.rasterize`) from the very polygons that
are written to the vector file, with vertices on a dyadic grid, so rasterizing the footprint
file onto the raster's grid gives exactly the roof pixels (trees may still overhang them,
as in real imagery).

Layout, one job per module:

* :mod:`~geotiler.synthetic.spec` -- :class:`SceneSpec` (every default), :data:`SAMPLE_SPEC`,
  the roof vocabulary, :class:`SceneSummary`;
* :mod:`~geotiler.synthetic.palette` -- materials, their textures, paint order and colours;
* :mod:`~geotiler.synthetic.shapes` -- pixel geometry: the fixed-point vertex grid, packed
  polygons, the bounding-box index, the planned-building record;
* :mod:`~geotiler.synthetic.sketch` -- :class:`~geotiler.synthetic.sketch.Sketch`, the scene
  under construction: the seeded generator, the grid frame and the things placed so far;
* :mod:`~geotiler.synthetic.streets` -- the road grid and the land use of each block;
* :mod:`~geotiler.synthetic.houses` -- detached, semi-detached and terraced houses, rooftop
  details;
* :mod:`~geotiler.synthetic.lots` -- flats, shops, industry, parking, parks and fields;
* :mod:`~geotiler.synthetic.plan` -- the finished layout as packed, indexed vectors and the
  clipped footprints;
* :mod:`~geotiler.synthetic.noise` -- position-keyed hash and value noise;
* :mod:`~geotiler.synthetic.render` -- one block of pixels from the plan;
* :mod:`~geotiler.synthetic.trees` -- tree crowns and tree shadows;
* :mod:`~geotiler.synthetic.scene` -- :func:`make_scene`: plan, render and write the GeoTIFF
  (through :func:`geotiler.atomic.atomic_path`) and the footprints.
"""

from geotiler.synthetic.scene import VECTOR_FORMATS, make_scene
from geotiler.synthetic.spec import (
    ROOF_COLOURS,
    ROOF_SHAPES,
    SAMPLE_SPEC,
    SceneSpec,
    SceneSummary,
)

__all__ = [
    "ROOF_COLOURS",
    "ROOF_SHAPES",
    "SAMPLE_SPEC",
    "VECTOR_FORMATS",
    "SceneSpec",
    "SceneSummary",
    "make_scene",
]

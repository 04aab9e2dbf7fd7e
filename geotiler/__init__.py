"""geotiler: GeoTIFFs and building footprints in, georeferenced tile shards, a segmentation
model and building polygons out."""

__version__ = "0.1.0"

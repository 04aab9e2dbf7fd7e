"""The outputs of ``geotiler predict``, written from the block files once every block is done.

:func:`finish` writes, side by side, the cloud-optimized GeoTIFFs (tiled 512 px, zstd or
deflate, overviews; through a VRT mosaic of the block files, :func:`write_geotiff`) and
``buildings.gpkg`` (layer ``buildings``, the saved block polygons streamed one block at a time,
:func:`write_gpkg`), each under a temporary name (:func:`geotiler.atomic.atomic_path`), then
renames every output into place at once. :func:`abort` removes the temporaries of a failed
run. Neither the pixels nor the polygons of the whole raster are ever in memory.

Outputs
    ``{stem}_prob.tif``: one uint8 band per model channel (probability x 255).
    ``{stem}_mask.tif``: uint8, 1 = building (footprint >= threshold), 0 = not; 255 =
    nodata where the raster has nodata. ``{out}``: polygons with ``area_m2`` and ``score``
    (mean footprint probability inside).

Each GeoTIFF names its bands (band descriptions: the model's channels, ``building``) and
records ``GEOTILER_VERSION``, ``MODEL`` and ``TIFFTAG_SOFTWARE`` in its metadata besides the
full ``geotiler_predict`` JSON. So that they look right in QGIS (:mod:`geotiler.styles`),
``{out}`` carries a default style in its ``layer_styles`` table (outlines coloured by score)
and each GeoTIFF a ``.qml`` sidecar (probability ramp, red mask).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from xml.sax.saxutils import escape

import numpy as np
import pyogrio
import pyogrio.raw
import rasterio
import rasterio.shutil
import shapely
from affine import Affine

from geotiler import __version__
from geotiler.atomic import atomic_path, partial_path, write_text_atomic
from geotiler.errors import InputError
from geotiler.predict.blocks import BlockStats, MapPolygons, overview_factors
from geotiler.predict.config import (
    COG_COMPRESSION,
    COG_OPTIONS,
    GDAL_CACHE_BYTES,
    LAYER,
    MASK_NODATA,
    OVERVIEW_RESAMPLING,
)
from geotiler.predict.job import PredictJob
from geotiler.styles import (
    add_layer_style,
    buildings_qml,
    buildings_sld,
    mask_qml,
    probability_qml,
    sidecar_path,
)
from geotiler.vectors import GPKG_OPTIONS

T = TypeVar("T")


@dataclass
class PredictReport:
    """What a run did: its outputs, the model grid (px), work counts and timings (s)."""

    raster: str
    outputs: list[str]
    grid: tuple[int, int]  # width, height of the model grid
    gsd: float
    blocks: int
    windows: int
    windows_run: int
    buildings: int
    building_fraction: float
    seconds: float
    threshold: float = 0.5  # the footprint threshold used (Otsu's with --otsu)
    precision: str = "fp32"  # the network's arithmetic (resolved: fp32 or bf16)
    timings: dict[str, float] = field(default_factory=dict)


class GeoTiffOutput(NamedTuple):
    """One output GeoTIFF: which block files, band names, nodata, final path."""

    kind: str  # "prob" or "mask"; also picks the overview resampling
    names: Sequence[str]
    nodata: int | None
    path: Path


def geotiff_outputs(job: PredictJob) -> list[GeoTiffOutput]:
    """The output GeoTIFFs of a job: probabilities (unless switched off) and the mask."""
    outputs = [GeoTiffOutput("mask", ["building"],
                             MASK_NODATA if job.grid.has_nodata else None,
                             job.outputs.mask)]
    if job.config.probabilities:
        outputs.insert(0, GeoTiffOutput("prob", job.model.channels, None,
                                        job.outputs.prob))
    return outputs


def _mask_band(job: PredictJob, scale: int, open_options: str) -> str:
    """A per-dataset mask (VRT ``<MaskBand>``) from the mask block files: 0 where the mask
    holds :data:`MASK_NODATA` (the raster's nodata), 255 elsewhere. It gives the
    probability GeoTIFF, whose 0..255 values leave no nodata value free, GDAL's internal
    mask: QGIS draws nodata areas transparent and statistics leave them out."""
    sources = _block_sources(job, "mask", 1, scale, open_options, "ComplexSource",
                             f"<LUT>0:255,{MASK_NODATA - 1}:255,{MASK_NODATA}:0</LUT>")
    return f'<MaskBand><VRTRasterBand dataType="Byte">{sources}</VRTRasterBand></MaskBand>'


def _block_sources(job: PredictJob, kind: str, band: int, scale: int, open_options: str,
                   element: str = "SimpleSource", extra: str = "") -> str:
    """The VRT sources placing band ``band`` of every block file of ``kind`` on the grid
    (at 1 / ``scale`` of its resolution), as ``element`` with ``extra`` XML inside."""
    sources = []
    for i, j in job.plan.indexes:
        core = job.plan.core(i, j)
        w, h = math.ceil(core.width / scale), math.ceil(core.height / scale)
        x, y = core.col0 // scale, core.row0 // scale
        sources.append(
            f'<{element}><SourceFilename relativeToVRT="1">'
            f"{job.block_file(kind, (i, j)).name}</SourceFilename>{open_options}"
            f"<SourceBand>{band}</SourceBand>"
            f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
            f'<DstRect xOff="{x}" yOff="{y}" xSize="{w}" ySize="{h}"/>{extra}</{element}>')
    return "".join(sources)


def write_geotiff(job: PredictJob, output: GeoTiffOutput, staging: Path) -> None:
    """One cloud-optimized GeoTIFF from the block files, at ``staging``. Where the blocks
    carry no overviews (:func:`~geotiler.predict.blocks.overview_factors`), GDAL makes
    them the same way."""
    vrt = _vrt(job, output.kind, output.names, output.nodata)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):  # bytes: rasterio passes ints on
        rasterio.shutil.copy(vrt, staging, driver="COG",
                             RESAMPLING=OVERVIEW_RESAMPLING[output.kind].upper(),
                             **COG_OPTIONS, **COG_COMPRESSION[job.config.compress])


def write_gpkg(job: PredictJob, staging: Path) -> int:
    """The buildings GeoPackage from the saved block polygons, streamed one block at a time
    through one open dataset (:func:`stream_polygons`); returns how many buildings."""
    blocks = (MapPolygons.load(job.block_file("poly", index).with_suffix(".npz"))
              for index in job.plan.indexes)
    # the mask's path relative to the GeoPackage, for evaluate to score pixels on its grid
    # wherever --raster-out put it
    mask = os.path.relpath(job.outputs.mask, job.outputs.gpkg.parent)
    buildings = stream_polygons(staging, blocks, job.grid.crs_wkt,
                                {**_metadata(job), "mask": mask})
    add_layer_style(staging, LAYER, buildings_qml(), buildings_sld(LAYER),
                    "geotiler buildings by score",
                    "building outlines coloured by score (mean footprint probability)")
    return buildings


def stream_polygons(path: Path, blocks: Iterable[MapPolygons], crs_wkt: str,
                    meta: dict[str, Any] | None = None) -> int:
    """Write the ``buildings`` layer of a new GeoPackage from ``blocks``; returns how many
    polygons (none: a valid empty layer).

    Fields ``area_m2`` (m², 3 decimals) and ``score`` (0-1, 4 decimals) are Real, the
    geometry Polygon; ``meta`` goes into the layer metadata as ``geotiler_predict`` JSON.
    The blocks stream as Arrow record batches through one open dataset
    (``pyogrio.raw.write_arrow``): one block in memory at a time, and none of the cost of
    reopening the file and building a GeoDataFrame per block that one append per block
    had (148k polygons in 64 blocks: see benchmarks/bench_gpkg.py).
    """
    import pyarrow as pa

    schema = pa.schema([("area_m2", pa.float64()), ("score", pa.float64()),
                        ("geometry", pa.binary())])
    written = 0

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal written
        for block in blocks:
            if not len(block):
                continue
            written += len(block)
            yield pa.record_batch(
                [pa.array(np.round(block.area_m2.astype(np.float64), 3)),
                 pa.array(np.round(block.score.astype(np.float64), 4)),
                 pa.array(shapely.to_wkb(block.geoms), type=pa.binary())],
                schema=schema)

    reader = pa.RecordBatchReader.from_batches(schema, batches())
    pyogrio.raw.write_arrow(reader, path, layer=LAYER, driver="GPKG", geometry_name="geometry",
                            geometry_type="Polygon", crs=crs_wkt,
                            dataset_options=GPKG_OPTIONS,
                            layer_metadata={"geotiler_predict": json.dumps(meta or {})})
    return written


def finish(job: PredictJob, stats: Sequence[BlockStats], started: float,
           timings: dict[str, float] | None = None) -> PredictReport:
    """Write the final outputs from the block files and the saved polygons (one block's
    at a time), rename them into place, remove the work directory.

    ``started``: the run's ``time.perf_counter()`` at its start; ``timings`` (s) are
    reported with this step's own added.

    Raises:
        InputError: the raster has no valid pixel (nothing is written).
        OutputError: an output cannot be renamed into place. On any error no output is
            left half-written (those already renamed stay) and the work directory is gone.
    """
    timings = dict(timings or {})
    geotiffs = geotiff_outputs(job)
    if not any(s.valid_pixels for s in stats):  # outputs of nothing, and a 0.0 % mask
        shutil.rmtree(job.workdir, ignore_errors=True)
        raise InputError(f"{job.grid.path} has no valid pixel (nodata, or outside its mask, "
                         "everywhere): there is nothing to predict on")
    try:
        # The outputs are written side by side: GDAL's COG writer compresses on every core
        # but reads the blocks and builds overviews on one, and the GeoPackage needs none
        # of them. Each is staged under a temporary name (keeping its extension, which GDAL
        # goes by) until all are done; leaving the stack renames them all into place.
        t0 = time.perf_counter()
        with contextlib.ExitStack() as staged:
            gpkg_tmp = staged.enter_context(atomic_path(job.outputs.gpkg, keep_suffix=True))
            tif_tmps = [staged.enter_context(atomic_path(out.path, keep_suffix=True))
                        for out in geotiffs]
            for out in geotiffs:  # QGIS's default style of each GeoTIFF, renamed with it
                qml = probability_qml(1, out.names[0]) if out.kind == "prob" else mask_qml()
                staged.enter_context(atomic_path(sidecar_path(out.path))).write_text(
                    qml, encoding="utf-8")
            with ThreadPoolExecutor(max_workers=1 + len(geotiffs),
                                    thread_name_prefix="geotiler-outputs") as pool:
                gpkg = pool.submit(_timed, write_gpkg, job, gpkg_tmp)
                tifs = [pool.submit(_timed, write_geotiff, job, out, tmp)
                        for out, tmp in zip(geotiffs, tif_tmps, strict=True)]
                buildings, timings["gpkg"] = gpkg.result()
                timings["geotiffs"] = max(future.result()[1] for future in tifs)
            timings["outputs"] = time.perf_counter() - t0
        if job.config.overwrite and not job.config.probabilities:
            # an older run's probabilities must not pass for this run's
            for stale in (job.outputs.prob, sidecar_path(job.outputs.prob)):
                stale.unlink(missing_ok=True)
    finally:
        shutil.rmtree(job.workdir, ignore_errors=True)
    valid = sum(s.valid_pixels for s in stats)
    return PredictReport(
        raster=job.grid.path,
        outputs=[str(p) for p in job.outputs.all(job.config.probabilities)],
        grid=(job.grid.width, job.grid.height),
        gsd=job.model.gsd,
        blocks=len(job.plan.indexes),
        windows=job.plan.num_windows,
        windows_run=sum(s.windows_run for s in stats),
        buildings=buildings,
        building_fraction=(sum(s.building_pixels for s in stats) / valid) if valid else 0.0,
        seconds=time.perf_counter() - started,
        threshold=job.config.threshold,
        timings=timings,
    )


def _timed(function: Callable[..., T], *args: Any) -> tuple[T, float]:
    started = time.perf_counter()
    return function(*args), time.perf_counter() - started


def abort(job: PredictJob) -> None:
    """Remove the work directory, any staged output of an interrupted or failed run, and
    the output folders it created if they are empty."""
    shutil.rmtree(job.workdir, ignore_errors=True)
    for final in job.outputs.all(True):
        partial_path(final, keep_suffix=True).unlink(missing_ok=True)
    for folder in job.created:
        with contextlib.suppress(OSError):  # not empty: an earlier output is kept
            folder.rmdir()


def _vrt(job: PredictJob, kind: str, names: Sequence[str], nodata: int | None,
         level: int = 0) -> Path:
    """A VRT mosaic of the block files of one kind (written in the work directory).

    ``level`` 0 is the full grid, listing the block-built overviews of
    :func:`~geotiler.predict.blocks.overview_factors` as its own; level k mosaics the
    blocks' k-th overviews.
    """
    g = job.grid
    factors = overview_factors(job)
    scale = factors[level - 1] if level else 1
    t = g.transform * Affine.scale(scale)
    width, height = math.ceil(g.width / scale), math.ceil(g.height / scale)
    open_options = (f'<OpenOptions><OOI key="OVERVIEW_LEVEL">{level - 1}</OOI></OpenOptions>'
                    if level else "")
    overviews = [_vrt(job, kind, names, nodata, k) for k in range(1, len(factors) + 1)
                 ] if not level else []
    bands = []
    for band, name in enumerate(names, start=1):
        sources = _block_sources(job, kind, band, scale, open_options)
        nd = f"<NoDataValue>{nodata}</NoDataValue>" if nodata is not None else ""
        ovr = "".join(f'<Overview><SourceFilename relativeToVRT="1">{path.name}'
                      f"</SourceFilename><SourceBand>{band}</SourceBand></Overview>"
                      for path in overviews)
        bands.append(f'<VRTRasterBand dataType="Byte" band="{band}">'
                     f"<Description>{escape(name)}</Description>{nd}{sources}{ovr}"
                     "</VRTRasterBand>")
    masked = kind == "prob" and job.grid.has_nodata
    mask_band = _mask_band(job, scale, open_options) if masked else ""
    meta = json.dumps(_metadata(job))
    xml = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">'
           f"<SRS>{escape(g.crs_wkt)}</SRS>"
           f"<GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>"
           f'<Metadata><MDI key="geotiler_predict">{escape(meta)}</MDI>'
           f'<MDI key="GEOTILER_VERSION">{escape(__version__)}</MDI>'
           f'<MDI key="MODEL">{escape(job.model.name)}</MDI>'
           f'<MDI key="TIFFTAG_SOFTWARE">geotiler {escape(__version__)}</MDI></Metadata>'
           f"{''.join(bands)}{mask_band}</VRTDataset>")
    path = job.workdir / (f"{kind}-ovr{level}.vrt" if level else f"{kind}.vrt")
    write_text_atomic(path, xml)
    return path


def _metadata(job: PredictJob) -> dict[str, Any]:
    """What every output records of its making (``geotiler_predict`` metadata)."""
    return {"config": job.config.to_dict(), "model": job.model.name,
            "source": job.grid.path, "geotiler_version": __version__}

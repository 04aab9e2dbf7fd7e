"""A prediction job: the checked inputs and outputs, the model grid and its block plan.

:func:`prepare` is the first step of ``geotiler predict``: it checks the raster, the model's
fit to it and the outputs, plans the blocks and makes the temporary work directory; the
:class:`PredictJob` it returns is all any later step (:mod:`geotiler.predict.blocks`,
:mod:`geotiler.predict.outputs`) needs, small enough to send to every task.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from geotiler.errors import ConfigError, InputError, ModelFileError, OutputError
from geotiler.io import open_raster_info, raster_source
from geotiler.predict.config import ModelInfo, PredictConfig
from geotiler.predict.grid import PredictGrid, model_grid
from geotiler.predict.plan import BlockPlan, plan_blocks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputPaths:
    """The three outputs: the GeoPackage and the probability and mask GeoTIFFs."""

    gpkg: Path
    prob: Path
    mask: Path

    def all(self, probabilities: bool = True) -> list[Path]:
        return [self.gpkg, self.prob, self.mask] if probabilities else [self.gpkg, self.mask]


@dataclass(frozen=True)
class PredictJob:
    """Everything a task needs: grid, block plan, model description, config, paths."""

    grid: PredictGrid
    plan: BlockPlan
    model: ModelInfo
    config: PredictConfig
    outputs: OutputPaths
    workdir: Path  # temporary, inside the raster output directory

    def block_file(self, kind: str, index: tuple[int, int]) -> Path:
        """The work directory's GeoTIFF of one block, ``kind`` ``prob`` or ``mask``
        (``poly`` with the suffix ``.npz``: its polygons)."""
        return self.workdir / f"{kind}-{index[0]:04d}-{index[1]:04d}.tif"

    @property
    def polygon_reach(self) -> int:
        """How many blocks away a block's polygonization halo reaches."""
        rows, cols = np.diff(self.plan.row_edges), np.diff(self.plan.col_edges)
        smallest = int(min(rows.min(), cols.min()))
        return max(1, math.ceil(self.config.halo / smallest))


def output_paths(out: Path | str, raster_out: Path | str | None = None) -> OutputPaths:
    """``out`` is the GeoPackage; the GeoTIFFs go to ``raster_out`` (a directory, default
    the GeoPackage's) as ``{stem}_prob.tif`` and ``{stem}_mask.tif``."""
    gpkg = Path(out)
    if gpkg.suffix.lower() != ".gpkg":
        raise ConfigError(f"--out must be a GeoPackage file ending in .gpkg, got {gpkg}")
    folder = Path(raster_out) if raster_out is not None else gpkg.parent
    return OutputPaths(gpkg, folder / f"{gpkg.stem}_prob.tif", folder / f"{gpkg.stem}_mask.tif")


def check_outputs(paths: OutputPaths, overwrite: bool, probabilities: bool = True) -> None:
    """OutputError when an output exists (without overwrite) or a folder is not writable."""
    wanted = paths.all(probabilities)
    existing = [str(p) for p in wanted if p.exists()]
    if existing and not overwrite:
        raise OutputError(f"{', '.join(existing)} already exist(s); use --overwrite to replace")
    for path in wanted:
        if path.exists() and path.is_dir():
            raise OutputError(f"{path} is a directory; give a file name")
    for folder in {p.parent for p in wanted}:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"cannot create output directory {folder}: {err.strerror}") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"output directory {folder} is not writable")


def check_bands(path: Path | str, model: ModelInfo) -> None:
    """ModelFileError naming both band lists when the raster lacks the model's bands."""
    try:
        with rasterio.open(path) as src:
            count = src.count
            names = [src.descriptions[i] or src.colorinterp[i].name for i in range(count)]
    except rasterio.errors.RasterioIOError:
        return  # open_raster_info says what is wrong with the file
    if max(model.bands) > count:
        have = ", ".join(f"{i + 1}:{n}" for i, n in enumerate(names))
        want = ", ".join(f"{b}:{n}" for b, n in zip(model.bands, model.band_names, strict=False))
        raise ModelFileError(
            f"{model.name} takes bands [{want}] but {path} has {count} band(s) [{have}]; "
            "predict on a raster with the bands the model was trained on"
        )


def prepare(raster: Path | str, model: ModelInfo, out: Path | str, config: PredictConfig,
            raster_out: Path | str | None = None) -> PredictJob:
    """Check the raster, the model's fit to it and the outputs; plan the blocks.

    Creates the temporary work directory, beside the GeoTIFF outputs (remove it with
    :func:`geotiler.predict.outputs.abort` on failure).

    Raises:
        ConfigError: ``out`` is not a ``.gpkg``, or the overlap is not below the tile size.
        InputError: the raster is missing or cannot be predicted on (no CRS, rotated...).
        ModelFileError: the raster lacks the model's bands.
        OutputError: an output exists (without ``overwrite``) or cannot be written.
    """
    path = raster_source(raster)  # a Path, or a remote raster's GDAL path
    outputs = output_paths(out, raster_out)
    overlap = model.tile_size // 4 if config.overlap is None else config.overlap
    config = dataclasses.replace(config, overlap=overlap)  # resolved, as written beside outputs
    if overlap >= model.tile_size:
        raise ConfigError(
            f"--overlap ({overlap}) must be smaller than the model's tile size "
            f"({model.tile_size})"
        )
    if isinstance(path, Path) and not path.exists():
        raise InputError(f"raster {path} does not exist")
    check_bands(path, model)
    info = open_raster_info(path, bands=model.bands)
    if info.dtype != model.dtype:
        log.warning("%s is %s but %s was trained on %s; its normalization may not fit",
                    path, info.dtype, model.name, model.dtype)
    if [n.lower() for n in info.band_names] != [n.lower() for n in model.band_names]:
        log.info("raster bands %s, model bands %s (used by number)",
                 list(info.band_names), list(model.band_names))
    check_outputs(outputs, config.overwrite, config.probabilities)
    grid = model_grid(info, model)
    plan = plan_blocks(grid.height, grid.width, model.tile_size, overlap, config.block)
    workdir = Path(tempfile.mkdtemp(prefix=f".{outputs.gpkg.stem}.blocks-",
                                    dir=outputs.mask.parent))
    log.info("%s: %d x %d px at %.3g m (model grid%s), %d blocks, %d windows",
             info.name, grid.width, grid.height, model.gsd,
             "" if grid.native else ", resampled", len(plan.indexes), plan.num_windows)
    return PredictJob(grid, plan, model, config, outputs, workdir)

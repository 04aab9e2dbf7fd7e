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
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.enums import ColorInterp

from geotiler.atomic import prepare_output_folder
from geotiler.errors import ConfigError, InputError, ModelFileError, OutputError
from geotiler.io import open_raster, open_raster_info, raster_source, replaced_input
from geotiler.predict.config import UNIT_SLIP_SIMPLIFY_M, ModelInfo, PredictConfig
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
    created: tuple[Path, ...] = ()  # output folders this run made, deepest first

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


#: What predict adds to the GeoPackage's stem to name its GeoTIFFs (evaluate finds them so).
PROB_SUFFIX, MASK_SUFFIX = "_prob", "_mask"


def output_paths(out: Path | str, raster_out: Path | str | None = None) -> OutputPaths:
    """``out`` is the GeoPackage; the GeoTIFFs go to ``raster_out`` (a directory, default
    the GeoPackage's) as ``{stem}_prob.tif`` and ``{stem}_mask.tif``."""
    gpkg = Path(out)
    if gpkg.suffix.lower() != ".gpkg":
        raise ConfigError(f"--out must be a GeoPackage file ending in .gpkg, got {gpkg}")
    folder = Path(raster_out) if raster_out is not None else gpkg.parent
    return OutputPaths(gpkg, folder / f"{gpkg.stem}{PROB_SUFFIX}.tif",
                       folder / f"{gpkg.stem}{MASK_SUFFIX}.tif")


def check_outputs(paths: OutputPaths, overwrite: bool, probabilities: bool = True
                  ) -> list[Path]:
    """OutputError when an output exists (without overwrite) or a folder is not writable;
    returns the output folders it created, deepest first."""
    wanted = paths.all(probabilities)
    existing = [str(p) for p in wanted if p.exists()]
    if existing and not overwrite:
        raise OutputError(f"{', '.join(existing)} already exist(s); use --overwrite to replace")
    for path in wanted:
        if path.exists() and path.is_dir():
            raise OutputError(f"{path} is a directory; give a file name")
    created: list[Path] = []
    for folder in sorted({p.parent for p in wanted}):
        created += prepare_output_folder(folder)
    return sorted(created, key=lambda p: len(p.parts), reverse=True)


def choose_bands(path: Path | str, model: ModelInfo,
                 bands: tuple[int, ...] | None) -> tuple[int, ...]:
    """The raster's bands to feed the model, in its order.

    ``bands`` (``--bands``) must be as many as the model takes and exist in the raster.
    Without it the model's own band numbers are used, but only when the raster has as many
    bands as the model takes (alpha bands left out): a 4-band B, G, R, NIR raster given to
    an RGB model is refused rather than fed blue as red. Band names that differ from the
    model's are warned about.

    Raises:
        ModelFileError: the band count differs and ``bands`` was not given, or ``bands``
            has another count than the model's (naming both band lists).
        InputError: ``bands`` asks for bands the raster does not have, or it cannot be read.
    """
    with open_raster(path) as src:
        count = src.count
        interps = src.colorinterp
        names = [src.descriptions[i] or interps[i].name for i in range(count)]
    usable = [i + 1 for i in range(count) if interps[i] != ColorInterp.alpha] or list(
        range(1, count + 1))
    have = ", ".join(f"{i}:{names[i - 1]}" for i in usable)
    want = ", ".join(f"{b}:{n}" for b, n in zip(model.bands, model.band_names, strict=False))
    if bands is None:
        if len(usable) < len(model.bands):
            raise ModelFileError(
                f"{path} has {len(usable)} band(s) [{have}] but {model.name} takes "
                f"{len(model.bands)} [{want}]: this raster cannot be used with this model "
                "(predict on imagery with the bands the model was trained on)"
            )
        if len(usable) != len(model.bands) or max(model.bands) > count:
            matching = _bands_by_name(names, model.band_names)
            example = ",".join(str(b) for b in matching or usable[: len(model.bands)])
            raise ModelFileError(
                f"{path} has {len(usable)} band(s) [{have}] but {model.name} takes "
                f"{len(model.bands)} [{want}]; pick the raster's bands in the model's order "
                f"with --bands, e.g. --bands {example}"
            )
        chosen = model.bands
    else:
        if len(bands) != len(model.bands):
            raise ModelFileError(
                f"--bands gives {len(bands)} band(s) but {model.name} takes "
                f"{len(model.bands)} [{want}]"
            )
        if max(bands) > count:
            raise InputError(f"{path} has {count} band(s); --bands asks for {list(bands)}")
        chosen = tuple(bands)
    given = [names[b - 1].lower() for b in chosen]
    if given != [n.lower() for n in model.band_names]:
        matching = _bands_by_name(names, model.band_names)
        hint = (f"--bands {','.join(map(str, matching))} picks them by name" if matching
                else "check --bands")
        log.warning("%s: bands %s are named %s but %s was trained on %s; %s",
                    path, list(chosen), [names[b - 1] for b in chosen], model.name,
                    list(model.band_names), hint)
    return tuple(chosen)


def _bands_by_name(names: Sequence[str], wanted: Sequence[str]) -> list[int] | None:
    """1-based band numbers of ``names`` (the raster's descriptions or colour
    interpretations) that carry the ``wanted`` names in order (case-insensitive), e.g.
    [3, 2, 1] for an RGB model on a blue, green, red raster; None unless every name is
    found once."""
    lowered = [n.lower() for n in names]
    found = []
    for name in wanted:
        if lowered.count(name.lower()) != 1:
            return None
        found.append(lowered.index(name.lower()) + 1)
    return found


def prepare(raster: Path | str, model: ModelInfo, out: Path | str, config: PredictConfig,
            raster_out: Path | str | None = None) -> PredictJob:
    """Check the raster, the model's fit to it and the outputs; plan the blocks.

    Creates the temporary work directory, beside the GeoTIFF outputs (remove it with
    :func:`geotiler.predict.outputs.abort` on failure).

    Raises:
        ConfigError: ``out`` is not a ``.gpkg``, or the overlap is not below the tile size.
        InputError: the raster is missing or cannot be predicted on (no CRS, rotated...).
        ModelFileError: the raster's band count is not the model's and ``config.bands``
            does not pick the bands (:func:`choose_bands`).
        OutputError: an output exists (without ``overwrite``) or cannot be written, or is
            the input raster.
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
    info = open_raster_info(path, bands=choose_bands(path, model, config.bands))
    if info.dtype != model.dtype:
        log.warning("%s is %s but %s was trained on %s; its normalization may not fit",
                    path, info.dtype, model.name, model.dtype)
    if config.simplify > UNIT_SLIP_SIMPLIFY_M:
        log.warning("--simplify %g m moves outlines up to %g m: houses (5-20 m across) lose "
                    "their shape; it is in metres (e.g. 0.5)", config.simplify,
                    config.simplify)
    if clash := replaced_input(outputs.all(config.probabilities), [path]):
        # --overwrite would replace the raster being read
        raise OutputError(f"{clash[0]} is the input raster; give another --out "
                          "(or --raster-out)")
    created = check_outputs(outputs, config.overwrite, config.probabilities)
    grid = model_grid(info, model)
    plan = plan_blocks(grid.height, grid.width, model.tile_size, overlap, config.block)
    try:
        workdir = Path(tempfile.mkdtemp(prefix=f".{outputs.gpkg.stem}.blocks-",
                                        dir=outputs.mask.parent))
    except OSError as err:
        raise OutputError.writing(outputs.mask.parent, err) from None
    log.info("%s: %d x %d px at %.3g m (model grid%s), %d blocks, %d windows",
             info.name, grid.width, grid.height, model.gsd,
             "" if grid.native else ", resampled", len(plan.indexes), plan.num_windows)
    return PredictJob(grid, plan, model, config, outputs, workdir, tuple(created))

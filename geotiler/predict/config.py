"""Prediction settings and what prediction knows of a model: the one place their defaults live.

:class:`PredictConfig` holds every ``geotiler predict`` option (the CLI takes its defaults and
choices from here); :class:`ModelInfo` and :class:`Predictor` are all the rest of
:mod:`geotiler.predict` sees of a model: its description, and a function from windows to
probabilities. The output formats' constants (COG creation options, the mask's nodata, the
overview resampling, the GeoPackage layer) live here too.

Imported by the CLI for ``geotiler --help``: this module imports neither OpenCV, rasterio
nor torch, and only the light :mod:`geotiler.predict.plan` of this package.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from geotiler.device import DEVICES, PRECISIONS, Device, Precision
from geotiler.errors import ConfigError
from geotiler.instances import InstanceOptions
from geotiler.predict.plan import BLOCK_PX, HALO_PX
from geotiler.tiles.config import TileConfig

if TYPE_CHECKING:
    import numpy as np

    from trainer.modelfile import ModelSpec

WindowKind = Literal["hann", "linear"]
WINDOW_KINDS: tuple[WindowKind, ...] = ("hann", "linear")
TTA = Literal["none", "flips", "d4"]
TTA_MODES: tuple[TTA, ...] = ("none", "flips", "d4")
"""Test-time augmentation: how many symmetries of each window are averaged (1, 4, 8)."""

LAYER = "buildings"  # the GeoPackage layer of the polygons
MASK_NODATA = 255  # the mask GeoTIFF's nodata, where the raster has nodata

# GDAL's block cache while the GeoTIFFs are written (default: 5 % of RAM, which the COG
# driver fills: 1.3 GB peak on 16384² vs 0.4 GB with 256 MiB, at the same speed).
GDAL_CACHE_BYTES = 256 * 2**20
COG_BLOCKSIZE = 512
COG_OPTIONS = {"BLOCKSIZE": COG_BLOCKSIZE, "OVERVIEWS": "AUTO", "BIGTIFF": "IF_SAFER",
               "NUM_THREADS": "ALL_CPUS", "PREDICTOR": "YES"}
# Measured on a 4096² two-channel probability map: zstd 1 + predictor 0.27 s (27.5 MB),
# deflate 1 + predictor 0.53 s (27.0 MB); the former default, deflate 3 without
# predictor, 0.68 s (32.1 MB).
COG_COMPRESSION = {"zstd": {"COMPRESS": "ZSTD", "LEVEL": 1},
                   "deflate": {"COMPRESS": "DEFLATE", "LEVEL": 1}}
# How the overviews of the output GeoTIFFs are made: probabilities averaged, the mask
# (0 / 1 / nodata) by nearest neighbour.
OVERVIEW_RESAMPLING = {"prob": "average", "mask": "nearest"}  # rasterio Resampling names


UNIT_SLIP_SIMPLIFY_M = 5.0  # a --simplify above this warns: likely cm typed for m


@dataclass(frozen=True)
class PredictConfig:
    """How ``geotiler predict`` runs; the CLI's defaults come from here.

    Attributes:
        overlap: pixels shared by neighbouring windows (at the model's GSD); ``None``:
            a quarter of the model's tile size (64 for 256 px tiles).
        batch_size: windows per forward pass.
        block: side of a processing block in model pixels (rounded to whole strides);
            memory is bounded by about 4 x (channels + 1) x block² bytes per running block.
        halo: pixels read around a block when polygonizing; buildings larger than this
            (in model pixels) may be cut at block borders.
        threshold: probability at or above which a pixel is building (and contour).
        otsu: choose the footprint threshold by Otsu's method from the histogram of the
            whole raster's footprint probabilities (the seed method's rule) instead of
            ``threshold``; the mask and polygons are then made after all inference.
        window: blending window, ``hann`` or ``linear`` ramp.
        simplify: Douglas-Peucker tolerance in metres (0 keeps the pixel outline).
        min_area: polygons smaller than this (m²) are dropped.
        regularize: square the corners of rectangular-enough polygons.
        instances: how the footprint and contour planes become one polygon per building
            (:class:`geotiler.instances.InstanceOptions`, sizes in m and m²).
        bands: the raster's band numbers (1-based) to feed the model, in the model's order;
            ``None``: the model's own band numbers, accepted only when the raster has as
            many bands (alpha left out) as the model takes.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        precision: arithmetic of the network: ``bf16`` (bfloat16 autocast, weights fp32),
            ``fp32``, or ``auto``: bf16 where the device computes it
            natively (CPUs with AVX-512 BF16 / AMX, CUDA GPUs from Ampere on), else fp32
            (:func:`geotiler.device.resolve_precision`). Tolerance, tested on the sample
            scene: bf16 probabilities differ from fp32's by < 0.02 mean absolute and the
            masks agree on >= 99 % of pixels.
        tta: test-time augmentation: ``none``; ``flips``: each window is also predicted
            flipped left-right, up-down and both, and the four outputs (flipped back) are
            averaged (4x the network's time); ``d4``: the same with the four transposed
            versions too, the eight symmetries of the square (8x). Common practice in
            segmentation; on Massachusetts it did not help (README, "Results").
        probabilities: write the probability GeoTIFF (the mask and polygons always are).
        compress: compression of the output GeoTIFFs: ``zstd`` (fast; GDAL >= 2.3, any
            recent QGIS) or ``deflate`` (for older readers).
        overwrite: replace existing outputs.

    Raises:
        ConfigError: a value out of range (one line naming the CLI option).
    """

    overlap: int | None = None
    batch_size: int = 8
    block: int = BLOCK_PX
    halo: int = HALO_PX
    threshold: float = 0.5
    otsu: bool = False
    window: WindowKind = "hann"
    simplify: float = 0.5
    min_area: float = 4.0
    regularize: bool = False
    instances: InstanceOptions = field(default_factory=InstanceOptions)
    bands: tuple[int, ...] | None = None
    device: Device = "auto"
    precision: Precision = "auto"
    tta: TTA = "none"
    probabilities: bool = True
    compress: Literal["zstd", "deflate"] = "zstd"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.overlap is not None and self.overlap < 0:
            raise ConfigError(f"--overlap must be >= 0 pixels, got {self.overlap}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.block < 64:
            raise ConfigError(f"--block must be at least 64 pixels, got {self.block}")
        if self.halo < 0:
            raise ConfigError(f"--halo must be >= 0 pixels, got {self.halo}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"--threshold must be between 0 and 1, got {self.threshold}")
        if self.window not in WINDOW_KINDS:
            raise ConfigError(f"--window must be one of {WINDOW_KINDS}, got {self.window!r}")
        if self.simplify < 0:
            raise ConfigError(f"--simplify must be >= 0 metres, got {self.simplify}")
        if self.min_area < 0:
            raise ConfigError(f"--min-area must be >= 0 m², got {self.min_area}")
        self.instances.check()
        if self.bands is not None and (not self.bands or min(self.bands) < 1):
            raise ConfigError(f"--bands are 1-based band numbers, got {list(self.bands)}")
        if self.device not in DEVICES:
            raise ConfigError(f"--device must be one of {DEVICES}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, "
                              f"got {self.precision!r}")
        if self.tta not in TTA_MODES:
            raise ConfigError(f"--tta must be one of {', '.join(TTA_MODES)}, got {self.tta!r}")
        if self.compress not in COG_COMPRESSION:
            raise ConfigError(f"--compress must be one of {tuple(COG_COMPRESSION)}, "
                              f"got {self.compress!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ModelInfo:
    """What prediction needs to know about a model, without torch.

    Attributes:
        bands: the raster's band numbers (1-based) the model reads, in its order.
        band_names: their names when the model was trained (for messages).
        dtype: the training rasters' dtype (a mismatch is logged, not refused).
        tile_size: the model's window side in px.
        gsd: the model's ground sampling distance in m/px; windows are cut at it.
        channels: the model's output channels (``footprint``, ``contour``, ...).
        contour_width: px of the contour the tiler drew, grown back when polygonizing.
        name: the model's name in messages and output metadata.
    """

    bands: tuple[int, ...]
    band_names: tuple[str, ...]
    dtype: str
    tile_size: int
    gsd: float
    channels: tuple[str, ...]
    contour_width: int = TileConfig().contour_width
    name: str = "model"

    @classmethod
    def from_spec(cls, spec: ModelSpec, name: str = "model") -> ModelInfo:
        """From a model file's spec, read by attribute (``bands``, ``band_names``,
        ``dtype``, ``tile_size``, ``gsd``, ``mask_channels``, ``tiling``)."""
        tiling = spec.tiling or {}
        return cls(
            bands=tuple(int(b) for b in spec.bands),
            band_names=tuple(str(b) for b in spec.band_names),
            dtype=str(spec.dtype),
            tile_size=int(spec.tile_size),
            gsd=float(spec.gsd),
            channels=tuple(str(c) for c in spec.mask_channels),
            contour_width=int(tiling.get("contour_width", TileConfig().contour_width)),
            name=name,
        )


class Predictor(Protocol):
    """A batch of windows -> probabilities.

    ``image``: (N, C, S, S) in the raster's dtype, bands in the model's order; ``valid``:
    (N, S, S) bool (False at nodata and past the raster's edge). Returns (N, K, S, S)
    float32 probabilities in [0, 1], K = the model's channels.
    """

    def __call__(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray: ...

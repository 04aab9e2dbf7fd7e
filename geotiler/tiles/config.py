"""Tiling settings: the one place their defaults live.

The CLI takes its option defaults from :class:`TileConfig` and writes the resolved config
beside every output (``tiles/config.json`` and inside ``dataset.json``), so a dataset always
says how it was made.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from geotiler.errors import ConfigError

Target = Literal["masks", "seed-rgb"]
TARGETS: tuple[Target, ...] = ("masks", "seed-rgb")
SPLITS: tuple[str, ...] = ("train", "val", "test")
Compression = Literal["zstd", "deflate", "lzw", "none"]
COMPRESSIONS: tuple[Compression, ...] = ("zstd", "deflate", "lzw", "none")


#: The smallest and largest tile size (px) ``--size`` accepts.
TILE_SIZES = (16, 8192)


@dataclass(frozen=True)
class TileConfig:
    """How rasters are cut into tiles and what masks are drawn.

    Attributes:
        size: tile width and height in output pixels.
        overlap: pixels shared by neighbouring tiles (stride = size - overlap).
        gsd: target ground sample distance in metres per pixel (any CRS, geographic too);
            ``None`` keeps the raster's own resolution unless ``scale`` is set.
        scale: resample factor, output pixel = input pixel x scale (2.64 turns the seed
            method's 675 px crops into 256 px tiles). Exclusive with ``gsd``.
        bands: 1-based band indexes to keep; ``None`` keeps every band that is not alpha.
        contour_width: thickness in output pixels of the building outlines drawn back
            onto the contour mask.
        target: ``masks`` writes footprint + contour channels (0/255); ``seed-rgb`` writes
            the seed method's RGB target (white buildings, green outlines, blurred).
        seed_blur: Gaussian kernel size (odd, px) of the seed-rgb blur; 0 disables it.
        max_nodata: tiles with a larger fraction of invalid pixels (nodata, alpha, mask,
            non-finite), counted over the part of the tile that lies on the raster, are
            skipped; the padding of edge tiles does not count.
        min_building_fraction: training tiles with less building area are skipped
            (0 keeps all); val/test tiles are never filtered by content.
        keep_empty: fraction of building-free training tiles kept (deterministic per tile).
        split: fractions of (train, val, test); assigned by spatial blocks.
        block_tiles: side of a split block, in tiles.
        shard_size: tiles per shard file.
        seed: seeds the split and the keep-empty draw.
        compress: GeoTIFF compression of tile members. zstd (GDAL >= 2.3, any recent QGIS)
            encodes ~4x and decodes ~2x faster than deflate at the same size; deflate for
            old readers.
        overviews: let GDAL serve reads at a coarser GSD from the raster's overviews
            (faster; from a remote COG far fewer bytes). Off by default: overviews are made
            with whatever resampling their author chose (nearest turns 1 px stripes 0/200
            into 0 where the documented average is 100), so tiles would depend on them.
    """

    size: int = 256
    overlap: int = 0
    gsd: float | None = None
    scale: float | None = None
    bands: tuple[int, ...] | None = None
    contour_width: int = 3
    target: Target = "masks"
    seed_blur: int = 5
    max_nodata: float = 0.5
    min_building_fraction: float = 0.0
    keep_empty: float = 0.25
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    block_tiles: int = 2
    shard_size: int = 256
    seed: int = 0
    compress: Compression = "zstd"
    overviews: bool = False

    def __post_init__(self) -> None:
        if not TILE_SIZES[0] <= self.size <= TILE_SIZES[1]:
            raise ConfigError(f"--size must be between {TILE_SIZES[0]} and {TILE_SIZES[1]} "
                              f"pixels, got {self.size}")
        if not 0 <= self.overlap < self.size:
            raise ConfigError(
                f"--overlap must be >= 0 and smaller than --size ({self.size}), got {self.overlap}"
            )
        if self.gsd is not None and self.scale is not None:
            raise ConfigError("give either --gsd or --scale, not both")
        if self.gsd is not None and not self.gsd > 0:
            raise ConfigError(f"--gsd must be a positive number of metres, got {self.gsd}")
        if self.scale is not None and not self.scale > 0:
            raise ConfigError(f"--scale must be positive, got {self.scale}")
        if self.bands is not None and (not self.bands or min(self.bands) < 1):
            raise ConfigError(f"--bands are 1-based band numbers, got {self.bands}")
        if not 0 <= self.contour_width <= 64:
            raise ConfigError(f"--contour-width must be 0..64 px, got {self.contour_width}")
        if self.target not in TARGETS:
            raise ConfigError(f"--target must be one of {TARGETS}, got {self.target!r}")
        if self.seed_blur < 0 or (self.seed_blur and self.seed_blur % 2 == 0):
            raise ConfigError(f"--seed-blur must be 0 or an odd number, got {self.seed_blur}")
        for name in ("max_nodata", "min_building_fraction", "keep_empty"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
        if len(self.split) != 3 or min(self.split) < 0 or abs(sum(self.split) - 1) > 1e-6:
            raise ConfigError(
                f"--split needs three fractions >= 0 that add up to 1 (train,val,test), "
                f"got {','.join(str(s) for s in self.split)}"
            )
        if self.block_tiles < 1:
            raise ConfigError(f"--block-tiles must be >= 1, got {self.block_tiles}")
        if self.shard_size < 1:
            raise ConfigError(f"--shard-size must be >= 1, got {self.shard_size}")

    @property
    def stride(self) -> int:
        return self.size - self.overlap

    @property
    def mask_channels(self) -> tuple[str, ...]:
        """Names of the bands of every ``mask.tif``, in order."""
        return ("footprint", "contour") if self.target == "masks" else ("red", "green", "blue")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("bands", "split"):
            if data[key] is not None:
                data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TileConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("bands", "split"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)

    def fingerprint(self) -> str:
        """A short hash of every setting that changes the tiles' content."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def parse_split(text: str) -> tuple[float, float, float]:
    """Parse ``"0.8,0.1,0.1"`` into three fractions (validated by :class:`TileConfig`)."""
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise ConfigError(f"--split needs three comma-separated numbers, got {text!r}") from None
    if len(parts) != 3:
        raise ConfigError(f"--split needs three comma-separated numbers, got {text!r}")
    return (parts[0], parts[1], parts[2])


def parse_bands(text: str) -> tuple[int, ...]:
    """Parse ``"1,2,3"`` into 1-based band numbers."""
    try:
        bands = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise ConfigError(f"--bands needs comma-separated band numbers, got {text!r}") from None
    return bands


@dataclass
class TileReport:
    """What a tiling run did, for the summary line and dataset.json."""

    tiles: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    buildings: int = 0
    skipped_nodata: int = 0
    skipped_selection: int = 0
    skipped_overlap_guard: int = 0
    invalid_repaired: int = 0
    footprints_outside: int = 0
    shards_written: int = 0
    shards_reused: int = 0
    seconds: float = 0.0

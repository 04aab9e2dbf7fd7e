"""``dataset.json``: what a tile dataset is, for the trainer and for people.

Written last by ``geotiler tile`` (atomically), so a directory with a ``dataset.json`` is a
finished dataset. The trainer reads bands, normalization, tile size, GSD and mask channels
from here and copies them into the model file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geotiler.errors import DatasetError

DATASET_FILE = "dataset.json"
INDEX_FILE = "index.gpkg"
CONFIG_FILE = "config.json"
FORMAT_NAME = "geotiler-tiles"
FORMAT_VERSION = 1


@dataclass
class DatasetInfo:
    """The parsed ``dataset.json`` (see README, "Tile format")."""

    tile_size: int
    gsd: float
    bands: list[int]
    band_names: list[str]
    dtype: str
    mean: list[float]
    std: list[float]
    mask_channels: list[str]
    target: str
    counts: dict[str, int]
    config: dict[str, Any]
    sources: list[dict[str, Any]] = field(default_factory=list)
    crs: str | None = None
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_bands(self) -> int:
        return len(self.bands)

    def to_json(self) -> dict[str, Any]:
        data = {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "tile_size": self.tile_size,
            "gsd": self.gsd,
            "bands": self.bands,
            "band_names": self.band_names,
            "dtype": self.dtype,
            "mean": self.mean,
            "std": self.std,
            "mask_channels": self.mask_channels,
            "target": self.target,
            "counts": self.counts,
            "config": self.config,
            "sources": self.sources,
            "crs": self.crs,
        }
        data.update(self.extra)
        return data


def load_dataset_info(dataset_dir: Path | str) -> DatasetInfo:
    """Read and check ``dataset.json``; DatasetError with the reason if it is not usable."""
    path = Path(dataset_dir) / DATASET_FILE
    if not Path(dataset_dir).is_dir():
        raise DatasetError(
            f"tile dataset {dataset_dir} does not exist (make one with geotiler tile)"
        )
    if not path.is_file():
        raise DatasetError(
            f"{dataset_dir} has no {DATASET_FILE}: not a finished geotiler tile dataset "
            "(run geotiler tile, or rerun it to finish an interrupted run)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read {path}: {err}") from None
    if data.get("format") != FORMAT_NAME:
        raise DatasetError(f"{path} is not a geotiler tile dataset (format={data.get('format')!r})")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DatasetError(
            f"{path} has format version {version}, newer than this geotiler reads "
            f"({FORMAT_VERSION}); upgrade geotiler"
        )
    known = {
        "tile_size", "gsd", "bands", "band_names", "dtype", "mean", "std", "mask_channels",
        "target", "counts", "config", "sources", "crs",
    }
    try:
        info = DatasetInfo(
            **{k: data[k] for k in known if k in data},
            format_version=version,
            extra={k: v for k, v in data.items() if k not in known | {"format", "format_version"}},
        )
    except TypeError as err:
        raise DatasetError(f"{path} is missing fields: {err}") from None
    return info

"""``dataset.json``: what a tile dataset is, for the trainer, for predict and for people.

Written last by ``geotiler tile`` (atomically), so a directory with a ``dataset.json`` is a
finished dataset. :class:`DatasetInfo` is the one schema of the dataset/model contract: the
trainer reads bands, normalization, tile size, GSD and mask channels from it and embeds it
whole in the model file (``trainer.modelfile.ModelSpec.dataset``), so predict reads the same
fields, and :meth:`DatasetInfo.normalize` is the one band normalization of training and
inference alike.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geotiler.errors import DatasetError

DATASET_FILE = "dataset.json"
INDEX_FILE = "index.gpkg"
CONFIG_FILE = "config.json"
FORMAT_NAME = "geotiler-tiles"
FORMAT_VERSION = 1

# The fields a network trained on a dataset depends on: training resumes only on tiles that
# agree on these (normalization, GSD and counts may differ).
NETWORK_FIELDS: tuple[str, ...] = (
    "bands", "band_names", "dtype", "tile_size", "mask_channels", "target",
)

# Smallest band standard deviation used to normalize (a constant band would divide by 0).
MIN_STD = 1e-6


@dataclass
class DatasetInfo:
    """The parsed ``dataset.json`` (see README, "Tile format").

    Attributes:
        tile_size: tile side in px.
        gsd: ground sample distance of the tiles in m/px.
        bands: 1-based source band indexes, in the order of the image channels.
        band_names: a name per band.
        dtype: numpy dtype name of the source bands (e.g. ``uint8``).
        mean, std: per-band mean and standard deviation of valid pixels, in source units.
        mask_channels: names of the target channels (``footprint``, ``contour`` or the
            seed's ``red``, ``green``, ``blue``).
        target: ``masks`` or ``seed-rgb``.
        counts: tiles per split.
        config: the tiling config (``geotiler.tiles.config.TileConfig.to_dict()``).
        sources, crs: the rasters tiled and their CRS (``None`` if they differ).
        format_version: of ``dataset.json``.
        extra: any other top-level keys, kept as they are.
    """

    tile_size: int
    gsd: float
    bands: list[int]
    band_names: list[str]
    dtype: str
    mean: list[float]
    std: list[float]
    mask_channels: list[str]
    target: str
    counts: dict[str, int] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    crs: str | None = None
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_bands(self) -> int:
        return len(self.bands)

    def normalize(
        self,
        image: np.ndarray,
        valid: np.ndarray | None = None,
        *,
        gain: float = 1.0,
        bias: float = 0.0,
    ) -> np.ndarray:
        """Source-unit bands -> float32 ``(x - mean) / std * gain + bias``, 0 where not valid.

        ``image`` is (C,H,W) or (N,C,H,W) in any numeric dtype (a view, e.g. rotated, is
        fine); ``valid`` is (H,W) or (N,H,W) bool, and pixels where it is False are 0 in
        the result whatever they held (NaN included). ``gain``/``bias`` fold a colour jitter
        of the normalized values into the same pass. Returns a new float32 array of
        ``image``'s shape. Raises ValueError if the channels are not this dataset's bands.
        """
        if image.ndim not in (3, 4) or image.shape[-3] != self.num_bands:
            raise ValueError(f"expected ({self.num_bands},H,W) or (N,{self.num_bands},H,W) "
                             f"bands, got shape {image.shape}")
        std = np.maximum(np.asarray(self.std, dtype=np.float32), MIN_STD).astype(np.float64)
        scale = 1.0 / std
        offset = -np.asarray(self.mean, dtype=np.float32).astype(np.float64) * scale
        scale, offset = scale * gain, offset * gain + bias
        x = image.astype(np.float32)  # a copy, laid out as ``image``
        x *= scale.astype(np.float32)[:, None, None]
        x += offset.astype(np.float32)[:, None, None]
        if valid is not None:  # a where, not a product: NaN x 0 would stay NaN
            np.copyto(x, np.float32(0), where=~np.expand_dims(np.asarray(valid, dtype=bool), -3))
        return x

    def network_differences(self, saved: dict[str, Any]) -> list[str]:
        """``"field: saved X, dataset Y"`` for each of :data:`NETWORK_FIELDS` that differs
        between ``saved`` (a ``to_json()`` dict, or one with just those fields) and this."""
        now = self.to_json()
        return [f"{k}: checkpoint {saved.get(k)!r}, dataset {now[k]!r}"
                for k in NETWORK_FIELDS if saved.get(k) != now[k]]

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

    @classmethod
    def from_json(cls, data: Any) -> DatasetInfo:
        """Parse a :meth:`to_json` dict (format checks are the caller's).

        Raises DatasetError saying which fields are missing or malformed.
        """
        if not isinstance(data, dict):
            raise DatasetError("the dataset description is not a JSON object")
        fields = dataclasses.fields(cls)
        required = [f.name for f in fields if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]
        missing = [k for k in required if k not in data]
        if missing:
            raise DatasetError(f"lacks {', '.join(missing)}")
        known = {f.name for f in fields} - {"format_version", "extra"}
        try:
            info = cls(
                tile_size=int(data["tile_size"]),
                gsd=float(data["gsd"]),
                bands=[int(b) for b in data["bands"]],
                band_names=[str(b) for b in data["band_names"]],
                dtype=str(data["dtype"]),
                mean=[float(m) for m in data["mean"]],
                std=[float(s) for s in data["std"]],
                mask_channels=[str(c) for c in data["mask_channels"]],
                target=str(data["target"]),
                counts=dict(data.get("counts") or {}),
                config=dict(data.get("config") or {}),
                sources=list(data.get("sources") or []),
                crs=data.get("crs"),
                format_version=int(data.get("format_version", FORMAT_VERSION)),
                extra={k: v for k, v in data.items() if k not in known | {"format",
                                                                          "format_version"}},
            )
        except (TypeError, ValueError) as err:
            raise DatasetError(f"has a malformed field: {err}") from None
        return info


def load_dataset_info(dataset_dir: Path | str) -> DatasetInfo:
    """Read and check ``dataset.json``; DatasetError with the reason if it is not usable."""
    path = Path(dataset_dir) / DATASET_FILE
    if Path(dataset_dir).is_file():
        raise DatasetError(f"tile dataset {dataset_dir} is a file; give the folder that "
                           "geotiler tile wrote (it holds dataset.json)")
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
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        fmt = data.get("format") if isinstance(data, dict) else None
        raise DatasetError(f"{path} is not a geotiler tile dataset (format={fmt!r})")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DatasetError(
            f"{path} has format version {version}, newer than this geotiler reads "
            f"({FORMAT_VERSION}); upgrade geotiler"
        )
    try:
        return DatasetInfo.from_json(data)
    except DatasetError as err:
        raise DatasetError(f"{path} {err}") from None


# GSDs of pooled datasets may differ by rounding (a --gsd of 0.5 m measured geodesically on
# different rasters); beyond this relative difference they are different resolutions.
POOL_GSD_TOLERANCE = 0.02


def pool_datasets(infos: Sequence[DatasetInfo], names: Sequence[str]) -> DatasetInfo:
    """One description of several tile datasets trained together (``geotiler train A B``).

    The datasets must agree on what the network sees and predicts: tile size (px), band
    count, dtype, mask channels and target, and GSD within 2 % (tile scenes of different
    resolutions with a common ``--gsd``). Band names may differ (a warning is the
    caller's). Normalization is pooled: per band, the mean and standard deviation of all
    datasets' valid training pixels together, each dataset weighted by its train tiles
    (``E[x] = sum w_i m_i / sum w_i``, ``Var = sum w_i (s_i² + m_i²) / sum w_i - E[x]²``).
    Counts add up, sources are concatenated; ``extra["datasets"]`` lists ``names``.

    Raises:
        DatasetError: one line naming the first field that differs and both values.
    """
    if not infos:
        raise DatasetError("no tile dataset given")
    if len(infos) == 1:
        return infos[0]
    first = infos[0]
    checks = (("tile size", lambda i: i.tile_size), ("band count", lambda i: i.num_bands),
              ("dtype", lambda i: i.dtype), ("mask channels", lambda i: i.mask_channels),
              ("target", lambda i: i.target))
    for info, name in zip(infos[1:], names[1:], strict=True):
        for label, get in checks:
            if get(info) != get(first):
                raise DatasetError(
                    f"tile datasets differ in {label}: {names[0]} has {get(first)!r}, {name} "
                    f"has {get(info)!r}; tile them with the same --size/--bands/--target")
        if abs(info.gsd - first.gsd) > POOL_GSD_TOLERANCE * first.gsd:
            raise DatasetError(
                f"tile datasets differ in GSD: {names[0]} has {first.gsd:g} m, {name} has "
                f"{info.gsd:g} m; tile every scene with the same --gsd")
    weights = np.array([max(1, int(i.counts.get("train", 0))) for i in infos], dtype=np.float64)
    weights /= weights.sum()
    means = np.array([i.mean for i in infos], dtype=np.float64)
    stds = np.array([i.std for i in infos], dtype=np.float64)
    mean = weights @ means
    var = weights @ (stds**2 + means**2) - mean**2
    counts: dict[str, int] = {}
    for info in infos:
        for split, n in info.counts.items():
            counts[split] = counts.get(split, 0) + int(n)
    crs = first.crs if all(i.crs == first.crs for i in infos) else None
    return dataclasses.replace(
        first,
        mean=[float(m) for m in mean],
        std=[float(s) for s in np.sqrt(np.maximum(var, 0.0))],
        gsd=float(np.average([i.gsd for i in infos], weights=weights)),
        counts=counts,
        sources=[s for i in infos for s in i.sources],
        crs=crs,
        extra={**first.extra, "datasets": [str(n) for n in names]},
    )

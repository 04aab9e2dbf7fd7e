"""Tile shards: tar files of small georeferenced GeoTIFFs (WebDataset layout).

A shard ``tiles/shards/{split}-{n:06d}.tar`` holds, for each tile key::

    {key}.image.tif   bands of the source raster, source dtype, internal nodata mask
                      where some pixels are invalid
    {key}.mask.tif    uint8 target channels (dataset.json "mask_channels"), 0..255
    {key}.json        the tile's record (split, source, grid position, building stats)

Every member is a complete GeoTIFF with CRS and transform, so GDAL opens one straight from
the shard (``/vsitar/tiles/shards/train-000000.tar/{key}.image.tif``) and QGIS can show it.
A shard is written under a temporary name and renamed when complete; its records (and the
task's summary: skipped tiles, per-band sums) are then written beside it as
``{name}.records.json``, which marks the shard as finished.

Each record carries a CRC-32 of every member but itself (``checksums``), checked when the
tile is read back: flipped bytes inside a compressed strip often decode without an error,
so a mismatch, like a member that cannot be decoded at all, makes the tile corrupt
(skipped with a warning, or :class:`~geotiler.errors.DatasetError`). Member names are
UTF-8 in plain ustar headers (at most 100 bytes each).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import tarfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from geotiler.atomic import PARTIAL_SUFFIX, atomic_path, partial_path, write_json_atomic
from geotiler.errors import DatasetError, OutputError, reason
from geotiler.tiles.geotiff import decode

log = logging.getLogger(__name__)

SHARD_DIR = "shards"
RECORDS_SUFFIX = ".records.json"
CHECKSUMS = "checksums"  # record field: member extension -> CRC-32 (8 hex digits)
TAR_ENCODING = "utf-8"

__all__ = ["CHECKSUMS", "PARTIAL_SUFFIX", "RECORDS_SUFFIX", "SHARD_DIR", "ShardWriter", "Tile",
           "checksum", "iter_shard", "iter_tiles", "list_shards", "read_shard_summary",
           "records_path", "shard_is_complete"]


def checksum(data: bytes) -> str:
    """CRC-32 of a member's bytes, as stored in its record."""
    return f"{zlib.crc32(data):08x}"


@dataclass
class Tile:
    """One tile read back from a shard.

    ``image`` is (bands, H, W) in the source dtype, ``mask`` (channels, H, W) uint8 0..255,
    ``valid`` (H, W) bool (False where the source had nodata or the tile ran past its edge).
    """

    key: str
    image: np.ndarray
    mask: np.ndarray
    valid: np.ndarray
    transform: Affine
    crs: CRS
    record: dict[str, Any]


class ShardWriter:
    """Write one shard atomically (:func:`geotiler.atomic.atomic_path`): members go to
    ``{name}.tar.partial``, renamed on close.

    Use as a context manager; if the body raises (Ctrl-C included) the partial file is
    removed and no shard appears. A write the OS refuses (full disk, file size limit)
    raises OutputError naming the shard.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.tmp_path = partial_path(self.path)
        self._file: BinaryIO | None = None
        self._atomic: contextlib.ExitStack | None = None
        self._offset = 0
        self.records: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = {}

    def __enter__(self) -> ShardWriter:
        stack = contextlib.ExitStack()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp_path = stack.enter_context(atomic_path(self.path))
            self._file = stack.enter_context(open(self.tmp_path, "wb"))
        except OSError as err:
            stack.close()
            raise OutputError.writing(self.path, err) from None
        self._atomic = stack
        return self

    def add(self, key: str, members: dict[str, bytes], record: dict[str, Any]) -> None:
        """Add one tile: ``members`` maps extension (``image.tif``) to bytes.

        The tar stream is written here, not by :mod:`tarfile` member by member: the same
        ustar headers (``TarInfo.tobuf``) and padding, in one write per tile.
        """
        if self._file is None:
            raise RuntimeError("ShardWriter used outside its context")
        if "." in key or "/" in key:
            raise ValueError(f"tile keys may not contain '.' or '/': {key!r}")
        record = {**record, CHECKSUMS: {ext: checksum(data) for ext, data in members.items()}}
        body = dict(members)
        body["json"] = json.dumps(record, sort_keys=True).encode()
        chunks: list[bytes] = []
        for ext, data in body.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mtime = 0  # identical bytes for identical inputs
            info.mode = 0o644
            chunks.append(info.tobuf(tarfile.USTAR_FORMAT, TAR_ENCODING, "surrogateescape"))
            chunks.append(data)
            chunks.append(tarfile.NUL * (-len(data) % tarfile.BLOCKSIZE))
        self._write(b"".join(chunks))
        self.records.append(record)

    def _write(self, data: bytes) -> None:
        assert self._file is not None
        try:
            self._file.write(data)
        except OSError as err:
            raise OutputError.writing(self.path, err) from None
        self._offset += len(data)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._file is None or self._atomic is None:
            raise RuntimeError("ShardWriter closed outside its context")
        try:
            if exc_type is None:  # the end of archive, as tarfile writes it
                end = tarfile.NUL * (2 * tarfile.BLOCKSIZE)
                self._write(end + tarfile.NUL * (-(self._offset + len(end))
                                                 % tarfile.RECORDSIZE))
        except BaseException as err:
            self._atomic.__exit__(type(err), err, err.__traceback__)
            raise
        try:
            self._atomic.__exit__(exc_type, exc, tb)
        except OSError as err:  # closing (flushing) the file failed
            if exc_type is None:
                raise OutputError.writing(self.path, err) from None
            return  # the body's own error goes on
        if exc_type is None:
            write_json_atomic(records_path(self.path),
                              {"records": self.records, **self.summary})


def records_path(shard: Path) -> Path:
    return shard.with_name(shard.name[: -len(".tar")] + RECORDS_SUFFIX)


def shard_is_complete(shard: Path) -> bool:
    """A shard counts as written once both the tar and its records file exist."""
    return shard.exists() and records_path(shard).exists()


def read_shard_summary(shard: Path) -> dict[str, Any]:
    """The ``{name}.records.json`` of a finished shard: ``records`` plus the task summary."""
    data: dict[str, Any] = json.loads(records_path(shard).read_text())
    return data


def list_shards(dataset_dir: Path | str, split: str | None = None) -> list[Path]:
    """Finished shards of a dataset, sorted by name, optionally of one split."""
    shard_dir = Path(dataset_dir) / SHARD_DIR
    if not shard_dir.is_dir():
        return []
    pattern = f"{split}-*.tar" if split else "*.tar"
    return sorted(p for p in shard_dir.glob(pattern) if shard_is_complete(p))


def iter_shard(
    path: Path | str,
    *,
    skip_corrupt: bool = True,
    select: Callable[[int, str], bool] | None = None,
) -> Iterator[Tile]:
    """Yield the tiles of one shard in stored order.

    A member that cannot be decoded is logged and skipped when ``skip_corrupt`` is true
    (one bad tile should not end a long training run); otherwise it raises DatasetError.
    ``select(index, key)``, if given, is asked before a tile is decoded (``index`` counts
    the shard's tiles from 0); tiles it declines are skipped without decoding, so readers
    that share a shard pay only for their own tiles.
    """
    path = Path(path)
    try:
        tar = tarfile.open(path, "r", encoding=TAR_ENCODING)  # noqa: SIM115 - closed below
    except OSError as err:
        raise DatasetError(f"cannot open shard {path}: {reason(err)}") from None
    except tarfile.TarError:  # its message lists every compression tarfile tried
        raise DatasetError(f"cannot open shard {path}: not a tar archive (damaged, or not "
                           "written by geotiler tile); tile the dataset again") from None
    with tar:
        group: dict[str, bytes] = {}
        current: str | None = None
        index = 0
        wanted = True
        try:
            for info in tar:
                if not info.isfile():
                    continue
                key, _, ext = info.name.partition(".")
                if key != current:
                    if current is not None:
                        tile = _assemble(path, current, group, skip_corrupt) if wanted else None
                        if tile is not None:
                            yield tile
                        index += 1
                    group = {}
                    current = key
                    wanted = select is None or select(index, key)
                if wanted:
                    handle = tar.extractfile(info)
                    group[ext] = handle.read() if handle else b""
        except (OSError, tarfile.TarError) as err:
            if not skip_corrupt:
                raise DatasetError(f"shard {path} is truncated or corrupt: {err}") from None
            log.warning("shard %s is truncated or corrupt after %s: %s", path, current, err)
            return
        if current is not None and wanted:
            tile = _assemble(path, current, group, skip_corrupt)
            if tile is not None:
                yield tile


def _assemble(path: Path, key: str, group: dict[str, bytes], skip_corrupt: bool) -> Tile | None:
    # Any failure to decode untrusted bytes (tifffile, imagecodecs' zstd/deflate/LZW, JSON,
    # GDAL's CRS parser each raise their own types) means the same: a corrupt tile.
    try:
        record = json.loads(group["json"])
        for ext, expected in (record.get(CHECKSUMS) or {}).items():
            if ext not in group:
                raise ValueError(f"member {key}.{ext} is missing")
            if checksum(group[ext]) != expected:
                raise ValueError(f"member {key}.{ext} fails its checksum")
        image, valid = decode(group["image.tif"])
        mask, _ = decode(group["mask.tif"])
        transform = Affine(*record["transform"])
        crs = _crs(record["crs"])
    except Exception as err:
        if not skip_corrupt:
            raise DatasetError(f"tile {key} in {path} is corrupt: {err!r}") from None
        log.warning("skipping corrupt tile %s in %s: %r", key, path, err)
        return None
    return Tile(key, image, mask, valid, transform, crs, record)


@functools.lru_cache(maxsize=64)
def _crs(text: str) -> CRS:
    """Tiles of one raster share a CRS string: parse it once."""
    return CRS.from_user_input(text)


def iter_tiles(
    dataset_dir: Path | str, split: str | None = None, *, shards: Sequence[Path] | None = None
) -> Iterator[Tile]:
    """Yield every tile of a dataset (or of one split) as numpy arrays with georeferencing."""
    for shard in shards if shards is not None else list_shards(dataset_dir, split):
        yield from iter_shard(shard)

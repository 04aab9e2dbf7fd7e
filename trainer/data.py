"""Tiles from shards as torch samples: splitting, shuffling, normalization, augmentation.

:class:`ShardDataset` is an ``IterableDataset`` over the shards of one split. The work is
cut into *items* (a shard, or one of ``parts`` interleaved slices of a shard when there are
fewer shards than readers) and the items are dealt round-robin to every reader: each
DataLoader worker of each distributed rank. Every tile is thus read by exactly one reader
per epoch, whatever the number of workers and ranks. Item order is shuffled per epoch
from ``(seed, epoch)`` (the same on every rank) and tiles are shuffled within a buffer
per reader, so the order depends on the seed, the epoch and the reader layout only.

A sample is a dict of ``image`` (C,H,W) float32 normalized per band with the dataset's
mean/std (:meth:`~geotiler.tiles.schema.DatasetInfo.normalize`, as at inference),
``target`` (K,H,W) float32 in [0, 1] (the mask channels / 255), ``valid`` (1,H,W) float32
(0 at nodata, which is also set to 0 in the image) and the tile ``key``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from geotiler.tiles.schema import DatasetInfo
from geotiler.tiles.shards import Tile, iter_shard, read_shard_summary

log = logging.getLogger(__name__)

Sample = dict[str, Any]
WorkItem = tuple[Path, int, int]  # (shard, part, parts)


def shard_tile_count(shard: Path) -> int:
    """Tiles in a shard according to its records file (0 if unreadable)."""
    try:
        data = read_shard_summary(shard)
    except (OSError, ValueError):
        return 0
    records = data.get("records") if isinstance(data, dict) else data
    return len(records) if isinstance(records, list) else 0


@dataclass(frozen=True)
class Augmentation:
    """One draw of the augmentation.

    Geometry: rotation by ``k`` x 90 degrees and an optional horizontal flip (all 8
    symmetries of the square), then a zoom by ``zoom`` (> 1: a crop of ``size / zoom`` px at
    the fractional offset ``(dy, dx)`` resized up; < 1: the tile shrunk to ``size * zoom`` px
    and placed at that offset in an otherwise nodata tile). The zoom changes the apparent
    GSD, so a model sees its buildings at several sizes (scale jitter).
    Radiometry, on normalized bands: ``x * contrast + brightness``, then a Gaussian blur of
    ``blur`` px sigma and Gaussian noise of ``noise`` std (normalized units) seeded by
    ``noise_seed``.
    """

    k: int = 0
    flip: bool = False
    contrast: float = 1.0
    brightness: float = 0.0
    zoom: float = 1.0
    dy: float = 0.0
    dx: float = 0.0
    blur: float = 0.0
    noise: float = 0.0
    noise_seed: int = 0

    @classmethod
    def draw(
        cls,
        rng: np.random.Generator,
        jitter: float,
        *,
        scale: float = 0.0,
        blur: float = 0.0,
        noise: float = 0.0,
    ) -> Augmentation:
        """A random draw: ``jitter`` colour strength, ``scale`` the zoom range (zoom is
        log-uniform in [1 / (1 + scale), 1 + scale]), ``blur`` the largest blur sigma (px)
        and ``noise`` the noise std; blur and noise are each applied to half the tiles.
        Parameters at 0 draw nothing, so the random stream of the others is unchanged.
        """
        k = int(rng.integers(4))
        flip = bool(rng.integers(2))
        contrast, brightness = 1.0, 0.0
        if jitter > 0:
            contrast, brightness = 1.0 + rng.uniform(-jitter, jitter), rng.uniform(-jitter, jitter)
        zoom, dy, dx = 1.0, 0.0, 0.0
        if scale > 0:
            zoom = float(np.exp(rng.uniform(-1.0, 1.0) * np.log1p(scale)))
            dy, dx = float(rng.uniform()), float(rng.uniform())
        sigma = float(rng.uniform(0.0, blur)) if blur > 0 and rng.integers(2) else 0.0
        std = float(noise) if noise > 0 and rng.integers(2) else 0.0
        seed = int(rng.integers(2**31)) if std > 0 else 0
        return cls(k, flip, contrast, brightness, zoom, dy, dx, sigma, std, seed)

    def geometry(self, a: np.ndarray) -> np.ndarray:
        """The rotation and flip of the last two axes, as a view."""
        a = np.rot90(a, self.k, axes=(-2, -1))
        return a[..., ::-1] if self.flip else a

    def rescale(
        self, image: np.ndarray, target: np.ndarray, valid: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The zoom of (C,H,W) ``image``, (K,H,W) ``target`` and (H,W) bool ``valid``:
        bilinear for image and target (soft target edges), nearest for ``valid``. Pixels
        the zoomed-out tile does not cover are nodata (0, not valid).
        """
        h, w = valid.shape
        if abs(self.zoom - 1.0) < 1e-3 or h < 8 or w < 8:
            return image, target, valid
        import cv2  # only when zooming; keeps `import trainer` light

        def resize(a: np.ndarray, size: tuple[int, int], interp: int) -> np.ndarray:
            planes = [cv2.resize(np.ascontiguousarray(p), size, interpolation=interp)
                      for p in a.reshape(-1, *a.shape[-2:])]
            return np.stack(planes).reshape(*a.shape[:-2], size[1], size[0])

        v = valid.astype(np.uint8)
        if self.zoom > 1.0:
            ch, cw = max(1, round(h / self.zoom)), max(1, round(w / self.zoom))
            y, x = round(self.dy * (h - ch)), round(self.dx * (w - cw))
            crop = (slice(y, y + ch), slice(x, x + cw))
            image = resize(image[(..., *crop)], (w, h), cv2.INTER_LINEAR)
            target = resize(target[(..., *crop)], (w, h), cv2.INTER_LINEAR)
            valid = resize(v[crop], (w, h), cv2.INTER_NEAREST).astype(bool)
        else:
            sh, sw = max(1, round(h * self.zoom)), max(1, round(w * self.zoom))
            y, x = round(self.dy * (h - sh)), round(self.dx * (w - sw))
            inner = (slice(y, y + sh), slice(x, x + sw))
            out_i = np.zeros_like(image)
            out_t = np.zeros_like(target)
            out_v = np.zeros((h, w), dtype=bool)
            out_i[(..., *inner)] = resize(image, (sw, sh), cv2.INTER_AREA)
            out_t[(..., *inner)] = resize(target, (sw, sh), cv2.INTER_AREA)
            out_v[inner] = resize(v[None], (sw, sh), cv2.INTER_NEAREST)[0].astype(bool)
            image, target, valid = out_i, out_t, out_v
        image[:, ~valid] = 0.0
        return image, target, valid

    def degrade(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Blur and noise of a normalized (C,H,W) float32 image (in place where possible)."""
        if self.blur > 0:
            import cv2

            for i in range(image.shape[0]):
                image[i] = cv2.GaussianBlur(np.ascontiguousarray(image[i]), (0, 0), self.blur)
        if self.noise > 0:
            rng = np.random.default_rng(self.noise_seed)
            image += rng.normal(0.0, self.noise, image.shape).astype(np.float32)
        if self.blur > 0 or self.noise > 0:
            image[:, ~valid] = 0.0
        return image


def augment(
    image: np.ndarray,
    target: np.ndarray,
    valid: np.ndarray,
    rng: np.random.Generator,
    jitter: float = 0.1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Geo-safe augmentation, the same geometry for image, target and valid mask.

    A random 90-degree rotation and horizontal flip (together all 8 symmetries of the
    square, vertical flips included), then on the normalized image only a mild colour
    jitter: contrast x (1 +- jitter) and brightness +- jitter (in units of std).
    Pixels outside ``valid`` stay 0.
    """
    aug = Augmentation.draw(rng, jitter)
    image, target, valid = (np.ascontiguousarray(aug.geometry(a)) for a in (image, target, valid))
    if jitter > 0:
        image = (image * np.float32(aug.contrast) + np.float32(aug.brightness)).astype(np.float32)
        image[:, ~valid] = 0.0
    return image, target, valid


def prepare(
    tile: Tile, info: DatasetInfo, aug: Augmentation | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A tile as (image, target, valid) arrays: normalized, augmented by ``aug`` if given.

    ``image`` (C,H,W) float32 by :meth:`DatasetInfo.normalize`, ``target`` (K,H,W) float32
    in [0, 1], ``valid`` (H,W) bool. The same result as normalizing then :func:`augment`,
    in one pass over the pixels: the geometry is applied to the source arrays as views and
    the jitter folded into the normalization (``gain=contrast, bias=brightness``).
    """
    image, mask, valid = tile.image, tile.mask, np.asarray(tile.valid, dtype=bool)
    gain, bias = 1.0, 0.0
    if aug is not None:
        image, mask, valid = aug.geometry(image), aug.geometry(mask), aug.geometry(valid)
        gain, bias = aug.contrast, aug.brightness
    valid = np.ascontiguousarray(valid)
    x = info.normalize(image, valid, gain=gain, bias=bias)
    target = mask.astype(np.float32)
    target *= np.float32(1.0 / 255.0)
    if aug is not None:
        x, target, valid = aug.rescale(x, target, valid)
        x = aug.degrade(x, valid)
    return x, target, valid


class ShardDataset(IterableDataset):
    """The tiles of some shards, split over DataLoader workers and distributed ranks.

    Args:
        shards: the shard files (e.g. ``list_shards(dir, "train")``).
        info: the dataset's ``dataset.json`` (normalization).
        shuffle: shuffle item order per epoch and tiles within a buffer.
        augment: apply :func:`augment` to every tile.
        seed: seeds shuffling and augmentation (with the epoch and the reader index).
        rank, world_size: this process's place among distributed processes.
        shuffle_buffer: raw tiles each reader shuffles among (memory: ~0.4 MB each at 256 px).
        jitter: colour jitter strength (see :func:`augment`).
        scale, blur, noise: zoom range, largest blur sigma (px) and noise std of the
            augmentation (see :meth:`Augmentation.draw`; 0 turns each off).
    """

    def __init__(
        self,
        shards: Sequence[Path],
        info: DatasetInfo,
        *,
        shuffle: bool = False,
        augment: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 128,
        jitter: float = 0.1,
        scale: float = 0.0,
        blur: float = 0.0,
        noise: float = 0.0,
    ) -> None:
        super().__init__()
        self.shards = [Path(s) for s in shards]
        self.counts = [shard_tile_count(s) for s in self.shards]
        self.info = info
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle_buffer = shuffle_buffer
        self.jitter = jitter
        self.scale, self.blur, self.noise = scale, blur, noise
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch (before iterating the DataLoader) to reshuffle."""
        self.epoch = epoch

    @property
    def num_tiles(self) -> int:
        """Tiles in these shards according to their records (corrupt ones included)."""
        return sum(self.counts)

    def work_items(self, readers: int) -> list[list[WorkItem]]:
        """The items of each of ``readers`` readers this epoch (same on every rank).

        Items are taken in (per-epoch shuffled) order and each goes to the reader with the
        fewest tiles so far, so readers, and thus ranks, get about as many tiles each.
        """
        order = list(range(len(self.shards)))
        if self.shuffle:
            np.random.default_rng([self.seed, self.epoch]).shuffle(order)
        parts = max(1, math.ceil(readers / max(1, len(self.shards))))
        assigned: list[list[WorkItem]] = [[] for _ in range(readers)]
        load = [0] * readers
        for part in range(parts):
            for i in order:
                reader = min(range(readers), key=lambda r: (load[r], r))
                assigned[reader].append((self.shards[i], part, parts))
                load[reader] += _part_size(self.counts[i], part, parts)
        return assigned

    def tiles_of_rank(self, num_workers: int = 0) -> int:
        """Expected tiles this rank reads in an epoch (from the records files)."""
        workers = max(1, num_workers)
        items = self.work_items(self.world_size * workers)
        counts = dict(zip(self.shards, self.counts, strict=True))
        return sum(
            _part_size(counts[shard], part, parts)
            for reader in range(self.rank * workers, (self.rank + 1) * workers)
            for shard, part, parts in items[reader]
        )

    def __iter__(self) -> Iterator[Sample]:
        worker = get_worker_info()
        num_workers, worker_id = (1, 0) if worker is None else (worker.num_workers, worker.id)
        readers = self.world_size * num_workers
        reader = self.rank * num_workers + worker_id
        items = self.work_items(readers)[reader]
        rng = np.random.default_rng([self.seed, self.epoch, reader, 1])
        tiles = self._read(items)
        if self.shuffle:
            tiles = _shuffled(tiles, self.shuffle_buffer, rng)
        for tile in tiles:
            aug = (Augmentation.draw(rng, self.jitter, scale=self.scale, blur=self.blur,
                                     noise=self.noise) if self.augment else None)
            image, target, valid = prepare(tile, self.info, aug)
            yield {
                "image": torch.from_numpy(image),
                "target": torch.from_numpy(target),
                "valid": torch.from_numpy(valid[None].astype(np.float32)),
                "key": tile.key,
            }

    @staticmethod
    def _read(items: list[WorkItem]) -> Iterator[Tile]:
        for shard, part, parts in items:
            yield from iter_shard(shard, select=_every(parts, part))


def _every(parts: int, part: int) -> Callable[[int, str], bool]:
    """Selects the tiles at positions ``part``, ``part + parts``, ... of a shard."""

    def select(index: int, _key: str) -> bool:
        return index % parts == part

    return select


def _part_size(count: int, part: int, parts: int) -> int:
    """Tiles of a shard of ``count`` tiles at positions ``part``, ``part + parts``, ..."""
    return len(range(part, count, parts))


def _shuffled(
    tiles: Iterator[Tile], size: int, rng: np.random.Generator, initial: int = 8
) -> Iterator[Tile]:
    """Shuffle a stream within a buffer of ``size`` (WebDataset style).

    The first tile comes out once ``initial`` are buffered; the buffer then grows by reading
    two tiles per tile given out until it holds ``size``, so an epoch starts without
    waiting for a full buffer.
    """
    buffer: list[Tile] = []
    for tile in tiles:
        buffer.append(tile)
        if len(buffer) < size:
            extra = next(tiles, None)
            if extra is not None:
                buffer.append(extra)
        if len(buffer) >= min(initial, size):
            i = int(rng.integers(len(buffer)))
            buffer[i], buffer[-1] = buffer[-1], buffer[i]
            yield buffer.pop()
    for i in rng.permutation(len(buffer)):
        yield buffer[i]


def make_loader(
    dataset: ShardDataset, batch_size: int, workers: int, *, pin_memory: bool = False
) -> DataLoader:
    """A DataLoader over ``dataset`` (batches are formed within each worker)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )

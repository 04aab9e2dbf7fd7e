"""Tile data for training: splitting over workers and ranks, shuffling, augmentation."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from trainer_fixtures import make_tile_dataset

from geotiler.tiles.schema import load_dataset_info
from geotiler.tiles.shards import iter_shard, list_shards
from trainer.data import Augmentation, ShardDataset, augment, make_loader, prepare

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiles")
    return make_tile_dataset(root, splits={"train": 22, "val": 5}, shard_size=6, size=32)


def keys_of(loader: object) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "suggested max number of worker" on 2 cores
        return [k for batch in loader for k in batch["key"]]  # type: ignore[attr-defined]


def test_two_workers_yield_each_tile_once_per_epoch(tiles: Path) -> None:
    info = load_dataset_info(tiles)
    ds = ShardDataset(list_shards(tiles, "train"), info, shuffle=True, augment=True, seed=3)
    assert ds.num_tiles == 22
    orders = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        keys = keys_of(make_loader(ds, 4, workers=2))
        assert Counter(keys) == Counter(f"train_{i:05d}" for i in range(22))
        orders.append(keys)
    assert orders[0] != orders[1]  # reshuffled per epoch
    ds.set_epoch(0)
    assert keys_of(make_loader(ds, 4, workers=2)) == orders[0]  # same seed, same order


@pytest.mark.parametrize(("world", "workers"), [(2, 0), (2, 2), (3, 1), (5, 2)])
def test_ranks_and_workers_share_tiles_without_duplicates(
    tiles: Path, world: int, workers: int
) -> None:
    info = load_dataset_info(tiles)
    seen: list[str] = []
    for rank in range(world):
        ds = ShardDataset(list_shards(tiles, "train"), info, shuffle=True, seed=1,
                          rank=rank, world_size=world)
        ds.set_epoch(2)
        keys = keys_of(make_loader(ds, 3, workers))
        assert len(keys) == ds.tiles_of_rank(workers)
        seen += keys
    assert sorted(seen) == [f"train_{i:05d}" for i in range(22)]


def test_samples_are_normalized_with_nodata_zeroed(tiles: Path) -> None:
    info = load_dataset_info(tiles)
    ds = ShardDataset(list_shards(tiles, "train"), info)
    samples = list(ds)
    image = torch.stack([s["image"] for s in samples])
    valid = torch.stack([s["valid"] for s in samples])
    target = torch.stack([s["target"] for s in samples])
    assert image.dtype == torch.float32 and image.shape[1:] == (3, 32, 32)
    assert target.shape[1:] == (2, 32, 32) and 0 <= float(target.min()) <= float(target.max()) <= 1
    assert float(valid.min()) == 0  # the fixture puts nodata strips in some tiles
    pixels = image.permute(1, 0, 2, 3)[:, valid[:, 0] > 0]
    assert pixels.mean(dim=1).abs().max() < 0.3
    assert pixels.std(dim=1).sub(1).abs().max() < 0.3
    assert float(image.masked_select(valid.expand_as(image) == 0).abs().max()) == 0


def test_augmentation_keeps_image_and_mask_aligned() -> None:
    rng = np.random.default_rng(0)
    size = 16
    base = rng.random((size, size)).astype(np.float32)
    image = np.stack([base, base * 2, base * 3])
    target = np.stack([base, 1 - base])
    valid = base > 0.2
    image[:, ~valid] = 0
    seen = set()
    for _ in range(40):
        a_img, a_tgt, a_valid = augment(image, target, valid, rng, jitter=0.0)
        np.testing.assert_allclose(a_img[0], a_tgt[0] * a_valid)
        np.testing.assert_allclose(a_tgt[1], 1 - a_tgt[0])
        assert np.array_equal(a_valid, a_tgt[0] > 0.2)
        seen.add(a_tgt[0].tobytes())
    assert len(seen) == 8  # rotations x flips: all symmetries of the square
    # colour jitter changes the image only, mildly, and keeps nodata at 0
    j_img, j_tgt, j_valid = augment(image, target, valid, np.random.default_rng(1), jitter=0.1)
    plain = j_tgt[0][j_valid]  # what image band 0 would be without jitter
    assert np.all(np.abs(j_img[0][j_valid] - plain) <= 0.1 * plain + 0.1 + 1e-6)
    assert not np.allclose(j_img[0][j_valid], plain)
    assert np.all(j_img[:, ~j_valid] == 0)


def test_fast_path_equals_normalize_then_augment(tiles: Path) -> None:
    info = load_dataset_info(tiles)
    tile = next(t for t in iter_shard(list_shards(tiles, "train")[0]) if not t.valid.all())
    for seed in range(6):
        aug = Augmentation.draw(np.random.default_rng(seed), 0.1)
        fast = prepare(tile, info, aug)
        valid = tile.valid.astype(bool)
        slow = augment(info.normalize(tile.image, valid), tile.mask / np.float32(255),
                       valid, np.random.default_rng(seed), 0.1)
        for a, b in zip(fast, slow, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)

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


def _square_tile(size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright 16 px square on a dark tile: image band == footprint channel."""
    target = np.zeros((2, size, size), np.float32)
    target[0, 24:40, 24:40] = 1.0
    image = np.repeat(target[:1], 3, axis=0).copy()
    return image, target, np.ones((size, size), bool)


@pytest.mark.parametrize("zoom", [0.7, 1.4])
def test_scale_jitter_zooms_image_and_target_together(zoom: float) -> None:
    image, target, valid = _square_tile()
    aug = Augmentation(zoom=zoom, dy=0.5, dx=0.5)
    z_img, z_tgt, z_valid = aug.rescale(image.copy(), target.copy(), valid.copy())
    assert z_img.shape == image.shape and z_tgt.shape == target.shape
    # the square is still where the target says it is, and its area scaled by zoom²
    np.testing.assert_allclose(z_img[0], z_tgt[0] * z_valid, atol=1e-5)
    assert abs(z_tgt[0].sum() / target[0].sum() - zoom**2) < 0.15 * zoom**2
    if zoom < 1:  # zoomed out: the uncovered border is nodata, not background
        side = round(64 * zoom)
        assert z_valid.sum() == side * side
        assert np.all(z_img[:, ~z_valid] == 0)
    else:
        assert z_valid.all()


def test_blur_and_noise_change_the_image_only(tiles: Path) -> None:
    info = load_dataset_info(tiles)
    tile = next(iter_shard(list_shards(tiles, "train")[0]))
    plain = prepare(tile, info, Augmentation())
    degraded = prepare(tile, info, Augmentation(blur=1.0, noise=0.2, noise_seed=5))
    np.testing.assert_array_equal(plain[1], degraded[1])
    np.testing.assert_array_equal(plain[2], degraded[2])
    diff = degraded[0] - plain[0]
    assert 0.05 < float(np.abs(diff[:, plain[2]]).mean()) < 1.0
    assert np.all(degraded[0][:, ~plain[2]] == 0)


def test_new_augmentations_off_leave_the_random_stream_unchanged() -> None:
    """Older runs repeat exactly: scale/blur/noise at 0 draw no random numbers."""
    a = Augmentation.draw(np.random.default_rng(7), 0.1)
    b = Augmentation.draw(np.random.default_rng(7), 0.1, scale=0.0, blur=0.0, noise=0.0)
    assert a == b and a.zoom == 1.0 and a.blur == 0.0 and a.noise == 0.0
    draws = [Augmentation.draw(np.random.default_rng(s), 0.1, scale=0.25, blur=1.0, noise=0.1)
             for s in range(200)]
    zooms = np.array([d.zoom for d in draws])
    assert zooms.min() >= 1 / 1.25 - 1e-9 and zooms.max() <= 1.25 + 1e-9
    assert (zooms > 1).mean() > 0.3 and (zooms < 1).mean() > 0.3
    assert 0.3 < np.mean([d.blur > 0 for d in draws]) < 0.7
    assert 0.3 < np.mean([d.noise > 0 for d in draws]) < 0.7

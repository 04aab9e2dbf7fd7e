"""Window weights, window and block planning, and seamless blending."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geotiler.predict.blend import (
    Accumulator,
    compact_core,
    complete_core,
    merge_core,
    sums_to_uint8,
    window_weights,
)
from geotiler.predict.plan import axis_starts, plan_blocks, plan_windows


def _mean(total: np.ndarray) -> np.ndarray:
    """(K + 1, h, w) weighted sums -> (K, h, w) float means; 0 where no window ran."""
    out = np.zeros(total[:-1].shape, dtype=np.float64)
    np.divide(total[:-1], total[-1], out=out, where=total[-1] > 0)
    return out


def _uint8(probs: np.ndarray) -> np.ndarray:
    """Probabilities -> 0..255 rounded to nearest and saturated, the plain numpy way."""
    return np.clip(np.rint(np.asarray(probs, np.float64) * 255), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("kind", ["hann", "linear"])
def test_window_weights_are_smooth_symmetric_and_floored(kind):
    w = window_weights(64, kind, floor=0.01)
    assert w.shape == (64, 64) and w.dtype == np.float32
    assert np.allclose(w, w.T) and np.allclose(w, w[::-1, ::-1])
    assert w.min() == pytest.approx(0.01)
    assert w[32, 32] == w.max() and w.max() <= 1.0
    assert np.all(np.diff(w[32, :32]) >= 0)  # rises towards the middle


def test_window_weights_reject_bad_arguments():
    with pytest.raises(ValueError):
        window_weights(0)
    with pytest.raises(ValueError):
        window_weights(8, "cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        window_weights(8, floor=0)


def test_axis_starts_small_and_exact():
    assert axis_starts(100, 256, 192) == [0]
    assert axis_starts(256, 256, 192) == [0]
    assert axis_starts(500, 256, 192) == [0, 192, 244]
    assert axis_starts(640, 256, 192) == [0, 192, 384]


@settings(max_examples=200, deadline=None)
@given(height=st.integers(1, 700), width=st.integers(1, 700), size=st.integers(4, 160),
       data=st.data())
def test_windows_cover_the_raster(height, width, size, data):
    overlap = data.draw(st.integers(0, size - 1))
    windows = plan_windows(height, width, size, overlap)
    cover = np.zeros((height, width), dtype=np.int32)
    for r, c in windows:
        assert r >= 0 and c >= 0
        assert r + size <= max(height, size) and c + size <= max(width, size)
        cover[r:r + size, c:c + size] += 1
    assert cover.min() >= 1
    rows = sorted({r for r, _ in windows})
    # neighbours overlap by at least the requested overlap, no window is redundant
    for a, b in itertools.pairwise(rows):
        assert size - overlap >= b - a > 0


@settings(max_examples=150, deadline=None)
@given(height=st.integers(1, 900), width=st.integers(1, 900), size=st.integers(8, 128),
       block=st.integers(64, 400), data=st.data())
def test_blocks_partition_the_grid_and_own_each_window_once(height, width, size, block, data):
    overlap = data.draw(st.integers(0, size - 1))
    plan = plan_blocks(height, width, size, overlap, block)
    cover = np.zeros((height, width), dtype=np.int32)
    owned: list[tuple[int, int]] = []
    for b in plan.blocks():
        cover[b.core.row0:b.core.row1, b.core.col0:b.core.col1] += 1
        owned += b.windows
        assert b.windows, "every block owns a window"
        assert (b.extent.row0, b.extent.col0) == (b.core.row0, b.core.col0)
        # spills reach only the next block, by at most the overlap
        assert b.extent.row1 - b.core.row1 <= overlap
        assert b.extent.col1 - b.core.col1 <= overlap
        for r, c in b.windows:
            assert b.core.contains(r, c)
    assert cover.min() == 1 and cover.max() == 1
    assert sorted(owned) == sorted(plan_windows(height, width, size, overlap))
    assert plan.num_windows == len(owned)


def _blend(image: np.ndarray, fn, size: int, overlap: int, block: int) -> np.ndarray:
    """Blend fn over windows of image with a block plan, the way predict does."""
    _, height, width = image.shape
    plan = plan_blocks(height, width, size, overlap, block)
    weights = window_weights(size)
    pieces = {}
    for b in plan.blocks():
        acc = Accumulator(b.extent, 2, weights)
        batch = np.zeros((len(b.windows), image.shape[0], size, size), np.float32)
        for k, (r, c) in enumerate(b.windows):
            part = image[:, r:r + size, c:c + size]
            batch[k, :, :part.shape[1], :part.shape[2]] = part
        acc.add(fn(batch, b.windows), b.windows)
        pieces[b.index] = acc.pieces(b.core)
    out = np.zeros((2, height, width), np.float32)
    for i, j in plan.indexes:
        core = plan.core(i, j)
        total = merge_core(
            pieces[i, j].core,
            pieces[i, j - 1].right if j else None,
            pieces[i - 1, j].bottom if i else None,
            pieces[i - 1, j - 1].corner if i and j else None,
        )
        out[:, core.row0:core.row1, core.col0:core.col1] = _mean(total)
    return out


def _per_pixel(batch: np.ndarray, origins) -> np.ndarray:
    x = batch.mean(axis=1)
    return np.stack([1 / (1 + np.exp(-(x - 0.5) * 6)), x ** 2], axis=1)


def test_per_pixel_predictor_stitches_to_the_whole_map():
    rng = np.random.default_rng(1)
    image = rng.random((3, 301, 467)).astype(np.float32)
    whole = _per_pixel(image[None], [(0, 0)])[0]
    stitched = _blend(image, _per_pixel, size=64, overlap=16, block=100)
    assert np.abs(stitched - whole).max() < 1e-5
    assert np.abs(_uint8(stitched).astype(int) - _uint8(whole).astype(int)).max() <= 1


def test_block_decomposition_equals_blending_in_one_block():
    """Outputs that depend on the window (not per pixel) blend the same whatever the blocks."""
    rng = np.random.default_rng(2)
    image = rng.random((1, 257, 390)).astype(np.float32)

    def windowed(batch, origins):
        bias = np.array([((r * 7 + c * 13) % 17) / 17 for r, c in origins], np.float32)
        return np.stack([batch[:, 0] * 0.5 + bias[:, None, None], batch[:, 0]], axis=1)

    one_block = _blend(image, windowed, size=48, overlap=20, block=10_000)
    many = _blend(image, windowed, size=48, overlap=20, block=60)
    assert np.abs(one_block - many).max() < 1e-5
    # the blend is continuous: no jumps at window borders beyond the image's own
    assert np.abs(np.diff(one_block[0], axis=1)).max() < 1.0


@pytest.mark.parametrize(("size", "overlap", "block"), [(48, 20, 60), (64, 0, 64), (32, 15, 50)])
def test_compacted_cores_complete_to_the_same_probabilities(size, overlap, block):
    """What predict keeps while a block waits (uint8 + edge sums) loses nothing."""
    rng = np.random.default_rng(3)
    height, width = 233, 301
    plan = plan_blocks(height, width, size, overlap, block)
    weights = window_weights(size)
    pieces, parts = {}, {}
    for b in plan.blocks():
        acc = Accumulator(b.extent, 2, weights)
        acc.add(rng.random((len(b.windows), 2, size, size), dtype=np.float32), b.windows)
        pieces[b.index] = acc.pieces(b.core)
        parts[b.index] = compact_core(pieces[b.index].core, *plan.incoming(*b.index))
    for i, j in plan.indexes:
        neighbours = (pieces[i, j - 1].right if j else None,
                      pieces[i - 1, j].bottom if i else None,
                      pieces[i - 1, j - 1].corner if i and j else None)
        expected = sums_to_uint8(merge_core(pieces[i, j].core, *neighbours))
        assert np.array_equal(complete_core(parts[i, j], *neighbours), expected)


def test_sums_to_uint8_rounds_the_weighted_means_and_saturates():
    rng = np.random.default_rng(5)
    total = rng.random((3, 64, 80)).astype(np.float32) * 3
    total[:-1] *= total[-1]
    total[-1, :4] = 0  # no window ran there
    fused = sums_to_uint8(total)
    assert fused.dtype == np.uint8 and fused.shape == (2, 64, 80)
    slow = _uint8(_mean(total))
    assert np.abs(fused.astype(int) - slow.astype(int)).max() <= 1  # float rounding order
    assert np.mean(fused != slow) < 1e-3
    assert not fused[:, :4].any()
    edge = np.array([[[-0.1, 0.0, 0.5, 1.0, 1.2]], [[1.0] * 5]], np.float32)
    assert sums_to_uint8(edge).tolist() == [[[0, 0, 128, 255, 255]]]

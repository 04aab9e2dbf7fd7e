"""Tiny tile datasets for the trainer tests, written directly with the shard writer.

Tiles are noisy grey images with bright rectangles as buildings; the masks are the
rectangles (footprint) and their outlines (contour), or the seed's RGB target. Some tiles
carry a strip of nodata. Everything is deterministic in ``seed``.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from affine import Affine
from rasterio.crs import CRS

from geotiler.tiles.config import TileConfig
from geotiler.tiles.geotiff import GeoTiffEncoder
from geotiler.tiles.schema import DATASET_FILE, DatasetInfo
from geotiler.tiles.shards import SHARD_DIR, ShardWriter

CRS_UTM = CRS.from_epsg(32636)


def synthetic_tile(
    rng: np.random.Generator, size: int, target: str = "masks", nodata: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(image uint8 (3,H,W), mask uint8 (K,H,W), valid bool (H,W), building count)."""
    footprint = np.zeros((size, size), np.uint8)
    contour = np.zeros((size, size), np.uint8)
    count = int(rng.integers(0, 4))
    for _ in range(count):
        w, h = (int(v) for v in rng.integers(size // 8, size // 3, 2))
        x, y = (int(v) for v in rng.integers(0, size - 4, 2))
        cv2.rectangle(footprint, (x, y), (x + w, y + h), 255, thickness=-1)
        cv2.rectangle(contour, (x, y), (x + w, y + h), 255, thickness=2)
    image = rng.normal(80, 15, (3, size, size))
    image[:, footprint > 0] = rng.normal(200, 10, (3, int((footprint > 0).sum())))
    image = np.clip(image, 0, 255).astype(np.uint8)
    valid = np.ones((size, size), bool)
    if nodata:
        valid[:, : size // 4] = False
        image[:, ~valid] = 0
    if target == "masks":
        mask = np.stack([footprint, contour])
    else:
        rgb = np.stack([footprint, np.maximum(footprint, contour), footprint])
        mask = rgb
    mask[:, ~valid] = 0
    return image, mask, valid, count


def make_tile_dataset(
    root: Path,
    *,
    splits: dict[str, int] | None = None,
    size: int = 64,
    shard_size: int = 8,
    target: str = "masks",
    seed: int = 0,
    nodata_every: int = 5,
    corrupt: int = 0,
    format_version: int | None = None,
) -> Path:
    """Write a finished tile dataset under ``root`` and return ``root``.

    ``corrupt`` train tiles get an undecodable image member (the reader skips them);
    ``format_version`` overrides the one written to dataset.json.
    """
    splits = {"train": 16, "val": 4} if splits is None else splits
    rng = np.random.default_rng(seed)
    root = Path(root)
    sums = np.zeros(3)
    sq = np.zeros(3)
    npx = 0
    counts: dict[str, int] = {}
    serial = 0
    encoder = GeoTiffEncoder(CRS_UTM)
    for split, n in splits.items():
        counts[split] = n
        for shard_no, start in enumerate(range(0, n, shard_size)):
            path = root / SHARD_DIR / f"{split}-{shard_no:06d}.tar"
            with ShardWriter(path) as writer:
                for i in range(start, min(n, start + shard_size)):
                    nodata = nodata_every > 0 and serial % nodata_every == nodata_every - 1
                    image, mask, valid, buildings = synthetic_tile(rng, size, target, nodata)
                    transform = Affine(0.5, 0, 500000 + serial * size * 0.5, 0, -0.5, 9000000)
                    key = f"{split}_{i:05d}"
                    record = {
                        "key": key,
                        "split": split,
                        "building_count": buildings,
                        "building_fraction": float((mask[0] > 0).mean()),
                        "transform": list(transform)[:6],
                        "crs": CRS_UTM.to_string(),
                    }
                    image_bytes = encoder.encode(image, transform, valid)
                    if split == "train" and i < corrupt:
                        image_bytes = b"not a tiff" + image_bytes[:100]
                    writer.add(
                        key,
                        {
                            "image.tif": image_bytes,
                            "mask.tif": encoder.encode(mask, transform),
                        },
                        record,
                    )
                    pixels = image[:, valid].astype(np.float64)
                    sums += pixels.sum(axis=1)
                    sq += (pixels**2).sum(axis=1)
                    npx += pixels.shape[1]
                    serial += 1
    mean = sums / max(npx, 1)
    std = np.sqrt(np.maximum(sq / max(npx, 1) - mean**2, 1e-6))
    config = TileConfig(size=size, target=target, seed=seed)  # type: ignore[arg-type]
    info = DatasetInfo(
        tile_size=size,
        gsd=0.5,
        bands=[1, 2, 3],
        band_names=["red", "green", "blue"],
        dtype="uint8",
        mean=[float(m) for m in mean],
        std=[float(s) for s in std],
        mask_channels=list(config.mask_channels),
        target=target,
        counts=counts,
        config=config.to_dict(),
        crs=CRS_UTM.to_string(),
    )
    data = info.to_json()
    if format_version is not None:
        data["format_version"] = format_version
    (root / DATASET_FILE).write_text(json.dumps(data, indent=2))
    return root

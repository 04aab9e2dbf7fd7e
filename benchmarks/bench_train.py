"""Training-step throughput: fed from shards through the DataLoader vs from memory.

Run by hand (not part of the tests)::

    python benchmarks/bench_train.py                      # builds a synthetic 256 px dataset
    python benchmarks/bench_train.py --tiles tiles/ --preset full --batch-size 1 --steps 10

Prints steps/s and images/s of the same model (a) on batches already in memory as tensors
and (b) on batches read from the shards by the DataLoader (decode, normalize, augment),
their ratio and the data-loading overhead in percent (target: below 10 %).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]


def build_tiles(root: Path, size: int, count: int) -> Path:
    """A synthetic dataset written with the test fixture (bright rectangles on noise)."""
    sys.path.insert(0, str(REPO / "tests"))
    from trainer_fixtures import make_tile_dataset

    return make_tile_dataset(root, splits={"train": count, "val": 0}, size=size,
                             shard_size=64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiles", type=Path, help="a tile dataset (default: synthetic)")
    parser.add_argument("--arch", choices=["pix2pix", "unet"], default="unet")
    parser.add_argument("--preset", choices=["small", "full"], default="small")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--cached", type=int, default=16, help="batches kept in memory")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--flush-denormal", action="store_true")
    parser.add_argument("--size", type=int, default=256, help="synthetic tile size")
    parser.add_argument("--synthetic-tiles", type=int, default=256)
    args = parser.parse_args()

    from geotiler.tiles.schema import load_dataset_info
    from geotiler.tiles.shards import list_shards
    from trainer.config import TrainConfig
    from trainer.data import ShardDataset, make_loader
    from trainer.distributed import Dist
    from trainer.losses import GANLoss
    from trainer.steps import build_models, pix2pix_step, unet_step

    if args.flush_denormal:
        torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory(prefix="bench_train_")
    tiles = args.tiles or build_tiles(Path(tmp.name), args.size, args.synthetic_tiles)
    info = load_dataset_info(tiles)
    config = TrainConfig(arch=args.arch, preset=args.preset, batch_size=args.batch_size,
                         epochs=1, workers=args.workers, device="cpu")
    batch_size = config.effective_batch_size
    model_config = config.model_config(info.num_bands, len(info.mask_channels))
    model_config.check_tile_size(info.tile_size)
    ctx = Dist()
    torch.manual_seed(0)
    models = build_models(model_config, config, ctx)
    gan = GANLoss()

    def step(batch: dict[str, Any]) -> None:
        if args.arch == "pix2pix":
            pix2pix_step(models, gan, batch["image"], batch["target"], batch["valid"], config, ctx)
        else:
            unet_step(models, batch["image"], batch["target"], batch["valid"], config, ctx)

    dataset = ShardDataset(list_shards(tiles, "train"), info, shuffle=True, augment=True,
                           shuffle_buffer=config.shuffle_buffer)

    def loader_batches() -> Iterator[dict[str, Any]]:
        for epoch in itertools.count():
            dataset.set_epoch(epoch)
            yield from make_loader(dataset, batch_size, args.workers)

    def timed(batches: Iterator[dict[str, Any]], steps: int) -> float:
        start = time.perf_counter()
        for batch in itertools.islice(batches, steps):
            step(batch)
        return time.perf_counter() - start

    # private copies (batches from workers live in shared memory)
    memory = [{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in b.items()}
              for b in itertools.islice(loader_batches(), args.cached)]
    print(f"{model_config.arch} {config.preset}: ngf {model_config.ngf}, ndf {model_config.ndf}, "
          f"num_downs {model_config.num_downs}, batch {batch_size}, {info.tile_size} px tiles, "
          f"{args.workers} workers, {torch.get_num_threads()} torch threads; {dataset.num_tiles} "
          f"tiles in {tiles}")
    cached = itertools.cycle(memory)
    timed(cached, args.warmup)
    # A B B A: in-memory blocks around one continuous DataLoader run, so that a drift in
    # machine load (shared cores) weighs on both alike.
    half = max(1, args.steps // 2)
    t_memory = timed(cached, half)
    t_shards = timed(loader_batches(), 2 * half)
    t_memory += timed(cached, half)
    in_memory = 2 * half / t_memory
    from_shards = 2 * half / t_shards
    ratio = from_shards / in_memory
    print(f"in memory:   {in_memory:7.3f} steps/s  {in_memory * batch_size:7.2f} img/s")
    print(f"from shards: {from_shards:7.3f} steps/s  {from_shards * batch_size:7.2f} img/s")
    print(f"ratio {ratio:.3f}; data-loading overhead {100 * (1 / ratio - 1):.1f}% "
          "(target < 10%)")
    # The A/B difference above is a few % on a shared 2-core machine, so it is as noisy as
    # the machine; the loader alone (read, decode, normalize, augment, collate; no model)
    # gives the same overhead directly for in-process loading (--workers 0).
    start = time.perf_counter()
    for _ in itertools.islice(loader_batches(), 2 * half):
        pass
    t_loader = time.perf_counter() - start
    print(f"loader alone: {2 * half * batch_size / t_loader:7.1f} img/s, "
          f"{1e3 * t_loader / (2 * half * batch_size):.1f} ms/img against "
          f"{1e3 * t_memory / (2 * half * batch_size):.1f} ms/img of training from memory: "
          f"in-process overhead {100 * t_loader / t_memory:.1f}%")
    tmp.cleanup()


if __name__ == "__main__":
    main()

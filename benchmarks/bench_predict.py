"""Benchmark ``geotiler predict``: wall time against the model's pure forward time, and peak
memory, on generated rasters (run by hand, not a test).

    python benchmarks/bench_predict.py                       # 4096² and 16384²
    python benchmarks/bench_predict.py --sizes 2048 4096 --workdir /tmp/bench

For each size a child process runs the full prediction (threaded Dask scheduler, the CLI's
default) and then, with the same loaded model, times bare forward passes over as many
windows as the prediction ran, in the same batch size. It reports

* ``predict s``: wall time of ``run_predict`` (reading, inference, blending, block files,
  polygonizing, COG GeoTIFFs with overviews, GeoPackage);
* ``forward s``: normalize + forward of the same windows, nothing else (with
  ``--forward-sample N``: timed on N windows, half before the prediction and half after,
  and scaled to the prediction's count);
* ``ratio``: predict / forward wall time (the target is <= 1.3); ``cpu ratio``: the same
  with process CPU time, which other load on a shared machine disturbs less;
* ``win/s``: windows per second of the prediction, and ``x fp32``: the bare forward's
  windows/s in ``--precision`` against the same forward in fp32, timed in the same child
  (the speed-up of the network alone; ``--precision fp32`` gives 1.00);
* ``peak RSS``: the child's ``ru_maxrss`` after the prediction, and the part of it added
  by the prediction (``+predict``) over the loaded model.

The model is the ``small`` preset (U-Net, 32 filters, 5 levels, 256 px tiles) with random
weights; its output bias is shifted so that ~15 % of pixels come out as building and ~5 %
as contour, so polygonization sees blobs rather than the 50 % noise of an untrained net.
Rasters come from :mod:`geotiler.synthetic` when it is there (``--generator synthetic``)
or are written block by block with bright rectangles on noise (``--generator noise``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TILE = 256


def write_noise_raster(path: Path, size: int, block: int = 1024, seed: int = 0) -> None:
    """A 3-band uint8 GeoTIFF, tiled and deflated, written one block at a time."""
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(seed)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": Affine(0.5, 0, 600000, 0, -0.5, 5340000),
               "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
    tmp = path.with_name(path.name + ".partial")
    with rasterio.open(tmp, "w", **profile) as dst:
        for r in range(0, size, block):
            for c in range(0, size, block):
                h, w = min(block, size - r), min(block, size - c)
                data = rng.integers(40, 110, (3, h, w), dtype=np.uint8)
                for _ in range(h * w // 4000):
                    y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
                    bh, bw = rng.integers(8, 40, 2)
                    data[:, y:y + bh, x:x + bw] = rng.integers(150, 240)
                dst.write(data, window=rasterio.windows.Window(c, r, w, h))
    os.replace(tmp, path)


def make_raster(path: Path, size: int, generator: str) -> str:
    if path.exists():
        return "reused"
    if generator == "synthetic":
        try:
            from geotiler.synthetic import SceneSpec, make_scene
        except ImportError:
            generator = "noise"
        else:
            make_scene(path, path.with_suffix(".gpkg"), SceneSpec(width=size, height=size))
            return "synthetic"
    write_noise_raster(path, size)
    return "noise"


def make_model(path: Path, sample: Path) -> None:
    """The small preset, random weights, output bias calibrated on a window of ``sample``."""
    import rasterio
    import torch
    from rasterio.windows import Window

    from geotiler.tiles.schema import DatasetInfo
    from trainer.config import ModelConfig
    from trainer.modelfile import LoadedModel, ModelSpec, save_model
    from trainer.networks import build_generator

    torch.manual_seed(0)
    config = ModelConfig(arch="unet", in_channels=3, out_channels=2, ngf=32, num_downs=5,
                         use_dropout=False)
    net = build_generator(config)
    spec = ModelSpec(model=config, dataset=DatasetInfo(
        bands=[1, 2, 3], band_names=["red", "green", "blue"], dtype="uint8", mean=[90.0] * 3,
        std=[45.0] * 3, tile_size=TILE, gsd=0.5, mask_channels=["footprint", "contour"],
        target="masks", config={"contour_width": 3}))
    with rasterio.open(sample) as src:
        image = src.read(window=Window(0, 0, 4 * TILE, TILE))
    windows = np.stack([image[:, :, k * TILE:(k + 1) * TILE] for k in range(4)])
    loaded = LoadedModel(net, spec)
    with torch.inference_mode():
        logits = loaded.net(loaded.normalize(windows))
    last = [m for m in net.modules() if isinstance(m, torch.nn.ConvTranspose2d)][-1]
    bias = last.bias
    if bias is None:
        raise SystemExit("the network's last layer has no bias to calibrate")
    with torch.no_grad():
        for channel, keep in ((0, 0.15), (1, 0.05)):
            level = torch.quantile(logits[:, channel].flatten()[::7], 1 - keep)
            bias[channel] -= level
    save_model(path, net, spec)


def cpu_seconds() -> float:
    """CPU time of this process, all threads (robust to other load on a shared machine)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """This process's peak resident memory: ``ru_maxrss``, cross-checked on Linux with
    ``VmHWM`` (``ru_maxrss`` survives exec, so a child can inherit its parent's peak; the
    parent here stays small by generating rasters in a subprocess too)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return min(peak, int(line.split()[1]) / 1024)
    except OSError:
        pass
    return peak


def prepare(args: argparse.Namespace) -> None:
    """In a subprocess: the raster of one size, and the model (once)."""
    raster = Path(args.raster)
    t0 = time.perf_counter()
    made = make_raster(raster, args.size, args.generator)
    print(f"raster {raster.name}: {made} ({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
    model = Path(args.model)
    if not model.exists():
        make_model(model, raster)


def child(args: argparse.Namespace) -> None:
    """One measurement in this process: prints a JSON line."""
    import torch

    from geotiler.predict import PredictConfig
    from pipelines.predict import run_predict
    from trainer.inference import load_predictor

    torch.set_num_threads(os.cpu_count() or 1)
    predictor = load_predictor(args.model, "cpu", args.precision)
    rss_model = peak_rss_mb()
    config = PredictConfig(batch_size=args.batch_size, block=args.block, device="cpu",
                           precision=args.precision, overwrite=True)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (args.batch_size, 3, TILE, TILE), dtype=np.uint8)
    valid = np.ones((args.batch_size, TILE, TILE), dtype=bool)
    predictor(image, valid)  # warm-up, as the prediction's first batch was

    def bare_forward(windows: int) -> tuple[float, float]:
        """Wall and CPU seconds of normalize + forward over ``windows`` windows."""
        t0, c0 = time.perf_counter(), cpu_seconds()
        left = windows
        while left > 0:
            n = min(left, args.batch_size)
            predictor(image[:n], valid[:n])
            left -= n
        return time.perf_counter() - t0, cpu_seconds() - c0

    # Half the bare forward is timed before the prediction and half after, so that a
    # drift in the shared machine's speed over the run weighs on both sides alike.
    half = max(1, args.forward_sample // 2) if args.forward_sample else 0
    before = bare_forward(half) if half else (0.0, 0.0)
    out = Path(args.out)
    t0, c0 = time.perf_counter(), cpu_seconds()
    report = run_predict(args.raster, args.model, out, config, workers=args.workers)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    rss_peak = peak_rss_mb()
    timed = 2 * half if half else report.windows_run
    after = bare_forward(timed - half)
    # The bare forward in fp32 against the same in --precision, on the same windows,
    # interleaved in halves so that a busy machine slows both alike.
    compare = max(2, min(timed, 4 * args.batch_size))
    chosen_s = fp32_s = 0.0
    with load_predictor(args.model, "cpu", "fp32") as fp32:
        fp32(image, valid)
        for part in (compare // 2, compare - compare // 2):
            chosen_s += bare_forward(part)[0]
            t1 = time.perf_counter()
            for k in range(0, part, args.batch_size):
                n = min(args.batch_size, part - k)
                fp32(image[:n], valid[:n])
            fp32_s += time.perf_counter() - t1
    scale = report.windows_run / max(timed, 1)
    forward = (before[0] + after[0]) * scale
    forward_cpu = (before[1] + after[1]) * scale
    print(json.dumps({
        "size": args.size, "windows": report.windows_run, "blocks": report.blocks,
        "buildings": report.buildings, "predict_s": wall, "forward_s": forward,
        "predict_cpu_s": cpu, "forward_cpu_s": forward_cpu,
        "forward_timed": timed, "precision": report.precision,
        "speedup_vs_fp32": fp32_s / max(chosen_s, 1e-9),
        "rss_model_mb": rss_model, "rss_peak_mb": rss_peak,
        "timings": report.timings,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--workdir", type=Path, default=None,
                        help="Where rasters and outputs go (default: a temp dir, kept).")
    parser.add_argument("--generator", choices=["synthetic", "noise"], default="synthetic")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="The network's arithmetic in the prediction and its bare "
                        "forward (predict's --precision).")
    parser.add_argument("--block", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--trained-model", type=Path, default=None,
                        help="Use this model file (e.g. trained on sample_data) instead of "
                        "the random small preset: a trained model's output is what "
                        "polygonization really sees.")
    parser.add_argument("--forward-sample", type=int, default=0,
                        help="Time the bare forward on this many windows and scale up to "
                        "the prediction's count (0: all of them).")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--raster", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.prepare:
        prepare(args)
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_predict-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    model = workdir / "model.pt"
    if args.trained_model:
        shutil.copyfile(args.trained_model, model)
    for size in args.sizes:
        raster = workdir / f"scene_{size}.tif"
        subprocess.run([sys.executable, __file__, "--prepare", "--raster", str(raster),
                        "--model", str(model), "--size", str(size), "--generator",
                        args.generator], check=True)
        cmd = [sys.executable, __file__, "--child", "--raster", str(raster), "--model",
               str(model), "--out", str(workdir / f"buildings_{size}.gpkg"), "--size",
               str(size), "--batch-size", str(args.batch_size), "--block", str(args.block),
               "--precision", args.precision]
        if args.workers:
            cmd += ["--workers", str(args.workers)]
        if args.forward_sample:
            cmd += ["--forward-sample", str(args.forward_sample)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"child failed for {size}:\n{done.stderr}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"\n{'raster':>8} {'windows':>8} {'blocks':>6} {'buildings':>9} {'predict s':>9} "
          f"{'forward s':>9} {'ratio':>6} {'cpu ratio':>9} {'win/s':>6} {'prec':>5} "
          f"{'x fp32':>6} {'peak RSS MB':>11} {'+predict':>9}")
    for r in rows:
        print(f"{r['size']:>7}² {r['windows']:>8} {r['blocks']:>6} {r['buildings']:>9} "
              f"{r['predict_s']:>9.1f} {r['forward_s']:>9.1f} "
              f"{r['predict_s'] / r['forward_s']:>6.2f} "
              f"{r['predict_cpu_s'] / r['forward_cpu_s']:>9.2f} "
              f"{r['windows'] / r['predict_s']:>6.1f} {r['precision']:>5} "
              f"{r['speedup_vs_fp32']:>6.2f} {r['rss_peak_mb']:>11.0f} "
              f"{r['rss_peak_mb'] - r['rss_model_mb']:>9.0f}")
    for r in rows:
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in r["timings"].items())
        print(f"{r['size']}²: {parts}")
    print(f"outputs in {workdir}; cores: {os.cpu_count()}; "
          f"raster MB (uint8 RGB, uncompressed): "
          f"{', '.join(str(math.ceil(3 * s * s / 2**20)) for s in args.sizes)}")


if __name__ == "__main__":
    main()

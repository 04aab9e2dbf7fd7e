"""Training precision: bf16 autocast against fp32 on the same tiles, epochs and seed (run by
hand; README "Benchmarks").

    python benchmarks/bench_precision.py --tiles /tmp/q/ma128_ov64 --epochs 30
    python benchmarks/bench_precision.py --tiles tiles/ --epochs 10 --work /tmp/bp

Trains the default recipe (``geotiler train TILES --epochs N``, no time budget, so both runs
follow the same learning-rate schedule) once per precision, alternating the order over
``--repeat`` rounds so a busy machine disturbs both alike, and prints per run the training
images/s (from the summary line), the best val IoU and the last epoch's val IoU, then the
bf16/fp32 ratio of images/s and the difference of best val IoU (issue #13's goals: >= 1.5x,
within 0.01).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

RATE = re.compile(r"at ([\d.]+) img/s")
BEST = re.compile(r"best val IoU ([\d.]+) \(epoch (\d+)\)")
LAST = re.compile(r"last epoch: IoU ([\d.]+)")


def train(tiles: Path, out: Path, precision: str, epochs: int, seed: int) -> dict[str, float]:
    """One ``geotiler train`` run; its summary line parsed."""
    cmd = [sys.executable, "-m", "geotiler", "train", str(tiles), "-o", str(out),
           "--epochs", str(epochs), "--precision", precision, "--seed", str(seed),
           "--device", "cpu", "--no-progress", "--overwrite"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    line = done.stdout.strip().splitlines()[-1]
    rate, best, last = RATE.search(line), BEST.search(line), LAST.search(line)
    if not (rate and best and last):
        raise SystemExit(f"unexpected summary line: {line}")
    return {"img_s": float(rate.group(1)), "best_iou": float(best.group(1)),
            "best_epoch": int(best.group(2)), "last_iou": float(last.group(1))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=Path, required=True, help="a tile dataset with val tiles")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=1, help="rounds of both precisions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="model files (default: temp)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_precision_"))
    runs: dict[str, list[dict[str, float]]] = {"fp32": [], "bf16": []}
    for r in range(args.repeat):
        order = ("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")
        for precision in order:
            result = train(args.tiles, work / f"{precision}_{r}.pt", precision, args.epochs,
                           args.seed)
            runs[precision].append(result)
            print(f"round {r + 1} {precision}: {result['img_s']:.1f} img/s, best val IoU "
                  f"{result['best_iou']:.3f} (epoch {result['best_epoch']}), last "
                  f"{result['last_iou']:.3f}", flush=True)
    mean = {p: {k: sum(x[k] for x in v) / len(v) for k in v[0]} for p, v in runs.items()}
    print(f"\n{args.tiles}, {args.epochs} epochs, seed {args.seed}, {args.repeat} round(s)")
    print("| precision | images/s | best val IoU | last-epoch val IoU |")
    print("|---|---|---|---|")
    for p in ("fp32", "bf16"):
        m = mean[p]
        print(f"| {p} | {m['img_s']:.1f} | {m['best_iou']:.3f} | {m['last_iou']:.3f} |")
    print(f"\nbf16 / fp32 images/s: {mean['bf16']['img_s'] / mean['fp32']['img_s']:.2f}x; "
          f"best val IoU bf16 - fp32: {mean['bf16']['best_iou'] - mean['fp32']['best_iou']:+.3f}")


if __name__ == "__main__":
    main()

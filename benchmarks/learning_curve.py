"""Learning curve: pixel IoU against the number of training tiles (run by hand; README
"Results on real imagery", issue #12's pixel-IoU goal).

Keeps a tile dataset's val and test tiles and a nested random subset of its train tiles
(``--counts 3 6``: 3 of them, then those 3 and 3 more), trains the default recipe on each
subset with the same number of tile passes as the full set's run (``--full-epochs`` ×
train tiles: train's default 500, or the epochs a time-budgeted full run reached), and
scores every model with ``score_areas.py`` on fixed val and test areas (the full tiling's,
or ``--ref``'s), so every row is scored on the same pixels. The subsets of seed *s* draw
their tiles with seed *s* and train with ``--seed s``. Choosing nothing, it asks how fast
the scores grow with labelled area::

    geotiler tile 22978945_15.tif -f 22978945_15.gpkg -o /tmp/q/def256
    python benchmarks/learning_curve.py /tmp/q/def256 --work /tmp/lc --counts 3 6 \
        --seeds 0 1
    python benchmarks/learning_curve.py /tmp/bn/g025 --work /tmp/lcbn --counts 13 26 \
        --full-epochs 220 --scene ../shared/data/fairmodels-banepa --ref /tmp/bn/ref05 \
        --name bn

Rows for the full set come from ``score_areas.py`` on a model of the whole tiling (the
default recipe). One line per model goes to ``WORK/results.txt`` (``score_areas.py``'s).
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

from geotiler.tiles.shards import ShardWriter, list_shards

HERE = Path(__file__).resolve().parent
EPOCHS = 500  # geotiler train's default --epochs


def train_members(tiles: Path) -> dict[str, dict[str, bytes]]:
    """Every train tile's tar members (``{key: {ext: bytes}}``), in stored order."""
    members: dict[str, dict[str, bytes]] = defaultdict(dict)
    for shard in list_shards(tiles, "train"):
        with tarfile.open(shard) as tar:
            for info in tar:
                data = tar.extractfile(info)
                if data is None:
                    continue
                key, ext = info.name.split(".", 1)
                members[key][ext] = data.read()
    return dict(members)


def subset(tiles: Path, keys: list[str], members: dict[str, dict[str, bytes]],
           out: Path) -> Path:
    """A copy of ``tiles`` whose train split holds only ``keys`` (val, test, index and
    normalization unchanged)."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(tiles, out, ignore=shutil.ignore_patterns("train-*"))
    with ShardWriter(out / "shards" / "train-000000.tar") as writer:
        for key in keys:
            record = json.loads(members[key]["json"])
            record.pop("checksums", None)
            writer.add(key, {e: b for e, b in members[key].items() if e != "json"}, record)
    info = json.loads((out / "dataset.json").read_text())
    info["counts"]["train"] = len(keys)
    (out / "dataset.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    return out


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tiles", type=Path, help="a tile dataset (geotiler tile's output)")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--counts", type=int, nargs="+", default=[3, 6])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--scene", type=Path, default=None, help="score_areas.py --scene")
    ap.add_argument("--name", default="def", help="score_areas.py --name (its areas)")
    ap.add_argument("--ref", type=Path, default=None,
                    help="score_areas.py --ref (default: the tile dataset itself)")
    ap.add_argument("--full-epochs", type=int, default=EPOCHS,
                    help="epochs of the full set's run (tile passes kept equal)")
    args = ap.parse_args()
    members = train_members(args.tiles)
    total = len(members)
    args.work.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        order = sorted(members)
        random.Random(seed).shuffle(order)
        for count in sorted(args.counts):
            if not 0 < count < total:
                sys.exit(f"Error: --counts must lie between 1 and {total - 1}")
            name = f"n{count}_s{seed}"
            data = subset(args.tiles, order[:count], members, args.work / f"tiles_{name}")
            model = args.work / f"{name}.pt"
            epochs = round(args.full_epochs * total / count)
            run([sys.executable, "-m", "geotiler", "-q", "train", str(data), "-o", str(model),
                 "--epochs", str(epochs), "--seed", str(seed), "--overwrite",
                 "--no-progress"])
            score = [sys.executable, str(HERE / "score_areas.py"), str(model),
                     "--ref", str(args.ref or args.tiles), "--name", args.name,
                     "--work", str(args.work), "--tag", name]
            if args.scene:
                score += ["--scene", str(args.scene)]
            run(score)


if __name__ == "__main__":
    main()

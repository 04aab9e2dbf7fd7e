"""Pretraining on our own synthetic scenes, then fine-tuning on real tiles, against training
on the real tiles alone (run by hand; issue #12 item 4, README "Results on real imagery").

Step 1 makes the pretrained model from our code only: ``--scenes`` scenes of
:func:`geotiler.synthetic.make_scene` (2048² px each, rendered at the GSDs of
:data:`SCENE_GSDS`, so roofs, trees and streets are drawn at several scales), tiled with
``geotiler tile``'s defaults at one working GSD (``--gsd``: ``geotiler train`` takes
datasets of one GSD), and one ``geotiler train t11 t12 ...`` run on all of them (the
default recipe, ``--max-minutes`` of CPU). Step 2, for each ``--real`` tile dataset and
each ``--seeds`` value, fine-tunes it with the default recipe (``geotiler train REAL
--init pre.pt``); the models from scratch are the default recipe's own runs. Scoring is
``benchmarks/score_areas.py`` on fixed val and test areas; settings are chosen on val::

    python benchmarks/pretrain_synthetic.py --work /tmp/syn --gsd 1 --max-minutes 10 \
        --real /tmp/q/def256 --seeds 0 1
    python benchmarks/score_areas.py /tmp/syn/ft_def256_s0.pt --ref /tmp/q/def256 --name def
    # another network for both steps (README, "A deeper U-Net"):
    python benchmarks/pretrain_synthetic.py --work /tmp/syn6 --net-args "--num-downs 6" \
        --real /tmp/q/def256 --seeds 0 1

Models trained only on our synthetic scenes are ours to ship; nothing made from
``../shared`` may be committed.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from geotiler.synthetic import SceneSpec, make_scene

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation import geotiler, start

from trainer.pretrained import PRETRAINED, write_half_precision

log = logging.getLogger("pretrain_synthetic")

#: (seed, GSD in m, building density) of each synthetic scene; cycled for more scenes.
SCENE_GSDS = ((11, 1.0, 1.3), (12, 1.0, 1.3), (13, 0.5, 1.3), (14, 0.3, 1.3),
              (15, 1.0, 1.0), (16, 0.5, 1.6), (17, 0.3, 1.3), (18, 0.7, 1.3))


def synthetic_tiles(work: Path, count: int, working_gsd: float) -> list[Path]:
    """Make (or reuse) ``count`` synthetic scenes and their tiles at ``working_gsd`` (m);
    returns the tile folders."""
    folders = []
    for seed, gsd, density in SCENE_GSDS[:count]:
        tif, gpkg = work / f"s{seed}.tif", work / f"s{seed}.gpkg"
        tiles = work / f"t{seed}_gsd{working_gsd:g}"
        if not tif.exists():
            make_scene(tif, gpkg, SceneSpec(width=2048, height=2048, gsd=gsd, seed=seed,
                                            building_density=density))
        if not (tiles / "dataset.json").exists():
            geotiler("-q", "tile", str(tif), "-f", str(gpkg), "-o", str(tiles), "--gsd",
                     str(working_gsd), "--no-progress", "--overwrite")
        folders.append(tiles)
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="work folder (outside the repo)")
    parser.add_argument("--scenes", type=int, default=len(SCENE_GSDS))
    parser.add_argument("--gsd", type=float, default=1.0,
                        help="working GSD of the pretraining tiles, m (that of the real tiles)")
    parser.add_argument("--max-minutes", type=float, default=10.0,
                        help="pretraining budget (the fine-tuning uses the default recipe)")
    parser.add_argument("--real", type=Path, nargs="*", default=[],
                        help="real tile datasets to fine-tune on (step 2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--net-args", default="",
                        help="`geotiler train` network options for both steps, e.g. "
                        "'--num-downs 6' (the shipped weights must match the default network)")
    parser.add_argument("--finetune-args", default="",
                        help="more `geotiler train` options for the fine-tuning, e.g. "
                        "'--epochs 150' or, for a smoke run, '--epochs 2'")
    args = parser.parse_args()
    work = start(args.work)
    pre = work / f"pre_gsd{args.gsd:g}.pt"
    if not pre.exists():
        tiles = synthetic_tiles(work, args.scenes, args.gsd)
        out, cpu, wall = geotiler("train", *map(str, tiles), "-o", str(pre), "--max-minutes",
                                  str(args.max_minutes), "--no-progress",
                                  *shlex.split(args.net_args))
        log.info("pretrained in %.1f CPU min (%.1f min wall): %s", cpu / 60, wall / 60,
                 out.strip())
        shipped = work / PRETRAINED["synthetic"]
        write_half_precision(pre, shipped)
        log.info("float16 copy to ship: %s (copy it to trainer/weights/)", shipped)
    for real in args.real:
        for seed in args.seeds:
            model = work / f"ft_{real.name}_s{seed}.pt"  # the real tiles' GSD: --gsd
            out, cpu, wall = geotiler("train", str(real), "-o", str(model), "--init", str(pre),
                                      "--seed", str(seed), "--no-progress", "--overwrite",
                                      *shlex.split(args.net_args),
                                      *shlex.split(args.finetune_args))
            log.info("fine-tuned in %.1f CPU min (%.1f min wall): %s", cpu / 60, wall / 60,
                     out.strip())


if __name__ == "__main__":
    main()

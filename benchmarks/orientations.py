"""How much a model's pixel IoU depends on the orientation it sees a tile in (run by hand;
README "Results on real imagery", the test-time augmentation paragraph).

Every whole 256 px tile of a reference tiling's train, val and test splits is predicted as
it is, flipped left-right, flipped up-down, turned 90° and transposed (the network's output
mapped back each time), and the mean of the five; each line gives the pixel IoU per split
(footprints rasterized by pixel centre, threshold 0.5). A model trained with all eight
symmetries should score alike in each; where it does not, the spread is its variance, and
the orientation its checkpoint was chosen in (as is, on val) is the lucky one. ::

    python benchmarks/orientations.py model.pt --scene ../shared/data/massachusetts-22978945 \\
        --ref tiles
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import torch

from trainer.modelfile import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation import find_scene_files, truth_on_grid

Turn = Callable[[torch.Tensor], torch.Tensor]
#: name: (transform, its inverse) on N x C x H x W tensors
ORIENTATIONS: dict[str, tuple[Turn, Turn]] = {
    "as is": (lambda x: x, lambda x: x),
    "flipped left-right": (lambda x: x.flip(3), lambda x: x.flip(3)),
    "flipped up-down": (lambda x: x.flip(2), lambda x: x.flip(2)),
    "turned 90°": (lambda x: x.rot90(1, (2, 3)), lambda x: x.rot90(-1, (2, 3))),
    "transposed": (lambda x: x.transpose(2, 3), lambda x: x.transpose(2, 3)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--scene", type=Path, required=True, help="scene folder")
    parser.add_argument("--ref", type=Path, required=True, help="reference tiling")
    args = parser.parse_args()
    model = load_model(args.model)
    raster, footprints = find_scene_files(args.scene)
    with rasterio.open(raster) as src:
        image, transform, crs = src.read(list(model.spec.bands)), src.transform, src.crs
    truth = truth_on_grid(footprints, crs, transform, image.shape[1:])
    index = gpd.read_file(args.ref / "index.gpkg", layer="tiles").to_crs(crs)
    names = [*ORIENTATIONS, "mean of the five"]
    print(f"{args.model}: pixel IoU of whole 256 px tiles per orientation")
    print("| split | tiles | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for split in ("train", "val", "test"):
        counts = {name: [0, 0] for name in names}
        tiles = 0
        for geom in index[index["split"] == split].geometry:
            col_f, row_f = ~transform * (geom.bounds[0], geom.bounds[3])
            row, col = round(row_f), round(col_f)
            window = image[:, row:row + 256, col:col + 256]
            if row < 0 or col < 0 or window.shape[1:] != (256, 256):
                continue
            tiles += 1
            x = model.normalize(window[None], np.ones((1, 256, 256), bool))
            with torch.no_grad():
                probs = {name: back(model.predict(turn(x)))[0, 0].numpy()
                         for name, (turn, back) in ORIENTATIONS.items()}
            probs["mean of the five"] = np.mean(list(probs.values()), axis=0)
            t = truth[row:row + 256, col:col + 256]
            for name, p in probs.items():
                counts[name][0] += int((t & (p >= 0.5)).sum())
                counts[name][1] += int((t | (p >= 0.5)).sum())
        cells = [f"{a / b:.3f}" if b else "-" for a, b in counts.values()]
        print(f"| {split} | {tiles} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""Pix2Pix learns buildings with BCE + Dice as its reconstruction term, where L1 does not.

On real imagery buildings are a few per cent of the pixels; L1's gradient has the same size
for every pixel, so the background outvotes the buildings and the generator settles on
"no building" (issue #12, README "Results"). The GAN loss and the PatchGAN are unchanged
between the two runs: only ``--recon`` differs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

SCENE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "massachusetts-22978945"

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.slow,
    pytest.mark.skipif(not SCENE.is_dir(), reason="needs ../shared/data"),
]


def massachusetts_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """16 crops of 128 px from the top 256 rows of the scene (2.4 % building pixels)."""
    import geopandas as gpd
    import rasterio
    import rasterio.features

    window = ((0, 256), (0, 1182))
    with rasterio.open(SCENE / "22978945_15.tif") as src:
        image = src.read(window=window).astype(np.float32)
        transform = src.window_transform(window)
        footprints = gpd.read_file(SCENE / "22978945_15.gpkg").to_crs(src.crs)
    mask = rasterio.features.rasterize(footprints.geometry, out_shape=image.shape[1:],
                                       transform=transform).astype(np.float32)
    image = (image - image.mean((1, 2), keepdims=True)) / image.std((1, 2), keepdims=True)
    crops = [(r, c) for r in (0, 128) for c in range(0, 1024, 128)]
    x = torch.stack([torch.from_numpy(image[:, r:r + 128, c:c + 128]) for r, c in crops])
    y = torch.stack([torch.from_numpy(mask[None, r:r + 128, c:c + 128]) for r, c in crops])
    return x, y


def fit(recon: str, x: torch.Tensor, y: torch.Tensor, steps: int = 60) -> torch.Tensor:
    from trainer.config import ModelConfig, TrainConfig
    from trainer.distributed import Dist
    from trainer.losses import GANLoss
    from trainer.networks import probabilities
    from trainer.steps import build_models, pix2pix_step

    torch.manual_seed(0)
    # Without dropout, so that only the objective differs and 60 steps suffice; the
    # ablation (benchmarks/ablation.py) trains the default network, dropout included.
    model_config = ModelConfig(arch="pix2pix", in_channels=3, out_channels=1, ngf=16, ndf=16,
                               num_downs=5, use_dropout=False)
    config = TrainConfig(arch="pix2pix", epochs=1, recon=recon, precision="fp32")
    models = build_models(model_config, config, Dist())
    gan, valid = GANLoss(), torch.ones_like(y)
    for _ in range(steps):
        pix2pix_step(models, gan, x, y, valid, config, Dist())
    models.generator.eval()
    with torch.no_grad():
        return probabilities(models.generator(x), model_config) > 0.5


def test_bce_dice_pix2pix_predicts_buildings_where_l1_collapses():
    x, y = massachusetts_batch()
    truth = y > 0.5
    fraction = float(truth.float().mean())
    assert 0.01 < fraction < 0.05  # buildings are a few per cent of the pixels

    l1 = fit("l1", x, y)
    bce_dice = fit("bce-dice", x, y)

    assert float(l1.float().mean()) < 0.1 * fraction  # L1: (almost) nothing is building
    assert float(bce_dice.float().mean()) > 0.25 * fraction
    iou = float((bce_dice & truth).sum() / (bce_dice | truth).sum())
    assert iou > 0.2

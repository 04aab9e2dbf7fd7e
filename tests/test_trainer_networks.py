"""Networks, losses and configs of the trainer: shapes, init, validation, overfitting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from geotiler.errors import ConfigError
from trainer.config import ModelConfig, TrainConfig, max_num_downs
from trainer.losses import GANLoss, bce_dice_loss, dice_loss, l1_loss
from trainer.networks import (
    FullResUnet,
    NLayerDiscriminator,
    UnetGenerator,
    build_discriminator,
    build_generator,
    count_parameters,
    init_weights,
    probabilities,
)

torch.set_num_threads(1)


def test_unet_256_generator_and_patchgan_shapes() -> None:
    config = ModelConfig(arch="pix2pix")  # the paper's: 8 levels, 64 filters
    g = build_generator(config).eval()
    d = build_discriminator(config).eval()
    assert 54_000_000 < count_parameters(g) < 55_000_000  # junyanz unet_256: 54.4 M
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        y = g(x)
        assert y.shape == (1, 2, 256, 256)
        assert y.abs().max() <= 1.0  # tanh
        assert d(torch.cat([x, y], 1)).shape == (1, 1, 30, 30)  # 70x70 PatchGAN
    assert sum(isinstance(m, nn.Dropout) for m in g.modules()) == 3


@pytest.mark.parametrize(("num_downs", "size"), [(2, 16), (3, 16), (5, 64), (6, 64)])
def test_small_unets_keep_the_input_size(num_downs: int, size: int) -> None:
    config = ModelConfig(arch="unet", in_channels=4, out_channels=3, ngf=4, num_downs=num_downs)
    g = build_generator(config)
    assert g(torch.randn(2, 4, size, size)).shape == (2, 3, size, size)


def test_unet_outputs_are_logits_pix2pix_tanh() -> None:
    x = torch.randn(1, 3, 32, 32) * 50
    unet = build_generator(ModelConfig(arch="unet", ngf=4, num_downs=3)).eval()
    pix = build_generator(ModelConfig(arch="pix2pix", ngf=4, num_downs=3)).eval()
    with torch.no_grad():
        assert pix(x).abs().max() <= 1.0
        assert not isinstance(list(unet.modules())[-1], nn.Tanh)


def test_probabilities_read_tanh_and_logits() -> None:
    out = torch.tensor([-1.0, 0.0, 1.0, 3.0])
    pix = probabilities(out, ModelConfig(arch="pix2pix"))
    torch.testing.assert_close(pix, torch.tensor([0.0, 0.5, 1.0, 1.0]))
    torch.testing.assert_close(probabilities(out, ModelConfig(arch="unet")), torch.sigmoid(out))
    assert probabilities(out.to(torch.bfloat16), ModelConfig()).dtype == torch.float32


def test_arch_has_one_default() -> None:
    assert ModelConfig().arch == TrainConfig().arch == "unet"


def test_lr_schedule_is_constant_then_linear_to_zero() -> None:
    from trainer.steps import lr_at

    config = TrainConfig(epochs=4, lr=1.0)
    assert [lr_at(e, config) for e in range(4)] == [1.0, 1.0, pytest.approx(2 / 3),
                                                   pytest.approx(1 / 3)]
    flat = TrainConfig(epochs=4, lr=1.0, lr_decay=False)
    assert [lr_at(e, flat) for e in range(4)] == [1.0] * 4


def test_time_budget_fits_the_schedule_to_the_epochs_that_fit() -> None:
    """With --max-minutes the run plans the epochs the budget holds and the learning rate
    reaches ~0 at the last of them, instead of being cut off at full rate."""
    from trainer.budget import planned_epochs
    from trainer.steps import lr_at

    config = TrainConfig(epochs=100, lr=1.0, max_minutes=1.0)
    # 2 epochs took 10 s (12 s with set-up): 48 s left hold 9 more epochs
    assert planned_epochs(config, 2, 2, 10.0, 12.0) == 11
    assert planned_epochs(config, 2, 2, 0.1, 1.0) == 100  # capped by --epochs
    assert planned_epochs(config, 5, 5, 80.0, 90.0) == 5  # budget spent: no more epochs
    assert planned_epochs(TrainConfig(epochs=7), 2, 2, 10.0, 12.0) == 7  # no budget
    rates = [lr_at(e, config, 11) for e in range(11)]
    assert rates[0] == 1.0 and rates[-1] < 0.2 < rates[6]
    assert lr_at(10, config) == 1.0  # without the plan, epoch 11 of 100 is still at full rate


def test_init_is_normal_0_02() -> None:
    torch.manual_seed(0)
    g = init_weights(UnetGenerator(3, 2, 5, 32))
    d = init_weights(NLayerDiscriminator(5, 32))
    for net in (g, d):
        weights = torch.cat([m.weight.detach().flatten() for m in net.modules()
                             if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)])
        assert abs(float(weights.mean())) < 1e-3
        assert float(weights.std()) == pytest.approx(0.02, rel=0.05)
        norms = torch.cat([m.weight.detach().flatten() for m in net.modules()
                           if isinstance(m, nn.BatchNorm2d)])
        assert float(norms.mean()) == pytest.approx(1.0, abs=0.01)


def test_num_downs_must_fit_the_tile_size() -> None:
    assert max_num_downs(256) == 8
    assert max_num_downs(64) == 6
    assert max_num_downs(96) == 5
    ModelConfig(num_downs=8).check_tile_size(256)
    with pytest.raises(ConfigError, match=r"--num-downs 9.*multiple of 512.*--num-downs 8"):
        ModelConfig(num_downs=9).check_tile_size(256)
    with pytest.raises(ConfigError) as err:  # no "multiple of 1073741824 px"
        ModelConfig(num_downs=30).check_tile_size(256)
    assert str(err.value) == ("--num-downs 30 halves a tile 30 times; tiles of 256 px allow "
                              "--num-downs 8 or less")


def test_presets_and_overrides() -> None:
    small = TrainConfig(preset="small").model_config(3, 2)
    full = TrainConfig(preset="full").model_config(3, 2)
    assert (small.ngf, small.num_downs) == (32, 5)
    assert (full.ngf, full.ndf, full.num_downs) == (64, 64, 8)
    assert TrainConfig(preset="full").effective_batch_size == 1
    custom = TrainConfig(preset="full", ngf=16, batch_size=8)
    assert custom.model_config(3, 2).ngf == 16
    assert custom.resolved().batch_size == 8
    with pytest.raises(ConfigError, match="--arch"):
        TrainConfig(arch="gan")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--epochs"):
        TrainConfig(epochs=0)


def test_losses_ignore_nodata_pixels() -> None:
    target = torch.zeros(1, 2, 8, 8)
    pred = torch.zeros(1, 2, 8, 8)
    pred[..., :4] = 5.0  # wrong only in the left half
    valid = torch.ones(1, 1, 8, 8)
    valid[..., :4] = 0
    assert float(l1_loss(pred, target, valid)) == 0.0
    assert float(l1_loss(pred, target)) == pytest.approx(2.5)
    logits = torch.full((1, 2, 8, 8), -10.0)
    logits[..., :4] = 10.0
    assert float(bce_dice_loss(logits, target, valid)) < 0.01
    assert float(dice_loss(logits, target)) > 0.9
    gan = GANLoss()
    patch = torch.full((1, 1, 4, 4), -20.0)
    patch[..., :2] = 20.0  # "real" where pixels are nodata
    assert float(gan(patch, False, valid)) < 1e-6
    assert float(gan(patch, False)) > 5


def test_unet_overfits_a_fixed_batch() -> None:
    torch.manual_seed(0)
    config = ModelConfig(arch="unet", ngf=8, num_downs=3, use_dropout=False)
    g = build_generator(config)
    opt = torch.optim.Adam(g.parameters(), lr=2e-3)
    x = torch.randn(4, 3, 32, 32)
    target = (x[:, :2] > 0.3).float()  # learnable from the input
    valid = torch.ones(4, 1, 32, 32)
    losses = []
    for _ in range(300):
        opt.zero_grad()
        loss = bce_dice_loss(g(x), target, valid)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.15 * losses[0]


@pytest.mark.parametrize("recon", ["l1", "bce-dice"])
def test_pix2pix_step_lowers_its_reconstruction_loss_on_a_fixed_batch(recon: str) -> None:
    from trainer.distributed import Dist
    from trainer.steps import build_models, pix2pix_step

    torch.manual_seed(0)
    model_config = ModelConfig(arch="pix2pix", ngf=8, ndf=8, num_downs=3, use_dropout=False)
    config = TrainConfig(arch="pix2pix", epochs=1, lr=2e-3, recon=recon)
    models = build_models(model_config, config, Dist())
    x = torch.randn(4, 3, 32, 32)
    target = (x[:, :2] > 0.3).float()
    valid = torch.ones(4, 1, 32, 32)
    gan = GANLoss()
    l1 = [float(pix2pix_step(models, gan, x, target, valid, config, Dist())["loss_g_recon"])
          for _ in range(300)]
    assert sum(l1[-10:]) / 10 < 0.2 * sum(l1[:10]) / 10


@pytest.mark.parametrize(("num_downs", "levels"), [(8, [4, 5, 6]), (5, [1, 2, 3])])
def test_dropout_sits_in_the_three_decoder_blocks_next_to_the_innermost(num_downs, levels):
    """pix2pix's unet_256 has dropout at levels 4-6 of 8; the small preset (5 levels) too."""
    g = build_generator(ModelConfig(arch="pix2pix", ngf=4, num_downs=num_downs))
    count = sum(isinstance(m, torch.nn.Dropout) for m in g.modules())
    assert count == len(levels)
    assert TrainConfig(arch="pix2pix").model_config(3, 2).use_dropout
    assert not TrainConfig(arch="unet").model_config(3, 2).use_dropout


@pytest.mark.parametrize("arch", ["unet", "pix2pix"])
def test_full_res_branch_starts_as_the_unet(arch: str) -> None:
    torch.manual_seed(0)
    config = ModelConfig(arch=arch, ngf=8, num_downs=3, use_dropout=False, full_res=4)
    g = build_generator(config)
    assert isinstance(g, FullResUnet)
    x = torch.randn(2, 3, 32, 32)
    final = torch.tanh if arch == "pix2pix" else (lambda t: t)
    for mode in (g.train, g.eval):
        mode()
        with torch.no_grad():
            torch.testing.assert_close(g(x), final(g.unet(x)), rtol=0, atol=0)
    assert build_generator(ModelConfig(arch=arch, ngf=8, num_downs=3)).__class__ is UnetGenerator


def test_full_res_branch_learns_pixel_detail_the_unet_blurs() -> None:
    """A target that changes from one pixel to the next (noise thresholded): the paper's
    U-Net sees it only through half-resolution features; the full-resolution branch fits
    it much better in the same steps."""
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    target = (x[:, :2] > 0.5).float()
    valid = torch.ones(4, 1, 32, 32)
    final_loss = {}
    for full_res in (0, 8):
        torch.manual_seed(0)
        g = build_generator(ModelConfig(arch="unet", ngf=8, num_downs=3, use_dropout=False,
                                        full_res=full_res))
        opt = torch.optim.Adam(g.parameters(), lr=2e-3)
        for _ in range(60):
            opt.zero_grad()
            loss = bce_dice_loss(g(x), target, valid)
            loss.backward()
            opt.step()
        final_loss[full_res] = loss.item()
    assert final_loss[8] < 0.85 * final_loss[0], final_loss


def test_wall_weight_marks_only_the_wall_between_touching_houses() -> None:
    """Two houses sharing a wall and one alone, outlined as the tiler does (3 px lines):
    only the shared wall gets the extra weight, never an outline against the ground."""
    from geotiler.tiles.contours import draw_contours
    from trainer.losses import wall_weight

    labels = np.zeros((40, 80), np.int32)
    labels[5:25, 3:20], labels[5:25, 20:45], labels[10:30, 55:75] = 1, 2, 3
    target = torch.from_numpy(np.stack([(labels > 0).astype(np.float32),
                                        draw_contours(labels, 3) / 255.0]))[None].float()
    valid = torch.ones(1, 1, 40, 80)
    weight = wall_weight(target, valid, gain=10.0, reach=3)
    assert torch.equal(weight[:, 0], valid[:, 0])  # the footprint channel is untouched
    walls = (weight[0, 1] > 1).numpy()
    rows, cols = np.nonzero(walls)
    assert walls.sum() > 0 and set(cols) <= set(range(17, 24))  # the band around x = 20
    assert rows.min() > 5 and rows.max() < 24
    assert weight[0, 1][walls].eq(11.0).all()
    valid[..., :, 18:] = 0  # nodata carries no weight, walls or not
    assert wall_weight(target, valid, 10.0, 3)[0, :, :, 18:].eq(0).all()

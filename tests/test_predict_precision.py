"""``geotiler predict --precision``: bf16 autocast keeps fp32's probabilities and masks.

A tiny U-Net is trained here for a few seconds on a crop of the sample scene (so its
outputs are decisive like a real model's, not the 0.5 noise of random weights) and
``geotiler predict`` runs on that crop in fp32 and in bf16. The tolerance is the one
stated in :class:`geotiler.predict.PredictConfig`: probabilities within 0.02 mean
absolute, masks agreeing on >= 99 % of pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.windows import Window

from geotiler.cli import main
from geotiler.device import resolve_precision
from geotiler.errors import ConfigError
from geotiler.predict import PredictConfig

REPO = Path(__file__).resolve().parents[1]
SAMPLE_RASTER = REPO / "sample_data" / "area.tif"
SAMPLE_FOOTPRINTS = REPO / "sample_data" / "buildings.gpkg"
CROP = 384  # px of the sample scene predicted (0.5 m: a 192 m square)
TILE = 64


def bf16_or_skip() -> None:
    try:
        resolve_precision("bf16", "cpu")
    except ConfigError as err:
        pytest.skip(f"this CPU has no native bfloat16: {err}")


@pytest.fixture(scope="module")
def scene_crop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """The top-left CROP² of the sample scene as a GeoTIFF, and its footprint mask."""
    import geopandas as gpd
    from rasterio.features import rasterize

    path = tmp_path_factory.mktemp("scene") / "crop.tif"
    with rasterio.open(SAMPLE_RASTER) as src:
        window = Window(0, 0, CROP, CROP)
        data = src.read(window=window)
        profile = {"driver": "GTiff", "width": CROP, "height": CROP, "count": src.count,
                   "dtype": data.dtype.name, "crs": src.crs,
                   "transform": src.window_transform(window)}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    frame = gpd.read_file(SAMPLE_FOOTPRINTS)
    mask = rasterize(frame.geometry, out_shape=(CROP, CROP),
                     transform=profile["transform"]).astype(bool)
    return path, mask


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory: pytest.TempPathFactory,
                  scene_crop: tuple[Path, np.ndarray]) -> Path:
    """A small U-Net trained for 60 steps on 64 px windows of the crop (a few seconds)."""
    import torch

    from geotiler.tiles.schema import DatasetInfo
    from trainer.config import ModelConfig
    from trainer.modelfile import ModelSpec, save_model
    from trainer.networks import build_generator

    raster, footprint = scene_crop
    with rasterio.open(raster) as src:
        image = src.read().astype(np.float32)
    inner = footprint.copy()
    inner[1:-1, 1:-1] &= (footprint[:-2, 1:-1] & footprint[2:, 1:-1]
                          & footprint[1:-1, :-2] & footprint[1:-1, 2:])
    target = np.stack([footprint, footprint & ~inner]).astype(np.float32)
    mean, std = image.mean(axis=(1, 2)), image.std(axis=(1, 2))
    x_all = (image - mean[:, None, None]) / std[:, None, None]

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    config = ModelConfig(arch="unet", in_channels=3, out_channels=2, ngf=8, num_downs=4,
                         use_dropout=False)
    net = build_generator(config)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    net.train()
    for _ in range(60):
        corners = rng.integers(0, CROP - TILE, (16, 2))
        x = torch.from_numpy(np.stack([x_all[:, r:r + TILE, c:c + TILE] for r, c in corners]))
        y = torch.from_numpy(np.stack([target[:, r:r + TILE, c:c + TILE] for r, c in corners]))
        optimizer.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
    spec = ModelSpec(model=config, dataset=DatasetInfo(
        bands=[1, 2, 3], band_names=["red", "green", "blue"], dtype="uint8",
        mean=[float(v) for v in mean], std=[float(v) for v in std], tile_size=TILE, gsd=0.5,
        mask_channels=["footprint", "contour"], target="masks", config={"contour_width": 1}))
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(path, net, spec)
    return path


def crop_windows(raster: Path) -> tuple[np.ndarray, np.ndarray]:
    """The crop cut into TILE² windows (N, C, TILE, TILE) and their validity (all valid)."""
    with rasterio.open(raster) as src:
        image = src.read()
    windows = np.stack([image[:, r:r + TILE, c:c + TILE]
                        for r in range(0, CROP, TILE) for c in range(0, CROP, TILE)])
    return windows, np.ones((len(windows), TILE, TILE), dtype=bool)


def predict(raster: Path, model: Path, out: Path, precision: str) -> tuple[str, np.ndarray,
                                                                         np.ndarray]:
    """``geotiler predict --precision``: its summary line, probabilities and mask."""
    result = CliRunner().invoke(main, [
        "-q", "predict", str(raster), "--model", str(model), "--out", str(out / "b.gpkg"),
        "--device", "cpu", "--precision", precision, "--block", "256"])
    assert result.exit_code == 0, result.output + result.stderr
    with rasterio.open(out / "b_prob.tif") as src:
        prob = src.read().astype(np.float32) / 255  # stored as probability x 255
    with rasterio.open(out / "b_mask.tif") as src:
        mask = src.read(1)
    return result.output, prob, mask


def test_bf16_probabilities_and_masks_match_fp32_on_the_sample_scene(
        tmp_path: Path, scene_crop: tuple[Path, np.ndarray], trained_model: Path) -> None:
    bf16_or_skip()
    raster, truth = scene_crop
    line32, prob32, mask32 = predict(raster, trained_model, tmp_path / "fp32", "fp32")
    line16, prob16, mask16 = predict(raster, trained_model, tmp_path / "bf16", "bf16")
    assert "(fp32)" in line32 and "(bf16)" in line16  # the summary says which ran
    assert prob32.max() > 0.9 and prob32.min() < 0.1, "the model is decisive"
    assert (mask32 == 1).mean() > 0.02, "the fp32 mask finds buildings"
    assert 0 < (mask32 == 1).mean() < 0.9
    assert np.abs(prob16 - prob32).mean() < 0.02
    assert (mask16 == mask32).mean() >= 0.99
    iou32 = ((mask32 == 1) & truth).sum() / ((mask32 == 1) | truth).sum()
    assert iou32 > 0.2, "a few training steps learn the buildings"


def test_bf16_predictor_matches_fp32_before_rounding(
        scene_crop: tuple[Path, np.ndarray], trained_model: Path) -> None:
    """The float probabilities themselves (the GeoTIFF rounds them to 1/255)."""
    bf16_or_skip()
    from trainer.inference import load_predictor

    raster, _ = scene_crop
    windows, valid = crop_windows(raster)
    with load_predictor(trained_model, "cpu", "fp32") as fp32, \
            load_predictor(trained_model, "cpu", "bf16") as bf16:
        assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
        p32, p16 = fp32(image=windows, valid=valid), bf16(image=windows, valid=valid)
    assert p16.dtype == np.float32 and p16.shape == p32.shape
    assert np.abs(p16 - p32).mean() < 0.02
    assert ((p16 >= 0.5) == (p32 >= 0.5)).mean() >= 0.99
    assert not np.array_equal(p16, p32), "bf16 really ran"


def test_auto_precision_is_bf16_where_native_and_is_the_default(
        tmp_path: Path, scene_crop: tuple[Path, np.ndarray], trained_model: Path) -> None:
    raster, _ = scene_crop
    expected = resolve_precision("auto", "cpu")
    assert PredictConfig().precision == "auto"
    result = CliRunner().invoke(main, [
        "-q", "predict", str(raster), "--model", str(trained_model), "--out",
        str(tmp_path / "b.gpkg"), "--device", "cpu", "--no-probabilities"])
    assert result.exit_code == 0, result.output + result.stderr
    assert f"({expected})" in result.output
    help_text = CliRunner().invoke(main, ["predict", "--help"]).output
    assert "--precision [auto|fp32|bf16]" in help_text and "default: auto" in help_text


def test_unknown_precision_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--precision"):
        PredictConfig(precision="fp8")  # type: ignore[arg-type]
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "a.tif"), "-m", "m.pt",
                                       "-o", str(tmp_path / "b.gpkg"), "--precision", "fp8"])
    assert result.exit_code == 2 and "fp8" in result.stderr


def test_test_time_augmentation_averages_each_windows_symmetries(
        tmp_path: Path, scene_crop: tuple[Path, np.ndarray], trained_model: Path) -> None:
    """``--tta d4``: the mean of the model's outputs on the eight symmetries of each window,
    each mapped back onto the window (a wrong inverse would move buildings); ``--tta
    flips`` through the CLI keeps the mask close to the plain one and finds the buildings."""
    from trainer.inference import load_predictor

    raster, truth = scene_crop
    windows, valid = crop_windows(raster)
    with load_predictor(trained_model, "cpu", "fp32") as plain, \
            load_predictor(trained_model, "cpu", "fp32", "d4") as d4:
        expected = np.zeros((len(windows), 2, TILE, TILE), dtype=np.float64)
        for transpose in (False, True):
            for axes in ((), (-1,), (-2,), (-2, -1)):
                x = np.flip(windows, axes) if axes else windows
                v = np.flip(valid, axes) if axes else valid
                if transpose:
                    x, v = x.swapaxes(-1, -2), v.swapaxes(-1, -2)
                y = plain(image=np.ascontiguousarray(x), valid=np.ascontiguousarray(v))
                if transpose:
                    y = y.swapaxes(-1, -2)
                expected += np.flip(y, axes) if axes else y
        got = d4(image=windows, valid=valid)
        once = plain(image=windows, valid=valid)
    assert np.abs(got - expected / 8).max() < 1e-4
    assert np.abs(got - once).mean() > 1e-4, "the symmetries were averaged"

    result = CliRunner().invoke(main, [
        "-q", "predict", str(raster), "--model", str(trained_model), "--out",
        str(tmp_path / "b.gpkg"), "--device", "cpu", "--precision", "fp32", "--tta", "flips",
        "--block", "256"])
    assert result.exit_code == 0, result.output + result.stderr
    with rasterio.open(tmp_path / "b_mask.tif") as src:
        mask = src.read(1) == 1
    _, _, plain_mask = predict(raster, trained_model, tmp_path / "plain", "fp32")
    assert (mask == (plain_mask == 1)).mean() >= 0.9
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.2

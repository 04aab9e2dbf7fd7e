"""The weights shipped with geotiler (``train --init synthetic``): what they are, that they
find buildings, and that ``train`` starts from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from trainer_fixtures import make_tile_dataset

from geotiler.cli import main
from geotiler.evaluate import evaluate
from geotiler.predict import PredictConfig
from pipelines.predict import run_predict
from trainer.config import ModelConfig, TrainConfig
from trainer.modelfile import init_weights, read_model_file
from trainer.networks import build_generator
from trainer.pretrained import PRETRAINED, pretrained_path, resolve_init

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def default_network() -> ModelConfig:
    """The network ``geotiler train`` builds by default for RGB footprint + contour tiles."""
    return TrainConfig().resolved().model_config(3, 2)


def test_shipped_weights_are_the_default_network_in_float16():
    path = pretrained_path("synthetic")
    assert path.is_file() and path.stat().st_size < 10 * 2**20  # small enough to ship
    spec, state = read_model_file(path)
    expected = default_network()
    for field in ("arch", "in_channels", "out_channels", "ngf", "num_downs", "norm", "full_res"):
        assert getattr(spec.model, field) == getattr(expected, field), field
    floats = [t for t in state.values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float16 for t in floats)
    assert resolve_init("synthetic") == path
    assert resolve_init("my/model.pt") == Path("my/model.pt")
    assert set(PRETRAINED) == {"synthetic"}


def test_init_synthetic_loads_the_shipped_weights_as_float32():
    config = default_network()
    net = build_generator(config)
    init_weights(net, "synthetic", config)
    _, shipped = read_model_file(pretrained_path("synthetic"))
    for name, tensor in net.state_dict().items():
        if tensor.is_floating_point():
            assert tensor.dtype == torch.float32
            assert torch.equal(tensor, shipped[name].float()), name


def test_shipped_weights_find_the_sample_scene_buildings(tmp_path):
    """Without any training on it, the pretrained network finds the sample scene's houses
    (a broken or random file would not): pixel IoU 0.90 when this was written."""
    out = tmp_path / "b.gpkg"
    run_predict(SAMPLE / "area.tif", pretrained_path("synthetic"), out,
                PredictConfig(device="cpu"))
    report = evaluate(out.with_name("b_mask.tif"), SAMPLE / "buildings.gpkg")
    assert report.pixels.iou > 0.8


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tile_dataset(tmp_path_factory.mktemp("tiles"), splits={"train": 4, "val": 2},
                             size=32)


def test_train_init_synthetic(tiles, tmp_path):
    result = CliRunner().invoke(main, [
        "train", str(tiles), "-o", str(tmp_path / "m.pt"), "--init", "synthetic",
        "--epochs", "1", "--max-steps", "1", "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.pt").is_file()
    # the fixture's tiles are 0.5 m, the shipped weights 1 m: said, not refused
    assert "trained on 1 m tiles, these are 0.5 m" in result.stderr


@pytest.mark.parametrize("option, names", [
    (["--ngf", "16"], "ngf 32 (this run: 16)"),
    (["--full-res", "8"], "full_res 0 (this run: 8)"),
])
def test_init_synthetic_for_another_network_is_one_line(tiles, tmp_path, option, names):
    result = CliRunner().invoke(main, [
        "train", str(tiles), "-o", str(tmp_path / "m.pt"), "--init", "synthetic",
        *option, "--epochs", "1", "--device", "cpu"])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: --init synthetic has another network")
    assert names in lines[0] and "shipped weights" in lines[0]
    assert not (tmp_path / "m.pt").exists()


def test_a_misspelled_name_lists_the_shipped_names(tiles, tmp_path):
    result = CliRunner().invoke(main, [
        "train", str(tiles), "-o", str(tmp_path / "m.pt"), "--init", "synthetc",
        "--epochs", "1", "--device", "cpu"])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["Error: --init synthetc: no such model file, and not a name of the "
                     "shipped weights (synthetic)"]


def test_weights_that_do_not_fit_are_a_model_file_error():
    """A mismatch the named fields do not show is one clear line, not torch's paragraph."""
    from dataclasses import replace

    from geotiler.errors import ModelFileError

    config = default_network()
    other = build_generator(replace(config, ngf=16))
    with pytest.raises(ModelFileError, match="its weights do not fit this run's network"):
        init_weights(other, "synthetic", config)


def test_init_trains_the_network_of_its_file(tiles, tmp_path, model_file):
    """``--init M`` fine-tunes M's network (ngf 4, 3 levels here, not the preset's) without
    the user repeating its options; an explicit size that differs is refused in one line."""
    out = tmp_path / "ft.pt"
    result = CliRunner().invoke(main, [
        "train", str(tiles), "-o", str(out), "--init", str(model_file), "--epochs", "1",
        "--max-steps", "1", "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 0, result.output
    spec, _ = read_model_file(out)
    assert (spec.model.ngf, spec.model.num_downs) == (4, 3)
    assert "trained unet (ngf 4, 3 levels)" in result.stdout  # not the preset's name
    result = CliRunner().invoke(main, [
        "train", str(tiles), "-o", str(tmp_path / "x.pt"), "--init", str(model_file),
        "--num-downs", "4", "--epochs", "1", "--device", "cpu"])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "num_downs 3 (this run: 4)" in lines[0]


def test_init_from_weights_of_other_band_order_is_said(tiles, tmp_path, model_file):
    """RGB tiles from a model trained on BGR: the weights cannot tell, so train says it."""
    spec, state = read_model_file(model_file)
    spec.dataset.band_names = ["blue", "green", "red"]
    from trainer.modelfile import save_model

    net = build_generator(spec.model)
    net.load_state_dict(state)
    save_model(tmp_path / "bgr.pt", net, spec)
    result = CliRunner().invoke(main, [
        "train", str(tiles), "-o", str(tmp_path / "m.pt"), "--init", str(tmp_path / "bgr.pt"),
        "--epochs", "1", "--max-steps", "1", "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "trained on bands blue,green,red, these tiles have red,green,blue" in result.stderr


def test_a_run_from_init_resumes_without_repeating_it(tiles, tmp_path, model_file):
    """The interrupt advice is ``--resume last.pt`` alone: the checkpoint's network (here
    the --init file's ngf 4, 3 levels) is rebuilt without --init or size options."""
    out = tmp_path / "i.pt"
    first = CliRunner().invoke(main, [
        "train", str(tiles), "-o", str(out), "--init", str(model_file), "--epochs", "1",
        "--max-steps", "1", "--device", "cpu", "--workers", "0"])
    assert first.exit_code == 0, first.output
    resumed = CliRunner().invoke(main, [
        "train", str(tiles), "-o", str(out), "--resume", str(tmp_path / "i.checkpoints"),
        "--epochs", "2", "--max-steps", "1", "--device", "cpu", "--workers", "0"])
    assert resumed.exit_code == 0, resumed.output
    spec, _ = read_model_file(out)
    assert (spec.model.ngf, spec.model.num_downs) == (4, 3)

"""``geotiler predict --engine``: ONNX Runtime reproduces torch's probabilities, masks and
polygons, and ``auto`` / the precision are decided as documented.

The tiny U-Net trained in a few seconds on a crop of the sample scene is the fixture of
``tests/test_predict_precision.py`` (decisive outputs, unlike random weights). The
tolerance is the one stated in :class:`geotiler.predict.PredictConfig`.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from test_predict_precision import TILE, scene_crop, trained_model  # noqa: F401

from geotiler.cli import main
from geotiler.device import resolve_precision
from geotiler.errors import ConfigError
from geotiler.predict import PredictConfig
from geotiler.predict.config import resolve_engine

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def predict(raster: Path, model: Path, out: Path, *args: str) -> tuple[str, np.ndarray,
                                                                     np.ndarray, int]:
    """``geotiler predict`` with ``args``: its summary line, probabilities, mask and the
    number of polygons."""
    import pyogrio

    result = CliRunner().invoke(main, [
        "-q", "predict", str(raster), "--model", str(model), "--out", str(out / "b.gpkg"),
        "--device", "cpu", "--block", "256", *args])
    assert result.exit_code == 0, result.output + result.stderr
    with rasterio.open(out / "b_prob.tif") as src:
        prob = src.read().astype(np.float32) / 255  # stored as probability x 255
    with rasterio.open(out / "b_mask.tif") as src:
        mask = src.read(1)
    polygons = pyogrio.read_info(out / "b.gpkg", layer="buildings")["features"]
    return result.output, prob, mask, int(polygons)


def test_onnxruntime_reproduces_torch_fp32_on_the_sample_scene(
        tmp_path: Path, scene_crop: tuple[Path, np.ndarray],  # noqa: F811
        trained_model: Path) -> None:  # noqa: F811
    raster, _ = scene_crop
    line_t, prob_t, mask_t, n_t = predict(raster, trained_model, tmp_path / "torch",
                                          "--engine", "torch", "--precision", "fp32")
    line_o, prob_o, mask_o, n_o = predict(raster, trained_model, tmp_path / "ort",
                                          "--engine", "onnxruntime")
    assert "(torch fp32)" in line_t and "(onnxruntime fp32)" in line_o  # what ran
    assert prob_t.max() > 0.9 and (mask_t == 1).mean() > 0.02, "the model finds buildings"
    assert np.abs(prob_o - prob_t).mean() < 0.02
    assert (mask_o == mask_t).mean() >= 0.99
    assert n_t > 3 and abs(n_o - n_t) <= 1


def test_onnxruntime_predictor_matches_torch_before_rounding(
        scene_crop: tuple[Path, np.ndarray], trained_model: Path,  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    """The float probabilities, for any batch size and window side (dynamic axes), and
    the export is logged with its time."""
    from trainer.inference import load_predictor

    raster, _ = scene_crop
    with rasterio.open(raster) as src:
        image = src.read()
    logger = logging.getLogger("trainer.onnx_engine")  # the CLI may stop "trainer" propagating
    logger.addHandler(caplog.handler)
    with caplog.at_level(logging.INFO, logger="trainer.onnx_engine"), \
            load_predictor(trained_model, "cpu", "fp32", "torch") as torch_fp32, \
            load_predictor(trained_model, "cpu", "auto", "onnxruntime") as ort:
        assert (ort.engine, ort.precision, ort.label) == ("onnxruntime", "fp32",
                                                          "onnxruntime fp32")
        for side, count in ((TILE, 5), (2 * TILE, 3)):
            windows = np.stack([image[:, k * 16:k * 16 + side, k * 16:k * 16 + side]
                                for k in range(count)])
            valid = np.ones((count, side, side), dtype=bool)
            valid[0, :8] = False  # nodata is zeroed by the shared normalization
            p_t, p_o = torch_fp32(windows, valid), ort(windows, valid)
            assert p_o.dtype == np.float32 and p_o.shape == p_t.shape == (count, 2, side, side)
            assert np.abs(p_o - p_t).mean() < 1e-4
            assert ((p_o >= 0.5) == (p_t >= 0.5)).mean() >= 0.999
    logger.removeHandler(caplog.handler)
    assert any("exported the network in" in r.getMessage() for r in caplog.records)


def test_a_worker_loads_the_engine_that_ran(trained_model: Path) -> None:  # noqa: F811
    """The Dask workers' loader is picklable and carries the resolved engine."""
    from trainer.inference import ModelLoader

    loader = pickle.loads(pickle.dumps(ModelLoader(str(trained_model), "cpu", "fp32",
                                                   "onnxruntime")))
    with loader() as predictor:
        assert predictor.label == "onnxruntime fp32"


def test_auto_engine_is_onnxruntime_on_cpu_and_is_the_default(
        tmp_path: Path, scene_crop: tuple[Path, np.ndarray],  # noqa: F811
        trained_model: Path) -> None:  # noqa: F811
    raster, _ = scene_crop
    assert PredictConfig().engine == "auto"
    result = CliRunner().invoke(main, [
        "-q", "predict", str(raster), "--model", str(trained_model), "--out",
        str(tmp_path / "b.gpkg"), "--device", "cpu", "--no-probabilities"])
    assert result.exit_code == 0, result.output + result.stderr
    assert "(onnxruntime fp32)" in result.output
    help_text = CliRunner().invoke(main, ["predict", "--help"]).output
    assert "--engine [auto|torch|onnxruntime]" in help_text
    assert 'pip install "geotiler[onnx]"' in help_text


def test_engine_and_precision_decisions() -> None:
    """auto: onnxruntime (fp32) on CPU with the extra unless bf16 is asked for; torch on
    CUDA or without the extra, with its own precision rule."""
    cpu_auto = resolve_precision("auto", "cpu")
    assert resolve_engine("auto", "auto", "cpu", onnx=True) == ("onnxruntime", "fp32")
    assert resolve_engine("auto", "fp32", "cpu", onnx=True) == ("onnxruntime", "fp32")
    assert resolve_engine("auto", "auto", "cpu", onnx=False) == ("torch", cpu_auto)
    assert resolve_engine("onnxruntime", "auto", "cpu", onnx=True) == ("onnxruntime", "fp32")
    assert resolve_engine("torch", "fp32", "cpu", onnx=True) == ("torch", "fp32")
    assert resolve_engine("auto", "auto", "cuda", onnx=True) == (
        "torch", resolve_precision("auto", "cuda"))
    if cpu_auto == "bf16":  # bf16 asked for: torch, the engine that computes it
        assert resolve_engine("auto", "bf16", "cpu", onnx=True) == ("torch", "bf16")


@pytest.mark.parametrize(("engine", "precision", "device", "installed", "message"), [
    ("onnxruntime", "fp32", "cpu", False, 'pip install "geotiler[onnx]"'),
    ("onnxruntime", "bf16", "cpu", True, "computes in fp32"),
    ("onnxruntime", "auto", "cuda", True, "CPU only"),
    ("tensorrt", "auto", "cpu", True, "--engine must be one of"),
])
def test_impossible_engine_settings_are_one_line_errors(
        engine: str, precision: str, device: str, installed: bool, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        resolve_engine(engine, precision, device, onnx=installed)


def test_the_cli_refuses_bf16_with_onnxruntime_and_unknown_engines(
        tmp_path: Path, trained_model: Path) -> None:  # noqa: F811
    args = ["predict", str(tmp_path / "a.tif"), "-m", str(trained_model), "-o",
            str(tmp_path / "b.gpkg"), "--device", "cpu"]
    result = CliRunner().invoke(main, [*args, "--engine", "onnxruntime", "--precision", "bf16"])
    assert result.exit_code == 2 and "--engine onnxruntime computes in fp32" in result.stderr
    result = CliRunner().invoke(main, [*args, "--engine", "tvm"])
    assert result.exit_code == 2 and "tvm" in result.stderr
    with pytest.raises(ConfigError, match="--engine"):
        PredictConfig(engine="tvm")  # type: ignore[arg-type]
    assert not list(tmp_path.glob("b*")), "nothing written"

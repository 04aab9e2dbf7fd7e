"""The CLI's option defaults come from the config dataclasses, and shared options are the same
option everywhere (declared once in geotiler/cli/options.py)."""

from __future__ import annotations

from click.testing import CliRunner

from geotiler.cli import main
from geotiler.device import DEVICES
from geotiler.predict import PredictConfig
from geotiler.tiles.config import TileConfig
from pipelines.demo import DemoConfig
from trainer.config import TrainConfig


def defaults(command: str) -> dict[str, object]:
    return {p.name: p.default for p in main.commands[command].params}


def test_every_command_is_registered():
    assert set(main.commands) == {"tile", "train", "predict", "evaluate", "demo"}


def test_demo_defaults_are_demo_config_defaults():
    got, config = defaults("demo"), DemoConfig()
    assert got["out_dir"] == str(config.out_dir)
    assert (got["minutes"], got["arch"], got["seed"]) == (config.minutes, config.arch,
                                                          config.seed)


def test_command_defaults_are_config_defaults():
    tile, train, predict = defaults("tile"), defaults("train"), defaults("predict")
    assert (tile["size"], tile["overlap"], tile["seed"]) == (TileConfig().size,
                                                             TileConfig().overlap,
                                                             TileConfig().seed)
    assert (train["epochs"], train["device"]) == (TrainConfig().epochs, TrainConfig().device)
    assert (predict["block"], predict["halo"], predict["device"]) == (
        PredictConfig().block, PredictConfig().halo, PredictConfig().device)


def test_shared_options_are_declared_once():
    for name in ("tile", "predict"):
        params = {p.name: p for p in main.commands[name].params}
        assert params["scheduler"].default == "auto"
        assert params["progress"].default is True
    for name in ("train", "predict"):
        device = next(p for p in main.commands[name].params if p.name == "device")
        assert tuple(device.type.choices) == DEVICES  # type: ignore[attr-defined]
    for name in main.commands:
        assert any(p.name == "overwrite" for p in main.commands[name].params)


def test_a_bad_setting_is_one_line_with_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "d"), "--footprints",
                                       "x.gpkg"])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:")


def test_every_instance_setting_has_its_predict_option():
    """Each field of InstanceOptions (ground units) is a `geotiler predict` option with the
    field's default, so the error messages of InstanceOptions.check name real options."""
    import dataclasses

    from geotiler.instances import InstanceOptions

    predict = defaults("predict")
    for field in dataclasses.fields(InstanceOptions):
        name = field.name.removesuffix("_m2").removesuffix("_m")
        assert name in predict, f"--{name.replace('_', '-')} is missing"
        assert predict[name] == getattr(InstanceOptions(), field.name)


def test_bad_usage_is_one_line_that_names_the_help(tmp_path):
    cases = {
        ("train", str(tmp_path), "--epochs", "0"): "'geotiler train --help'",  # out of range
        ("tile", str(tmp_path / "a.tif")): "'geotiler tile --help'",  # missing --footprints
        ("predict", "--bogus"): "'geotiler predict --help'",  # unknown option
        ("--bogus",): "'geotiler --help'",  # unknown option of the group
        ("nosuch",): "'geotiler --help'",  # unknown command
        ("train", str(tmp_path), "--init"): "'geotiler train --help'",  # option without value
    }
    for args, help_hint in cases.items():
        result = CliRunner().invoke(main, list(args), prog_name="geotiler")
        assert result.exit_code == 2, args
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error:"), (args, result.stderr)
        assert help_hint in lines[0] and "Usage:" not in result.output


def test_quiet_after_the_command_says_where_it_goes(tmp_path):
    result = CliRunner().invoke(main, ["tile", "-q", str(tmp_path / "a.tif")],
                                prog_name="geotiler")
    assert result.exit_code == 2
    assert [ln for ln in result.stderr.splitlines() if ln.strip()] == [
        "Error: No such option '-q': -q goes before the command (geotiler -q tile ...)"]


def test_a_setting_out_of_its_range_names_the_help(tmp_path):
    """geotiler's own range checks (not Click's) point to the help too."""
    result = CliRunner().invoke(main, ["tile", str(tmp_path / "a.tif"), "-f",
                                       str(tmp_path / "a.gpkg"), "-o", str(tmp_path / "t"),
                                       "--size", "7"], prog_name="geotiler")
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["Error: --size must be between 16 and 8192 pixels, got 7 "
                     "(see 'geotiler tile --help')"]


def test_the_group_alone_still_shows_its_help():
    result = CliRunner().invoke(main, [])
    assert "Commands:" in result.output and "Error" not in result.output


def test_no_number_option_takes_nan_or_infinity(tmp_path):
    """Every float option of every command refuses nan and inf in one line, exit 2 (nan
    passed every range check; ``--min-area inf`` silently dropped every building and wrote
    ``Infinity`` into the metadata JSON)."""
    import click

    checked = 0
    for name, command in main.commands.items():
        for param in command.params:
            if not isinstance(param, click.Option) or not isinstance(param.type, click.FloatRange):
                continue
            for bad in ("nan", "inf"):
                result = CliRunner().invoke(main, [name, param.opts[0], bad])
                assert result.exit_code == 2, (name, param.opts[0], bad, result.output)
                assert ("is not a finite number" in result.stderr
                        or "is not in the range" in result.stderr), result.stderr
            checked += 1
    assert checked >= 20  # the options of tile, train, predict, evaluate and demo
    float_options = [p.opts[0] for c in main.commands.values() for p in c.params
                     if isinstance(p, click.Option) and p.type.name == "float"]
    assert len(float_options) == checked  # no plain type=float left
    for name in main.commands:  # and an unbounded one shows no "[x<=None]" in --help
        assert "None]" not in CliRunner().invoke(main, [name, "--help"]).output

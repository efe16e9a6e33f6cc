"""The frozen config: validation, presets, and the CLI derived from it."""
from __future__ import annotations

import dataclasses
import math

import pytest
from click.testing import CliRunner

from jaxstyle.faces import cli
from jaxstyle.config import PRESETS, Config
from jaxstyle.errors import ConfigError


@pytest.mark.parametrize("changes, message", [
    ({"size": 0}, "--size must be"),
    ({"size": -5}, "--size must be"),
    ({"size": 10**6}, "--size must be"),
    ({"iterations": -1}, "--iterations must be"),
    ({"style_layers": ("block9_conv9",)}, "unknown style layer 'block9_conv9'"),
    ({"style_layer_weights": (1.0, 2.0)}, "has 2 value(s) for 5 style layer(s)"),
    ({"content_weight": -1.0}, "--content-weight must be finite and non-negative"),
    ({"style_weight": math.nan}, "--style-weight must be finite"),
    ({"tv_weight": math.inf}, "--tv-weight must be finite"),
    ({"style_layer_weights": (0.1, 0.1, 0.1, 0.1, -0.1)}, "--style-layer-weights must be"),
    ({"optimizer": "sgd"}, "--optimizer must be one of"),
    ({"learning_rate": 0.0}, "--learning-rate must be"),
    ({"lbfgs_memory": -1}, "--lbfgs-memory must be"),
    ({"style_loss": "wasserstein"}, "--style-loss must be one of gram, w2, sliced, histogram, meanstd"),
    ({"average": 1.0}, "--average must be a decay from 0 (off) to below 1"),
    ({"passes": 0}, "--passes must be an integer from 1 to 100"),
    ({"pass_blend": 1.5}, "--pass-blend must be from 0 to 1"),
])
def test_invalid_settings_raise_config_error(changes, message):
    with pytest.raises(ConfigError) as e:
        dataclasses.replace(Config(), **changes)
    assert message in str(e.value)


def test_config_is_frozen_and_round_trips_through_dict():
    c = Config(size=64)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.size = 32
    assert Config.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown setting"):
        Config.from_dict({**c.to_dict(), "bogus": 1})


def test_changing_layers_without_weights_gives_equal_weights():
    c = Config().replace(style_layers="block1_conv1,block3_conv1")
    assert c.style_layers == ("block1_conv1", "block3_conv1")
    assert c.style_layer_weights == (0.5, 0.5)
    with pytest.raises(ConfigError, match="unknown setting"):
        Config().replace(sizee=3)


def test_presets_differ_only_where_the_mode_needs():
    assert PRESETS["content"].content_layers == ("block2_conv2",)
    assert PRESETS["content"].style_weight == 0 and PRESETS["content"].init == "noise"
    assert PRESETS["style"].content_weight == 0 and PRESETS["style"].init == "noise"
    assert PRESETS["transfer"] == Config()


def test_cli_options_and_defaults_come_from_the_config():
    runner = CliRunner()
    for mode in ("transfer", "content", "style"):
        out = runner.invoke(cli.cli, [mode, "--help"], terminal_width=200).output
        preset = PRESETS[mode]
        for f in dataclasses.fields(Config):
            flag = "--" + f.name.replace("_", "-")
            if mode in f.metadata["modes"]:
                assert flag in out, (mode, flag)
            else:
                assert flag + " " not in out, (mode, flag)
        assert f"default: {preset.size}" in out
    out = runner.invoke(cli.cli, ["content", "--help"], terminal_width=200).output
    assert "default: block2_conv2" in out


def test_the_automatic_lbfgs_history_depends_on_size_and_device():
    from jaxstyle.config import LBFGS_MEMORY, LBFGS_MEMORY_CPU, resolve
    assert resolve(Config(size=512), "cpu").lbfgs_memory == LBFGS_MEMORY_CPU
    assert resolve(Config(size=2048), "cpu").lbfgs_memory == LBFGS_MEMORY
    assert resolve(Config(size=512), "tpu").lbfgs_memory == LBFGS_MEMORY
    assert resolve(Config(size=512, lbfgs_memory=7), "cpu").lbfgs_memory == 7

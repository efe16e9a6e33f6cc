"""Numerical edge cases that used to "succeed" silently or with a wrong message: each is refused
in one line before any work, or reported truthfully."""
from __future__ import annotations

import pytest

from jaxstyle.config import PRESETS
from jaxstyle.errors import ConfigError

from test_cli import run_cli


@pytest.mark.parametrize("changes, message", [
    (dict(content_layers=()), "--content-weight is 1 but --content-layers is empty"),
    (dict(style_layers=()), "--style-weight is 10 but --style-layers is empty"),
    (dict(content_layer_weights=(0.0,)), "--content-layer-weights are all 0"),
    (dict(style_layer_weights=(0.0,) * 5), "--style-layer-weights are all 0"),
    (dict(content_weight=0.0, style_weight=0.0, tv_weight=0.0), "nothing to optimize"),
])
def test_a_term_that_would_vanish_is_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        PRESETS["transfer"].replace(**changes)


def test_weights_that_only_switch_a_term_off_are_fine():
    PRESETS["transfer"].replace(content_weight=0.0, content_layers=())
    PRESETS["style"].replace(tv_weight=0.0)
    PRESETS["content"].replace(tv_weight=0.0)


def test_an_empty_layer_list_on_the_command_line_is_one_line(capsys, tmp_path, image_dir):
    code, _, err = run_cli(capsys, "transfer", image_dir / "content.png", image_dir / "style.png",
                           "-o", tmp_path / "x.png", "--content-layers", "")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "--content-layers is empty" in err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("blend", ["1e308,1e308", "nan,1", "0,0", "-1,2"])
def test_style_blends_that_cannot_be_normalized_are_refused(capsys, tmp_path, image_dir, blend):
    code, _, err = run_cli(capsys, "transfer", image_dir / "content.png", image_dir / "style.png",
                           image_dir / "style.png", "-o", tmp_path / "x.png", "--style-blend", blend)
    assert code != 0 and "--style-blend values must be non-negative, finite and not all zero" in err


def test_weights_that_overflow_from_the_start_write_nothing_and_say_so(capsys, tmp_path, image_dir, synthetic_h5):
    out = tmp_path / "x.png"
    code, _, err = run_cli(capsys, "transfer", image_dir / "content.png", image_dir / "style.png", "-o", out,
                           "--weights", synthetic_h5, "-s", 32, "-i", 4, "--style-weight", "1e38")
    assert code == 3, err
    assert "NaN or infinite from the start" in err and "nothing was written" in err
    assert "kept the last image" not in err and "wrote" not in err
    assert not out.exists()

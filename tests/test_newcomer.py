"""What a newcomer meets first, checked without compiling: the API's messages and docs in
Python's words, refusals and warnings in one line before any work, quiet native libraries."""
from __future__ import annotations

import dataclasses
import logging
import shutil

import pytest

import jaxstyle
from jaxstyle.faces import api
from jaxstyle.platform import runtime
from jaxstyle.config import Config
from jaxstyle.errors import ConfigError, InputError


def test_cli_messages_in_the_apis_words():
    words = api.python_words
    assert words("o.png.ckpt.npz: checkpoint was made with --style-weight 10.0, not 20.0; continue it with") == \
        "o.png.ckpt.npz: checkpoint was made with style_weight=10.0, not 20.0; continue it with"
    assert words("--preserve-colors must be one of none, luminance") == "preserve_colors must be one of none, luminance"
    assert words("made with --preserve-colors luminance, not none") == "made with preserve_colors=luminance, not none"
    assert words("Pass --weights PATH or set JAXSTYLE_WEIGHTS") == "Pass weights=PATH or set JAXSTYLE_WEIGHTS"
    assert words("--style-mask was given 2 time(s); --bit-depth 16 and -o x.png") == \
        "style_masks was given 2 time(s); bits=16 and output=x.png"
    assert words("--no-normalize and --unknown-flag") == "normalize=False and --unknown-flag"
    assert words("--overwrite makes them again, --skip-existing keeps them") == \
        "existing='overwrite' makes them again, existing='skip' keeps them"


def test_api_errors_name_keyword_arguments(image_dir, tmp_path):
    with pytest.raises(ConfigError) as e:
        jaxstyle.transfer(image_dir / "content.png", image_dir / "style.png", preserve_colors="sepia")
    assert "preserve_colors must be one of" in e.value.message and "--" not in e.value.message
    with pytest.raises(ConfigError) as e:
        jaxstyle.transfer(image_dir / "content.png", image_dir / "style.png", size=5)
    assert e.value.message.startswith("size must be an integer")
    with pytest.raises(InputError, match="a GIF holds 256 colours, too few for a result"):  # before any work
        jaxstyle.transfer(image_dir / "content.png", image_dir / "style.png", output=tmp_path / "x.gif")


def test_help_documents_every_setting():
    doc = jaxstyle.transfer.__doc__
    for words in ("size (int, default 512)", "iterations (int, default 300)", "`progress`", "tv_weight (float"):
        assert words in doc, words
    assert "init (str, default 'noise')" in jaxstyle.reconstruct_content.__doc__
    for f in dataclasses.fields(Config):
        assert f"    {f.name} ({f.type}, default " in Config.__doc__, f.name


def test_split_image_on_one_device_says_so(image_dir, tmp_path, caplog):
    out = tmp_path / "kept.png"
    shutil.copy(image_dir / "style.png", out)
    with caplog.at_level(logging.WARNING, logger="jaxstyle"):
        result = jaxstyle.transfer(image_dir / "content.png", image_dir / "style.png", output=out, size=32,
                                   split_image=True, existing="skip")  # kept as it is: nothing compiles
    assert result.status == "skipped"
    said = [r.getMessage() for r in caplog.records if "--split-image" in r.getMessage()]
    assert len(said) == 1 and "one cpu device to split over" in said[0] and "\n" not in said[0]


def test_native_loggers_are_told_to_be_quiet_unless_the_user_said_otherwise():
    env = {"TPU_STDERR_LOG_LEVEL": "0"}
    names = runtime.quiet_native_logs(env)
    assert env["TPU_STDERR_LOG_LEVEL"] == "0" and "TPU_STDERR_LOG_LEVEL" not in names
    assert env["TPU_MIN_LOG_LEVEL"] == "2" and env["TF_CPP_MIN_LOG_LEVEL"] == "2"

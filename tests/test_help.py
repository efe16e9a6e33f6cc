"""`--help` of the run commands: options in sections, each default said once and never cut,
paths typed as paths. The texts are kept in tests/help/ (regenerate them with
JAXSTYLE_UPDATE_HELP=1 after a deliberate change, and read the difference)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from test_cli import run_cli

HELP = Path(__file__).parent / "help"


@pytest.mark.parametrize("command", ["transfer", "content", "style", "resume", "video"])
def test_help_text_snapshot(capsys, monkeypatch, command):
    monkeypatch.setenv("COLUMNS", "100")
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0
    sections = re.findall(r"^(\S[^:\n]*):$", out, re.M)
    assert "Other options" not in sections, "an option is missing from cli.HELP_GROUPS"
    if command != "resume":
        assert sections == ["Input and output", "Style", "Optimizer", "Devices and memory", "Progress"]
    rows = re.split(r"\n(?=  -)", out)
    for row in rows:
        assert row.count("default:") <= 1, row  # each default said once
    assert max(len(line) for line in out.splitlines()) <= 100
    assert "block3_c\n" not in out and "comma-\n" not in out.replace(" ", "")
    assert " TEXT " not in re.sub(r"--(init|device) TEXT", "", out)  # paths are PATH or FILE
    snapshot = HELP / f"{command}.txt"
    if os.environ.get("JAXSTYLE_UPDATE_HELP"):
        snapshot.write_text(out)
    assert out == snapshot.read_text(), f"jaxstyle {command} --help changed; see the module doc"

"""The README's first two commands are the ones CI runs, and every CLI option is documented."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from jaxstyle.config import Config

REPO = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```(?:sh|bash)?\n(.*?)```", text, flags=re.S)
    return [line.strip() for line in blocks[0].splitlines() if line.strip() and not line.startswith("#")]


def test_ci_runs_the_readme_install_and_test_commands():
    install, test = _readme_commands()[:2]
    ci = (REPO / ".ci" / "run").read_text()
    install_only = install.split(" && jaxstyle ")[0]
    assert install_only in ci.replace("pip install -q ", "pip install "), install_only
    assert test in ci
    assert "jaxstyle transfer ../shared/images/tubingen.jpg ../shared/images/starry_night.jpg" in install


def test_every_setting_is_documented_in_the_readme():
    text = (REPO / "README.md").read_text()
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag

"""The package as pip and PyPI see it: licence, metadata, version in one place, typed, linted,
and README pictures that render outside the repository."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import jaxstyle

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_licence_metadata_and_typing():
    project = PYPROJECT["project"]
    assert project["license"] == "MIT"  # an SPDX string, not the deprecated table
    assert "MIT License" in (REPO / "LICENSE").read_text()
    assert project["license-files"] == ["LICENSE"]
    assert any(c.startswith("Programming Language :: Python :: 3.1") for c in project["classifiers"])
    assert {"Homepage", "Repository", "Issues"} <= set(project["urls"])
    # Home-page, which pip show read alone before pip 24, from setup.cfg (pyproject has no field for it)
    import configparser
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg["metadata"]["url"] == project["urls"]["Homepage"]
    assert (REPO / "jaxstyle" / "py.typed").exists()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["jaxstyle"]


def test_the_version_is_written_once():
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "jaxstyle.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", jaxstyle.__version__)
    hits = [p for p in REPO.glob("jaxstyle/*.py") if re.search(r'"\d+\.\d+\.\d+"', p.read_text())]
    assert hits == [REPO / "jaxstyle" / "__init__.py"], hits


def test_readme_pictures_render_outside_the_repository():
    text = (REPO / "README.md").read_text()
    repo_url = PYPROJECT["project"]["urls"]["Repository"]
    raw = repo_url.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(images) > 10
    for url in images:
        if url.startswith("https://colab.research.google.com/assets/"):
            continue
        assert url.startswith(raw), url  # absolute: PyPI and mirrors show them too
        assert (REPO / url[len(raw):]).is_file(), url
    assert f"colab.research.google.com/github/{repo_url.removeprefix('https://github.com/')}/blob/main/" \
           "examples/colab_transfer.ipynb" in text
    assert (REPO / "examples" / "colab_transfer.ipynb").is_file()


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (it comes with the [test] extra)")
    r = subprocess.run([ruff, "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

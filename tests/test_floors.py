"""The dependency floors in pyproject.toml are the versions CI proves: .ci/lowest.txt pins each
direct dependency at its floor and .ci/run installs jaxstyle with those pins and runs a transfer.
These checks keep the three in step, and the current environment above the floors."""
from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
LOWEST = REPO / ".ci" / "lowest.txt"
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*?)\s*(;.*)?$")


def _name(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _version(text: str) -> tuple[int, ...]:
    """The leading numeric release of a version ("0.10.2.dev1" -> (0, 10, 2)), without trailing
    zeros so that "0.10" and "0.10.0" compare equal."""
    m = re.match(r"\d+(\.\d+)*", text.strip())
    assert m, f"not a version: {text!r}"
    parts = [int(p) for p in m.group(0).split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _floors(requirements: list[str]) -> dict[str, str]:
    """{name: the version after '>='} of requirement strings (PEP 508, markers ignored)."""
    out = {}
    for req in requirements:
        m = _REQUIREMENT.match(req)
        assert m, f"cannot parse requirement {req!r}"
        specs = [s.strip() for s in m.group(3).split(",") if s.strip()]
        lows = [s[2:].strip() for s in specs if s.startswith(">=")]
        assert len(lows) == 1, f"{req!r} needs exactly one '>=' floor"
        out[_name(m.group(1))] = lows[0]
    return out


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _pins() -> dict[str, tuple[str, str]]:
    """{name: (version, comment)} of .ci/lowest.txt's `name==version  # comment` lines."""
    out = {}
    for line in LOWEST.read_text().splitlines():
        body, _, comment = line.partition("#")
        if not body.strip():
            continue
        m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([0-9][0-9A-Za-z.]*)\s*", body)
        assert m, f".ci/lowest.txt: not a `name==version` pin: {line!r}"
        name = _name(m.group(1))
        assert name not in out, f".ci/lowest.txt pins {name} twice"
        out[name] = (m.group(2), comment.strip())
    return out


def test_lowest_txt_pins_every_dependency_at_its_floor():
    floors = _floors(_project()["dependencies"])
    pins = _pins()
    assert floors, "pyproject.toml declares no dependencies"
    missing = sorted(set(floors) - set(pins))
    assert not missing, f".ci/lowest.txt does not pin {missing}"
    for name, floor in floors.items():
        pinned = pins[name][0]
        assert _version(pinned) == _version(floor), \
            f"{name}: pyproject.toml says >={floor}, .ci/lowest.txt pins =={pinned}"
    for name, (version, comment) in pins.items():
        if name not in floors:  # a transitive pin must say why it is there
            assert comment, f".ci/lowest.txt pins transitive {name}=={version} without a comment saying why"


def test_optional_dependencies_do_not_go_below_the_floors():
    floors = _floors(_project()["dependencies"])
    for extra, reqs in _project().get("optional-dependencies", {}).items():
        for name, low in _floors(reqs).items():
            if name in floors:
                assert _version(low) >= _version(floors[name]), \
                    f"[{extra}] asks {name}>={low}, below the floor {floors[name]}"


def test_ci_runs_a_transfer_with_the_lowest_versions():
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    install = "pip install -q -c .ci/lowest.txt ."
    assert install in lines, f".ci/run has no `{install}` line"
    after = lines[lines.index(install) + 1:]
    assert any(line.startswith("jaxstyle transfer ") for line in after), \
        ".ci/run installs the lowest versions but runs no transfer with them"
    before = lines[:lines.index(install)]
    assert any(".venv-lowest/bin/activate" in line for line in before), \
        ".ci/run installs the lowest versions outside their own venv (.venv-lowest)"


def test_installed_versions_meet_the_floors():
    for name, floor in _floors(_project()["dependencies"]).items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{name} is a dependency but is not installed")
        assert _version(installed) >= _version(floor), f"{name} {installed} is below its floor {floor}"


def test_version_parse():
    assert _version("0.10") == _version("0.10.0") == (0, 10)
    assert _version("0.10.2.dev20250101") == (0, 10, 2)
    assert _version("2.0.0rc1") == (2,)
    assert _version("10") < _version("10.0.1") < _version("10.1")
    assert _floors(['jax[tpu] >= 0.6.1, <1 ; python_version >= "3.10"']) == {"jax": "0.6.1"}

"""The Colab notebook stays valid and uses only the real API."""
from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import jaxstyle
from jaxstyle.config import Config

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "colab_transfer.ipynb"


def test_notebook_code_compiles_and_uses_the_api():
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["nbformat"] == 4
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    python = "\n".join(line for cell in code for line in cell.splitlines() if not line.lstrip().startswith("!"))
    tree = ast.parse(python)
    fields = {f.name for f in dataclasses.fields(Config)}
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and isinstance(n.func.value, ast.Name) and n.func.value.id == "jaxstyle"]
    assert {c.func.attr for c in calls} >= {"transfer", "load_weights", "enable_compilation_cache"}
    for call in calls:
        assert hasattr(jaxstyle, call.func.attr), call.func.attr
        if call.func.attr == "transfer":
            for kw in call.keywords:
                assert kw.arg in fields | {"weights", "progress", "style_blend", "output", "gif", "trace",
                                           "preset", "config", "quality", "bits"}, kw.arg
    assert any("pip" in cell and "install" in cell for cell in code)
    assert any("bench.run(" in cell for cell in code)  # in-process: a subprocess cannot use the notebook's TPU
    assert not any("YOUR-" in cell for cell in code)  # no placeholder to fill in
    assert any('default_backend() == "cpu"' in cell for cell in code)  # says so when there is no accelerator


def test_the_notebook_is_what_its_generator_writes(tmp_path):
    import runpy
    import shutil
    script = tmp_path / "make_notebook.py"
    shutil.copy(NOTEBOOK.with_name("make_notebook.py"), script)
    runpy.run_path(str(script))
    assert json.loads((tmp_path / "colab_transfer.ipynb").read_text()) == json.loads(NOTEBOOK.read_text())

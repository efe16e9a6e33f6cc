"""The Colab notebook stays valid and uses only the real API."""
from __future__ import annotations

import ast
import dataclasses
import json
import os
from pathlib import Path

import pytest

import jaxstyle
from jaxstyle.config import Config

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples" / "colab_transfer.ipynb"


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
    assert any('default_backend() != "cpu"' in cell and "warning" in cell for cell in code)  # a CPU goes on
    assert not any("SystemExit" in cell for cell in code)
    assert any("git+https://github.com/jaxstyle/jaxstyle" in cell for cell in code)
    assert any("pip" in cell and '"pillow"' in cell for cell in code)


def test_the_notebook_is_what_its_generator_writes(tmp_path):
    import runpy
    import shutil
    script = tmp_path / "make_notebook.py"
    shutil.copy(NOTEBOOK.with_name("make_notebook.py"), script)
    runpy.run_path(str(script))
    assert json.loads((tmp_path / "colab_transfer.ipynb").read_text()) == json.loads(NOTEBOOK.read_text())


@pytest.mark.skipif(not os.environ.get("JAXSTYLE_TEST_NOTEBOOK"),
                    reason="the notebook's run in a kernel (~100 s on 2 cores) is CI's own step: "
                           "JAXSTYLE_TEST_NOTEBOOK=1 with nbclient and ipykernel installed")
def test_the_notebook_runs_end_to_end_in_a_kernel_on_a_cpu(tmp_path, image_dir, synthetic_h5):
    """Every default cell, in a real Jupyter kernel, on the CPU, at 32 px: jaxstyle installed by
    the notebook's own pip cell from a wheel of this checkout (into a folder of the test's,
    without its dependencies, which the kernel's Python has), the weights from
    $JAXSTYLE_WEIGHTS, the pictures already where the download cell looks (no network but
    PyPI's, for the wheel's build requirements)."""
    import subprocess
    import sys
    import shutil
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("ipykernel")
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME
    site = tmp_path / "site"
    site.mkdir()
    src = tmp_path / "src"  # a copy: setuptools builds in the source tree (build/, *.egg-info)
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv*", "build", "*.egg-info", "__pycache__",
                                                             ".pytest_cache", ".ruff_cache", "*.png", "*.jpg"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(src)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("jaxstyle-*.whl")
    shutil.copy(image_dir / "content.png", tmp_path / "tubingen.jpg")  # the file names the notebook uses
    shutil.copy(image_dir / "style.png", tmp_path / "starry_night.jpg")
    env = {"JAXSTYLE_NOTEBOOK_SIZE": "32", "JAXSTYLE_NOTEBOOK_ITERATIONS": "2", "JAXSTYLE_SOURCE": str(wheel),
           "JAXSTYLE_WEIGHTS": str(synthetic_h5), "PIP_TARGET": str(site), "PIP_NO_DEPS": "1",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONPATH": str(site), "JAX_PLATFORMS": "cpu",
           "JAXSTYLE_NO_COMPILE_CACHE": "1"}
    nb = nbformat.read(NOTEBOOK, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits the test's environment
    try:
        client = nbclient.NotebookClient(nb, timeout=600, kernel_name=NATIVE_KERNEL_NAME,
                                         resources={"metadata": {"path": str(tmp_path)}})
        client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert f"installing jaxstyle from {wheel}" in outputs and f"from {site / 'jaxstyle'}" in outputs
    assert "warning: jax sees no GPU or TPU, so this runs on the CPU" in outputs
    assert "done: 2 iterations" in outputs and (tmp_path / "result.png").is_file()
    assert "px float32:" in outputs and "not on Colab" in outputs
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))

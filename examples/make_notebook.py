"""Writes colab_transfer.ipynb beside this file: edit the cells here, then run
`python examples/make_notebook.py` (tests/test_examples.py checks the two agree)."""
import json
from pathlib import Path

cells = []


def md(text):
    cells.append({"cell_type": "markdown", "metadata": {}, "source": text.strip("\n").splitlines(True)})


def code(text):
    cells.append({"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
                  "source": text.strip("\n").splitlines(True)})

md("""
# jaxstyle on Colab: a photo in the style of a painting

Neural style transfer (Gatys et al.) with VGG16 in JAX. Choose **Runtime → Change runtime
type → a GPU or a TPU**, then **Runtime → Run all**. A CPU runtime works too, about ten times
slower (use `SIZE = 256` there). Colab's JAX already matches the accelerator and is never
replaced; jaxstyle is installed from its public repository.
""")
code('''
# Settings. (The tests run this notebook on a CPU with JAXSTYLE_NOTEBOOK_SIZE=32, a local
# checkout as JAXSTYLE_SOURCE, and no network.)
import os
SIZE = int(os.environ.get("JAXSTYLE_NOTEBOOK_SIZE", "512"))  # longest side of the pictures, pixels
ITERATIONS = int(os.environ.get("JAXSTYLE_NOTEBOOK_ITERATIONS", "300"))
# Where jaxstyle comes from when it is not installed (set JAXSTYLE_SOURCE to install from it anyway).
SOURCE = os.environ.get("JAXSTYLE_SOURCE", "jaxstyle @ git+https://github.com/jaxstyle/jaxstyle")
''')
code('''
# Install jaxstyle, keeping Colab's own jax, jaxlib and their GPU/TPU plugins: from SOURCE (the
# project's repository), or from a wheel or checkout uploaded to /content (Files panel) if any.
import glob
import importlib
import importlib.util
import subprocess
import sys
if os.environ.get("JAXSTYLE_SOURCE") or importlib.util.find_spec("jaxstyle") is None:
    uploaded = sorted(glob.glob("/content/jaxstyle*.whl")) + [
        d for d in ("/content/jaxstyle", "/content/main") if os.path.isfile(os.path.join(d, "pyproject.toml"))]
    source = uploaded[-1] if uploaded else SOURCE
    print("installing jaxstyle from", source)
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", source, "pillow"],
                         capture_output=True, text=True)
    if pip.returncode != 0:
        print(pip.stderr[-3000:])
        raise RuntimeError(f"pip could not install jaxstyle from {source} (its message is above); upload a "
                           "wheel (`pip wheel --no-deps .` in a checkout) to /content and run this cell again")
    importlib.invalidate_caches()
import jaxstyle
print("jaxstyle", jaxstyle.__version__, "from", os.path.dirname(jaxstyle.__file__))
''')
code('''
# The accelerator. Without one this goes on, on the CPU, slowly.
import jax
print("jax", jax.__version__, "on", jax.devices())
ACCELERATOR = jax.default_backend() != "cpu"
if not ACCELERATOR:
    print(f"warning: jax sees no GPU or TPU, so this runs on the CPU, about ten times slower (SIZE={SIZE}). "
          "For a GPU or TPU: Runtime -> Change runtime type, then Runtime -> Run all.")
# Compiled programs are kept; a later run of the same image size loads them instead of compiling.
CACHE = "/content/drive/MyDrive/jaxstyle-xla-cache" if os.path.isdir("/content/drive/MyDrive") else None
print("compilation cache:", jaxstyle.enable_compilation_cache(CACHE))
''')
md("""
*Optional:* to keep the compiled programs across sessions (a TPU compiles a new image size for
a while), mount Google Drive before the cell above (`from google.colab import drive;
drive.mount("/content/drive")`, which asks for permission once) and run it again.
""")
code('''
# A photo and a painting from Wikimedia Commons (a file already here is used as it is).
import urllib.request
from PIL import Image

def fetch(url, path):
    if not os.path.isfile(path):
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "jaxstyle-notebook"})
            with urllib.request.urlopen(req, timeout=60) as r, open(path + ".part", "wb") as f:
                f.write(r.read())
            Image.open(path + ".part").verify()  # a real image, not an error page
        except Exception as e:
            raise RuntimeError(f"could not download {url} ({type(e).__name__}: {e}); "
                               f"upload a picture as {path} instead") from None
        os.replace(path + ".part", path)
    return path

content = fetch("https://upload.wikimedia.org/wikipedia/commons/0/00/Tuebingen_Neckarfront.jpg", "tubingen.jpg")
style = fetch("https://upload.wikimedia.org/wikipedia/commons/thumb/e/ea/Van_Gogh_-_Starry_Night_-_Google_Art_Project.jpg/1280px-Van_Gogh_-_Starry_Night_-_Google_Art_Project.jpg",
              "starry_night.jpg")
''')
code('''
# Optional: your own photo and painting instead (pick two files when asked; skip to keep the examples).
UPLOAD = False
if UPLOAD:
    from google.colab import files
    names = list(files.upload())
    content, style = names[0], names[1]
''')
code('''
# Style transfer, watched live: the image and the loss curve update in place while the loss goes down.
# Stop it with the stop button (interrupt): the image so far is kept, returned and written.
params = jaxstyle.load_weights()  # VGG16 from Keras on first use (58 MB, MD5-checked), then cached
result = jaxstyle.transfer(content, style, weights=params, size=SIZE, iterations=ITERATIONS, progress=True,
                           output="result.png")
print(f"{result.status}: {result.iterations} iterations, {result.seconds_per_iteration:.3f} s/iteration, "
      f"{result.evaluations_per_iteration:.2f} evaluations/iteration, loss {result.initial['total']:.3g} -> "
      f"{result.final['total']:.3g}, compile {result.compile_seconds:.1f} s")
''')
md("""
Options are `jaxstyle.Config` fields: `style_weight`, `content_layers`, `preserve_colors="luminance"`,
`scales=3` (coarse to fine, for large images), `pooling="avg"`, `dtype="bfloat16"`, ... Several
styles are blended with `style_blend`; a list of photos runs as one batch.
""")
code('''
blend = jaxstyle.transfer(content, [style, content], style_blend=[0.8, 0.2], weights=params, size=SIZE,
                          iterations=max(1, ITERATIONS * 2 // 3), preserve_colors="luminance", progress=True)
blend.to_pil()
''')
code('''
# Throughput on this device, measured in this process (a `!jaxstyle bench` subprocess could not
# use a TPU this notebook holds): seconds per iteration, FLOP/s and the fraction of the chip's peak.
from jaxstyle.faces import bench
cases = [bench.Case(SIZE)] + ([bench.Case(SIZE, dtype="bfloat16"), bench.Case(2 * SIZE)] if ACCELERATOR else [])
for row in bench.run(cases, params, iterations=20 if ACCELERATOR else 2, repeats=3 if ACCELERATOR else 1):
    print(f"{row['size']} px {row['dtype']}: {row['s_per_iter']:.4f} s/iteration, "
          f"{(row['flops_per_s'] or 0) / 1e12:.1f} TFLOP/s"
          + (f" ({row['fraction_of_peak']:.0%} of peak)" if row['fraction_of_peak'] else "")
          + f", compile {row['compile_s']:.1f} s")
''')
code('''
# Download the result to your computer.
try:
    from google.colab import files
    files.download("result.png")
except ImportError:
    print("not on Colab: the result is result.png beside this notebook")
''')
nb = {"cells": cells, "metadata": {"accelerator": "GPU", "colab": {"provenance": []},
      "kernelspec": {"display_name": "Python 3", "name": "python3"}, "language_info": {"name": "python"}},
      "nbformat": 4, "nbformat_minor": 0}
with open(Path(__file__).with_name("colab_transfer.ipynb"), "w") as fh:
    json.dump(nb, fh, indent=1)
    fh.write("\n")

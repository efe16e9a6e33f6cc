"""Shared fixtures: synthetic Keras-layout weights, small test images, an isolated cache."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

# Every test run gets its own jaxstyle cache (converted weights, digests, XLA cache), so
# nothing leaks between runs or into the user's ~/.cache.
os.environ["JAXSTYLE_CACHE"] = tempfile.mkdtemp(prefix="jaxstyle-test-cache-")
os.environ.pop("JAXSTYLE_WEIGHTS", None)
os.environ.setdefault("JAXSTYLE_WEIGHTS_URL", "http://127.0.0.1:9/unreachable.h5")

from jaxstyle.model import vgg  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("JAXSTYLE_SHARED", REPO.parent / "shared"))
IMAGENET_H5 = SHARED / "weights" / "vgg16_imagenet_notop.h5"
IMAGES = SHARED / "images"


def write_keras_h5(path: Path, params: dict, nested: bool = False, skip: str | None = None,
                   override: dict | None = None) -> Path:
    """Write params in the layout of Keras' vgg16 notop h5 (flat `<layer>_W_1:0` or nested)."""
    import h5py

    override = override or {}
    names = [n for n in vgg.LAYER_NAMES]
    layer_names = []
    with h5py.File(path, "w") as f:
        for block in range(1, 6):
            for name in [n for n in names if n.startswith(f"block{block}_")]:
                if name == skip:
                    continue
                layer_names.append(name)
                g = f.create_group(name)
                k, b = override.get(name, (params[name]["kernel"], params[name]["bias"]))
                if nested:
                    g.create_dataset(f"{name}/kernel:0", data=k)
                    g.create_dataset(f"{name}/bias:0", data=b)
                    g.attrs["weight_names"] = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
                else:
                    g.create_dataset(f"{name}_W_1:0", data=k)
                    g.create_dataset(f"{name}_b_1:0", data=b)
                    g.attrs["weight_names"] = [f"{name}_W_1:0".encode(), f"{name}_b_1:0".encode()]
            pool = f.create_group(f"block{block}_pool")
            pool.attrs["weight_names"] = []
            layer_names.append(f"block{block}_pool")
        f.attrs["layer_names"] = [n.encode() for n in layer_names]
        f.attrs["keras_version"] = b"2.1.0"
        f.attrs["backend"] = b"tensorflow"
    return path


@pytest.fixture(autouse=True)
def _own_working_directory(tmp_path_factory, monkeypatch) -> None:
    """Every test runs in an empty directory of its own: what a run writes by default (results
    named after their inputs, recovered copies) never lands in the checkout."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(scope="session")
def synthetic_params() -> dict:
    """Random He-normal VGG16 parameters with the real shapes."""
    return vgg.random_params(seed=0)


@pytest.fixture(scope="session")
def synthetic_h5(tmp_path_factory, synthetic_params) -> Path:
    """A Keras-layout VGG16 notop h5 file holding `synthetic_params`."""
    return write_keras_h5(tmp_path_factory.mktemp("weights") / "vgg16_synthetic.h5", synthetic_params)


def _smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, 3))
    for c in range(3):
        fx, fy, ph = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 6.3)
        img[:, :, c] = 127.5 + 100 * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory) -> Path:
    """Small synthetic content and style PNGs (64x48 and 48x64)."""
    from PIL import Image

    d = tmp_path_factory.mktemp("images")
    Image.fromarray(_smooth_image(48, 64, 1)).save(d / "content.png")
    Image.fromarray(_smooth_image(64, 48, 2)).save(d / "style.png")
    Image.fromarray(_smooth_image(40, 40, 3)).save(d / "style2.png")
    return d


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A cache directory of the test's own (not yet created), and no $JAXSTYLE_WEIGHTS."""
    d = tmp_path / "cache"
    monkeypatch.setenv("JAXSTYLE_CACHE", str(d))
    monkeypatch.delenv("JAXSTYLE_WEIGHTS", raising=False)
    return d


@pytest.fixture
def imagenet_h5() -> Path:
    """The ImageNet weights from ../shared/weights, or skip."""
    if not IMAGENET_H5.is_file():
        pytest.skip(f"ImageNet VGG16 weights not found at {IMAGENET_H5}")
    return IMAGENET_H5


@pytest.fixture
def shared_images() -> Path:
    """The real photos and paintings from ../shared/images, or skip."""
    if not (IMAGES / "tubingen.jpg").is_file():
        pytest.skip(f"shared test images not found in {IMAGES}")
    return IMAGES


def run_one(mode, config, content, styles, *, output_path=None, weights=None, progress=None,
            should_stop=None, **files):
    """One image through the run path (what the CLI and the API call), in-process."""
    from jaxstyle.run import job
    from jaxstyle.run import execute as run
    j = job.single(mode, config, content, list(styles), output_path=output_path, weights=weights, **files)
    return run.run(j, progress=progress, should_stop=should_stop)[0]


class _Programs:
    """Counts XLA programs compiled (or loaded from the persistent cache) while active."""

    active: list = []
    registered = False

    def __init__(self) -> None:
        self.count = 0

    def __enter__(self) -> "_Programs":
        from jax import monitoring
        if not _Programs.registered:
            def listener(name, seconds, **kw):
                # One per program a run asks XLA for, compiled or loaded from the persistent cache.
                if name == "/jax/core/compile/backend_compile_duration":
                    for counter in _Programs.active:
                        counter.count += 1
            monitoring.register_event_duration_secs_listener(listener)
            _Programs.registered = True
        _Programs.active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _Programs.active.remove(self)


def count_programs() -> _Programs:
    return _Programs()

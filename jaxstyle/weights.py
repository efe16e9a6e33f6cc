"""VGG16 ImageNet weights: find, download, verify, convert to a parameter pytree, and cache.

Resolution order: an explicit path (`--weights`), then `$JAXSTYLE_WEIGHTS`, then the per-user
cache (`$JAXSTYLE_CACHE`, else `$XDG_CACHE_HOME/jaxstyle`, else `~/.cache/jaxstyle`), then a
download of Keras' official notop file. A file is converted once: the parameters are cached
as .npz keyed by the file's SHA-256, so later runs do not parse the h5 again.
"""
from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import WeightsError
from .files import atomic_write
from .layers import LAYER_NAMES, LAYER_SHAPES

OFFICIAL_NAME = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
OFFICIAL_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
                + OFFICIAL_NAME)
OFFICIAL_MD5 = "6d6bbae143d832006294945121d1f1fc"
OFFICIAL_BYTES = 58_889_256

Params = dict[str, dict[str, np.ndarray]]
ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total or 0 when unknown)


@dataclass(frozen=True)
class WeightsInfo:
    """Where the weights came from and what we know about the file."""

    path: Path
    source: str  # "--weights", "JAXSTYLE_WEIGHTS", "cache" or "download"
    md5: str
    sha256: str
    official: bool
    converted: Path | None  # the cached .npz, when the cache directory is writable
    warning: str | None = None


def cache_dir() -> Path:
    """The per-user cache directory (it may not exist yet)."""
    if os.environ.get("JAXSTYLE_CACHE"):
        return Path(os.environ["JAXSTYLE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "jaxstyle"


def cached_weights_path() -> Path:
    """Where a downloaded official file lives."""
    return cache_dir() / OFFICIAL_NAME


def locate(path: str | os.PathLike | None = None) -> tuple[Path | None, str]:
    """(path, source) by the resolution order; (None, "download") when nothing is found."""
    if path is not None:
        return Path(path).expanduser(), "--weights"
    if os.environ.get("JAXSTYLE_WEIGHTS"):
        return Path(os.environ["JAXSTYLE_WEIGHTS"]).expanduser(), "JAXSTYLE_WEIGHTS"
    cached = cached_weights_path()
    if cached.is_file():
        return cached, "cache"
    return None, "download"


def download(url: str, dest: str | os.PathLike, md5: str | None = OFFICIAL_MD5,
             progress: ProgressFn | None = None, timeout: float = 30.0) -> Path:
    """Fetch `url` to `dest` atomically, checking its MD5; nothing is left behind on failure."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_write(dest) as fh:
            total = int(resp.headers.get("Content-Length") or 0)
            done = 0
            while chunk := resp.read(1 << 20):
                fh.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
            if total and done != total:
                raise WeightsError(f"download of {url} stopped after {done} of {total} bytes")
            if md5 is not None and digest.hexdigest() != md5:
                raise WeightsError(f"download of {url} has MD5 {digest.hexdigest()}, expected {md5}; "
                                   "nothing was saved")
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise WeightsError(_missing_message(f"downloading {url} failed ({reason})")) from None
    return dest


def _missing_message(why: str) -> str:
    return (f"no VGG16 weights: {why}. Pass --weights PATH or set JAXSTYLE_WEIGHTS to a copy of "
            f"Keras' {OFFICIAL_NAME}, or place it at {cached_weights_path()}")


def file_digests(path: Path) -> tuple[str, str]:
    """(md5, sha256) of a file, remembered per (path, size, mtime) so a file is hashed once."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    index_path = cache_dir() / "digests.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    if isinstance(index.get(key), list) and len(index[key]) == 2:
        return tuple(index[key])
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            md5.update(chunk)
            sha.update(chunk)
    result = (md5.hexdigest(), sha.hexdigest())
    index[key] = list(result)
    try:
        index_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(index_path, "w") as fh:
            json.dump(index, fh)
    except OSError:
        pass  # a read-only cache only costs re-hashing next time
    return result


def read_h5(path: str | os.PathLike) -> Params:
    """Read and check a Keras-layout VGG16 notop h5 into {layer: {"kernel", "bias"}} float32.

    Accepts Keras' flat layout (`block1_conv1/block1_conv1_W_1:0`) and its nested one
    (`block1_conv1/block1_conv1/kernel:0`): in a layer's group the 4-D array is the kernel and
    the 1-D array the bias. Refuses a missing, misshapen or non-finite layer, naming it.
    """
    import h5py

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable HDF5 weights file ({_short(e)})") from None
    params: Params = {}
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        for name in LAYER_NAMES:
            if name not in root or not isinstance(root[name], h5py.Group):
                raise WeightsError(f"{path}: layer {name} is missing; not a VGG16 notop weights file")
            arrays: list[np.ndarray] = []
            try:
                root[name].visititems(lambda _, obj: arrays.append(obj[()])
                                      if isinstance(obj, h5py.Dataset) else None)
            except (OSError, RuntimeError, KeyError) as e:
                raise WeightsError(f"{path}: layer {name} cannot be read ({_short(e)}); "
                                   "the file is truncated or corrupt") from None
            kernels = [a for a in arrays if np.ndim(a) == 4]
            biases = [a for a in arrays if np.ndim(a) == 1]
            want_k, want_b = LAYER_SHAPES[name]
            if len(kernels) != 1 or len(biases) != 1:
                raise WeightsError(f"{path}: layer {name} should hold one kernel {want_k} and one "
                                   f"bias {want_b}, found {[np.shape(a) for a in arrays]}")
            kernel, bias = np.asarray(kernels[0], np.float32), np.asarray(biases[0], np.float32)
            if kernel.shape != want_k or bias.shape != want_b:
                raise WeightsError(f"{path}: layer {name} has kernel {kernel.shape} and bias "
                                   f"{bias.shape}, expected {want_k} and {want_b}")
            if not (np.isfinite(kernel).all() and np.isfinite(bias).all()):
                raise WeightsError(f"{path}: layer {name} contains NaN or infinite values")
            params[name] = {"kernel": np.ascontiguousarray(kernel), "bias": bias}
    return params


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:160] if str(e) else type(e).__name__


def _converted_path(sha256: str) -> Path:
    return cache_dir() / "converted" / f"vgg16-{sha256[:32]}.npz"


def _load_converted(path: Path) -> Params | None:
    try:
        with np.load(path) as z:
            params = {n: {"kernel": z[f"{n}/kernel"], "bias": z[f"{n}/bias"]} for n in LAYER_NAMES}
    except (OSError, KeyError, ValueError):
        return None  # missing or damaged: convert again
    ok = all(params[n]["kernel"].shape == LAYER_SHAPES[n][0] and params[n]["bias"].shape == LAYER_SHAPES[n][1]
             for n in LAYER_NAMES)
    return params if ok else None


def _save_converted(params: Params, path: Path) -> Path | None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as fh:
            np.savez(fh, **{f"{n}/{k}": v for n, p in params.items() for k, v in p.items()})
        return path
    except OSError:
        return None  # the cache is an optimization; an unwritable one is not an error


def load(path: str | os.PathLike | None = None, *, allow_download: bool = True,
         progress: ProgressFn | None = None) -> tuple[Params, WeightsInfo]:
    """VGG16 parameters and their provenance, resolving, downloading and converting as needed."""
    found, source = locate(path)
    if found is None:
        if not allow_download:
            raise WeightsError(_missing_message("none given, none in the cache, downloads disabled"))
        found = download(os.environ.get("JAXSTYLE_WEIGHTS_URL", OFFICIAL_URL),
                         cached_weights_path(), md5=OFFICIAL_MD5, progress=progress)
    if not found.exists():
        raise WeightsError(f"{found}: no such weights file (from {source})")
    if found.is_dir():
        raise WeightsError(f"{found}: is a directory, not a weights file (from {source})")
    try:
        md5, sha256 = file_digests(found)
    except OSError as e:
        raise WeightsError(f"{found}: cannot read weights file ({_short(e)})") from None
    official = md5 == OFFICIAL_MD5
    if source in ("cache", "download") and not official:
        raise WeightsError(f"{found}: cached weights file has MD5 {md5}, not the official "
                           f"{OFFICIAL_MD5}; delete it and run `jaxstyle weights --fetch`")
    converted = _converted_path(sha256)
    params = _load_converted(converted)
    if params is None:
        params = read_h5(found)
        converted = _save_converted(params, converted)
    warning = None
    if not official:
        warning = (f"{found} is not Keras' official VGG16 notop file (MD5 {md5}); "
                   "using it because every layer has the right shape")
    return params, WeightsInfo(found, source, md5, sha256, official, converted, warning)

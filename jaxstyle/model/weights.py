"""VGG16 ImageNet weights: find, download, verify, convert to a parameter pytree, and cache.

Resolution order: an explicit path (`--weights`), then `$JAXSTYLE_WEIGHTS`, then the per-user
cache (`$JAXSTYLE_CACHE`, else `$XDG_CACHE_HOME/jaxstyle`, else `~/.cache/jaxstyle`), then a
download of Keras' official notop file. A file is converted once: the parameters are cached
as .npz keyed by the SHA-256 of the file's content (hashed on every load, ~0.03 s for the 58 MB
file; never by path, size or modification time), so later runs do not parse the h5 again. A
damaged cache entry is dropped and rebuilt, with a one-line note in `WeightsInfo.warning`.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import os
import shutil
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from jaxstyle.errors import WeightsError, first_line
from jaxstyle.files import atomic_write, file_sha256
from jaxstyle.model.layers import LAYER_NAMES, LAYER_SHAPES, upto

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
    note: str | None = None  # that the file is not the official one: the first time it is used only


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
    """Fetch `url` to `dest` atomically, checking its MD5; nothing is left behind on failure.

    Every failure (refused or reset connections, timeouts, a reply that is not HTTP, an HTTP
    error status, a cut-off or malformed body, a wrong MD5, an unwritable destination) raises
    WeightsError with one line naming the URL and the problem.
    """
    dest = Path(dest)
    digest = hashlib.md5()
    done = 0
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_write(dest) as fh:
            total = _content_length(resp.headers.get("Content-Length"))
            while chunk := resp.read(1 << 20):
                fh.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
            if total and done != total:
                raise WeightsError(f"download of {url} stopped after {done} of {total} bytes; "
                                   "nothing was saved")
            if md5 is not None and digest.hexdigest() != md5:
                raise WeightsError(f"download of {url} has MD5 {digest.hexdigest()}, expected {md5}; "
                                   "nothing was saved")
    except WeightsError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError, EOFError) as e:
        problem = _download_problem(e, done, timeout)
        raise WeightsError(_missing_message(f"downloading {url} failed ({problem})")) from None
    return dest


def _content_length(value: str | None) -> int:
    try:
        n = int(value or 0)
    except ValueError:
        return 0  # a malformed length: read to the end and rely on the MD5
    return max(n, 0)


def _download_problem(e: BaseException, done: int, timeout: float) -> str:
    """A short description of why a download failed."""
    after = f" after {done} bytes" if done else ""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError) and isinstance(e.reason, BaseException):
        e = e.reason  # the connection failed: say how
    elif isinstance(e, urllib.error.URLError):
        return str(e.reason)[:160]
    if isinstance(e, (socket.timeout, TimeoutError)):
        return f"no data for {timeout:g} s{after} (timed out)"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, http.client.RemoteDisconnected):
        return "the server closed the connection without replying"
    if isinstance(e, ConnectionResetError):
        return f"connection reset by the server{after}"
    if isinstance(e, http.client.IncompleteRead):
        return f"the reply's body broke off{after} (a truncated or malformed transfer)"
    if isinstance(e, http.client.BadStatusLine):
        return f"the server's reply is not HTTP (it began {ascii(str(e)[:32])})"
    if isinstance(e, http.client.HTTPException):
        return f"malformed HTTP reply{after} ({type(e).__name__}: {first_line(e)})"
    if isinstance(e, socket.gaierror):
        return f"host not found ({e.strerror or first_line(e)})"
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}{after}" + (f": {e.filename}" if e.filename else "")
    return first_line(e)


def _missing_message(why: str) -> str:
    return (f"no VGG16 weights: {why}. Pass --weights PATH or set JAXSTYLE_WEIGHTS to a copy of "
            f"Keras' {OFFICIAL_NAME}, or place it at {cached_weights_path()}")


def file_digests(path: str | os.PathLike) -> tuple[str, str]:
    """(md5, sha256) of a file's content, hashed now: no cache can vouch for a file's bytes."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def read_h5(path: str | os.PathLike, data: bytes | None = None) -> Params:
    """Read and check a Keras-layout VGG16 notop h5 into {layer: {"kernel", "bias"}} float32.

    Accepts Keras' flat layout (`block1_conv1/block1_conv1_W_1:0`) and its nested one
    (`block1_conv1/block1_conv1/kernel:0`): in a layer's group the 4-D array is the kernel and
    the 1-D array the bias. Refuses a missing, misshapen or non-finite layer, naming it.
    `data`, when given, is the file's content already read (`path` then only names it).
    """
    import h5py

    path = Path(path)
    try:
        f = h5py.File(io.BytesIO(data) if data is not None else path, "r")
    except (OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable HDF5 weights file ({first_line(e)})") from None
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
                raise WeightsError(f"{path}: layer {name} cannot be read ({first_line(e)}); "
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


def check_params(params: Mapping, layers: Sequence[str] = LAYER_NAMES) -> None:
    """Refuse, in one line naming the layer, VGG16 parameters given as a dict (the API's
    `weights=`) that lack a layer the run needs or whose kernel or bias has another shape (a
    transposed or PyTorch-layout kernel), before anything is compiled."""
    for name, _, _ in upto(tuple(layers)):
        layer = params.get(name) if isinstance(params, Mapping) else None
        if not isinstance(layer, Mapping) or "kernel" not in layer or "bias" not in layer:
            raise WeightsError(f"weights: layer {name} is missing (a dict of {{'kernel', 'bias'}} per layer, "
                               "as jaxstyle.load_weights() returns)")
        want_k, want_b = LAYER_SHAPES[name]
        kernel, bias = np.shape(layer["kernel"]), np.shape(layer["bias"])
        if kernel != want_k or bias != want_b:
            hint = " (transposed? kernels are (3, 3, in, out))" if sorted(kernel) == sorted(want_k) else ""
            raise WeightsError(f"weights: layer {name} has kernel {kernel} and bias {bias}, expected "
                               f"{want_k} and {want_b}{hint}")


def _converted_path(sha256: str) -> Path:
    return cache_dir() / "converted" / f"vgg16-{sha256[:32]}.npz"


_LEGACY_INDEX = "digests.json"  # digests once cached by (path, size, mtime): no longer read, removed


def _load_converted(path: Path, sha256: str) -> tuple[Params | None, str | None, str | None]:
    """(params, md5 of the source file, problem) from the cache entry for content `sha256`.

    (None, None, None) when there is no entry (or one in an older format); (None, None, why)
    when the entry is damaged. Each entry records the full SHA-256 and the MD5 of the file it
    was converted from, is read whole (so zip CRCs are checked), and every array is checked
    for dtype, shape and finiteness: a damaged entry can cost a conversion, never wrong
    parameters.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            if "meta/sha256" not in z.files or "meta/md5" not in z.files:
                return None, None, None  # written by an older version: convert again, quietly
            source_sha, source_md5 = str(z["meta/sha256"][()]), str(z["meta/md5"][()])
            params = {n: {"kernel": z[f"{n}/kernel"], "bias": z[f"{n}/bias"]} for n in LAYER_NAMES}
    except FileNotFoundError:
        return None, None, None
    except Exception as e:  # noqa: BLE001 - any failure to read a cache entry means: damaged
        # (MemoryError included: a damaged array header can claim any size)
        return None, None, f"{type(e).__name__}: {first_line(e)}"
    if source_sha != sha256:
        return None, None, "it belongs to another weights file"
    if len(source_md5) != 32 or not all(c in "0123456789abcdef" for c in source_md5):
        return None, None, "its record of the source file is malformed"
    for n in LAYER_NAMES:
        k, b = params[n]["kernel"], params[n]["bias"]
        if (k.dtype != np.float32 or b.dtype != np.float32
                or k.shape != LAYER_SHAPES[n][0] or b.shape != LAYER_SHAPES[n][1]):
            return None, None, f"layer {n} has the wrong dtype or shape"
        if not (np.isfinite(k).all() and np.isfinite(b).all()):
            return None, None, f"layer {n} contains NaN or infinite values"
    return params, source_md5, None


def _drop(path: Path) -> None:
    """Remove a damaged cache entry, whatever it is (a file, a link, a directory)."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _save_converted(params: Params, path: Path, md5: str, sha256: str) -> Path | None:
    try:
        if path.parent.exists() and not path.parent.is_dir():
            _drop(path.parent)  # a stray file where the cache's folder belongs
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir() and not path.is_symlink():
            _drop(path)
        with atomic_write(path) as fh:
            np.savez(fh, **{"meta/sha256": np.array(sha256), "meta/md5": np.array(md5)},
                     **{f"{n}/{k}": v for n, p in params.items() for k, v in p.items()})
        return path
    except OSError:
        return None  # the cache is an optimization; an unwritable one is not an error


def load(path: str | os.PathLike | None = None, *, allow_download: bool = True,
         progress: ProgressFn | None = None) -> tuple[Params, WeightsInfo]:
    """VGG16 parameters and their provenance, resolving, downloading and converting as needed.

    The parameters always come from the content of the file found now: the converted cache is
    keyed by the SHA-256 of that content, computed on every call.
    """
    found, source = locate(path)
    if found is None:
        if not allow_download:
            raise WeightsError(_missing_message("none given, none in the cache, downloads disabled"))
        found = download(os.environ.get("JAXSTYLE_WEIGHTS_URL", OFFICIAL_URL),
                         cached_weights_path(), md5=OFFICIAL_MD5, progress=progress)
    try:
        if not found.exists():
            raise WeightsError(f"{found}: no such weights file (from {source})")
        if found.is_dir():
            raise WeightsError(f"{found}: is a directory, not a weights file (from {source})")
        sha256 = file_sha256(found)
        converted: Path | None = _converted_path(sha256)
        params, md5, damage = _load_converted(converted, sha256)
        data = None
        if params is None:
            data = found.read_bytes()  # hash and parse the very same bytes
            md5, sha256 = hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
    except OSError as e:
        raise WeightsError(f"{found}: cannot read weights file ({first_line(e)})") from None
    official = md5 == OFFICIAL_MD5
    if source in ("cache", "download") and not official:
        raise WeightsError(f"{found}: cached weights file has MD5 {md5}, not the official "
                           f"{OFFICIAL_MD5}; delete it and run `jaxstyle weights --fetch`")
    notes = []
    note = None
    if not official and _first_use(sha256):
        note = (f"{found} is not Keras' official VGG16 notop file (MD5 {md5}); using it because every "
                "layer has the right shape (said once per file)")
    if params is None:
        params = read_h5(found, data)
        if damage is not None:
            _drop(converted)
        stale = converted
        converted = _save_converted(params, _converted_path(sha256), md5, sha256)
        if damage is not None:
            notes.append(f"the converted-weights cache entry {stale} was damaged ({damage}); "
                         + ("rebuilt it" if converted else "not rebuilt (the cache is not writable)"))
    with contextlib.suppress(OSError):
        (cache_dir() / _LEGACY_INDEX).unlink()
    return params, WeightsInfo(found, source, md5, sha256, official, converted,
                               "; ".join(notes) or None, note)


def _first_use(sha256: str) -> bool:
    """Whether the weights file of content `sha256` is used for the first time here (remembered
    by a marker in the cache; always True where the cache cannot be written)."""
    marker = cache_dir() / "converted" / f"vgg16-{sha256[:32]}.noted"
    if marker.exists():
        return False
    with contextlib.suppress(OSError):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    return True

"""Process-wide settings that make runs faster; the CLI applies them, notebooks may opt in.

Both change the whole process, not just jaxstyle, which is why the library never applies
them on its own: the CLI calls them at start-up, API users call them explicitly.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib
import json
import logging
import os
import shutil
import sys
import time
import zlib
from pathlib import Path
from typing import Any

from jaxstyle.files import atomic_write

log = logging.getLogger("jaxstyle")

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8

# The native libraries' own loggers (libtpu's, XLA's, gRPC's), told to keep INFO and WARNING
# lines off stderr: read when each library loads, which may be long after start-up (libtpu
# loads when a deviceless TPU program is compiled, whatever JAX_PLATFORMS says).
QUIET_NATIVE_LOGS = {"TPU_STDERR_LOG_LEVEL": "2", "TPU_MIN_LOG_LEVEL": "2", "TF_CPP_MIN_LOG_LEVEL": "2",
                     "GRPC_VERBOSITY": "ERROR", "GLOG_minloglevel": "2"}


def quiet_native_logs(environ: Any = None) -> list[str]:
    """Set QUIET_NATIVE_LOGS in `environ` (os.environ) where the user has not set them; returns
    the names set. For the CLI without --verbose: every line on stderr is then jaxstyle's."""
    environ = os.environ if environ is None else environ
    names = [k for k in QUIET_NATIVE_LOGS if k not in environ]
    for k in names:
        environ[k] = QUIET_NATIVE_LOGS[k]
    return names


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the OS.

    XLA:CPU allocates a fresh temporary arena (~200 MB at 256x256) for every execution of the
    optimizer loop; with glibc's defaults that arena is mmap'd and unmapped each time, so every
    chunk pays ~50,000 page faults (measured: 37 ms per chunk, 18% of an iteration at 256x256
    when chunks are one iteration long). One arena, no mmap and no trimming below 2 GiB removes
    them. The price is a fragmented heap: peak memory measured 1.5x the run's need at
    1024 px, so use it only for runs that need a small share of the machine's memory (the
    CLI: at most a quarter). Returns False where this is not glibc (nothing is changed there).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_ARENA_MAX, 1) == 1
    ok &= mallopt(_M_MMAP_MAX, 0) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    return bool(ok)


def enable_compilation_cache(path: str | os.PathLike | None = None) -> str:
    """Turn on JAX's persistent compilation cache (default: a folder per jax version in
    jaxstyle's cache directory), after dropping entries a killed run left unreadable.

    A later run with the same image shape then loads the compiled programs instead of
    compiling them again. Returns the directory used.
    """
    import jax

    from jaxstyle.model.weights import cache_dir

    directory = Path(path) if path else cache_dir() / "xla" / f"jax-{jax.__version__}"
    with contextlib.suppress(OSError):
        directory.mkdir(parents=True, exist_ok=True)
        repair_compilation_cache(directory)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return str(directory)


_CHECKED = "jaxstyle-checked.json"  # entries already read whole: name -> [size, mtime_ns]
_SETTLE_SECONDS = 30  # younger entries may still be being written by a concurrent run


def _decompresses(data: bytes) -> bool:
    """Whether `data` is a whole compressed stream (JAX writes zlib, or zstd where available)."""
    try:
        zlib.decompress(data)
        return True
    except zlib.error:
        pass
    for name in ("compression.zstd", "zstandard"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        try:
            if name == "zstandard":
                module.ZstdDecompressor().decompress(data)
            else:
                module.decompress(data)
            return True
        except Exception:
            pass
    return False


def repair_compilation_cache(directory: str | os.PathLike) -> list[Path]:
    """Delete the entries of JAX's compilation cache in `directory` that cannot be read whole.

    JAX writes an entry in place and never replaces one that exists, so an entry cut short by a
    killed run would make every later run at that shape warn and compile again. Each entry is
    read once (a small index remembers which were whole); the list of dropped ones is returned.
    """
    directory = Path(directory)
    index = directory / _CHECKED
    try:
        checked = json.loads(index.read_text())
        if not isinstance(checked, dict):
            checked = {}
    except (OSError, ValueError):
        checked = {}
    now, dropped, keep = time.time(), [], {}
    for entry in sorted(directory.glob("*-cache")):
        try:
            st = entry.stat()
            sig = [st.st_size, st.st_mtime_ns]
            if checked.get(entry.name) == sig:
                keep[entry.name] = sig
            elif now - st.st_mtime >= _SETTLE_SECONDS:
                if _decompresses(entry.read_bytes()):
                    keep[entry.name] = sig
                else:
                    entry.unlink()
                    with contextlib.suppress(OSError):
                        entry.with_name(entry.name[: -len("-cache")] + "-atime").unlink()
                    dropped.append(entry)
        except OSError:
            continue
    if keep != checked:
        with contextlib.suppress(OSError):
            if index.is_dir():
                shutil.rmtree(index)
            with atomic_write(index, "w") as fh:
                json.dump(keep, fh)
    if dropped:
        log.info("dropped %d unreadable compilation cache entr%s in %s", len(dropped),
                 "y" if len(dropped) == 1 else "ies", directory)
    return dropped


# glibc's reuse of freed memory (`runtime.keep_freed_memory`) spares every chunk its page faults
# but fragments the heap: peak memory was 1.5x the run's need at 1024 px, and a 2048 px run
# was killed for lack of memory on 23 GiB. So only runs needing at most this share of the
# available memory get it.
KEEP_FREED_SHARE = 0.25

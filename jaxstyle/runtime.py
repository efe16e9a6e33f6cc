"""Process-wide settings that make runs faster; the CLI applies them, notebooks may opt in.

Both change the whole process, not just jaxstyle, which is why the library never applies
them on its own: the CLI calls them at start-up, API users call them explicitly.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Any

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


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
    """Turn on JAX's persistent compilation cache (default: in jaxstyle's cache directory).

    A later run with the same image shape then loads the compiled loop instead of compiling
    it again. Returns the directory used.
    """
    import jax

    from .weights import cache_dir

    directory = str(path or cache_dir() / "xla")
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory


# glibc's reuse of freed memory (`runtime.keep_freed_memory`) spares every chunk its page faults
# but fragments the heap: peak memory was 1.5x the run's need at 1024 px, and a 2048 px run
# was killed for lack of memory on 23 GiB. So only runs needing at most this share of the
# available memory get it.
KEEP_FREED_SHARE = 0.25


def malloc_policy(config: Any, size: int | None = None, batch: int = 1) -> bool:
    """Keep freed memory for reuse when a run of `config` (at `size`, a square bound) is small."""
    import jax

    from . import memory
    from .problem import memory_need

    if jax.local_devices()[0].platform != "cpu":
        return False  # the setting is for XLA:CPU's host allocations
    size = size or config.size
    need = memory_need(config, (size, size), batch, 1, "cpu").total
    free = memory.available()
    return bool(free and need <= KEEP_FREED_SHARE * free and keep_freed_memory())


def accelerator_notes(devices: list[Any], environ: dict | None = None) -> list[str]:
    """One-line notes for the start of a run: on a GPU, the memory JAX preallocates and how to
    change it; on a machine with an accelerator that this jax cannot see, how to install one
    that can."""
    environ = os.environ if environ is None else environ
    notes = []
    device = devices[0]
    if device.platform == "gpu" and environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "true").lower() != "false":
        limit = (device.memory_stats() or {}).get("bytes_limit")
        share = environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.75")
        if limit:
            notes.append(f"JAX holds {limit / 2**30:.1f} GiB of this GPU ({float(share):.0%} of it) for "
                         "the whole process; set XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 (a share) or "
                         "XLA_PYTHON_CLIENT_PREALLOCATE=false before starting to leave room for others")
    if device.platform == "cpu":
        if os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl"):
            notes.append("this machine has an NVIDIA GPU but jax sees only the CPU; install jax for "
                         "CUDA: pip install -U 'jax[cuda12]'")
        elif (os.path.exists("/dev/accel0") or environ.get("TPU_ACCELERATOR_TYPE")
              or environ.get("COLAB_TPU_ADDR")) and environ.get("JAX_PLATFORMS", "") != "cpu":
            notes.append("this machine has a TPU but jax sees only the CPU; install jax for TPUs: "
                         "pip install -U 'jax[tpu]'")
    return notes

"""Which devices a run uses: the platform picked before JAX starts (so an absent TPU's library
stays quiet), the devices a `--device` names, and one-line notes about the accelerator."""
from __future__ import annotations

import glob
import importlib.util
import os
import sys
from typing import Any, MutableMapping

from jaxstyle.errors import ConfigError, JaxstyleError, captured_stderr, first_line

_TPU_ENV = ("TPU_ACCELERATOR_TYPE", "TPU_NAME", "COLAB_TPU_ADDR", "TPU_WORKER_HOSTNAMES")


def tpu_hardware(environ: MutableMapping[str, str] | None = None) -> bool:
    """Whether this machine looks like it has a TPU (its device files or a TPU VM's variables)."""
    environ = os.environ if environ is None else environ
    return bool(glob.glob("/dev/accel*") or [p for p in glob.glob("/dev/vfio/*") if not p.endswith("/vfio")]
                or any(environ.get(k) for k in _TPU_ENV))


def gpu_hardware() -> bool:
    """Whether this machine has an NVIDIA or AMD GPU device file."""
    return bool(glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd"))


def choose_platform(device: str = "auto", environ: MutableMapping[str, str] | None = None) -> str | None:
    """Set JAX_PLATFORMS before JAX starts, where that is safe; returns what was set (or None).

    `--device cpu` (and deviceless planning) start only the CPU. With `auto` on a machine that
    has only a CPU but the TPU library installed (as `bench --target` asks), libtpu would print a
    dozen lines of start-up errors; the CPU is then picked explicitly. A JAX_PLATFORMS the user
    set always wins, and nothing is restricted where an accelerator may be present.
    """
    environ = os.environ if environ is None else environ
    if environ.get("JAX_PLATFORMS") or "jax" in sys.modules and _backends_started():
        return None
    platform = device.partition(":")[0]
    if platform == "cpu" or (platform == "auto" and not tpu_hardware(environ) and not gpu_hardware()
                             and importlib.util.find_spec("libtpu") is not None):
        environ["JAX_PLATFORMS"] = "cpu"
        if "jax" in sys.modules:  # imported already: it read the variable then
            sys.modules["jax"].config.update("jax_platforms", "cpu")
        return "cpu"
    return None


def _installed(*modules: str) -> bool:
    return any(importlib.util.find_spec(m) is not None for m in modules)


def _backends_started() -> bool:
    try:
        from jax._src import xla_bridge
        return bool(getattr(xla_bridge, "_backends", None))
    except Exception:  # a private detail; when unsure, assume started and change nothing
        return True


def start(device: str = "auto") -> tuple[list[Any], str]:
    """Start JAX's backends quietly; returns the devices `device` names and what the backends
    printed while starting (libtpu's and CUDA's logs: for `--verbose`)."""
    with captured_stderr() as log:
        try:
            import jax
            jax.devices()
            error = None
        except Exception as e:  # jax raises RuntimeError, or an AssertionError for an absent platform
            error = e
    text = "".join(log)
    if error is not None:
        first = first_line(error, limit=500, default="none of the platforms asked for is here")
        where = f" (JAX_PLATFORMS={os.environ['JAX_PLATFORMS']})" if os.environ.get("JAX_PLATFORMS") else ""
        raise JaxstyleError(f"jax could not start its devices{where}: {first}") from None
    return select(device), text


def select(device: str = "auto") -> list[Any]:
    """The local devices `device` names: "auto" (jax's default platform), "cpu", "gpu", "tpu",
    or one of them with an index ("gpu:1")."""
    import jax

    if device == "auto":
        return list(jax.local_devices())
    platform, _, index = device.partition(":")
    try:
        found = list(jax.local_devices(backend=platform))
    except RuntimeError:
        seen = ", ".join(sorted({d.platform for d in jax.devices()}))
        hint = {"gpu": "; install jax for CUDA: pip install -U 'jax[cuda12]'",
                "tpu": "; install jax for TPUs: pip install -U 'jax[tpu]'"}.get(platform, "")
        if (platform == "gpu" and _installed("jax_cuda12_plugin", "jax_cuda13_plugin")) or \
                (platform == "tpu" and _installed("libtpu")):
            hint = "; its jax plugin is installed but did not start (-v shows why)"
        if os.environ.get("JAX_PLATFORMS"):
            hint = f" (JAX_PLATFORMS={os.environ['JAX_PLATFORMS']}){hint}"
        raise ConfigError(f"--device {device}: jax sees no {platform} here, only {seen}{hint}") from None
    if index:
        if int(index) >= len(found):
            raise ConfigError(f"--device {device}: there {'is' if len(found) == 1 else 'are'} "
                              f"{len(found)} {platform} device(s), numbered from 0")
        found = [found[int(index)]]
    return found


def describe(device: Any) -> str:
    """"cpu", "tpu (TPU v5 lite)", "gpu (NVIDIA H100)": the platform and, if different, its kind."""
    kind = getattr(device, "device_kind", "") or device.platform
    return device.platform if kind == device.platform else f"{device.platform} ({kind})"


def accelerator_notes(devices: list[Any], environ: MutableMapping[str, str] | None = None) -> list[str]:
    """One-line notes for the start of a run: on a GPU, the memory JAX preallocates and how to
    change it; on a machine with an accelerator that this jax cannot see, how to install one
    that can."""
    environ = os.environ if environ is None else environ
    notes = []
    device = devices[0]
    if device.platform == "gpu" and environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "true").lower() != "false":
        limit = (device.memory_stats() or {}).get("bytes_limit")
        try:
            share = float(environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.75"))
        except ValueError:
            share = None
        if limit and share is not None and environ.get("XLA_PYTHON_CLIENT_ALLOCATOR", "") != "platform":
            notes.append(f"JAX holds {limit / 2**30:.1f} GiB of this GPU ({share:.0%} of it) for "
                         "the whole process; set XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 (a share) or "
                         "XLA_PYTHON_CLIENT_PREALLOCATE=false before starting to leave room for others")
    if device.platform == "cpu" and environ.get("JAX_PLATFORMS", "") != "cpu":
        if os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl"):
            if _installed("jax_cuda12_plugin", "jax_cuda13_plugin"):
                notes.append("this machine has an NVIDIA GPU and jax for CUDA is installed, but jax could "
                             "not start the GPU and runs on the CPU; -v shows why (a driver too old, the "
                             "GPU held by another process)")
            else:
                notes.append("this machine has an NVIDIA GPU but jax sees only the CPU; install jax for "
                             "CUDA: pip install -U 'jax[cuda12]'")
        elif tpu_hardware(environ):
            if _installed("libtpu"):
                notes.append("this machine has a TPU and libtpu is installed, but jax could not start the "
                             "TPU and runs on the CPU; -v shows why (often: another process holds it)")
            else:
                notes.append("this machine has a TPU but jax sees only the CPU; install jax for TPUs: "
                             "pip install -U 'jax[tpu]'")
    return notes

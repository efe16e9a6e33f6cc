"""How much memory a run needs, estimated before compiling, and whether the device has it.

The model is calibrated on XLA's own memory analysis of the compiled loop (float32, CPU):
its temporary buffers were 2.54-2.63x the bytes of the activations of the layers the
objective reaches, at 128, 256 and 512 pixels, with direct and Winograd convolutions. The
rest is counted exactly: the L-BFGS history (2·memory images), the loop state going into and
out of a step, the weights and their derived kernels. The estimate is 4-15% above XLA's
figure for the loop at 256-1024 px.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import jax

from jaxstyle.errors import ConfigError
from jaxstyle.model.layers import CHANNELS, CONV_LAYERS, deepest, grid, upto

TEMP_PER_ACTIVATION_BYTE = 2.7  # measured 2.54-2.63 (see the module docstring), plus a margin
# With every block rematerialized (`--remat`), measured 1.11 (512 px) and 1.46 (1024 px).
TEMP_PER_ACTIVATION_BYTE_REMAT = 1.6
# XLA:TPU (deviceless compiles for a v5e, 64-1024 px): 2.35-2.4x at 512-1024 px, more on small
# images (arrays are padded to tiles: a fixed overhead covers it), and `--remat` saves nothing
# there (its loop was 0.98-1.15x the plain one's). Assumed for GPUs, which compile nothing here.
# Raised from 2.7 to 3.4 when TPUs got reduce_window pooling and the compact L-BFGS direction:
# the 24 MP plan's 1024x1024 tile loop grew from 4.16 to 5.16 GiB (its pool gradient and ReLU
# take layout copies of block1's activations), which 2.7 put 0.56 GiB under.
TEMP_PER_ACTIVATION_BYTE_ACCELERATOR = 3.4
ACCELERATOR_REMAT = 1.15
ACCELERATOR_OVERHEAD = 96 * 2**20
RUNTIME_BYTES = 400 * 2**20  # JAX, XLA and Python themselves
# Style losses other than Gram hold more in the loop, measured on XLA:CPU's memory analysis
# (192x144 and 384x288, default layers): sliced and histogram project and sort every style layer's
# activations (+38 and +149 MiB over Gram: 2.8 bytes per float32 style activation byte); w2 keeps the
# Newton-Schulz iterates of a CxC matrix per style layer and region for the gradient (a fixed
# ~140 MiB at the default layers, 3 matrices per iteration) plus about one copy of the activations.
SORTED_STYLE_BYTES = 3.0
W2_STYLE_BYTES = 1.0
W2_MATRICES_PER_ITERATION = 3


@dataclass(frozen=True)
class Estimate:
    """Bytes a run needs, by part."""

    activations: int
    optimizer: int
    weights: int
    runtime: int = RUNTIME_BYTES

    @property
    def total(self) -> int:
        return self.activations + self.optimizer + self.weights + self.runtime


def activation_count(hw: tuple[int, int], layers: tuple[str, ...], batch: int = 1) -> int:
    """Number of activation values of the network up to the deepest of `layers`."""
    if deepest(layers) is None:
        return 0
    h, w = hw
    total = 0
    for name, _, cout in upto(layers):
        if name.endswith("conv1") and name != "block1_conv1":
            h, w = h // 2, w // 2
        total += h * w * cout
    return total * batch


def style_activation_count(hw: tuple[int, int], style_layers: tuple[str, ...], batch: int = 1) -> int:
    """Number of activation values at `style_layers` alone."""
    return sum(math.prod(grid(hw, name)) * CHANNELS[name] for name in style_layers) * batch


def style_loss_bytes(hw: tuple[int, int], style_layers: tuple[str, ...], style_loss: str, *,
                     regions: int = 1, width: int = 1, newton_schulz: int = 18) -> int:
    """What a non-Gram style loss holds in the loop beyond the Gram loss's need."""
    if style_loss in ("sliced", "histogram", "gram+histogram"):
        return int(SORTED_STYLE_BYTES * 4 * style_activation_count(hw, style_layers, width) * max(regions, 1))
    if style_loss == "w2":
        squares = sum(CHANNELS[name] ** 2 for name in style_layers)
        matrices = newton_schulz * W2_MATRICES_PER_ITERATION * 4 * squares * max(regions, 1) * width
        return int(W2_STYLE_BYTES * 4 * style_activation_count(hw, style_layers, width)) + matrices
    return 0


def estimate(hw: tuple[int, int], layers: tuple[str, ...], *, lbfgs_memory: int, optimizer: str,
             dtype: str = "float32", winograd: bool = True, batch: int = 1,
             remat: bool = False, width: int = 1, platform: str = "cpu", style_extra: int = 0,
             average: bool = False) -> Estimate:
    """Memory for optimizing a batch of `batch` (hw) images through `layers` on one device of
    `platform`, `width` of them side by side; `style_extra`: a style loss's own need
    (`style_loss_bytes`); `average`: the loop also keeps the average of the iterates."""
    act_bytes = 2 if dtype == "bfloat16" else 4
    count = activation_count(hw, layers, width)
    if platform == "cpu":
        per_byte = TEMP_PER_ACTIVATION_BYTE_REMAT if remat else TEMP_PER_ACTIVATION_BYTE
        activations = int(per_byte * act_bytes * count)
    else:
        per_byte = TEMP_PER_ACTIVATION_BYTE_ACCELERATOR * (ACCELERATOR_REMAT if remat else 1.0)
        activations = int(per_byte * act_bytes * count) + ACCELERATOR_OVERHEAD
    activations += style_extra
    pixels = hw[0] * hw[1] * 3 * batch
    # Per image: the point, its gradient, the direction, the image reported, the trial point
    # and L-BFGS's history (2 images per pair plus the last point and gradient), or Adam's
    # moments; XLA's while loop holds its state twice (what goes in and what comes out of a step).
    images = ((2 * lbfgs_memory + 7) if optimizer == "lbfgs" else 7) + (1 if average else 0)
    optimizer_bytes = 2 * 4 * pixels * images
    kernels = sum(9 * cin * cout for _, cin, cout in CONV_LAYERS)
    weights = 4 * 2 * kernels + (4 * 8 * kernels if winograd else 0)  # kernels, flipped, Winograd
    return Estimate(activations, optimizer_bytes, weights)


def available(device: jax.Device | None = None) -> int | None:
    """Bytes the device can still allocate (accelerators), or the host's available RAM (CPU)."""
    device = device or jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
        return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check(need: Estimate, size: int, free: int | None, device_name: str,
          suggestion: str = "use a smaller --size") -> None:
    """Refuse, with the estimate and the largest size that fits, when `need` exceeds `free`."""
    if free is None or need.total <= 0.9 * free:
        return
    scalable = need.activations + need.optimizer
    budget = 0.9 * free - (need.total - scalable)
    fits = int(size * math.sqrt(max(budget, 0) / scalable) // 64 * 64) if scalable else 0
    hint = f"--size {fits} should fit" if fits >= 64 else "even a small image will not fit"
    raise ConfigError(
        f"at --size {size} this run needs about {_gib(need.total)} (activations "
        f"{_gib(need.activations)}, optimizer state {_gib(need.optimizer)}, weights "
        f"{_gib(need.weights)}) but {device_name} has {_gib(free)} available; "
        f"{suggestion} ({hint})")

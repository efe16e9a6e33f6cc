"""Planning a run for a device that is not here: TPUs compiled for without one, GPUs by estimate.

With the `libtpu` wheel installed (`pip install 'jax[tpu]'`), XLA:TPU compiles real TPU
programs on any machine ("deviceless" ahead-of-time compilation against a topology): the
compile time, the HBM the programs need and their FLOPs are the ones a TPU user will get. A
run's programs are built exactly as for a local device (`problem.build_programs`), from
shapes alone. GPU targets have no deviceless compiler here: they are planned from the memory
estimate and the FLOPs of the same programs compiled for this machine.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from . import preprocess, vgg
from .config import Config
from .errors import ConfigError, first_line
from .problem import Builder, Layout, Programs, build_programs, default_width, loop_variables, memory_need

GiB = 2**30


@dataclass(frozen=True)
class Target:
    """A device a run can be planned for."""

    name: str
    platform: str  # "tpu" or "gpu"
    topology: str | None  # jax topology name for deviceless compilation (TPUs)
    hbm_bytes: int  # memory per device
    peak_flops: float  # dense peak per device for float32 as JAX runs it by default
    devices: int = 1  # devices of the target (TPU cores or chips a folder is split over)
    bounds: tuple[int, int, int] | None = None  # chips per host, when the topology needs it


TARGETS: dict[str, Target] = {t.name: t for t in (
    # TPUs: float32 matrix products and convolutions run as one bfloat16 pass by default.
    Target("tpu-v5e-1", "tpu", "v5e:1x1", 16 * GiB, 197e12, 1, (1, 1, 1)),
    Target("tpu-v2-8", "tpu", "v2:2x2", 8 * GiB, 22.5e12, 8),
    Target("tpu-v4", "tpu", "v4:2x2x1", 32 * GiB, 275e12, 4),
    Target("tpu-v6e-1", "tpu", "v6e:1x1", 32 * GiB, 918e12, 1, (1, 1, 1)),
    # GPUs: float32 as TF32 on Ampere and later (T4: plain float32).
    Target("t4", "gpu", None, 15 * GiB, 8.1e12),
    Target("l4", "gpu", None, 22 * GiB, 60e12),
    Target("a100-40gb", "gpu", None, 40 * GiB, 156e12),
    Target("h100", "gpu", None, 80 * GiB, 494.7e12),
)}


def target(name: str) -> Target:
    if name not in TARGETS:
        raise ConfigError(f"unknown target {name!r}; use one of {', '.join(TARGETS)}")
    return TARGETS[name]


def topology_devices(t: Target) -> tuple[Any, ...]:
    """The devices of a TPU target's topology (no TPU needed; libtpu must be installed)."""
    from jax.experimental import topologies
    kwargs = {"chips_per_host_bounds": t.bounds} if t.bounds else {}
    try:
        topo = topologies.get_topology_desc(t.topology, "tpu", **kwargs)
    except Exception as e:  # libtpu missing or too old: say how to get it
        raise ConfigError(f"cannot compile for {t.name} here ({first_line(e)}); "
                          "install libtpu with `pip install 'jax[tpu]'` (it compiles for TPUs on any "
                          "machine) and run with JAX_PLATFORMS=cpu") from None
    return tuple(topo.devices)


def _abstract(tree: Any) -> Any:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.float32), tree)


def compile_for(config: Config, devices: tuple[Any, ...], shape: tuple[int, int],
                style_shape: tuple[int, int], batch: int = 1, params: Any = None, regions: int = 0) -> Programs:
    """Compile a run's two programs for `devices` (real or a topology's) from shapes alone:
    a batch of `batch` images of (h, w) `shape`, styles of `style_shape`, padded to buckets
    (`regions`: a guided run's regions, one style image each)."""
    from .config import resolve
    platform = devices[0].platform
    config = resolve(config, platform)
    params = params if params is not None else vgg.random_params(0)
    host = vgg.prepare_variables(params)
    builder = Builder(config, _abstract(host), regions)
    split = config.split_image and len(devices) > 1 and batch == 1
    local = batch if split else batch // len(devices)
    layout = Layout(batch, preprocess.bucket(shape, config.bucket),
                    preprocess.bucket(style_shape, config.bucket), max(regions, 1), True, devices,
                    1 if split else default_width(platform, local), regions, split)
    loop = _abstract(loop_variables(host, builder.objective, layout))
    return build_programs(builder.objective, builder.method, layout, builder.variables, loop,
                          builder.weights, config.compile)


def plan(name: str, config: Config, size: int, batch: int = 1) -> dict[str, Any]:
    """What a run at `size` (one 4:3 image, or `batch` of them split over the target's devices)
    needs on target `name`: compile seconds, programs, HBM, FLOPs and time per 500 iterations
    at 30% of the target's peak."""
    t = target(name)
    hw = preprocess.fit_size((3, 4), size)
    row: dict[str, Any] = {"target": t.name, "platform": t.platform, "size": size, "shape": list(hw),
                           "batch": batch, "hbm_bytes": t.hbm_bytes}
    if t.platform == "tpu":
        count = t.devices if config.split_image else max(1, min(batch, t.devices))
        devices = topology_devices(t)[:count]
        start = time.perf_counter()
        try:
            programs = compile_for(config, devices, hw, hw, batch)
        except jax.errors.JaxRuntimeError as e:
            if "RESOURCE_EXHAUSTED" not in str(e):
                raise
            # XLA:TPU refuses a program that cannot fit: "... temporaries (92.92G) exceeds ...".
            found = re.search(r"\(([0-9.]+)G\)", str(e))
            row.update(compile_s=round(time.perf_counter() - start, 2), programs=2, devices=len(devices),
                       hbm_needed_bytes=int(float(found.group(1)) * GiB) if found else None, fits=False)
            return row
        row["compile_s"] = round(time.perf_counter() - start, 2)
        need = programs.loop_bytes()
        row["programs"] = programs.count
        row["devices"] = len(devices)
        hlo = programs.chunk.as_text()
        row["custom_calls"] = sorted(set(_custom_calls(hlo)))
    else:  # the same programs compiled here, with the convolutions a GPU runs
        direct = config.replace(conv="direct") if config.conv == "auto" else config
        programs = compile_for(direct, tuple(jax.devices("cpu")[:1]), hw, hw, 1)
        est = memory_need(config.replace(bucket=config.bucket or 64), preprocess.bucket(hw, 64),
                          batch, batch, "gpu")
        need = est.total
        row["compile_s"] = None  # no deviceless GPU compiler here
        row["programs"] = programs.count
        row["devices"] = 1
        row["estimated"] = True
    cost = programs.chunk.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", math.nan)) if cost else math.nan
    # XLA's figures are per device (one device's share of the batch; the GPU plan compiled one
    # image): the devices run in parallel, so one device's work sets the time.
    per_device = flops * (batch if t.platform == "gpu" else 1)
    row["hbm_needed_bytes"] = int(need)  # per device
    row["fits"] = bool(need <= 0.9 * t.hbm_bytes)
    row["flops_per_iteration"] = per_device * row["devices"]  # the whole batch
    row["seconds_per_500_iterations_at_30pct"] = round(500 * per_device / (0.3 * t.peak_flops), 3)
    return row


def _custom_calls(hlo: str) -> list[str]:
    return re.findall(r'custom_call_target="([^"]+)"', hlo)


def largest(name: str, config: Config, low: int = 256, high: int = 16384) -> tuple[int, int]:
    """The largest 4:3 size (a multiple of 64) whose loop fits in 90% of the target's memory,
    searched near the memory estimate's answer (compiling a far too large size takes long)."""
    t = target(name)

    def estimated_fit(size: int) -> bool:
        hw = preprocess.bucket(preprocess.fit_size((3, 4), size), 64)
        return memory_need(config, hw, 1, 1, t.platform).total <= 0.9 * t.hbm_bytes

    lo, hi = low // 64, high // 64
    while lo < hi:  # the estimate's largest size: cheap
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if estimated_fit(mid * 64) else (lo, mid - 1)
    guess = lo * 64
    if t.platform == "gpu":
        return guess, memory_need(config, preprocess.bucket(preprocess.fit_size((3, 4), guess), 64), 1, 1,
                                  "gpu").total
    best = (0, 0)
    lo, hi = max(low, int(guess * 0.8)) // 64, min(high, int(guess * 1.4)) // 64
    while lo <= hi:
        mid = (lo + hi) // 2
        row = plan(name, config, mid * 64)
        if row["fits"]:
            best, lo = (mid * 64, row["hbm_needed_bytes"]), mid + 1
        else:
            hi = mid - 1
    return best


@dataclass(frozen=True)
class Way:
    """One way to run an image on a target: the settings that change its memory."""

    history: int  # L-BFGS pairs (each holds two images)
    dtype: str
    split: int = 1  # devices the image is split over by rows (`--split-image`)
    tile: int = 0  # tiles of the full-resolution stage (`--tile`), 0: whole

    def config(self, base: Config) -> Config:
        return base.replace(lbfgs_memory=self.history, dtype=self.dtype, split_image=self.split > 1, tile=self.tile)

    def flags(self) -> str:
        out = [f"--lbfgs-memory {self.history}"]
        if self.dtype != "float32":
            out.append(f"--dtype {self.dtype}")
        if self.split > 1:
            out.append(f"--split-image ({self.split} devices)")
        if self.tile:
            out.append(f"--tile {self.tile}")
        return " ".join(out)


def ways(t: Target) -> list[Way]:
    """The ways to try, cheapest first: the whole image with a shorter L-BFGS history (more
    evaluations to a given loss), then bfloat16 activations, then split over the target's
    devices, then tiles (each tile a full run's iterations)."""
    out = [Way(h, "float32") for h in (30, 20, 10, 5)] + [Way(h, "bfloat16") for h in (30, 10, 5)]
    if t.devices > 1:
        out += [Way(h, d, split=t.devices) for d in ("float32", "bfloat16") for h in (30, 10, 5)]
    out += [Way(h, "float32", tile=n) for n in (2048, 1024, 512) for h in (30, 10)]
    return out


def fit(name: str, hw: tuple[int, int], base: Config | None = None, compile_check: bool = True) -> dict[str, Any]:
    """How an (h, w) image fits target `name`: every way of `ways` with its memory per device
    (the estimate) and whether it fits in 90%, the first that fits, and for a TPU that way's
    programs compiled deviceless (their memory, compile time and FLOPs per iteration)."""
    t = target(name)
    base = base or Config()
    padded = preprocess.bucket(hw, 64)
    rows = []
    for way in ways(t):
        config = way.config(base)
        shape = padded if not way.tile else tuple(min(d, way.tile) for d in padded)
        need = memory_need(config, shape, 1, 1, t.platform, way.split)
        count = 1
        if way.tile:
            from . import tiles
            count = len(tiles.windows(hw, way.tile, tiles.overlap_for(way.tile)))
        rows.append({"way": way.flags(), "need_bytes": need.total, "fits": need.total <= 0.9 * t.hbm_bytes,
                     "tiles": count, "_way": way, "_shape": shape})
    chosen = next((r for r in rows if r["fits"]), None)
    out: dict[str, Any] = {"target": t.name, "hbm_bytes": t.hbm_bytes, "shape": list(hw),
                           "ways": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
                           "chosen": chosen["way"] if chosen else None}
    if chosen is not None and compile_check and t.platform == "tpu":
        way = chosen["_way"]
        devices = topology_devices(t)[: way.split]
        start = time.perf_counter()
        programs = compile_for(way.config(base).replace(bucket=64), devices, chosen["_shape"], (1024, 1024), 1)
        cost = programs.chunk.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops = float(cost.get("flops", math.nan)) * chosen["tiles"] if cost else math.nan
        out.update(compiled_bytes=programs.loop_bytes(), compile_s=round(time.perf_counter() - start, 1),
                   compiled_fits=programs.loop_bytes() <= 0.9 * t.hbm_bytes, flops_per_iteration=flops,
                   seconds_per_iteration_at_30pct=round(flops / (0.3 * t.peak_flops), 3))
    return out

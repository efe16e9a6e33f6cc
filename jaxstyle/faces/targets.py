"""Planning a run for a device that is not here: TPUs compiled for without one, GPUs by estimate.

With the `libtpu` wheel installed (`pip install 'jax[tpu]'`), XLA:TPU compiles real TPU
programs on any machine ("deviceless" ahead-of-time compilation against a topology): the
compile time, the HBM the programs need, their FLOPs and XLA's own cost model of their run
time (`costmodel`) are the ones a TPU user will get. A run's programs are built exactly as for
a local device (`problem.build_programs`), from shapes alone. GPU targets have no deviceless
compiler here: they are planned from the memory estimate, and timed by a roofline over the
instructions of the same programs compiled for this machine with the GPU's settings.

Every time this module gives is an estimate of its stated kind ("cost model" or "roofline"),
never a measurement on the device.
"""
from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from jaxstyle.config import Config
from jaxstyle.errors import ConfigError, captured_stderr, first_line
from jaxstyle.images import preprocess
from jaxstyle.model import vgg
from jaxstyle.run.problem import Builder, Layout, Programs, build_programs, default_width, loop_variables, memory_need

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
    # TPUs: the clock the cost model's cycles are counted in (the datasheet peak over the matrix
    # units' multiply-adds per cycle). GPUs: the roofline's memory bandwidth and float32 peak
    # off the tensor cores (what highest-precision work runs at).
    clock_hz: float = 0.0
    bandwidth: float = 0.0  # bytes/s
    peak_flops_highest: float = 0.0


TARGETS: dict[str, Target] = {t.name: t for t in (
    # TPUs: float32 matrix products and convolutions run as one bfloat16 pass by default.
    # v5e: 4 MXUs of 128x128 at 1.5 GHz = 197 TFLOP/s; v2: one per core at 0.7 GHz; v4: 8 per
    # chip at 1.05 GHz; v6e: 4 of 256x256 at 1.75 GHz.
    Target("tpu-v5e-1", "tpu", "v5e:1x1", 16 * GiB, 197e12, 1, (1, 1, 1), clock_hz=1.5e9, bandwidth=819e9),
    Target("tpu-v2-8", "tpu", "v2:2x2", 8 * GiB, 22.5e12, 8, clock_hz=0.7e9, bandwidth=350e9),
    Target("tpu-v4", "tpu", "v4:2x2x1", 32 * GiB, 275e12, 4, clock_hz=1.05e9, bandwidth=1228e9),
    Target("tpu-v6e-1", "tpu", "v6e:1x1", 32 * GiB, 918e12, 1, (1, 1, 1), clock_hz=1.75e9, bandwidth=1640e9),
    # GPUs: float32 as TF32 on Ampere and later (T4: plain float32); datasheet dense figures.
    Target("t4", "gpu", None, 15 * GiB, 8.1e12, bandwidth=320e9, peak_flops_highest=8.1e12),
    Target("l4", "gpu", None, 22 * GiB, 60e12, bandwidth=300e9, peak_flops_highest=30.3e12),
    Target("a100-40gb", "gpu", None, 40 * GiB, 156e12, bandwidth=1555e9, peak_flops_highest=19.5e12),
    Target("h100", "gpu", None, 80 * GiB, 494.7e12, bandwidth=3350e9, peak_flops_highest=67e12),
)}

# Loss+gradient evaluations per L-BFGS iteration: the line search's measured 1.00-1.06 over a
# default run (README: 1.01 at 256 px; bench/README), a few more at the start.
EVALUATIONS_PER_ITERATION = 1.03


def target(name: str) -> Target:
    if name not in TARGETS:
        raise ConfigError(f"unknown target {name!r}; use one of {', '.join(TARGETS)}")
    return TARGETS[name]


def topology_devices(t: Target) -> tuple[Any, ...]:
    """The devices of a TPU target's topology (no TPU needed; libtpu must be installed)."""
    import os

    from jax.experimental import topologies
    kwargs = {"chips_per_host_bounds": t.bounds} if t.bounds else {}
    # Compiling for a topology uses no TPU: another process holding libtpu (a run, a test) is
    # no reason to refuse.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    # libtpu loads here and, off a TPU VM, logs that it found no TPU metadata (an error line on
    # stderr however quiet it is told to be): kept off the terminal, shown with --verbose
    with captured_stderr() as printed:
        try:
            topo, error = topologies.get_topology_desc(t.topology, "tpu", **kwargs), None
        except Exception as e:
            topo, error = None, e
    if "".join(printed).strip():
        logging.getLogger(__name__).info("libtpu: %s", "".join(printed).rstrip())
    if error is not None:  # libtpu missing or too old: say how to get it
        if "lockfile" in str(error):
            raise ConfigError(f"cannot compile for {t.name} here: another process holds libtpu "
                              f"({first_line(error)}); set ALLOW_MULTIPLE_LIBTPU_LOAD=1") from None
        raise ConfigError(f"cannot compile for {t.name} here ({first_line(error)}); "
                          "install libtpu with `pip install 'jax[tpu]'` (it compiles for TPUs on any "
                          "machine) and run with JAX_PLATFORMS=cpu") from None
    return tuple(topo.devices)


def _abstract(tree: Any) -> Any:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.float32), tree)


def compile_for(config: Config, devices: tuple[Any, ...], shape: tuple[int, int],
                style_shape: tuple[int, int], batch: int = 1, params: Any = None, regions: int = 0,
                settings_for: str | None = None) -> Programs:
    """Compile a run's two programs for `devices` (real or a topology's) from shapes alone:
    a batch of `batch` images of (h, w) `shape`, styles of `style_shape`, padded to buckets
    (`regions`: a guided run's regions, one style image each). `settings_for`: the platform
    whose automatic settings to use (default: the devices'), e.g. a GPU's on this CPU."""
    from jaxstyle.config import resolve
    platform = devices[0].platform
    config = resolve(config, settings_for or platform)
    params = params if params is not None else vgg.random_params(0)
    host = vgg.prepare_variables(params)
    builder = Builder(config, _abstract(host), regions)
    split = config.split_image and len(devices) > 1 and batch == 1
    local = batch if split else batch // len(devices)
    padded = preprocess.bucket(shape, config.bucket)
    layout = Layout(batch, padded, preprocess.bucket(style_shape, config.bucket), max(regions, 1), True, devices,
                    1 if split else default_width(settings_for or platform, local), regions, split,
                    full=tuple(padded) == tuple(shape), program_platform=settings_for)
    loop = _abstract(loop_variables(host, builder.objective, layout))
    # planning times each effort on its own (`plan`): no full-effort loop beside a fast one
    effort = "fast" if config.compile == "both" else config.compile
    return build_programs(builder.objective, builder.method, layout, builder.variables, loop,
                          builder.weights, effort)


def run_shape(size: int, content_shape: tuple[int, int] | None = None) -> tuple[int, int]:
    """The (h, w) a run at `size` works at: `size` x `size`, or a photo's aspect with its
    longest side `size`."""
    return preprocess.fit_size(content_shape, size) if content_shape else (size, size)


def plan(name: str, config: Config, size: int, batch: int = 1, content_shape: tuple[int, int] | None = None,
         evaluations: float = EVALUATIONS_PER_ITERATION) -> dict[str, Any]:
    """What a run at `size` (`size` x `size`, or `content_shape`'s aspect; one image, or `batch`
    of them over the target's devices) needs on target `name`: compile seconds, programs, HBM,
    and the time of an iteration by XLA's cost model (TPUs) or a roofline (GPUs), with its
    breakdown by kind of work (see `stopwatch`)."""
    t = target(name)
    hw = run_shape(size, content_shape)
    row: dict[str, Any] = {"target": t.name, "platform": t.platform, "size": size, "shape": list(hw),
                           "batch": batch, "hbm_bytes": t.hbm_bytes}
    efforts: dict[str, dict[str, Any]] = {}
    if t.platform == "tpu":
        from jaxstyle.config import resolve
        count = t.devices if config.split_image else max(1, min(batch, t.devices))
        devices = topology_devices(t)[:count]
        effort = resolve(config, "tpu").compile
        # "both" runs the fast loop until the full-effort one has compiled: time each.
        for one in (("fast", "full") if effort == "both" else (effort,)):
            start = time.perf_counter()
            try:
                programs = compile_for(config.replace(compile=one), devices, hw, hw, batch)
            except jax.errors.JaxRuntimeError as e:
                if "RESOURCE_EXHAUSTED" not in str(e):
                    raise
                # XLA:TPU refuses a program that cannot fit: "... temporaries (92.92G) exceeds ...".
                found = re.search(r"\(([0-9.]+)G\)", str(e))
                row.update(compile_s=round(time.perf_counter() - start, 2), programs=2, devices=len(devices),
                           hbm_needed_bytes=int(float(found.group(1)) * GiB) if found else None, fits=False)
                return row
            seconds = round(time.perf_counter() - start, 2)
            efforts[one] = {"compile_s": seconds,
                            **stopwatch(t, programs.chunk, max(1, batch // len(devices)), evaluations,
                                        len(devices), config.optimizer == "lbfgs")}
        row["compile_s"] = efforts[next(iter(efforts))]["compile_s"]  # before the first iteration
        need = programs.loop_bytes()
        row["programs"] = programs.count
        row["devices"] = len(devices)
        row["compile_effort"] = effort
        hlo = programs.chunk.as_text()
        row["custom_calls"] = sorted(set(_custom_calls(hlo)))
    else:  # the same programs compiled here, with the GPU's settings and convolutions
        direct = config.replace(conv="direct") if config.conv == "auto" else config
        programs = compile_for(direct, tuple(jax.devices("cpu")[:1]), hw, hw, batch, settings_for="gpu")
        est = memory_need(config.replace(bucket=config.bucket or 64), preprocess.bucket(hw, 64),
                          batch, batch, "gpu")
        need = est.total
        row["compile_s"] = None  # no deviceless GPU compiler here
        row["programs"] = programs.count
        row["devices"] = 1
        row["estimated"] = True
    row["hbm_needed_bytes"] = int(need)  # per device
    row["fits"] = bool(need <= 0.9 * t.hbm_bytes)
    if efforts:  # the loop that runs in the end (full effort when both are compiled)
        last = efforts[list(efforts)[-1]]
        row.update({k: v for k, v in last.items() if k != "compile_s"})
        if len(efforts) == 2:
            row["efforts"] = efforts
            row.update(run_model(efforts["fast"], efforts["full"], 500))
    else:
        row.update(stopwatch(t, programs.chunk, batch, evaluations, 1, config.optimizer == "lbfgs"))
    return row


def run_model(fast: dict[str, Any], full: dict[str, Any], iterations: int) -> dict[str, Any]:
    """Seconds of a run of `iterations` with compile effort "both", from each loop's compile
    seconds (here: this machine's, not a TPU host's) and cost-model iteration time: a first run of
    a shape compiles the fast loop, runs it while the full one compiles, then runs the full
    one; a later run loads the full one from the compilation cache (its load time not counted)."""
    fast_it, full_it = fast["iteration_ms"] / 1e3, full["iteration_ms"] / 1e3
    waiting = min(iterations, int(full["compile_s"] / fast_it)) if fast_it > 0 else 0
    first = fast["compile_s"] + waiting * fast_it + (iterations - waiting) * full_it
    return {"first_run_s": round(first, 2), "first_run_fast_iterations": waiting,
            "later_run_s": round(iterations * full_it, 2), "run_model_iterations": iterations}


def stopwatch(t: Target, chunk: Any, local_batch: int = 1, evaluations: float = EVALUATIONS_PER_ITERATION,
              devices: int = 1, line_search: bool = True) -> dict[str, Any]:
    """The time of one iteration of a compiled loop (`chunk`, one device's share of `local_batch`
    images) on target `t`: by XLA:TPU's cost model (the loop body's `estimated_cycles` at the
    target's clock) for TPUs, by a per-instruction roofline for GPUs; with the line search run
    `evaluations` times, a breakdown by kind of work (milliseconds, summing to the total), the
    FLOPs of an iteration and their share of the matrix units' peak, and XLA's own cost analysis
    (its lower bound, FLOPs and bytes, loop bodies counted once)."""
    from jaxstyle.platform import costmodel
    module = costmodel.parse(chunk.as_text())
    # Accelerators run a device's share of a batch side by side (`problem.default_width`): one
    # trip of the iteration loop iterates every image of it.
    trips = 1.0
    if t.platform == "tpu":
        tally = costmodel.iteration(module, evaluations, trips, line_search=line_search)
        seconds = {k: v / t.clock_hz for k, v in tally.by_kind.items()}
        kind = f"XLA:TPU cost model (estimated cycles at {t.clock_hz / 1e9:g} GHz), compiled deviceless"
    else:
        cost = costmodel.roofline_cost(t.peak_flops, t.peak_flops_highest, t.bandwidth)
        tally = costmodel.iteration(module, evaluations, trips, cost, line_search)
        seconds = dict(tally.by_kind)
        kind = (f"roofline estimate per instruction ({t.peak_flops / 1e12:g} TFLOP/s default precision, "
                f"{t.peak_flops_highest / 1e12:g} highest, {t.bandwidth / 1e9:g} GB/s) of the programs "
                "compiled for this CPU with the GPU's settings")
    total = sum(seconds.values())
    flops = costmodel.iteration_flops(module, evaluations, trips, line_search)
    matrix_peak = t.peak_flops  # bfloat16 on TPUs, TF32 on recent GPUs: the matrix units' peak
    cost = chunk.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
    lower = cost.get("optimal_seconds")
    out: dict[str, Any] = {
        "time_source": kind,
        "evaluations_per_iteration": evaluations,
        "iteration_ms": round(total * 1e3, 3),
        "iteration_ms_per_image": round(total * 1e3 / max(local_batch * devices, 1), 3),
        "seconds_per_500_iterations": round(500 * total, 2),
        "breakdown_ms": {k: round(v * 1e3, 4) for k, v in seconds.items()},
        "flops_per_iteration": flops * devices,  # the whole batch, every device
        "matrix_unit_share": round(flops / total / matrix_peak, 4) if total else None,
        "loops": [{"loop": n, "trips": k, "how": how} for n, k, how in tally.loops],
    }
    if t.platform == "tpu":
        out["xla_lower_bound_ms"] = round(lower * 1e3, 3) if lower and lower > 0 else None
        out["xla_flops"] = float(cost.get("flops", math.nan))
        out["xla_bytes_accessed"] = float(cost.get("bytes accessed", math.nan))
    return out


def describe(row: dict[str, Any]) -> str:
    """A plan (`plan`) as a few lines for a person, each time with where it comes from."""
    h, w = row["shape"]
    images = f"{row['batch']} image{'s' if row['batch'] > 1 else ''}"
    loss = f", --style-loss {row['style_loss']}" if row.get("style_loss", "gram") != "gram" else ""
    where = f"{row['target']}, {w}x{h}, {images}, {row.get('dtype', 'float32')}{loss}"
    if row.get("iteration_ms") is None:
        need = row.get("hbm_needed_bytes")
        return f"{where}: does NOT fit ({need / GiB:.1f} GiB needed per device)" if need else f"{where}: does NOT fit"
    compiled = (f"compiled deviceless in {row['compile_s']} s ({row['programs']} programs)"
                if row.get("compile_s") is not None else "not compiled for it (no GPU compiler here)")
    lines = [f"{where}: {compiled}; loop {row['hbm_needed_bytes'] / GiB:.2f} GiB of {row['hbm_bytes'] / GiB:.0f} "
             f"GiB per device ({'fits' if row['fits'] else 'does NOT fit'})",
             f"  one iteration ({row['evaluations_per_iteration']} evaluations): {row['iteration_ms']:.2f} ms, "
             f"{row['seconds_per_500_iterations']:.2f} s per 500 iterations"
             + (f", {row['iteration_ms_per_image']:.2f} ms per image" if row["batch"] > 1 else ""),
             f"  by the {row['time_source']}"]
    extra = [f"{row['flops_per_iteration'] / 1e9:.1f} GFLOP per iteration, "
             f"{row['matrix_unit_share']:.0%} of the matrix units' peak"]
    if row.get("xla_lower_bound_ms"):
        extra.append(f"XLA's lower bound {row['xla_lower_bound_ms']:.2f} ms and "
                     f"{row['xla_bytes_accessed'] / 1e9:.2f} GB accessed (its cost analysis, loop bodies once)")
    lines.append("  " + "; ".join(extra))
    parts = sorted(((v, k) for k, v in row["breakdown_ms"].items() if v > 0), reverse=True)
    lines.append("  " + " | ".join(f"{k} {v:.2f}" for v, k in parts) + " (ms)")
    if "efforts" in row:
        fast, full = row["efforts"]["fast"], row["efforts"]["full"]
        lines.append(f"  compile effort both: fast loop {fast['iteration_ms']:.2f} ms (compiled in "
                     f"{fast['compile_s']} s here), full {full['iteration_ms']:.2f} ms (compiled in "
                     f"{full['compile_s']} s here, beside the run)")
        lines.append(f"  {row['run_model_iterations']} iterations: first run of this shape "
                     f"{row['first_run_s']:.1f} s ({row['first_run_fast_iterations']} on the fast loop), "
                     f"later runs {row['later_run_s']:.1f} s + loading from the cache")
    return "\n".join(lines)


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
            from jaxstyle.images import tiles
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
        timed = stopwatch(t, programs.chunk)
        out.update(compiled_bytes=programs.loop_bytes(), compile_s=round(time.perf_counter() - start, 1),
                   compiled_fits=programs.loop_bytes() <= 0.9 * t.hbm_bytes,
                   flops_per_iteration=timed["flops_per_iteration"] * chosen["tiles"],
                   seconds_per_iteration=round(timed["iteration_ms"] / 1e3 * chosen["tiles"], 4),
                   time_source=timed["time_source"])
    return out

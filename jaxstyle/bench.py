"""Per-iteration throughput benchmark (`jaxstyle bench`).

Every configuration (device, size, dtype, optimizer, batch) is measured on the programs a run
compiles (`problem.Builder`), so the bench measures what users run:
  - compile_s: compiling them (the targets-and-start program and the loop), `programs` of them;
  - s_per_iter, s_per_eval, evals_per_iter, evals_per_s: the loop in timed chunks of
    `iterations` (medians, min and max over `repeats` chunks after a 10-iteration warm-up),
    each timed from dispatch to its end: one device sync per chunk, never per iteration;
  - flops_per_eval (XLA's cost analysis of the loop's body: one evaluation and the L-BFGS
    step), FLOP/s measured inside the loop and, where the device's peak is known, the
    fraction of it; the loop's memory (XLA's analysis) and the peak device or process memory;
  - optionally, the wall time (compilation included) to reach a target loss.
`objective="peer"` is exactly the objective of the PyTorch and Keras peers in
../shared/peers (raw mean-squared terms, content 1, style 100, init = content, square images).
"""
from __future__ import annotations

import json
import math
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import jax
import numpy as np
from PIL import Image

from . import imageio, memory, preprocess, solver, vgg
from .config import STYLE_LAYERS, Config
from .problem import Builder, Layout, build_programs, default_width, loop_variables
from .config import resolve

# Dense peak FLOP/s by device kind substring: (float32 as JAX runs it by default, bfloat16).
# NVIDIA Ampere/Hopper run float32 convolutions as TF32 by default, so that is their f32 peak.
# Vendor datasheet figures; TPU figures are per JAX device (a core on v2/v3, a chip after).
PEAK_FLOPS: tuple[tuple[str, float, float], ...] = (
    ("H200", 494.7e12, 989.4e12),
    ("H100 PCIe", 378e12, 756e12),
    ("H100 NVL", 417.5e12, 835.5e12),
    ("H100", 494.7e12, 989.4e12),
    ("A100", 156e12, 312e12),
    ("L40S", 91.6e12, 183.2e12),  # before "L4", which its name contains
    ("L4", 60e12, 121e12),
    ("A10G", 35e12, 70e12),
    ("T4", 8.1e12, 8.1e12),  # Turing: no TF32 and no bfloat16 tensor cores
    ("V100", 15.7e12, 15.7e12),  # Volta: the same
    ("TPU v2", 22.5e12, 22.5e12),
    ("TPU v3", 61.5e12, 61.5e12),
    ("TPU v4", 275e12, 275e12),
    ("TPU v5 lite", 197e12, 197e12),
    ("TPU v5", 459e12, 459e12),
    ("TPU v6", 918e12, 918e12),
)

PEER_CONFIG = Config(
    content_layers=("block4_conv2",), content_layer_weights=(1.0,),
    style_layers=STYLE_LAYERS, style_layer_weights=(0.05, 0.15, 0.2, 0.3, 0.3),
    content_weight=1.0, style_weight=100.0, tv_weight=0.0, normalize=False, init="content")


@dataclass(frozen=True)
class Case:
    """One benchmark configuration."""

    size: int
    dtype: str = "float32"
    optimizer: str = "lbfgs"
    objective: str = "default"  # or "peer"
    conv: str = "auto"
    batch: int = 1  # images per compiled batch (>1: the batched, sharded solver)
    devices: int = 0  # devices the batch is sharded over (0: all)
    remat: bool = False  # rematerialize each VGG block in the backward pass


def peak_flops(device: jax.Device, dtype: str) -> float | None:
    """The device's dense peak FLOP/s for `dtype`, when known."""
    kind = getattr(device, "device_kind", "")
    for key, f32, bf16 in PEAK_FLOPS:
        if key.lower() in kind.lower():
            return bf16 if dtype == "bfloat16" else f32
    return None


def reset_peak_memory() -> bool:
    """Start a new peak of the process's resident memory (Linux: /proc/self/clear_refs), so each
    case reports its own; False where the peak cannot be reset."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_memory_mb(device: jax.Device, since_reset: bool = False) -> tuple[float, str]:
    """Peak device memory (accelerators: the process's running maximum, which JAX cannot reset) or
    peak resident memory (CPU: since `reset_peak_memory` when `since_reset`), in MiB."""
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20, "device, running maximum"
    if since_reset:
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024.0, "process, this case"
        except OSError:
            pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "process, running maximum"


def synthetic_image(size: int, seed: int) -> np.ndarray:
    """A deterministic smooth-plus-noise RGB test image (size x size, 0..255)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([127.5 + 100 * np.sin(2 * np.pi * (rng.uniform(1, 8) * xx + rng.uniform(1, 8) * yy))
                    for _ in range(3)], axis=2)
    return np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.float32)


def square_image(path: str | Path, size: int) -> np.ndarray:
    """The peers' convention: RGB, resized to size x size with bicubic on 8-bit pixels."""
    img = Image.fromarray(imageio.to_uint8(imageio.load_image(path)), "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32)


def _median_spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def _config(case: Case) -> Config:
    base = PEER_CONFIG if case.objective == "peer" else Config()
    return base.replace(size=case.size, dtype=case.dtype, optimizer=case.optimizer, conv=case.conv,
                        remat=case.remat, bucket=1 if case.objective == "peer" else 0)


def _layout(config: Config, batch: int, shape: tuple[int, int], style_shape: tuple[int, int],
            devices: tuple) -> Layout:
    return Layout(batch, preprocess.bucket(shape, config.bucket), preprocess.bucket(style_shape, config.bucket),
                  1, True, devices, default_width(devices[0].platform, batch // len(devices)))


def run_case(case: Case, params: dict, contents: list[np.ndarray], style: np.ndarray, *,
             iterations: int = 10, repeats: int = 5, target_loss: float | None = None,
             max_target_iterations: int = 1000) -> dict[str, Any]:
    """Measure one configuration through the program a run uses (`problem.Builder`): images are
    float RGB 0..255 at the case's size, one per batch slot.

    The loop runs a 10-iteration warm-up (L-BFGS's start-up line searches), then `repeats`
    chunks of `iterations`, each timed from its dispatch to its end (one device sync per chunk).
    """
    own_peak = reset_peak_memory()
    config = resolve(_config(case), jax.devices()[0].platform)
    n_dev = min(case.devices or jax.device_count(), case.batch)
    if case.batch % n_dev:
        raise ValueError(f"batch {case.batch} is not a multiple of {n_dev} devices")
    devices = tuple(jax.devices()[:n_dev])
    builder = Builder(config, vgg.prepare_variables(params))
    layout = _layout(config, case.batch, contents[0].shape[:2], style.shape[:2], devices)
    programs = builder.compile(layout)
    compile_s = builder.compile_seconds
    xs = [preprocess.to_vgg(c) for c in contents]
    problem = builder.problem(layout, xs, xs, [[preprocess.to_vgg(style)]], [np.ones(1, np.float32)])
    cost = programs.chunk.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")  # the loop body: one evaluation
    n = case.batch
    state, summary = problem.chunk(problem.state, np.full(n, 10))
    summary = jax.device_get(summary)
    loss0 = float(summary.first[0][0])
    at = np.asarray(summary.iteration)
    times, its, evals = [], [], []
    for _ in range(repeats):
        e0 = np.asarray(summary.evaluations)
        t = time.perf_counter()
        state, summary = problem.chunk(state, at + iterations)
        summary = jax.device_get(summary)
        times.append(time.perf_counter() - t)
        done = np.asarray(summary.iteration) - at
        at = np.asarray(summary.iteration)
        its.append(int(done.max()))
        evals.append(int((np.asarray(summary.evaluations) - e0).sum()))
        if (np.asarray(summary.status) != solver.RUNNING).any():
            break
    per_iter = [t / max(k, 1) for t, k in zip(times, its)]
    per_eval = [t / max(e, 1) for t, e in zip(times, evals)]
    s_per_iter, iter_min, iter_max = _median_spread(per_iter)
    s_per_eval, eval_min, eval_max = _median_spread(per_eval)
    device = devices[0]
    peak = peak_flops(device, case.dtype)
    mem_mb, mem_kind = peak_memory_mb(device, own_peak)
    flops_per_s = flops / s_per_eval if math.isfinite(flops) else None
    result: dict[str, Any] = {
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}", "devices": n_dev,
        "size": case.size, "shape": list(contents[0].shape[:2]), "padded_shape": list(layout.shape),
        "batch": case.batch, "dtype": case.dtype, "optimizer": case.optimizer, "objective": case.objective,
        "conv": case.conv, "remat": case.remat,
        "winograd_layers": sorted(problem.loop_variables.get("winograd", {})),
        "programs": programs.count, "compile_s": round(compile_s, 3),
        "s_per_eval": round(s_per_eval, 5), "s_per_eval_min": round(eval_min, 5),
        "s_per_eval_max": round(eval_max, 5),
        "s_per_iter": round(s_per_iter, 5), "s_per_iter_min": round(iter_min, 5),
        "s_per_iter_max": round(iter_max, 5), "iter_over_eval": round(s_per_iter / s_per_eval, 4),
        "evals_per_iter": round(sum(evals) / max(sum(its) * n, 1), 4),
        "evals_per_s": round(sum(evals) / sum(times), 4),
        "image_iterations_per_s": round(n / s_per_iter, 3),
        "flops_per_eval": flops, "flops_per_s": flops_per_s, "peak_flops": peak,
        "fraction_of_peak": flops_per_s / peak if peak and flops_per_s else None,
        "loop_mb": round(programs.loop_bytes() / 2**20, 1),
        "peak_mem_mb": round(mem_mb, 1), "peak_mem_kind": mem_kind,
        "repeats": len(times), "iterations_per_repeat": iterations, "loss0": loss0,
        "final_loss": float(summary.value[0]), "final_iterations": int(summary.iteration[0]),
        "final_evaluations": int(summary.evaluations[0]),
    }
    if target_loss is not None:
        fresh = builder.problem(layout, xs, xs, [[preprocess.to_vgg(style)]], [np.ones(1, np.float32)])
        result.update(time_to_target(fresh, compile_s, target_loss, max_target_iterations))
    return result


def time_to_target(problem: Any, compile_s: float, target: float, max_iterations: int,
                   chunk: int = 10) -> dict[str, Any]:
    """Wall time from the initial image until the first image's loss is at most `target`,
    compilation included. The loop runs in chunks of `chunk` iterations with one host read
    each; the iteration that reached the target comes from the chunk's per-iteration record,
    and its time is interpolated inside the chunk."""
    t0 = time.perf_counter()
    state, at, elapsed = problem.state, 0, 0.0
    reached_at = None
    evaluations = 0
    while at < max_iterations:
        state, summary = problem.chunk(state, np.full(problem.layout.batch, at + chunk))
        summary = jax.device_get(summary)
        now = time.perf_counter() - t0
        # (iteration, evaluations, loss) of the start (first chunk only) and of every iteration.
        rows = ([(0, 1, float(summary.first[0][0]))] if at == 0 else []) + \
            [(int(r[0]), int(r[1]), float(r[2])) for r in np.asarray(summary.history[0]) if np.isfinite(r[0])]
        hit = next((k for k, r in enumerate(rows) if r[2] <= target), None)
        if hit is not None:
            reached_at = (rows[hit][0], elapsed + (now - elapsed) * (hit + 1) / len(rows))
            evaluations = rows[hit][1]
            break
        elapsed = now
        at = int(summary.iteration[0])
        evaluations = int(summary.evaluations[0])
        if int(summary.status[0]) != solver.RUNNING:
            break
    reached = reached_at is not None
    return {"target_loss": target, "target_reached": reached,
            "time_to_target_s": round(compile_s + reached_at[1], 3) if reached else None,
            "target_iterations": reached_at[0] if reached else at, "target_evaluations": evaluations}


def loop_bytes(config: Config, params: dict, size: int, platform: str | None = None) -> int:
    """Device bytes XLA's memory analysis gives for the compiled loop of one 4:3 image at `size`
    (compiled from shapes only, so nothing that large is allocated)."""
    config = resolve(config.replace(size=size), platform or jax.devices()[0].platform)
    hw = preprocess.fit_size((3, 4), size)
    variables = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.float32),
                             vgg.prepare_variables(params))
    builder = Builder(config, variables)
    layout = _layout(config, 1, hw, hw, tuple(jax.devices()[:1]))
    loop = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.float32),
                        loop_variables(vgg.prepare_variables(params), builder.objective, layout))
    programs = build_programs(builder.objective, builder.method, layout, variables, loop, builder.weights)
    return programs.loop_bytes()


def largest_size(config: Config, params: dict, available: int, low: int = 256,
                 high: int = 16384) -> tuple[int, int]:
    """The largest longest side (a multiple of 64, 4:3 images) whose compiled loop fits in
    90% of `available` bytes together with the runtime, and the bytes it needs."""
    budget = 0.9 * available - memory.RUNTIME_BYTES
    best = (0, 0)
    lo, hi = low // 64, high // 64
    while lo <= hi:
        mid = (lo + hi) // 2
        need = loop_bytes(config, params, mid * 64)
        if need <= budget:
            best, lo = (mid * 64, need), mid + 1
        else:
            hi = mid - 1
    return best


def run(cases: Iterable[Case], params: dict, content: str | Path | None = None,
        style: str | Path | None = None, **kwargs: Any) -> Iterable[dict[str, Any]]:
    """Measure each case in turn (images from the given paths, or synthetic ones)."""
    for case in cases:
        if case.objective == "peer":
            c = square_image(content, case.size) if content else synthetic_image(case.size, 1)
            s = square_image(style, case.size) if style else synthetic_image(case.size, 2)
        else:
            c = (preprocess.resize_longest(imageio.load_image(content), case.size)
                 if content else preprocess.resize(synthetic_image(case.size, 1),
                                                   preprocess.fit_size((3, 4), case.size)))
            s = (preprocess.resize_longest(imageio.load_image(style), case.size)
                 if style else synthetic_image(case.size, 2))
        contents = [c] + [preprocess.resize(synthetic_image(case.size, 10 + i), c.shape[:2])
                          for i in range(case.batch - 1)]
        yield run_case(case, params, contents, s, **kwargs)


BATCH_COLUMNS = (("device", "device", "{}"), ("devices", "devices", "{}"), ("batch", "batch", "{}"),
                 ("size", "size", "{}"), ("compile_s", "compile s", "{:.2f}"),
                 ("s_per_iter", "s/iter", "{:.4f}"), ("image_iterations_per_s", "image-its/s", "{:.2f}"),
                 ("evals_per_s", "evals/s", "{:.2f}"), ("loop_mb", "loop MiB", "{:.0f}"),
                 ("peak_mem_mb", "peak MiB", "{:.0f}"))
COLUMNS = (("device", "device", "{}"), ("size", "size", "{}"), ("dtype", "dtype", "{}"),
           ("optimizer", "opt", "{}"), ("conv", "conv", "{}"), ("remat", "remat", "{}"),
           ("compile_s", "compile s", "{:.2f}"), ("s_per_eval", "s/eval", "{:.4f}"), ("s_per_iter", "s/iter", "{:.4f}"),
           ("evals_per_iter", "evals/iter", "{:.2f}"), ("evals_per_s", "evals/s", "{:.2f}"),
           ("flops_per_eval", "GFLOP/eval", "{:.1f}"), ("flops_per_s", "GFLOP/s", "{:.1f}"),
           ("fraction_of_peak", "of peak", "{:.0%}"), ("peak_mem_mb", "peak MiB", "{:.0f}"))


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of benchmark results (batch runs get their own columns)."""
    single = [r for r in rows if r.get("batch", 1) == 1]
    batched = [r for r in rows if r.get("batch", 1) > 1]
    parts = [_table(single, COLUMNS)] if single else []
    parts += [_table(batched, BATCH_COLUMNS)] if batched else []
    return "\n\n".join(parts)


def _table(rows: list[dict[str, Any]], columns) -> str:
    def cell(row, key, fmt):
        v = row.get(key)
        if v is None:
            return "-"
        if key in ("flops_per_eval", "flops_per_s"):
            v = v / 1e9
        return fmt.format(v)

    header = [title for _, title, _ in columns]
    body = [[cell(r, k, f) for k, _, f in columns] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def to_json(row: dict[str, Any]) -> str:
    """One JSON object per configuration."""
    return json.dumps(row)

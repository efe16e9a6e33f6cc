"""Per-iteration throughput benchmark (`jaxstyle bench`).

For each configuration (device, size, dtype, optimizer) it measures, with compilation
excluded and every timing blocked on its result:
  - compile_s: compiling the jitted optimizer loop (and, separately, one evaluation);
  - s_per_eval: one loss+gradient evaluation on its own (median of `repeats`);
  - s_per_iter, evals_per_iter, evals_per_s: the real L-BFGS/Adam loop in chunks of
    `iterations`, medians over `repeats` chunks after a 10-iteration warm-up;
  - flops_per_eval (XLA's cost analysis of the compiled evaluation), achieved FLOP/s and,
    where the device's peak is known, the fraction of it; peak device or process memory;
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
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from . import imageio, losses, memory, preprocess, solver, vgg
from .config import STYLE_LAYERS, Config

# Dense peak FLOP/s by device kind substring: (float32 as JAX runs it by default, bfloat16).
# NVIDIA Ampere/Hopper run float32 convolutions as TF32 by default, so that is their f32 peak.
# Vendor datasheet figures; TPU figures are per JAX device (a core on v2/v3, a chip after).
PEAK_FLOPS: tuple[tuple[str, float, float], ...] = (
    ("H200", 494.7e12, 989.4e12),
    ("H100 PCIe", 378e12, 756e12),
    ("H100", 494.7e12, 989.4e12),
    ("A100", 156e12, 312e12),
    ("L4", 60e12, 121e12),
    ("A10G", 35e12, 70e12),
    ("T4", 8.1e12, 65e12),  # no TF32 or bf16 tensor cores: f32 is plain FP32, bf16 is FP16's
    ("V100", 15.7e12, 125e12),
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


def peak_memory_mb(device: jax.Device) -> tuple[float, str]:
    """Peak device memory (accelerators) or the process's peak RSS (CPU), in MiB."""
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20, "device"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "process"


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


def _block(tree: Any) -> Any:
    return jax.block_until_ready(tree)


def run_case(case: Case, params: dict, content: np.ndarray, style: np.ndarray, *,
             iterations: int = 10, repeats: int = 5, target_loss: float | None = None,
             max_target_iterations: int = 1000) -> dict[str, Any]:
    """Measure one configuration; images are float RGB 0..255 at the case's size."""
    base = PEER_CONFIG if case.objective == "peer" else Config()
    config = base.replace(size=case.size, dtype=case.dtype, optimizer=case.optimizer, conv=case.conv,
                          remat=case.remat)
    device = jax.devices()[0]
    variables = jax.device_put(vgg.prepare_variables(params))
    objective = losses.Objective.from_config(config)
    method = solver.Method.from_config(config)
    c, s = preprocess.to_vgg(content), preprocess.to_vgg(style)
    targets = losses.make_targets(variables, config, objective, c, [s])
    loop_variables = losses.network_variables(variables, objective, c.shape)
    x0 = jnp.asarray(c)
    lr = jnp.float32(config.learning_rate)

    # Compilation, measured on its own: the first evaluation and the loop, as a run does.
    t = time.perf_counter()
    begin, chunk = solver.compile_loop(x0, variables, loop_variables, targets, lr, objective, method)
    compile_s = time.perf_counter() - t
    state0 = _block(begin(x0, variables, targets, lr))
    t = time.perf_counter()
    evaluate = solver.value_and_grad.lower(x0, loop_variables, targets, objective=objective).compile()
    compile_eval_s = time.perf_counter() - t
    cost = evaluate.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")

    # One evaluation on its own.
    _block(evaluate(x0, loop_variables, targets))
    eval_times = []
    for _ in range(repeats):
        t = time.perf_counter()
        _block(evaluate(x0, loop_variables, targets))
        eval_times.append(time.perf_counter() - t)
    s_per_eval, eval_min, eval_max = _median_spread(eval_times)

    # The loop: a warm-up chunk of 10 iterations (it holds L-BFGS's start-up line searches,
    # which take 2-3 evaluations where later iterations take about 1), then timed chunks.
    state = _block(chunk(state0, jnp.int32(10), loop_variables, targets, lr))
    loss0 = float(state0.value)
    chunk_times, chunk_iters, chunk_evals = [], [], []
    for _ in range(repeats):
        it0, ev0 = int(state.iteration), int(state.evaluations)
        t = time.perf_counter()
        state = _block(chunk(state, jnp.int32(iterations), loop_variables, targets, lr))
        chunk_times.append(time.perf_counter() - t)
        chunk_iters.append(int(state.iteration) - it0)
        chunk_evals.append(int(state.evaluations) - ev0)
        if int(state.status) != solver.RUNNING:
            break
    per_iter = [t / max(n, 1) for t, n in zip(chunk_times, chunk_iters)]
    per_eval_loop = [t / max(n, 1) for t, n in zip(chunk_times, chunk_evals)]
    s_per_iter, iter_min, iter_max = _median_spread(per_iter)
    evals_per_iter = sum(chunk_evals) / max(sum(chunk_iters), 1)
    peak = peak_flops(device, case.dtype)
    mem_mb, mem_kind = peak_memory_mb(device)
    result: dict[str, Any] = {
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "devices": jax.device_count(),
        "size": case.size,
        "shape": list(content.shape[:2]),
        "dtype": case.dtype,
        "optimizer": case.optimizer,
        "objective": case.objective,
        "conv": case.conv,
        "remat": case.remat,
        "winograd_layers": sorted(loop_variables.get("winograd", {})),
        "compile_s": round(compile_s, 3),
        "compile_eval_s": round(compile_eval_s, 3),
        "s_per_eval": round(s_per_eval, 5),
        "s_per_eval_min": round(eval_min, 5),
        "s_per_eval_max": round(eval_max, 5),
        "s_per_eval_loop": round(statistics.median(per_eval_loop), 5),
        "s_per_iter": round(s_per_iter, 5),
        "s_per_iter_min": round(iter_min, 5),
        "s_per_iter_max": round(iter_max, 5),
        "iter_over_eval": round(s_per_iter / s_per_eval, 4),
        "evals_per_iter": round(evals_per_iter, 4),
        "evals_per_s": round(sum(chunk_evals) / sum(chunk_times), 4),
        "flops_per_eval": flops,
        "flops_per_s": flops / s_per_eval if math.isfinite(flops) else None,
        "peak_flops": peak,
        "fraction_of_peak": (flops / s_per_eval / peak) if peak and math.isfinite(flops) else None,
        "peak_mem_mb": round(mem_mb, 1),
        "peak_mem_kind": mem_kind,
        "repeats": len(chunk_times),
        "iterations_per_repeat": iterations,
        "loss0": loss0,
        "final_loss": float(state.value),
        "final_iterations": int(state.iteration),
        "final_evaluations": int(state.evaluations),
    }
    if target_loss is not None:
        result.update(time_to_target(begin, chunk, compile_s, x0, variables, loop_variables,
                                     targets, lr, target_loss, max_target_iterations))
    return result


def run_batch_case(case: Case, params: dict, contents: list[np.ndarray], style: np.ndarray, *,
                   iterations: int = 10, repeats: int = 5) -> dict[str, Any]:
    """Throughput of the batched solver: `len(contents)` images sharded over `case.devices`."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    base = PEER_CONFIG if case.objective == "peer" else Config()
    config = base.replace(size=case.size, dtype=case.dtype, optimizer=case.optimizer, conv=case.conv,
                          remat=case.remat)
    n_dev = min(case.devices or jax.device_count(), case.batch)  # a batch of 2 uses 2 devices
    if case.batch % n_dev:
        raise ValueError(f"batch {case.batch} is not a multiple of {n_dev} devices")
    mesh = Mesh(np.array(jax.devices()[:n_dev]), ("batch",))
    per_image, shared = NamedSharding(mesh, PartitionSpec("batch")), NamedSharding(mesh, PartitionSpec())
    variables = jax.device_put(vgg.prepare_variables(params), shared)
    objective = losses.Objective.from_config(config)
    method = solver.Method.from_config(config)
    x = np.stack([preprocess.to_vgg(c) for c in contents])
    content, coeffs = losses.content_targets(variables, config, objective, x)
    style_t, style_coeffs = losses.style_targets(variables, config, objective, [preprocess.to_vgg(style)])
    weights = jnp.asarray([config.content_weight, config.style_weight, config.tv_weight], jnp.float32)
    targets = losses.Targets(jax.device_put(content, per_image), jax.device_put(style_t, shared),
                             jax.device_put(coeffs, per_image), jax.device_put(style_coeffs, shared),
                             jax.device_put(weights, shared))
    loop_variables = jax.device_put(losses.network_variables(variables, objective,
                                                             (case.batch // n_dev, *x.shape[1:])), shared)
    x0 = jax.device_put(jnp.asarray(x), per_image)
    lr = jnp.float32(config.learning_rate)
    t = time.perf_counter()
    begin, chunk = solver.compile_loop(x0, variables, loop_variables, targets, lr, objective, method,
                                       batched=True, mesh=mesh)
    compile_s = time.perf_counter() - t
    state = jax.device_put(_block(begin(x0, variables, targets, lr)), per_image)
    state = _block(chunk(state, jnp.int32(10), loop_variables, targets, lr))  # warm-up
    times, evals = [], []
    for _ in range(repeats):
        e0 = int(jnp.sum(state.evaluations))
        t = time.perf_counter()
        state = _block(chunk(state, jnp.int32(iterations), loop_variables, targets, lr))
        times.append(time.perf_counter() - t)
        evals.append(int(jnp.sum(state.evaluations)) - e0)
    s_per_iter = statistics.median(times) / iterations
    mem_mb, mem_kind = peak_memory_mb(jax.devices()[0])
    return {
        "device": f"{jax.devices()[0].platform}:{getattr(jax.devices()[0], 'device_kind', '')}",
        "devices": n_dev, "batch": case.batch, "size": case.size, "shape": list(x.shape[1:3]),
        "dtype": case.dtype, "optimizer": case.optimizer, "objective": case.objective, "conv": case.conv,
        "compile_s": round(compile_s, 3),
        "s_per_iter": round(s_per_iter, 5),
        "s_per_iter_min": round(min(times) / iterations, 5),
        "s_per_iter_max": round(max(times) / iterations, 5),
        "image_iterations_per_s": round(case.batch / s_per_iter, 3),
        "evals_per_s": round(sum(evals) / sum(times), 3),
        "evals_per_iter": round(sum(evals) / (iterations * len(times) * case.batch), 4),
        "images_per_s": round(case.batch / s_per_iter / config.iterations, 5),
        "images_per_s_iterations": config.iterations,
        "peak_mem_mb": round(mem_mb, 1), "peak_mem_kind": mem_kind, "repeats": len(times),
        "iterations_per_repeat": iterations,
    }


def _abstract_targets(objective: losses.Objective, hw: tuple[int, int]) -> losses.Targets:
    """Shapes (no data) of the targets for an image of `hw`."""
    shapes = {}
    h, w = hw
    for name, _, cout in vgg.CONV_LAYERS:
        if name.endswith("conv1") and name != "block1_conv1":
            h, w = h // 2, w // 2
        shapes[name] = (h, w, cout)
    f32 = jnp.float32
    return losses.Targets(
        tuple(jax.ShapeDtypeStruct(shapes[n], f32) for n in objective.content_layers),
        tuple(jax.ShapeDtypeStruct((shapes[n][2],) * 2, f32) for n in objective.style_layers),
        jax.ShapeDtypeStruct((len(objective.content_layers),), f32),
        jax.ShapeDtypeStruct((len(objective.style_layers),), f32),
        jax.ShapeDtypeStruct((3,), f32))


def loop_bytes(config: Config, params: dict, size: int) -> int:
    """Bytes XLA's memory analysis gives for the compiled loop at `size` (compiled from shapes
    only, so nothing that large is allocated): temporaries, arguments and outputs."""
    objective = losses.Objective.from_config(config)
    method = solver.Method.from_config(config)
    hw = preprocess.fit_size((3, 4), size)
    variables = vgg.prepare_variables(params)
    loop_variables = losses.network_variables(variables, objective, (*hw, 3))
    x0 = jax.ShapeDtypeStruct((*hw, 3), jnp.float32)
    targets = _abstract_targets(objective, hw)
    _, chunk = solver.compile_loop(x0, variables, loop_variables, targets, jnp.float32(1.0),
                                   objective, method)
    m = chunk.memory_analysis()
    return m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes


def largest_size(config: Config, params: dict, available: int, low: int = 256,
                 high: int = 16384) -> tuple[int, int]:
    """The largest longest side (a multiple of 64, 4:3 images) whose compiled loop fits in
    90% of `available` bytes together with the runtime, and the bytes it needs."""
    budget = 0.9 * available - memory.RUNTIME_BYTES
    best = (0, 0)
    lo, hi = low // 64, high // 64
    while lo <= hi:
        mid = (lo + hi) // 2
        need = loop_bytes(config.replace(size=mid * 64), params, mid * 64)
        if need <= budget:
            best, lo = (mid * 64, need), mid + 1
        else:
            hi = mid - 1
    return best


def time_to_target(begin: Callable, chunk: Callable, compile_s: float, x0: jax.Array,
                   variables: Any, loop_variables: Any, targets: Any, lr: jax.Array,
                   target: float, max_iterations: int) -> dict[str, Any]:
    """Wall time from the initial image until the loss is at most `target`, compile included."""
    t = time.perf_counter()
    state = begin(x0, variables, targets, lr)
    while int(state.iteration) < max_iterations:
        state = _block(chunk(state, jnp.int32(1), loop_variables, targets, lr))
        if float(state.value) <= target or int(state.status) != solver.RUNNING:
            break
    seconds = time.perf_counter() - t
    reached = float(state.value) <= target
    return {"target_loss": target, "target_reached": reached,
            "time_to_target_s": round(compile_s + seconds, 3) if reached else None,
            "target_iterations": int(state.iteration), "target_evaluations": int(state.evaluations)}


def run(cases: Iterable[Case], params: dict, content: str | Path | None = None,
        style: str | Path | None = None, **kwargs: Any) -> Iterable[dict[str, Any]]:
    """Measure each case in turn (images from the given paths, or synthetic ones)."""
    for case in cases:
        if case.batch > 1 or case.devices > 1:
            shape = (case.size, case.size) if case.objective == "peer" else \
                preprocess.fit_size((3, 4), case.size)
            images = [preprocess.resize(synthetic_image(case.size, 10 + i), shape) for i in range(case.batch)]
            s = square_image(style, case.size) if style else synthetic_image(case.size, 2)
            yield run_batch_case(case, params, images, s, iterations=kwargs.get("iterations", 10),
                                 repeats=kwargs.get("repeats", 5))
            continue
        if case.objective == "peer":
            c = square_image(content, case.size) if content else synthetic_image(case.size, 1)
            s = square_image(style, case.size) if style else synthetic_image(case.size, 2)
        else:
            c = (preprocess.resize_longest(imageio.load_image(content), case.size)
                 if content else synthetic_image(case.size, 1))
            s = (preprocess.resize_longest(imageio.load_image(style), case.size)
                 if style else synthetic_image(case.size, 2))
        yield run_case(case, params, c, s, **kwargs)


BATCH_COLUMNS = (("device", "device", "{}"), ("devices", "devices", "{}"), ("batch", "batch", "{}"),
                 ("size", "size", "{}"), ("compile_s", "compile s", "{:.2f}"),
                 ("s_per_iter", "s/iter", "{:.4f}"), ("image_iterations_per_s", "image-its/s", "{:.2f}"),
                 ("evals_per_s", "evals/s", "{:.2f}"), ("images_per_s", "images/s (300 its)", "{:.4f}"),
                 ("peak_mem_mb", "peak MiB", "{:.0f}"))
COLUMNS = (("device", "device", "{}"), ("size", "size", "{}"), ("dtype", "dtype", "{}"),
           ("optimizer", "opt", "{}"), ("conv", "conv", "{}"), ("remat", "remat", "{}"),
           ("compile_s", "compile s", "{:.2f}"), ("s_per_eval", "s/eval", "{:.4f}"), ("s_per_iter", "s/iter", "{:.4f}"),
           ("evals_per_iter", "evals/iter", "{:.2f}"), ("evals_per_s", "evals/s", "{:.2f}"),
           ("flops_per_eval", "GFLOP/eval", "{:.1f}"), ("flops_per_s", "GFLOP/s", "{:.1f}"),
           ("fraction_of_peak", "of peak", "{:.0%}"), ("peak_mem_mb", "peak MiB", "{:.0f}"))


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of benchmark results (batch runs get their own columns)."""
    single = [r for r in rows if "batch" not in r]
    batched = [r for r in rows if "batch" in r]
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

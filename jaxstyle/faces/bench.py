"""Per-iteration throughput and time-to-quality benchmark (`jaxstyle bench`).

Every configuration (device, size, dtype, optimizer, batch, coarse-to-fine schedule) is measured
on the programs a run compiles (`problem.Builder`), so the bench measures what users run:
  - compile_s: compiling them (the targets-and-start program and the loop), `programs` of them;
  - s_per_eval: one loss+gradient evaluation on its own (a jitted `value_and_grad` of the loss
    of the image, as the peers time theirs), median of `repeats`;
  - s_per_iter, s_per_eval_loop, evals_per_iter, evals_per_s: the loop in timed chunks of
    `iterations` (medians, min and max over `repeats` chunks after a 10-iteration warm-up),
    each timed from dispatch to its end: one device sync per chunk, never per iteration;
    iter_over_eval = s_per_iter / s_per_eval is what an iteration costs beyond one evaluation
    (line-search evaluations, the L-BFGS direction, the preconditioner);
  - flops_per_eval (XLA's cost analysis of the loop's body: one evaluation and the L-BFGS
    step), FLOP/s measured inside the loop and, where the device's peak is known, the
    fraction of it; the loop's memory (XLA's analysis) and the peak device or process memory;
  - with a target loss, the whole run as `jaxstyle transfer` makes it (every coarse-to-fine
    stage of the schedule, compiling included, the persistent compilation cache off): the wall
    time until the loss at the full size is at most the target, and the whole run's.
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

from jaxstyle.config import STYLE_LAYERS, Config, resolve
from jaxstyle.images import imageio, preprocess
from jaxstyle.model import vgg
from jaxstyle.platform import memory
from jaxstyle.run.problem import Builder, Layout, build_programs, default_width, forget_programs, loop_variables
from jaxstyle.solver import lbfgs as solver

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
    scales: int = 1  # coarse-to-fine stages of the whole run timed to a target
    run_iterations: int = 0  # iterations of the timed whole run (0: the Config's default)


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
                        remat=case.remat, bucket=1 if case.objective == "peer" else 0, scales=case.scales,
                        iterations=case.run_iterations or None)


def _layout(config: Config, batch: int, shape: tuple[int, int], style_shape: tuple[int, int],
            devices: tuple) -> Layout:
    return Layout(batch, preprocess.bucket(shape, config.bucket), preprocess.bucket(style_shape, config.bucket),
                  1, True, devices, default_width(devices[0].platform, batch // len(devices)))


def run_case(case: Case, params: dict, contents: list[np.ndarray], style: np.ndarray, *,
             iterations: int = 10, repeats: int = 5, target_loss: float | None = None) -> dict[str, Any]:
    """Measure one configuration through the program a run uses (`problem.Builder`): images are
    float RGB 0..255 at the case's size, one per batch slot.

    With `target_loss`, first the whole run (`run_to_target`, compiling from cold). Then the
    loop runs a 10-iteration warm-up (L-BFGS's start-up line searches) and `repeats` chunks of
    `iterations`, each timed from its dispatch to its end (one device sync per chunk), and one
    evaluation is timed on its own.
    """
    config = resolve(_config(case), jax.devices()[0].platform)
    to_target = run_to_target(config, params, contents, style, target_loss) if target_loss is not None else {}
    own_peak = reset_peak_memory()
    n_dev = min(case.devices or jax.device_count(), case.batch)
    if case.batch % n_dev:
        raise ValueError(f"batch {case.batch} is not a multiple of {n_dev} devices")
    devices = tuple(jax.devices()[:n_dev])
    forget_programs()  # compile_s is a cold compile, whatever ran before in this process
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
    alone = evaluation_seconds(problem, xs[0], repeats)
    per_iter = [t / max(k, 1) for t, k in zip(times, its)]
    per_eval = [t / max(e, 1) for t, e in zip(times, evals)]
    s_per_iter, iter_min, iter_max = _median_spread(per_iter)
    s_per_eval_loop = statistics.median(per_eval)
    s_per_eval, eval_min, eval_max = _median_spread(alone)
    device = devices[0]
    peak = peak_flops(device, case.dtype)
    mem_mb, mem_kind = peak_memory_mb(device, own_peak)
    flops_per_s = flops / s_per_eval_loop if math.isfinite(flops) else None
    result: dict[str, Any] = {
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}", "devices": n_dev,
        "size": case.size, "shape": list(contents[0].shape[:2]), "padded_shape": list(layout.shape),
        "batch": case.batch, "dtype": case.dtype, "optimizer": case.optimizer, "objective": case.objective,
        "conv": case.conv, "remat": case.remat,
        "stages": [list(st) for st in config.stages()],
        "winograd_layers": sorted(problem.loop_variables.get("winograd", {})),
        "programs": programs.count, "compile_s": round(compile_s, 3),
        "s_per_eval": round(s_per_eval, 5), "s_per_eval_min": round(eval_min, 5),
        "s_per_eval_max": round(eval_max, 5), "s_per_eval_loop": round(s_per_eval_loop, 5),
        "s_per_iter": round(s_per_iter, 5), "s_per_iter_min": round(iter_min, 5),
        "s_per_iter_max": round(iter_max, 5), "iter_over_eval": round(s_per_iter / (n // n_dev) / s_per_eval, 4),
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
        **to_target,
    }
    return result


def evaluation_seconds(problem: Any, x: np.ndarray, repeats: int) -> list[float]:
    """Seconds of one loss+gradient evaluation of the first image on its own (a jitted
    `value_and_grad` with respect to the image, after one untimed call), `repeats` times."""
    from jaxstyle.objective import losses
    objective = problem.objective
    targets = jax.tree.map(lambda a: a[0], problem.targets)
    x = jax.device_put(preprocess.pad_image(x, problem.layout.shape), problem.layout.devices[0])
    fn = jax.jit(jax.value_and_grad(lambda x, v, t: losses.terms(x, v, t, objective).total))
    jax.block_until_ready(fn(x, problem.loop_variables, targets))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(x, problem.loop_variables, targets))
        times.append(time.perf_counter() - t)
    return times


def run_to_target(config: Config, params: dict, contents: list[np.ndarray], style: np.ndarray,
                  target: float) -> dict[str, Any]:
    """The whole run as `jaxstyle transfer` makes it (the run path: compiling, every coarse-to-fine
    stage of `config`'s schedule), timed from its start: the wall time until the first image's
    loss at the full size is at most `target` (its evaluations and iterations across stages, read
    from the per-iteration trace), and the whole run's time and final loss."""
    from jaxstyle.run import job as job_mod
    from jaxstyle.run.execute import run
    images = [np.asarray(c, np.float32) for c in contents]
    if len(images) == 1:
        job = job_mod.single("transfer", config, images[0], [style], weights=params)
    else:
        job = job_mod.many("transfer", config.replace(batch_size=len(images)), images, [style],
                           weights=params, folder=False)
    forget_programs()  # from cold, as a first run in a fresh process
    t = time.perf_counter()
    results = run(job)
    run_s = time.perf_counter() - t
    r = results[0]
    stages = config.stages()
    final = [row for row in r.trace if row["stage"] == len(stages)]
    hit = next((row for row in final if row["total"] <= target), None)
    per_stage, before = [], 0  # trace rows count evaluations across stages
    for k, (size, its) in enumerate(stages, 1):
        rows = [row for row in r.trace if row["stage"] == k]
        if rows:
            last = rows[-1]
            per_stage.append({"size": size, "iterations": its, "evaluations": last["evaluations"] - before,
                              "loss": last["total"], "seconds_to": last["seconds"]})
            before = last["evaluations"]
    return {"target_loss": target, "target_reached": hit is not None,
            "time_to_target_s": round(hit["seconds"], 3) if hit else None,
            "target_iterations": hit["iteration"] if hit else None,
            "target_evaluations": hit["evaluations"] if hit else None,
            "run_s": round(run_s, 3), "run_compile_s": round(results.compile_seconds, 3),
            "run_final_loss": r.final.get("total"), "run_status": r.status, "run_stages": per_stage}


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
                 ("peak_mem_mb", "peak MiB", "{:.0f}"), ("stages", "stages", "{}"),
                 ("time_to_target_s", "to target s", "{:.1f}"), ("run_s", "run s", "{:.1f}"))
COLUMNS = (("device", "device", "{}"), ("size", "size", "{}"), ("dtype", "dtype", "{}"),
           ("optimizer", "opt", "{}"), ("conv", "conv", "{}"), ("remat", "remat", "{}"),
           ("compile_s", "compile s", "{:.2f}"), ("s_per_eval", "s/eval", "{:.4f}"), ("s_per_iter", "s/iter", "{:.4f}"),
           ("evals_per_iter", "evals/it", "{:.2f}"),
           ("flops_per_eval", "GFLOP/eval", "{:.1f}"), ("flops_per_s", "GFLOP/s", "{:.1f}"),
           ("fraction_of_peak", "of peak", "{:.0%}"), ("peak_mem_mb", "peak MiB", "{:.0f}"),
           ("stages", "stages", "{}"), ("time_to_target_s", "to loss s", "{:.1f}"), ("run_s", "run s", "{:.1f}"))


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of benchmark results (batch runs get their own columns), about 100
    columns wide: what every row shares (device, dtype, ...) is said once above its table, and
    a column no row has a value for is left out (`--json` has every field)."""
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
        if key == "stages":
            v = "+".join(f"{n}@{size}" for size, n in v)
        return fmt.format(v)

    rows = [{**r, "device": device_name(r["device"])} if "device" in r else r for r in rows]
    shared, varying = [], []
    for k, title, f in columns:
        values = {cell(r, k, f) for r in rows}
        if values == {"-"}:
            continue
        if len(values) == 1 and k in _SHARED_ABOVE:
            shared.append(f"{title} {values.pop()}" if k not in ("device", "dtype") else values.pop())
        else:
            varying.append((k, title, f))
    header = [title for _, title, _ in varying]
    body = [[cell(r, k, f) for k, _, f in varying] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = [", ".join(shared)] if shared else []
    lines += ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


# Settings said once above a table when every row has the same.
_SHARED_ABOVE = ("device", "devices", "batch", "size", "dtype", "optimizer", "conv", "remat", "stages")


def device_name(device: str) -> str:
    """`cpu:cpu` -> `cpu`, `tpu:TPU v5 lite` -> `TPU v5 lite`: the kind where there is one."""
    platform, _, kind = str(device).partition(":")
    return kind if kind and kind.lower() != platform.lower() else platform


def to_json(row: dict[str, Any]) -> str:
    """One JSON object per configuration."""
    return json.dumps(row)

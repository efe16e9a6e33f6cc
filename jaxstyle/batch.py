"""Many content images at once: buckets, batches, sharding over JAX devices, several hosts.

Images whose working shape is the same share one compiled program, which runs each image's
own loop (losses, L-BFGS state, line search, stopping point) in turn on a device, so its
result is the one it would get alone, to float32 rounding (XLA fuses the loop a little
differently inside the batch program; over 4 devices the results equal 1 device's exactly). Different shapes
form buckets, each compiled once (a bucket's last batch is padded to the same size). A batch
is sharded over the visible devices along a `Mesh` axis named "batch". On several hosts
(after `jax.distributed.initialize()`), each process takes its share of the inputs and uses
its own devices: the work is independent per image, so no data crosses hosts.
"""
from __future__ import annotations

import glob
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import imageio, losses, output, preprocess, solver, vgg
from . import weights as weights_mod
from .config import Config
from .errors import ConfigError, InputError, JaxstyleError
from .pipeline import _initial_image, _rgb, _style_size, check_memory

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif")
MAX_AUTO_BATCH = 8


@dataclass(frozen=True)
class BatchProgress:
    """Passed to the progress callback: images finished and the current batch's iteration."""

    images_done: int
    images_total: int
    bucket: tuple[int, int]
    batch_images: int
    iteration: int
    iterations: int
    seconds: float


@dataclass
class BatchResult:
    """What a batch run did, image by image."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # outputs that already existed
    failed: list[tuple[Path, str]] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0
    evaluations: int = 0
    compile_seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return len(self.written) / self.seconds if self.seconds else 0.0


def is_batch_spec(spec: str) -> bool:
    """A directory or a glob pattern names many content images."""
    return Path(spec).is_dir() or any(c in str(spec) for c in "*?[")


def collect(spec: str) -> list[Path]:
    """The image files a directory holds or a glob pattern matches, sorted."""
    if Path(spec).is_dir():
        paths = [p for p in Path(spec).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    else:
        paths = [Path(p) for p in glob.glob(str(spec)) if Path(p).suffix.lower() in IMAGE_SUFFIXES]
    paths = sorted(p for p in paths if p.is_file())
    if not paths:
        raise InputError(f"{spec}: no image files ({', '.join(IMAGE_SUFFIXES)}) found")
    return paths


def share(items: Sequence[Any], process_index: int, process_count: int) -> list[Any]:
    """This process's share of the work: every process_count-th item, from its index."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process index {process_index} out of range for {process_count} processes")
    return list(items[process_index::process_count])


def output_for(path: Path, outdir: Path, suffix: str) -> Path:
    """Where an input's result goes: OUTDIR/<input stem><suffix>."""
    return outdir / f"{path.stem}{suffix}"


def batch_size_for(config: Config, hw: tuple[int, int], requested: int, devices: int,
                   count: int) -> int:
    """The batch size for a bucket: the requested one, or (0) the largest that fits in memory
    (at most MAX_AUTO_BATCH per device and no more than the bucket needs), a multiple of the
    device count."""
    limit = requested or MAX_AUTO_BATCH * devices
    limit = min(limit, math.ceil(count / devices) * devices) if not requested else limit
    size = max(devices, limit // devices * devices)
    if requested:
        check_memory(config, hw, batch=size // devices)
        return size
    while size > devices:
        try:
            check_memory(config, hw, batch=size // devices)
            return size
        except ConfigError:
            size -= devices
    check_memory(config, hw, batch=1)
    return devices


def run_batch(config: Config, contents: Sequence[Path], styles: Sequence[Any], outdir: str | os.PathLike,
              *, weights: str | os.PathLike | Mapping | None = None,
              style_blend: Sequence[float] | None = None, batch_size: int = 0,
              devices: int = 0, suffix: str = ".png", quality: int = 95, bits: int = 8,
              progress: Callable[[BatchProgress], None] | None = None,
              message: Callable[[str], None] | None = None,
              should_stop: Callable[[], bool] | None = None,
              download_progress: Callable[[int, int], None] | None = None) -> BatchResult:
    """Stylize every image in `contents` with `styles`, writing OUTDIR/<stem><suffix>.

    Outputs that already exist are skipped (so a preempted job resumes); an image that cannot
    be read, does not fit, or whose loss becomes non-finite is reported and skipped.
    """
    notify = message or (lambda _m: None)
    report = progress or (lambda _p: None)
    if config.scales > 1 or config.preserve_colors != "none":
        raise ConfigError("--scales and --preserve-colors are not available for folders of images "
                          "yet; run those images one by one")
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"{outdir}: exists and is not a directory; give a directory for a batch run")
    if not outdir.parent.is_dir():
        raise InputError(f"{outdir}: parent directory {outdir.parent} does not exist")
    outdir.mkdir(exist_ok=True)
    output.check_output(outdir / f"probe{suffix}", tuple(contents) + tuple(styles), bits=bits)
    result = BatchResult()
    todo = []
    for path in contents:
        target = output_for(path, outdir, suffix)
        (result.skipped if target.exists() else todo).append(path)

    # Styles (shared by every image) and the weights, once.
    style_srcs = [imageio.as_rgb(s, f"style {i + 1}") for i, s in enumerate(styles)]
    style_size, style_what = _style_size(config)
    style_rgbs = [preprocess.resize_longest(src, style_size, str(s), style_what)
                  for s, src in zip(styles, style_srcs)]
    if isinstance(weights, Mapping):
        params = weights
    else:
        params, info = weights_mod.load(weights, progress=download_progress)
        if info.warning:
            notify(f"warning: {info.warning}")
    variables = vgg.prepare_variables(params)
    objective = losses.Objective.from_config(config)
    method = solver.Method.from_config(config)
    style, style_coeffs = losses.style_targets(variables, config, objective,
                                               [preprocess.to_vgg(s) for s in style_rgbs], style_blend)
    term_weights = jnp.asarray([config.content_weight, config.style_weight, config.tv_weight], jnp.float32)

    # Decode, check and bucket the content images by their working shape.
    buckets: dict[tuple[int, int], list[tuple[Path, np.ndarray]]] = defaultdict(list)
    for path in todo:
        try:
            rgb = imageio.load_image(path)
            hw = preprocess.check_size(rgb.shape[:2], config.size, str(path))
        except JaxstyleError as e:
            result.failed.append((path, e.message))
            notify(f"skipped {e.message}")
            continue
        buckets[hw].append((path, rgb))

    n_dev = min(devices or len(jax.local_devices()), len(jax.local_devices()))
    mesh = Mesh(np.array(jax.local_devices()[:n_dev]), ("batch",))
    per_image = NamedSharding(mesh, PartitionSpec("batch"))
    shared = NamedSharding(mesh, PartitionSpec())
    lr = jnp.float32(config.learning_rate)
    t_start = time.perf_counter()
    done_images = len(result.skipped)
    total_images = len(contents)
    for hw, items in sorted(buckets.items()):
        try:
            size = batch_size_for(config, hw, batch_size, n_dev, len(items))
        except ConfigError as e:
            for path, _ in items:
                result.failed.append((path, f"{path}: {e.message}"))
            notify(f"skipped {len(items)} image(s) of {hw[1]}x{hw[0]}: {e.message}")
            continue
        compiled = None
        loop_variables = jax.device_put(
            losses.network_variables(variables, objective, (size // n_dev, *hw, 3)), shared)
        plain_variables = jax.device_put(variables, shared)
        for first in range(0, len(items), size):
            group = items[first:first + size]
            padded = group + [group[-1]] * (size - len(group))  # same shape: one compilation
            rgbs = [preprocess.resize(rgb, hw) for _, rgb in padded]
            content, coeffs = losses.content_targets(variables, config, objective,
                                                     np.stack([preprocess.to_vgg(c) for c in rgbs]))
            targets = losses.Targets(jax.device_put(content, per_image), jax.device_put(style, shared),
                                     jax.device_put(coeffs, per_image),
                                     jax.device_put(style_coeffs, shared),
                                     jax.device_put(term_weights, shared))
            x0 = np.stack([preprocess.to_vgg(_initial_image(config, hw, c, style_rgbs)) for c in rgbs])
            x0 = jax.device_put(jnp.asarray(x0), per_image)
            if compiled is None:
                t = time.perf_counter()
                compiled = solver.compile_loop(x0, plain_variables, loop_variables, targets, lr,
                                               objective, method, batched=True, mesh=mesh)
                result.compile_seconds += time.perf_counter() - t
            begin, chunk = compiled
            state = jax.device_put(begin(x0, plain_variables, targets, lr), per_image)
            it = 0
            while it < config.iterations and not (should_stop and should_stop()):
                n = min(max(1, config.iterations // 20), config.iterations - it)
                state = chunk(state, jnp.int32(n), loop_variables, targets, lr)
                it += n  # every image still running did n more iterations
                report(BatchProgress(done_images, total_images, hw, len(group), it, config.iterations,
                                     time.perf_counter() - t_start))
                if not bool(jnp.any(state.status == solver.RUNNING)):
                    break
            if should_stop and should_stop() and it < config.iterations:
                result.interrupted = True
                break
            images = _rgb(solver.image(state, method))
            status = np.asarray(state.status)
            result.evaluations += int(np.sum(np.asarray(state.evaluations)[:len(group)]))
            for i, (path, _) in enumerate(group):
                if status[i] == solver.NONFINITE:
                    msg = f"{path}: the loss became NaN or infinite; try lower weights"
                    result.failed.append((path, msg))
                    notify(f"skipped {msg}")
                    continue
                result.written.append(output.write_image(images[i], output_for(path, outdir, suffix),
                                                         quality, bits=bits))
                done_images += 1
            report(BatchProgress(done_images, total_images, hw, len(group), config.iterations,
                                 config.iterations, time.perf_counter() - t_start))
        if result.interrupted:
            break
    result.seconds = time.perf_counter() - t_start
    return result

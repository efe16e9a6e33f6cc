"""One run, one image or a thousand: job -> shape buckets and batches -> stages -> the loop
driver -> results.

Images whose padded shapes agree at every stage form a group; a group runs in batches of one
compiled layout (`problem.Builder` compiles each layout once); each batch goes through the
coarse-to-fine stages, each stage starting from the previous result upsampled. Observers
(snapshots, GIF frames, the trace, checkpoints) watch every image the same way whatever the
batch. A single image is a group of one.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from jaxstyle.config import RUN_ONLY, Config, resolve
from jaxstyle.errors import ConfigError, InputError, JaxstyleError, OutputError
from jaxstyle.images import imageio, masks, preprocess
from jaxstyle.model import vgg
from jaxstyle.model import weights as weights_mod
from jaxstyle.observers.results import Note, Progress, Result, Results
from jaxstyle.platform import memory
from jaxstyle.platform.devices import accelerator_notes, describe
from jaxstyle.platform.devices import select as select_devices
from jaxstyle.run import inputs
from jaxstyle.run.batch import Runner
from jaxstyle.run.job import Item, Job, shares_styles
from jaxstyle.run.problem import Builder, default_width, memory_need
from jaxstyle.run.resuming import Resumed, result_note
from jaxstyle.run.resuming import find as find_checkpoint

MAX_AUTO_BATCH = 8  # images per device a folder batch holds at most on an accelerator
# On a TPU, one image per core: by XLA:TPU's cost model two 256x256 images side by side cost
# 7.82 ms per iteration against 3.23 ms for one (bench/README.md, "The TPU stopwatch").
MAX_AUTO_BATCH_TPU = 1


@dataclass
class _Plan:
    """One image's way through the run."""

    index: int
    item: Item
    hws: list[tuple[int, int]]  # real (h, w) at each stage
    style_shapes: list[tuple[int, int]]  # source shapes of its styles
    resumed: Resumed | None = None
    sources: inputs.Sources | None = None  # decoded up front for a single image

    def key(self, config: Config, shared: bool) -> tuple:
        b = config.bucket
        styles = []
        for size, _ in config.stages():
            longest, _ = inputs.style_size(config, size)
            shapes = [preprocess.bucket(preprocess.fit_size(s, longest), b) for s in self.style_shapes]
            styles.append(tuple(max(d) for d in zip(*shapes)))
        start = self.resumed.stage if self.resumed else 0
        return (tuple(preprocess.bucket(hw, b) for hw in self.hws), tuple(styles), shared, start)


def run(job: Job, *, progress: Callable[[Progress], None] | None = None,
        message: Callable[[str], None] | None = None, should_stop: Callable[[], bool] | None = None,
        download_progress: Callable[[int, int], None] | None = None, builders: dict | None = None) -> Results:
    """Make every image of `job`; one Result per item, in order. `builders`: where runs of one
    process keep their `Builder`s for the next run of the same settings and weights (a video's
    frames), so the network's variables are prepared and put on the devices once, and the
    shapes that passed the memory check (not checked again: they ran)."""
    started = time.perf_counter()
    notify = message or (lambda _m: None)
    devices = tuple(select_devices(job.config.device))
    devices = devices[: job.config.devices or len(devices)]
    for note in accelerator_notes(list(devices)):
        notify(note)
    if job.config.split_image and len(devices) == 1:
        notify(f"warning: --split-image has one {devices[0].platform} device to split over, so each image runs "
               "whole (a CPU splits with XLA_FLAGS=--xla_force_host_platform_device_count=N)")
    config = resolve(job.config, devices[0].platform)
    results: list[Result | None] = [None] * len(job.items)
    plans: list[_Plan] = []
    conflicts: list[Path] = []
    for i, item in enumerate(job.items):
        try:
            if item.output is not None and item.output.exists() and \
                    not (item.checkpoint and item.checkpoint.exists()):
                done = _existing(job, config, item)
                if done is None:
                    conflicts.append(item.output)
                    continue
                if done:
                    results[i] = Result(item.name, None, job.mode, config, "skipped", output=item.output)
                    continue
            plan = _plan(job, config, i, item)
            if job.folder and plan.resumed and plan.resumed.finished(config) and item.output.exists():
                results[i] = Result(item.name, None, job.mode, config, "skipped", output=item.output)
                continue
            plans.append(plan)
        except JaxstyleError as e:
            if not job.folder:
                raise
            results[i] = _failed(job, config, item, e.message)
            notify(f"skipped {e.message}")
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise InputError(f"{conflicts[0]}{more}: already there, made with other settings or inputs (or not by "
                         "jaxstyle); --overwrite makes them again with these, --skip-existing keeps them")
    shared = shares_styles(job, config)
    groups: dict[tuple, list[_Plan]] = {}
    for p in plans:
        groups.setdefault(p.key(config, shared), []).append(p)
    if job.config.lbfgs_memory == 0 and config.optimizer == "lbfgs" and groups:
        config = _history_by_memory(config, list(groups), devices, notify)
    sizes = {k: _batch_size(config, k, len(g), devices) for k, g in groups.items()}
    # A shape an earlier run with the same kept builder ran (a video's earlier frame) fits: a
    # later frame is not refused for memory another process took meanwhile.
    ran = builders.setdefault("fitted", set()) if builders is not None else set()
    settings = config.replace(**{k: getattr(Config(), k) for k in RUN_ONLY})
    for key, group in list(groups.items()):  # every size is checked before any work
        if (settings, key, sizes[key]) in ran:
            continue
        try:
            _check_memory(config, key, sizes[key], devices)
            ran.add((settings, key, sizes[key]))
        except JaxstyleError as e:
            if not job.folder:
                raise
            for p in groups.pop(key):
                results[p.index] = _failed(job, config, p.item, e.message)
            notify(f"skipped {len(group)} image(s): {e.message}")
    if not groups:
        return Results(r for r in results if r is not None)
    params, weights_sha, weights_path = _weights(job, notify, download_progress)
    for p in plans:  # a folder's output folders are made only once the run is known to start
        for path in (p.item.output, p.item.gif, p.item.trace):
            if path is not None:
                path.parent.mkdir(exist_ok=True)
    total = sum(n for _, n in config.stages())
    for p in plans:
        if p.resumed is not None:
            p.resumed.check_weights(weights_sha)
            notify(Note(f"{p.item.name}: resumed at iteration {p.resumed.iteration} of {total} "
                        f"from {p.resumed.path.name}"))
    builder = _builder(config, settings, params, job.regions, builders)
    compiled, programs = builder.compile_seconds, sum(p.count for p in builder.programs.values())
    runner = Runner(job, config, builder, results, progress or (lambda _p: None), notify,
                    should_stop, weights_sha, weights_path, total=len(job.items), devices=devices,
                    device=describe(devices[0]) + (f" x{len(devices)}" if len(devices) > 1 else ""),
                    started=started)
    for key, group in groups.items():
        size = sizes[key]
        for first in range(0, len(group), size):
            if runner.stopped:
                for p in group[first:]:
                    results[p.index] = Result(p.item.name, None, job.mode, config, "interrupted")
                continue
            try:
                runner.batch(group[first:first + size], size, _devices_for(size, devices, config.split_image))
            except OutputError as e:  # the API returns the finished images with the error's message
                e.results = Results(r for r in results if r is not None)
                raise
    out = Results(r for r in results if r is not None)
    out.compile_seconds, out.seconds = builder.compile_seconds - compiled, runner.elapsed
    out.programs = sum(p.count for p in builder.programs.values()) - programs
    return out


def _builder(config: Config, settings: Config, params: Any, regions: int, kept: dict | None) -> Builder:
    """A Builder for `config`, or the one an earlier run with `kept` made for the same `settings`
    (`config` without those that only decide where a run stops) and the same weights."""
    if kept is None:
        return Builder(config, vgg.prepare_variables(params), regions)
    key = (settings.replace(scales=1), regions, id(params))
    if key not in kept:
        for old in [k for k in kept if k != "fitted"]:  # one set of settings at a time: the device
            del kept[old]                               # copies of the weights go with it
        kept[key] = Builder(config, vgg.prepare_variables(params), regions)
    return kept[key]


def _existing(job: Job, config: Config, item: Item) -> bool | None:
    """For a result file already there (without a checkpoint): True to keep it (skip the
    image), False to make it again, None for a folder's result made with other settings (the
    run refuses to start)."""
    if job.existing != "check":
        return job.existing == "skip"
    if not job.folder:
        return False  # one image named by its own -o is made again (atomically replaced)
    return True if imageio.read_note(item.output) == result_note(job, config, item) else None


def _plan(job: Job, config: Config, index: int, item: Item) -> _Plan:
    resumed = find_checkpoint(job, config, item)
    if job.folder:  # headers only: a folder's images are decoded batch by batch
        content = imageio.image_size(item.content) if item.content is not None else None
        styles = [content if masks.is_keep(s) else
                  imageio.image_size(s) if isinstance(s, (str, Path)) else imageio.as_rgb(s).shape[:2]
                  for s in item.styles]
        sources = None
    else:
        sources = inputs.decode(item, config)
        content = sources.content.shape[:2] if sources.content is not None else None
        styles = [s.shape[:2] for s in sources.styles]
    hws = inputs.check_sizes(item, (content, styles), config)
    return _Plan(index, item, hws, styles, resumed, sources)


def _failed(job: Job, config: Config, item: Item, why: str) -> Result:
    return Result(item.name, None, job.mode, config, "failed", message=why, output=item.output)


def _batch_size(config: Config, key: tuple, count: int, devices: tuple) -> int:
    """Images per batch: the requested number, or as many as the memory estimate allows (one per
    device on a CPU, where images run one after another anyway), a multiple of the devices."""
    n = len(devices)
    if config.split_image:
        return 1  # each image is split over every device
    if config.batch_size:
        return max(config.batch_size, 1)
    if devices[0].platform == "cpu":
        return min(n, count)
    per = MAX_AUTO_BATCH_TPU if devices[0].platform == "tpu" else MAX_AUTO_BATCH
    while per > 1:
        try:
            _check_memory(config, key, per * n, devices)
            break
        except ConfigError:
            per -= 1
    return min(per * n, math.ceil(count / n) * n)


def _history_by_memory(config: Config, keys: list, devices: tuple, notify: Callable[[str], None]) -> Config:
    """The automatic L-BFGS history, shortened (30, 20, 10, 5 pairs) while one image of every
    group would not fit its device with it; unchanged when none fits (the check then refuses)."""
    start = config.lbfgs_memory
    for history in (start, *(h for h in (30, 20, 10, 5) if h < start)):
        candidate = config.replace(lbfgs_memory=history)
        try:
            for key in keys:
                _check_memory(candidate, key, 1, devices)
        except ConfigError:
            continue
        if history != start:
            notify(f"L-BFGS history {history} pairs instead of {start}: {start} would not fit in the device's "
                   "memory (--lbfgs-memory N sets it)")
        return candidate
    return config


def _devices_for(size: int, devices: tuple, split: bool = False) -> tuple:
    if split:
        return devices
    n = max(d for d in range(1, min(len(devices), size) + 1) if size % d == 0)
    return devices[:n]


def _check_memory(config: Config, key: tuple, size: int, devices: tuple) -> memory.Estimate:
    used = _devices_for(size, devices, config.split_image)
    shape = key[0][-1]
    if config.tile:  # the full-resolution stage holds one tile at a time (per device)
        shape = tuple(min(d, preprocess.bucket((config.tile, config.tile), config.bucket)[0]) for d in shape)
        shape = max(shape, key[0][-2] if len(key[0]) > 1 else shape, key=lambda s: s[0] * s[1])
    local = max(size // len(used), 1)
    need = memory_need(config, shape, local, default_width(used[0].platform, local), used[0].platform,
                       len(used) if config.split_image else 1)
    kind = getattr(used[0], "device_kind", "") or used[0].platform
    name = used[0].platform if kind == used[0].platform else f"{used[0].platform} ({kind})"
    memory.check(need, config.size, memory.available(used[0]), name,
                 "use a smaller --size" if config.remat else "use a smaller --size or --remat")
    return need


def _weights(job: Job, notify, download_progress) -> tuple[Any, str | None, str | None]:
    if isinstance(job.weights, Mapping):
        return job.weights, None, None
    params, info = weights_mod.load(job.weights, progress=download_progress)
    if info.warning:
        notify(f"warning: {info.warning}")
    if info.note:
        notify(Note(info.note))
    return params, info.sha256, str(info.path.resolve())


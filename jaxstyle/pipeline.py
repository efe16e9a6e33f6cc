"""One run, start to finish: images -> preprocessing -> VGG targets -> solver -> output files.

`run` is what the CLI and the Python API call; `resume` continues from a checkpoint. Both
validate everything they can before any heavy work (settings, output path, images, weights),
compile the loop explicitly, then run it in chunks, reporting progress and writing
snapshots and checkpoints between chunks.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import checkpoint as ckpt_mod
from . import imageio, losses, memory, output, preprocess, solver, vgg, weights as weights_mod
from .config import INITS, MODES, RUN_ONLY, Config
from .errors import ConfigError, InputError
from .losses import Objective
from .solver import Method

ImageLike = Any  # a path, a PIL image or an array


@dataclass(frozen=True)
class Progress:
    """A progress report, passed to the `progress` callback between chunks."""

    phase: str  # "compile", "optimize" or "done"
    iteration: int
    iterations: int
    evaluations: int
    loss: float  # total loss at the current image
    terms: Mapping[str, float] | None  # latest per-term losses (from a forward pass)
    terms_iteration: int  # iteration at which `terms` were measured
    elapsed: float  # seconds since optimization started (compilation excluded)
    seconds_per_iteration: float | None
    stage: int = 1  # coarse-to-fine stage, from 1
    stages: int = 1
    size: int = 0  # longest side in this stage


@dataclass
class Result:
    """The outcome of a run: the image (float RGB 0..255) and how it was reached."""

    image: np.ndarray
    mode: str
    config: Config
    status: str  # "done", "stalled", "non-finite" or "interrupted"
    iterations: int
    evaluations: int
    initial: dict[str, float]
    final: dict[str, float]
    compile_seconds: float
    seconds: float  # optimization wall time, compilation excluded
    trace: list[dict] = field(default_factory=list)
    output: Path | None = None
    snapshots: list[Path] = field(default_factory=list)
    checkpoint: Path | None = None
    gif: Path | None = None
    trace_file: Path | None = None
    message: str | None = None
    raw: np.ndarray | None = field(default=None, repr=False)  # before colour recombination

    @property
    def seconds_per_iteration(self) -> float:
        return self.seconds / max(self.iterations, 1)

    @property
    def evaluations_per_iteration(self) -> float:
        return self.evaluations / max(self.iterations, 1)

    def to_pil(self):
        """The image as a PIL RGB image."""
        from PIL import Image
        return Image.fromarray(imageio.to_uint8(self.image), "RGB")


@dataclass
class Problem:
    """Everything the solver needs, built from the inputs by `prepare`."""

    mode: str
    config: Config
    objective: Objective
    method: Method
    variables: Any
    targets: losses.Targets
    x0: np.ndarray  # initial image, network input space
    inputs: dict[str, Any]  # paths (or None for in-memory images) and the style blend
    input_sha256: dict[str, str]  # input name -> SHA-256 of its file or array
    weights_sha256: str | None
    weights_path: str | None
    finish: Callable[[np.ndarray], np.ndarray] | None = None  # applied to every written image


def _terms_dict(t: losses.Terms) -> dict[str, float]:
    return {k: float(v) for k, v in t._asdict().items()}


def _name(image: ImageLike, default: str) -> str:
    return str(image) if isinstance(image, (str, os.PathLike)) else default


def _sha256(image: ImageLike) -> str:
    if isinstance(image, (str, os.PathLike)):
        return ckpt_mod.file_sha256(image)
    return hashlib.sha256(np.ascontiguousarray(imageio.as_rgb(image)).tobytes()).hexdigest()


def input_hashes(content: ImageLike | None, styles: Sequence[ImageLike], config: Config) -> dict[str, str]:
    """SHA-256 of every input (files' bytes, or in-memory images' pixels), by role."""
    named = {"content": content} if content is not None else {}
    named.update({f"style{i + 1}": s for i, s in enumerate(styles)})
    if config.init not in INITS:
        named["init"] = config.init
    return {k: _sha256(v) for k, v in named.items()}


def prepare(mode: str, config: Config, content: ImageLike | None = None,
            styles: Sequence[ImageLike] = (), *,
            weights: str | os.PathLike | Mapping | None = None,
            style_blend: Sequence[float] | None = None,
            message: Callable[[str], None] | None = None,
            download_progress: Callable[[int, int], None] | None = None,
            init_image: np.ndarray | None = None,
            weights_info: tuple[str | None, str | None] = (None, None)) -> Problem:
    """Load and check images and weights, and build the targets and the initial image.

    `init_image` (RGB, any size) overrides `config.init`: a coarse stage's result, say.
    `weights_info` gives (sha256, path) when `weights` are already-loaded parameters.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    styles = tuple(styles)
    _check_inputs(mode, config, content, styles, style_blend)
    notify = message or (lambda _msg: None)

    # Images, resized to the working size; the result takes the content's aspect ratio. The
    # memory check comes first, so an impossible size fails before any large allocation.
    content_src = imageio.as_rgb(content, "content") if content is not None else None
    style_srcs = [imageio.as_rgb(s, f"style {i + 1}") for i, s in enumerate(styles)]
    first = content_src if content_src is not None else style_srcs[0]
    check_memory(config, preprocess.fit_size(first.shape[:2], config.size))
    content_rgb = (preprocess.resize_longest(content_src, config.size, _name(content, "content"))
                   if content_src is not None else None)
    style_size, style_what = _style_size(config)
    style_rgbs = [preprocess.resize_longest(src, style_size, _name(s, f"style {i + 1}"), style_what)
                  for i, (s, src) in enumerate(zip(styles, style_srcs))]
    content_rgb, style_rgbs = _colors(config, content_rgb, style_rgbs)
    hw = content_rgb.shape[:2] if content_rgb is not None else \
        preprocess.fit_size(style_srcs[0].shape[:2], config.size)
    if init_image is not None:
        x0 = preprocess.resize(init_image, hw)
    else:
        x0 = _initial_image(config, hw, content_rgb, style_rgbs)

    # Weights, then targets (content activations, blended style Gram matrices).
    weights_sha256, weights_path = weights_info
    if isinstance(weights, Mapping):
        params = weights
    else:
        params, info = weights_mod.load(weights, progress=download_progress)
        weights_sha256, weights_path = info.sha256, str(info.path.resolve())
        if info.warning:
            notify(f"warning: {info.warning}")
    variables = vgg.prepare_variables(params)
    objective = Objective.from_config(config)
    targets = losses.make_targets(
        variables, config, objective,
        preprocess.to_vgg(content_rgb) if content_rgb is not None else None,
        [preprocess.to_vgg(s) for s in style_rgbs], style_blend)

    inputs = {"content": _name(content, None) if content is not None else None,
              "styles": [_name(s, None) for s in styles],
              "style_blend": list(style_blend) if style_blend is not None else None}
    finish = None
    if config.preserve_colors == "luminance" and content_src is not None:
        from . import color
        original = preprocess.resize_longest(content_src, config.size)

        def finish(rgb: np.ndarray) -> np.ndarray:
            return color.recombine(rgb, original)

    return Problem(mode, config, objective, Method.from_config(config), variables, targets,
                   preprocess.to_vgg(x0), inputs, input_hashes(content, styles, config),
                   weights_sha256, weights_path, finish)


def memory_need(config: Config, hw: tuple[int, int], batch: int = 1) -> memory.Estimate:
    """The memory a run of `config` on (hw) images, `batch` per device, needs on this device."""
    objective = Objective.from_config(config)
    plan = vgg.winograd_plan(objective.layers, (batch, *hw, 3), objective.conv,
                             jax.devices()[0].platform, objective.dtype)
    return memory.estimate(hw, objective.layers, lbfgs_memory=config.lbfgs_memory,
                           optimizer=config.optimizer, dtype=config.dtype, winograd=bool(plan),
                           batch=batch, remat=config.remat)


def check_memory(config: Config, hw: tuple[int, int], batch: int = 1) -> memory.Estimate:
    """Estimate the run's memory and refuse, with the estimate, when the device lacks it."""
    device = jax.devices()[0]
    need = memory_need(config, hw, batch)
    kind = getattr(device, "device_kind", "") or device.platform
    name = device.platform if kind == device.platform else f"{device.platform} ({kind})"
    memory.check(need, config.size, memory.available(device), name,
                 "use a smaller --size" if config.remat else "use a smaller --size or --remat")
    return need


@dataclass
class Outputs:
    """Where a run writes, and how."""

    path: Path | None = None  # the result image
    gif: Path | None = None  # an animation of the snapshots
    trace: Path | None = None  # a JSON trace of every iteration
    quality: int = 95
    bits: int = 8


def run(mode: str, config: Config, content: ImageLike | None = None,
        styles: Sequence[ImageLike] = (), *, output_path: str | os.PathLike | None = None,
        weights: str | os.PathLike | Mapping | None = None,
        style_blend: Sequence[float] | None = None,
        progress: Callable[[Progress], None] | None = None,
        message: Callable[[str], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        download_progress: Callable[[int, int], None] | None = None,
        quality: int = 95, bits: int = 8, gif_path: str | os.PathLike | None = None,
        trace_path: str | os.PathLike | None = None) -> Result:
    """Optimize an image for `mode` ("transfer", "content" or "style") under `config`.

    With `config.scales` > 1 the run goes coarse to fine: each stage starts from the previous
    stage's result, upsampled. Snapshots, the trace and the GIF number iterations across stages.
    """
    outputs = _check_outputs(config, content, styles, output_path, gif_path, trace_path, quality, bits)
    return _stages(mode, config, content, styles, outputs, weights=weights, style_blend=style_blend,
                   progress=progress, message=message, should_stop=should_stop,
                   download_progress=download_progress)


def _check_outputs(config, content, styles, output_path, gif_path, trace_path, quality, bits) -> Outputs:
    inputs = tuple(x for x in (content, *styles, config.init) if isinstance(x, (str, os.PathLike)))
    paths = []
    for p in (output_path, gif_path, trace_path):
        paths.append(None if p is None else check_path(p, inputs))
    if paths[0] is not None:
        output.check_output(paths[0], inputs, bits=bits)
    if paths[1] is not None and paths[1].suffix.lower() != ".gif":
        raise InputError(f"{paths[1]}: --gif needs a .gif file name")
    if len({p for p in paths if p is not None}) < len([p for p in paths if p is not None]):
        raise InputError("the output, --gif and --trace paths must differ")
    return Outputs(paths[0], paths[1], paths[2], quality, bits)


def check_path(path: str | os.PathLike, inputs: tuple) -> Path:
    """An output path whose directory is writable and which is not an input."""
    from .files import check_output_path
    return check_output_path(path, inputs)


def _stages(mode: str, config: Config, content, styles, outputs: Outputs, *, weights, style_blend,
            progress, message, should_stop, download_progress,
            resume_from: ckpt_mod.Checkpoint | None = None) -> Result:
    """Run every coarse-to-fine stage (from the checkpoint's stage when resuming)."""
    stages = config.stages()
    first_stage = resume_from.stage if resume_from is not None else 0
    # Everything that can be checked cheaply is checked before weights are loaded (or fetched):
    # the settings, every image (decoded once here), and whether the largest stage fits.
    _check_inputs(mode, config, content, styles, style_blend)
    srcs = [imageio.as_rgb(s, f"style {i + 1}") for i, s in enumerate(styles)]
    first = imageio.as_rgb(content, "content") if content is not None else srcs[0]
    smallest = config.replace(size=config.stages()[0][0], scales=1, scale_iterations=())
    if content is not None:
        preprocess.check_size(first.shape[:2], smallest.size, _name(content, "content"))
    style_size, style_what = _style_size(smallest)
    for i, (s, src) in enumerate(zip(styles, srcs)):
        preprocess.check_size(src.shape[:2], style_size, _name(s, f"style {i + 1}"), style_what)
    if config.init not in INITS:
        _initial_image(config, (16, 16), None, [])  # the --init file exists and decodes
    check_memory(config, preprocess.fit_size(first.shape[:2], config.size))
    weights_info: tuple[str | None, str | None] = (None, None)
    if not isinstance(weights, Mapping):  # load (and hash) once for every stage
        weights, info = weights_mod.load(weights, progress=download_progress)
        weights_info = (info.sha256, str(info.path.resolve()))
        if info.warning and message:
            message(f"warning: {info.warning}")
    frames: list[tuple[int, np.ndarray]] = []
    trace: list[dict] = []
    results: list[Result] = []
    previous: np.ndarray | None = None
    offset = resume_from.offset if resume_from is not None else (0, 0)
    done = offset
    for k in range(first_stage, len(stages)):
        size, iterations = stages[k]
        stage_config = config.replace(size=size, iterations=iterations, scales=1, scale_iterations=())
        problem = prepare(mode, stage_config, content, styles, weights=weights,
                          style_blend=style_blend, message=message,
                          init_image=previous, weights_info=weights_info)
        result = optimize(problem, outputs=outputs, progress=progress, should_stop=should_stop,
                          resume_from=resume_from if k == first_stage else None,
                          stage=k, run_config=config, offset=offset,
                          last_stage=k == len(stages) - 1, frames=frames, trace=trace)
        results.append(result)
        done = (offset[0] + result.iterations, offset[1] + result.evaluations)
        if result.status in ("interrupted", "non-finite"):
            break
        previous, offset = result.raw, done
    final = results[-1]
    final.iterations, final.evaluations = done
    final.initial = results[0].initial
    final.compile_seconds = sum(r.compile_seconds for r in results)
    final.seconds = sum(r.seconds for r in results)
    final.trace = trace
    final.config = config
    final.snapshots = [s for r in results for s in r.snapshots]
    if outputs.gif is not None and frames:
        final.gif = output.write_gif(frames, outputs.gif)
    if outputs.trace is not None:
        final.trace_file = output.write_trace(trace, outputs.trace, mode=mode, config=config,
                                              status=final.status)
    return final


def resume(checkpoint_path: str | os.PathLike, *, output_path: str | os.PathLike | None = None,
           weights: str | os.PathLike | Mapping | None = None,
           config: Config | None = None, changes: Mapping[str, Any] | None = None,
           content: ImageLike | None = None, styles: Sequence[ImageLike] | None = None,
           progress: Callable[[Progress], None] | None = None,
           message: Callable[[str], None] | None = None,
           should_stop: Callable[[], bool] | None = None,
           download_progress: Callable[[int, int], None] | None = None,
           quality: int = 95, bits: int = 8, gif_path: str | os.PathLike | None = None,
           trace_path: str | os.PathLike | None = None) -> Result:
    """Continue a checkpointed run; the result equals that of an uninterrupted run.

    Inputs come from the checkpoint (or `content`/`styles` for runs that used in-memory
    images) and must be unchanged. Only settings that do not change the optimization's path
    (`config.RUN_ONLY`: iterations, snapshot and checkpoint intervals) may differ: give them
    in `changes`, or give the whole `config`, which must otherwise equal the checkpoint's.
    """
    ck = ckpt_mod.load(checkpoint_path)
    if config is not None:
        for f in dataclasses.fields(Config):
            mine, theirs = getattr(config, f.name), getattr(ck.config, f.name)
            if f.name not in RUN_ONLY and mine != theirs:
                raise InputError(f"{ck.path}: checkpoint was made with --{f.name.replace('_', '-')} "
                                 f"{_show(theirs)}, not {_show(mine)}; resuming would not continue "
                                 "the same run")
        changes = {k: getattr(config, k) for k in RUN_ONLY}
    changes = {k: v for k, v in (changes or {}).items() if v is not None}
    if set(changes) - set(RUN_ONLY):
        raise ConfigError(f"resume can only change {', '.join(RUN_ONLY)}")
    config = ck.config.replace(**changes)
    content = content if content is not None else ck.inputs.get("content")
    styles = list(styles) if styles is not None else list(ck.inputs.get("styles") or [])
    if any(s is None for s in styles) or (ck.mode != "style" and content is None):
        raise InputError(f"{ck.path}: this checkpoint's run used in-memory images; pass them again")
    output_path = output_path or ck.output
    outputs = _check_outputs(config, content, styles, output_path, gif_path, trace_path, quality, bits)
    if weights is None and ck.weights_path and Path(ck.weights_path).is_file():
        weights = ck.weights_path  # the file the run used (its hash is checked below)
    for name, sha in ck.input_sha256.items():
        if input_hashes(content, styles, config).get(name) != sha:
            raise InputError(f"{ck.path}: input {name} differs from the one the checkpoint was made with")
    if not isinstance(weights, Mapping) and ck.weights_sha256:
        _, info = weights_mod.load(weights, progress=download_progress)
        if info.sha256 != ck.weights_sha256:
            raise InputError(f"{ck.path}: checkpoint was made with other VGG16 weights (SHA-256 "
                             f"{ck.weights_sha256[:12]}..., these are {info.sha256[:12]}...)")
    return _stages(ck.mode, config, content, styles, outputs, weights=weights,
                   style_blend=ck.inputs.get("style_blend"), progress=progress, message=None,
                   should_stop=should_stop, download_progress=download_progress, resume_from=ck)


def _show(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)


def _check_inputs(mode: str, config: Config, content, styles, style_blend) -> None:
    if mode == "transfer" and (content is None or not styles):
        raise ConfigError("transfer needs a content image and at least one style image")
    if mode == "content" and content is None:
        raise ConfigError("content reconstruction needs an image")
    if mode == "style" and not styles:
        raise ConfigError("style reconstruction needs an image")
    if mode == "content" and config.content_weight > 0 and not config.content_layers:
        raise ConfigError("content reconstruction needs at least one content layer")
    if mode == "style" and not config.style_layers:
        raise ConfigError("style reconstruction needs at least one style layer")
    if style_blend is not None:
        if len(style_blend) != len(styles):
            raise ConfigError(f"--style-blend has {len(style_blend)} value(s) for {len(styles)} style image(s)")
        if any(not np.isfinite(b) or b < 0 for b in style_blend) or sum(style_blend) <= 0:
            raise ConfigError("--style-blend values must be non-negative, finite and not all zero")
    if config.init == "content" and content is None:
        raise ConfigError(f"--init content needs a content image ({mode} mode has none); "
                          "use --init noise")
    if config.init == "style" and not styles:
        raise ConfigError(f"--init style needs a style image ({mode} mode has none); use --init noise")


def _style_size(config: Config) -> tuple[int, str | None]:
    """The style images' longest side, and how to name it in messages."""
    size = max(round(config.size * config.style_scale), 1)
    what = None if config.style_scale == 1 else \
        f"--size {config.size} with --style-scale {config.style_scale} ({size} px)"
    return size, what


def _colors(config: Config, content_rgb: np.ndarray | None,
            style_rgbs: list[np.ndarray]) -> tuple[np.ndarray | None, list[np.ndarray]]:
    """Content and styles as `config.preserve_colors` wants them for the optimization."""
    if config.preserve_colors == "none" or content_rgb is None:
        return content_rgb, style_rgbs
    from . import color
    if config.preserve_colors == "luminance":
        pairs = [color.luminance_images(content_rgb, s) for s in style_rgbs]
        return pairs[0][0], [style for _, style in pairs]
    return content_rgb, [color.match_colors(s, content_rgb, method=config.preserve_colors)
                         for s in style_rgbs]


def _initial_image(config: Config, hw: tuple[int, int], content_rgb, style_rgbs) -> np.ndarray:
    if config.init == "content":
        return content_rgb
    if config.init == "noise":
        return preprocess.noise_image(hw, config.seed)
    if config.init == "style":
        return preprocess.resize(style_rgbs[0], hw)
    path = Path(config.init)
    if not path.exists():
        raise InputError(f"{path}: no such file (--init takes {', '.join(INITS)} or an image path)")
    return preprocess.resize(imageio.load_image(path), hw)


def optimize(problem: Problem, *, outputs: Outputs | None = None,
             progress: Callable[[Progress], None] | None = None,
             should_stop: Callable[[], bool] | None = None,
             resume_from: ckpt_mod.Checkpoint | None = None, stage: int = 0,
             run_config: Config | None = None, offset: tuple[int, int] = (0, 0),
             last_stage: bool = True, frames: list | None = None,
             trace: list | None = None) -> Result:
    """Run the solver for one problem (from the start, or from a checkpoint) and write files.

    One-off evaluations (the first loss and gradient, progress terms) use the plain
    variables; the loop gets the Winograd kernels `objective.conv` calls for. `stage`,
    `run_config` and `offset` (iterations, evaluations of earlier stages) place this problem
    in a coarse-to-fine run; `frames` and `trace` collect GIF frames and trace entries.
    """
    outputs = outputs or Outputs()
    run_config = run_config or problem.config
    config, objective, method = problem.config, problem.objective, problem.method
    variables, targets = problem.variables, problem.targets
    finish = problem.finish or (lambda rgb: rgb)
    report = progress or (lambda _p: None)
    stages = run_config.scales
    total_iterations = sum(n for _, n in run_config.stages())
    lr = jnp.float32(config.learning_rate)
    x0 = jnp.asarray(problem.x0)
    loop_variables = losses.network_variables(variables, objective, x0.shape)
    per_iteration = outputs.trace is not None
    frame_every = run_config.save_every or max(1, total_iterations // 40)

    def prog(phase, it, evals, loss, terms, terms_at, elapsed, per_it):
        report(Progress(phase, offset[0] + it, total_iterations, offset[1] + evals, loss, terms,
                        offset[0] + terms_at, elapsed, per_it, stage + 1, stages, config.size))

    prog("compile", 0, 0, float("nan"), None, 0, 0.0, None)
    t0 = time.perf_counter()
    start_fn, chunk_fn = solver.compile_loop(x0, variables, loop_variables, targets, lr,
                                             objective, method)
    terms_fn = solver.loss_terms.lower(x0, variables, targets, objective=objective).compile()
    compile_seconds = time.perf_counter() - t0
    if resume_from is not None:
        like = jax.eval_shape(lambda: start_fn(x0, variables, targets, lr))
        state = ckpt_mod.restore(resume_from, like)
    else:
        state = start_fn(x0, variables, targets, lr)

    def image_of(s: solver.LoopState) -> np.ndarray:
        return _rgb(solver.image(s, method))

    def save_checkpoint(s: solver.LoopState) -> Path | None:
        if outputs.path is None:
            return None
        return ckpt_mod.save(ckpt_mod.default_path(outputs.path), s, mode=problem.mode,
                             config=run_config, inputs=problem.inputs,
                             input_sha256=problem.input_sha256,
                             weights_sha256=problem.weights_sha256,
                             weights_path=problem.weights_path, output=str(outputs.path),
                             stage=stage, offset=offset)

    def record(s: solver.LoopState, terms: dict[str, float], seconds: float) -> None:
        if trace is not None:
            trace.append({"stage": stage + 1, "size": config.size,
                          "iteration": offset[0] + int(s.iteration),
                          "evaluations": offset[1] + int(s.evaluations),
                          "seconds": round(seconds, 4), **terms})

    t_start = time.perf_counter()
    done = int(state.iteration)
    initial = _terms_dict(terms_fn(solver.image(state, method), variables, targets))
    terms, terms_at, terms_time = initial, done, time.perf_counter()
    if not trace:
        record(state, initial, 0.0)
    if frames is not None and not frames:
        frames.append((offset[0] + done, finish(image_of(state))))
    snapshots: list[Path] = []
    written_checkpoint: Path | None = None
    boundaries = _boundaries(config, done, run_config.save_every, run_config.checkpoint_every,
                             frame_every if frames is not None else 0)
    per_iter: float | None = None
    status = solver.STATUS_NAMES.get(int(state.status), "done")  # start may already have failed
    status = "done" if status == "running" else status

    def chunk_length(at: int) -> int:
        nxt = next(b for b in boundaries if b > at)
        target = 1 if per_iter is None or per_iteration else max(1, int(0.5 / max(per_iter, 1e-6)))
        return min(nxt - at, target)

    running = int(state.status) == solver.RUNNING and done < config.iterations
    pending = chunk_fn(state, jnp.int32(chunk_length(done)), loop_variables, targets, lr) \
        if running else state
    t_prev = time.perf_counter()
    while running:
        current = pending
        it = int(current.iteration)  # blocks until the chunk is done
        now = time.perf_counter()
        status_code = int(current.status)
        if it > done:
            per_iter = (now - t_prev) / (it - done)
        t_prev = now
        stop_requested = should_stop is not None and should_stop()
        finished = status_code != solver.RUNNING or it >= config.iterations or stop_requested
        if not finished:  # queue the next chunk before doing host work on this one
            pending = chunk_fn(current, jnp.int32(chunk_length(it)), loop_variables, targets, lr)
        done = it
        state = current
        g = offset[0] + done
        if run_config.save_every and outputs.path is not None and g % run_config.save_every == 0 \
                and g < total_iterations:
            snapshots.append(output.write_image(finish(image_of(current)),
                                                output.snapshot_path(outputs.path, g), outputs.quality))
        if frames is not None and g % frame_every == 0:
            frames.append((g, finish(image_of(current))))
        if run_config.checkpoint_every and g % run_config.checkpoint_every == 0 and not finished:
            written_checkpoint = save_checkpoint(current)
        if per_iteration or now - terms_time > 10.0:
            terms, terms_at, terms_time = (_terms_dict(terms_fn(solver.image(current, method),
                                                                 variables, targets)),
                                           done, time.perf_counter())
        elapsed = time.perf_counter() - t_start
        record(current, terms if per_iteration else {"total": float(current.value)}, elapsed)
        prog("optimize", done, int(current.evaluations), float(current.value), terms, terms_at,
             elapsed, per_iter)
        if status_code != solver.RUNNING:
            status = solver.STATUS_NAMES[status_code]
        elif stop_requested and done < config.iterations:
            status = "interrupted"
        running = not finished
    seconds = time.perf_counter() - t_start
    x_final = solver.image(state, method)
    final = _terms_dict(terms_fn(x_final, variables, targets))
    if trace:
        trace[-1].update(final)
    raw = _rgb(x_final)
    image = finish(raw)
    if frames is not None and last_stage and (not frames or frames[-1][0] != offset[0] + done):
        frames.append((offset[0] + done, image))
    stopped = status in ("interrupted", "non-finite")
    written = None
    if outputs.path is not None and (last_stage or stopped):
        written = output.write_image(image, outputs.path, outputs.quality, bits=outputs.bits)
    if status == "interrupted" or (run_config.checkpoint_every and status == "done" and last_stage):
        written_checkpoint = save_checkpoint(state)
    prog("done", int(state.iteration), int(state.evaluations), final["total"], final,
         int(state.iteration), seconds, per_iter)
    return Result(image=image, mode=problem.mode, config=config, status=status,
                  iterations=int(state.iteration), evaluations=int(state.evaluations),
                  initial=initial, final=final, compile_seconds=compile_seconds, seconds=seconds,
                  trace=trace if trace is not None else [], output=written, snapshots=snapshots,
                  checkpoint=written_checkpoint, message=_status_message(status, state, config, method),
                  raw=raw)


def _rgb(x: jax.Array) -> np.ndarray:
    return np.clip(preprocess.from_vgg(np.asarray(x)), 0.0, 255.0)


def _boundaries(config: Config, start: int, *intervals: int) -> list[int]:
    """Iterations after `start` at which a chunk must end: the end, and multiples of each interval."""
    stops = {config.iterations}
    for every in intervals:
        if every:
            stops |= set(range(every * (start // every + 1), config.iterations, every))
    return sorted(s for s in stops if s > start) or [start]


def _status_message(status: str, state: solver.LoopState, config: Config,
                    method: Method) -> str | None:
    it = int(state.iteration)
    if status == "non-finite":
        hint = ("lower --style-weight/--content-weight or --learning-rate" if config.optimizer == "adam"
                else "lower --style-weight/--content-weight, or try --optimizer adam")
        return (f"the loss or its gradient became NaN or infinite after iteration {it}; "
                f"kept the last image with a finite loss. Try: {hint}")
    if status == "stalled":
        return (f"L-BFGS made no progress for {method.stall_patience} iterations and stopped "
                f"at iteration {it} (loss {float(state.value):.6g}): converged as far as float32 "
                "allows, or stuck; more iterations will not help, other weights or --optimizer adam may")
    return None

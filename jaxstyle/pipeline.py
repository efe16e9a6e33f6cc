"""One run, start to finish: images -> preprocessing -> VGG targets -> solver -> output files.

`run` is what the CLI and the Python API call. It validates everything it can before any
heavy work (settings, output path, images, weights), compiles the loop explicitly, then
runs it in chunks, reporting progress and writing snapshots between chunks.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import imageio, losses, output, preprocess, solver, vgg, weights as weights_mod
from .config import INITS, MODES, Config
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
    message: str | None = None

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


def _terms_dict(t: losses.Terms) -> dict[str, float]:
    return {k: float(v) for k, v in t._asdict().items()}


def _load(image: ImageLike, name: str) -> np.ndarray:
    return imageio.as_rgb(image, name)


def _name(image: ImageLike, default: str) -> str:
    return str(image) if isinstance(image, (str, os.PathLike)) else default


def run(mode: str, config: Config, content: ImageLike | None = None,
        styles: Sequence[ImageLike] = (), *, output_path: str | os.PathLike | None = None,
        weights: str | os.PathLike | Mapping | None = None,
        style_blend: Sequence[float] | None = None,
        progress: Callable[[Progress], None] | None = None,
        message: Callable[[str], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        download_progress: Callable[[int, int], None] | None = None,
        quality: int = 95) -> Result:
    """Optimize an image for `mode` ("transfer", "content" or "style") under `config`."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    styles = tuple(styles)
    inputs = tuple(x for x in (content, *styles, config.init) if isinstance(x, (str, os.PathLike)))
    if output_path is not None:
        output_path = output.check_output(output_path, inputs)
    _check_inputs(mode, config, content, styles, style_blend)
    notify = message or (lambda _msg: None)

    # Images, resized to the working size; the result takes the content's aspect ratio.
    content_rgb = (preprocess.resize_longest(_load(content, "content"), config.size,
                                             _name(content, "content"))
                   if content is not None else None)
    style_rgbs = [preprocess.resize_longest(_load(s, f"style {i + 1}"), config.size,
                                            _name(s, f"style {i + 1}"))
                  for i, s in enumerate(styles)]
    hw = content_rgb.shape[:2] if content_rgb is not None else style_rgbs[0].shape[:2]
    x0 = _initial_image(config, hw, content_rgb, style_rgbs)

    # Weights, then targets (content activations, blended style Gram matrices).
    if isinstance(weights, Mapping):
        params = weights
    else:
        params, info = weights_mod.load(weights, progress=download_progress)
        if info.warning:
            notify(f"warning: {info.warning}")
    variables = vgg.prepare_variables(params)
    objective = Objective.from_config(config)
    method = Method.from_config(config)
    targets = losses.make_targets(
        variables, config, objective,
        preprocess.to_vgg(content_rgb) if content_rgb is not None else None,
        [preprocess.to_vgg(s) for s in style_rgbs], style_blend)

    return optimize(mode, config, objective, method, variables, targets, preprocess.to_vgg(x0),
                    output_path=output_path, progress=progress, should_stop=should_stop,
                    quality=quality)


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


def _initial_image(config: Config, hw: tuple[int, int], content_rgb, style_rgbs) -> np.ndarray:
    if config.init == "content":
        return content_rgb
    if config.init == "noise":
        return preprocess.noise_image(hw, config.seed)
    if config.init == "style":
        return preprocess.resize(style_rgbs[0], hw)
    if config.init not in INITS:
        path = Path(config.init)
        if not path.exists():
            raise InputError(f"{path}: no such file (--init takes {', '.join(INITS)} or an image path)")
        return preprocess.resize(imageio.load_image(path), hw)
    raise AssertionError(config.init)


def optimize(mode: str, config: Config, objective: Objective, method: Method, variables: Any,
             targets: losses.Targets, x0: np.ndarray, *,
             output_path: Path | None = None,
             progress: Callable[[Progress], None] | None = None,
             should_stop: Callable[[], bool] | None = None,
             quality: int = 95) -> Result:
    """Run the solver from x0 (network input space) and produce the Result and files.

    One-off evaluations (the first loss and gradient, progress terms) use `variables` as
    given; the loop gets the Winograd kernels `objective.conv` calls for (`network_variables`).
    """
    report = progress or (lambda _p: None)
    lr = jnp.float32(config.learning_rate)
    x0 = jnp.asarray(x0)
    loop_variables = losses.network_variables(variables, objective, x0.shape)

    report(Progress("compile", 0, config.iterations, 0, float("nan"), None, 0, 0.0, None))
    t0 = time.perf_counter()
    start_fn, chunk_fn = solver.compile_loop(x0, variables, loop_variables, targets, lr,
                                             objective, method)
    terms_fn = solver.loss_terms.lower(x0, variables, targets, objective=objective).compile()
    compile_seconds = time.perf_counter() - t0
    state = start_fn(x0, variables, targets, lr)
    x_now = solver.image(state, method)

    t_start = time.perf_counter()
    initial = _terms_dict(terms_fn(x_now, variables, targets))
    terms, terms_at, terms_time = initial, 0, time.perf_counter()
    trace = [{"iteration": 0, "evaluations": 0, "seconds": 0.0, **initial}]
    snapshots: list[Path] = []
    boundaries = _boundaries(config)
    per_iter: float | None = None
    status = "done"

    def chunk_length(done: int) -> int:
        nxt = next(b for b in boundaries if b > done)
        target = 1 if per_iter is None else max(1, int(0.5 / max(per_iter, 1e-6)))
        return min(nxt - done, target)

    done = 0
    pending = chunk_fn(state, jnp.int32(chunk_length(0)), loop_variables, targets, lr) \
        if config.iterations > 0 and int(state.status) == solver.RUNNING else state
    t_prev = time.perf_counter()
    while done < config.iterations:
        current = pending
        it = int(current.iteration)  # blocks until the chunk is done
        now = time.perf_counter()
        status_code = int(current.status)
        if it > done:
            per_iter = (now - t_prev) / (it - done)
        t_prev = now
        stop_requested = should_stop is not None and should_stop()
        stopping = status_code != solver.RUNNING or it >= config.iterations or stop_requested
        if not stopping:  # queue the next chunk before doing host work on this one
            pending = chunk_fn(current, jnp.int32(chunk_length(it)), loop_variables, targets, lr)
        done = it
        if (config.save_every and output_path is not None and done % config.save_every == 0
                and done < config.iterations and done > 0):
            snapshots.append(output.write_image(_rgb(solver.image(current, method)),
                                                output.snapshot_path(output_path, done), quality))
        if now - terms_time > 10.0:
            terms, terms_at, terms_time = (_terms_dict(terms_fn(solver.image(current, method),
                                                                 variables, targets)),
                                           done, time.perf_counter())
        elapsed = time.perf_counter() - t_start
        trace.append({"iteration": done, "evaluations": int(current.evaluations),
                      "seconds": round(elapsed, 4), "total": float(current.value)})
        report(Progress("optimize", done, config.iterations, int(current.evaluations),
                        float(current.value), terms, terms_at, elapsed, per_iter))
        state = current
        if status_code != solver.RUNNING:
            status = solver.STATUS_NAMES[status_code]
            break
        if stop_requested and done < config.iterations:
            status = "interrupted"
            break
    seconds = time.perf_counter() - t_start
    x_final = solver.image(state, method)
    final = _terms_dict(terms_fn(x_final, variables, targets))
    trace[-1].update(final)
    image = _rgb(x_final)
    message = _status_message(status, state, config, method)
    written = output.write_image(image, output_path, quality) if output_path is not None else None
    report(Progress("done", int(state.iteration), config.iterations, int(state.evaluations),
                    final["total"], final, int(state.iteration), seconds, per_iter))
    return Result(image=image, mode=mode, config=config, status=status,
                  iterations=int(state.iteration), evaluations=int(state.evaluations),
                  initial=initial, final=final, compile_seconds=compile_seconds, seconds=seconds,
                  trace=trace, output=written, snapshots=snapshots, message=message)


def _rgb(x: jax.Array) -> np.ndarray:
    return np.clip(preprocess.from_vgg(np.asarray(x)), 0.0, 255.0)


def _boundaries(config: Config) -> list[int]:
    """Iterations at which a chunk must end (snapshots and the last one)."""
    stops = set(range(config.save_every, config.iterations, config.save_every)) if config.save_every else set()
    return sorted(stops | {config.iterations})


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

"""The Python API for scripts and notebooks; the CLI is a thin layer over these functions.

Images may be paths, PIL images or arrays, one or a list; options are `Config` field names,
e.g. `jaxstyle.transfer("photo.jpg", "painting.jpg", size=256, iterations=100)`. Messages
(a warning about the weights file, a skipped image) go to the "jaxstyle" logger.

In a notebook, `progress=True` shows the progress line, the current image and the loss curve,
updated in place, and interrupting the cell stops the run after the current chunk: the image
so far comes back as a Result with status "interrupted" (and is written to `output`, if given);
a second interrupt aborts. `should_stop` lets other code (a web page's stop button) do the same.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import re
import signal
import threading
from typing import Any, Callable, Iterator, Mapping, Sequence

from jaxstyle.config import PRESETS, STYLE_PRESETS, Config
from jaxstyle.errors import ConfigError, JaxstyleError, OutputError
from jaxstyle.model import weights as weights_mod
from jaxstyle.observers.results import Note, Progress, Result
from jaxstyle.run import job as job_mod
from jaxstyle.run import resuming as resume_mod
from jaxstyle.run.execute import run
from jaxstyle.run.job import ImageLike

log = logging.getLogger("jaxstyle")
PathLike = str | os.PathLike


def _progress(progress: bool | Callable[[Progress], None] | None, config: Config):
    """The progress callback: a printer for `True` (in place in a notebook, on stderr
    elsewhere), the caller's own, or, with `print_every` and no progress, its lines logged."""
    from jaxstyle.observers.progress import printer
    if progress is True:
        return printer(config.dtype, lines=bool(config.print_every), live=True)
    if not progress and config.print_every:
        lines = printer(config.dtype, lines=True)
        return lambda p: log.info(lines.iteration_line(p)) if p.phase == "iteration" else None
    return progress or None


@contextlib.contextmanager
def _interrupt_stops(should_stop: Callable[[], bool] | None) -> Iterator[Callable[[], bool] | None]:
    """In a notebook, on the main thread: interrupting the cell (SIGINT) asks the run to stop
    after the current chunk, keeping the image so far; a second interrupt aborts
    (KeyboardInterrupt). Elsewhere (a script, a server's worker thread) nothing changes.
    Yields the run's `should_stop`."""
    from jaxstyle.observers import progress as progress_mod
    if not progress_mod.in_notebook() or threading.current_thread() is not threading.main_thread():
        yield should_stop
        return
    asked: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)
        log.warning("interrupted: stopping after the current chunk and keeping the image so far "
                    "(interrupt again to abort without it)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(asked) or bool(should_stop and should_stop())
    finally:
        signal.signal(signal.SIGINT, previous)


def _run(job: job_mod.Job, progress: bool | Callable[[Progress], None] | None,
         should_stop: Callable[[], bool] | None) -> list[Result]:
    """Run a job with the API's progress and stopping rules. The arguments that only the run
    would trip over (callbacks, a weights dict) are checked first, in one line. A result that
    cannot be written is still returned (its message says where its copy was kept)."""
    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        raise ConfigError(f"progress must be True, False, None or a callable, not {type(progress).__name__}")
    if not (should_stop is None or callable(should_stop)):
        raise ConfigError(f"should_stop must be None or a callable, not {type(should_stop).__name__}")
    if isinstance(job.weights, Mapping):
        weights_mod.check_params(job.weights, job.config.content_layers + job.config.style_layers)
    elif job.weights is not None and not isinstance(job.weights, (str, os.PathLike)):
        raise ConfigError(f"weights must be a path or a dict from jaxstyle.load_weights(), "
                          f"not {type(job.weights).__name__}")
    with _interrupt_stops(should_stop) as stop:
        try:
            return run(job, progress=_progress(progress, job.config), should_stop=stop,
                       message=lambda m: log.info(m) if isinstance(m, Note) else log.warning(m))
        except OutputError as e:
            results = getattr(e, "results", None)
            if results is None:
                raise
            log.warning(e.message)
            for r in results:
                if r.output is None and r.image is not None and r.message is None:
                    r.message = e.message
            return results


def _plain(value: Any) -> Any:
    """NumPy scalars (np.int64(256), np.float32(1e4), np.bool_) and tuples of them as Python's."""
    import numpy as np
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)) and any(isinstance(v, np.generic) for v in value):
        return type(value)(v.item() if isinstance(v, np.generic) else v for v in value)
    return value


def _config(mode: str, config: Config | None, preset: str | None, options: Mapping[str, Any]) -> Config:
    if config is not None and not isinstance(config, Config):
        raise ConfigError(f"config must be a jaxstyle.Config, not {type(config).__name__}")
    base = config or PRESETS[mode]
    if preset is not None:
        if preset not in STYLE_PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; use one of {', '.join(sorted(STYLE_PRESETS))}")
        base = base.replace(**STYLE_PRESETS[preset])
    out = base.replace(**{k: _plain(v) for k, v in options.items()})
    if mode != "video":  # a video's settings (other than their defaults) would mean nothing here
        misplaced = sorted(f.name for f in dataclasses.fields(Config) if f.metadata["modes"] == ("video",)
                           and f.name in options and getattr(out, f.name) != f.default)
        if misplaced:
            raise ConfigError(f"{misplaced[0]} is a setting of jaxstyle.video, not of {mode}")
    return out


def _quality(quality: Any, bits: Any) -> tuple[int, int]:
    """`quality` and `bits` checked before any work (a quality JPEG or WebP refuses would
    otherwise fail only when the result is written)."""
    quality, bits = _plain(quality), _plain(bits)
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ConfigError(f"quality must be an integer from 1 to 100 (JPEG and WebP), got {quality!r}")
    if isinstance(bits, bool) or bits not in (8, 16):
        raise ConfigError(f"bits must be 8 or 16, got {bits!r}")
    return quality, bits


def _paths(**named: Any) -> None:
    """Output paths given as something else than a path (an int, a list) refused in one line."""
    for name, value in named.items():
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"{name} must be a path (str or os.PathLike), not {type(value).__name__}")


def _blend(style_blend: Any) -> tuple[float, ...] | None:
    """`style_blend` as a tuple of numbers (a list, tuple or NumPy array of them)."""
    if style_blend is None:
        return None
    try:
        values = tuple(float(v) for v in (style_blend if not isinstance(style_blend, (str, bytes)) else [None]))
    except (TypeError, ValueError):
        raise ConfigError(f"style_blend must be a list of numbers, one per style image, not {style_blend!r:.60}"
                          ) from None
    return values


def _masks(style_masks: Any) -> Any:
    if style_masks is None or isinstance(style_masks, (list, tuple)):
        return style_masks
    raise ConfigError("style_masks takes a list with one mask per style image (None: the whole image), "
                      f"not one {type(style_masks).__name__}")


def _go(mode: str, images: ImageLike | Sequence[ImageLike], styles: Sequence[ImageLike], cfg: Config, *,
        output, weights, style_blend, progress, gif, trace, quality, bits,
        should_stop, content_mask=None, style_masks=None, existing="check") -> Result | list[Result]:
    quality, bits = _quality(quality, bits)
    _paths(output=output, gif=gif, trace=trace)
    common = dict(style_blend=_blend(style_blend), quality=quality, bits=bits, weights=weights,
                  content_mask=content_mask, style_masks=_masks(style_masks), existing=existing)
    if isinstance(images, (list, tuple)):
        job = job_mod.many(mode, cfg, list(images), styles, outdir=output, gif_dir=gif, trace_dir=trace,
                           folder=False, **common)
    else:
        content = None if mode == "style" else images
        own = [images] if mode == "style" else styles
        job = job_mod.single(mode, cfg, content, own, output_path=output, gif=gif, trace=trace, **common)
    results = _run(job, progress, should_stop)
    return results if isinstance(images, (list, tuple)) else results[0]


# The CLI's options that are keyword arguments here by another name (a Config field's option is
# its field's name: --style-weight is style_weight=).
_KEYWORDS = {"weights": "weights", "style-blend": "style_blend", "content-mask": "content_mask",
             "style-mask": "style_masks", "gif": "gif", "trace": "trace", "quality": "quality",
             "bit-depth": "bits", "preset": "preset", "output": "output", "resume": "checkpoint"}
_FLAGS_AS_VALUES = {"overwrite": "existing='overwrite'", "skip-existing": "existing='skip'",
                    "keep-checkpoint": "keep_checkpoint=True"}
_FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9]*(?:-[a-z0-9]+)*|-o)( [^\s,;:)]+)?")
_VALUE = re.compile(r"[-+]?[\d.]|['\"/~]|[A-Z]{2,}|True$|False$|\S*[./]")


def python_words(message: str) -> str:
    """An error message of the CLI's, in the API's words: `--preserve-colors` becomes
    `preserve_colors`, `--weights PATH` `weights=PATH`, `-o` `output=`."""
    fields = {f.name: f for f in dataclasses.fields(Config)}

    def keyword(m: re.Match) -> str:
        flag, rest = m.group(1), m.group(2) or ""
        name = "output" if flag == "-o" else flag[2:]
        if name in _FLAGS_AS_VALUES:
            return _FLAGS_AS_VALUES[name] + rest
        if name.startswith("no-") and name[3:].replace("-", "_") in fields:
            return f"{name[3:].replace('-', '_')}=False{rest}"
        key = name.replace("-", "_") if name.replace("-", "_") in fields else _KEYWORDS.get(name)
        if key is None:
            return m.group(0)
        token = rest.strip()
        choices = fields[key].metadata.get("choices", ()) if key in fields else ()
        if token and (_VALUE.match(token) or token.rstrip(".") in choices):
            return f"{key}={token}"
        return f"{key}{rest}"

    return _FLAG.sub(keyword, message)


def _speaks_python(fn: Callable) -> Callable:
    """`fn` with its JaxstyleErrors' messages in the API's words (`python_words`)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except JaxstyleError as e:
            words = python_words(e.message)
            if words != e.message:
                e.args = (words,)
            raise

    return wrapper


@_speaks_python
def transfer(content: ImageLike | Sequence[ImageLike], style: ImageLike | Sequence[ImageLike], *,
             output: PathLike | None = None, weights: PathLike | Mapping | None = None,
             style_blend: Sequence[float] | None = None,
             progress: bool | Callable[[Progress], None] | None = None,
             config: Config | None = None, preset: str | None = None, gif: PathLike | None = None,
             trace: PathLike | None = None, quality: int = 95, bits: int = 8,
             should_stop: Callable[[], bool] | None = None, content_mask: ImageLike | None = None,
             style_masks: Sequence[ImageLike | None] | None = None, existing: str = "check",
             **options: Any) -> Result | list[Result]:
    """Render `content` in the style of `style` (one image or several, blended by `style_blend`).

    Guided transfer: `content_mask` has one colour per region and the k-th style paints the k-th
    region, darkest colour first (a style given as "keep" leaves its region unstyled);
    `style_masks`, one per style image (None: all of it), weight which of its pixels count.
    With a list of contents, `content_mask` is one mask for all, a list, or a folder (by name).

    `content` may be a list: the result is then a list of Results, one per image, and
    `output`, `gif` and `trace` name folders. `preset` names layers and weights from
    `config.STYLE_PRESETS`; `options` override it. With `output`, the result (and snapshots,
    `gif`, `trace`) are also written to files; a result file already there is made again
    (`existing="check"` or `"overwrite"`), or kept with `existing="skip"` (its Result then has
    status "skipped" and no image). `should_stop`, called after each chunk of iterations, stops
    the run when it returns True (status "interrupted", the image so far kept).

    `progress`: True shows the progress line (in a notebook also the image and the loss curve,
    updated in place); a callable gets every `Progress` report; None shows nothing.

    `options` are `Config` fields, most often `size` (longest side in pixels, default 512) and
    `iterations` (default 300); a `config` gives them all at once. Every one, with transfer's
    defaults:
    """
    styles = list(style) if isinstance(style, (list, tuple)) else [style]
    cfg = _config("transfer", config, preset, options)
    return _go("transfer", content, styles, cfg, output=output, weights=weights, style_blend=style_blend,
               progress=progress, gif=gif, trace=trace, quality=quality, bits=bits, should_stop=should_stop,
               content_mask=content_mask, style_masks=style_masks, existing=existing)


@_speaks_python
def reconstruct_content(image: ImageLike | Sequence[ImageLike], *, output: PathLike | None = None,
                        weights: PathLike | Mapping | None = None,
                        progress: bool | Callable[[Progress], None] | None = None,
                        config: Config | None = None, gif: PathLike | None = None,
                        trace: PathLike | None = None, quality: int = 95, bits: int = 8,
                        should_stop: Callable[[], bool] | None = None, **options: Any) -> Result | list[Result]:
    """Recover an image (or each of a list) from its VGG16 activations, starting from noise."""
    cfg = _config("content", config, None, options)
    return _go("content", image, (), cfg, output=output, weights=weights, style_blend=None,
               progress=progress, gif=gif, trace=trace, quality=quality, bits=bits, should_stop=should_stop)


@_speaks_python
def reconstruct_style(image: ImageLike | Sequence[ImageLike], *, output: PathLike | None = None,
                      weights: PathLike | Mapping | None = None,
                      style_blend: Sequence[float] | None = None,
                      progress: bool | Callable[[Progress], None] | None = None,
                      config: Config | None = None, gif: PathLike | None = None,
                      trace: PathLike | None = None, quality: int = 95, bits: int = 8,
                      should_stop: Callable[[], bool] | None = None, **options: Any) -> Result:
    """Synthesize a texture whose Gram matrices match the style image's (several images are
    blended by `style_blend`), starting from noise."""
    styles = list(image) if isinstance(image, (list, tuple)) else [image]
    cfg = _config("style", config, None, options)
    quality, bits = _quality(quality, bits)
    _paths(output=output, gif=gif, trace=trace)
    job = job_mod.single("style", cfg, None, styles, output_path=output, gif=gif, trace=trace,
                         style_blend=_blend(style_blend), quality=quality, bits=bits, weights=weights)
    return _run(job, progress, should_stop)[0]


@_speaks_python
def resume(checkpoint: PathLike, *, output: PathLike | None = None, weights: PathLike | Mapping | None = None,
           content: ImageLike | None = None, styles: Sequence[ImageLike] | None = None,
           progress: bool | Callable[[Progress], None] | None = None,
           should_stop: Callable[[], bool] | None = None, **changes: Any) -> Result:
    """Continue a checkpointed run; `changes` may set iterations, save_every and checkpoint_every.
    The final image equals the one an uninterrupted run gives."""
    _paths(checkpoint=checkpoint, output=output)
    job = resume_mod.job_from(checkpoint, changes, output=output, content=content, styles=styles,
                              weights=weights)
    return _run(job, progress, should_stop)[0]


@_speaks_python
def video(content: PathLike, style: ImageLike | Sequence[ImageLike], output: PathLike, *,
          weights: PathLike | Mapping | None = None, style_blend: Sequence[float] | None = None,
          progress: bool | Callable[[Progress], None] | None = None, config: Config | None = None,
          preset: str | None = None, rate: float | None = None, should_stop: Callable[[], bool] | None = None,
          content_mask: PathLike | None = None, style_masks: Sequence[ImageLike | None] | None = None,
          existing: str = "check", **options: Any) -> Any:
    """Stylize a video, temporally consistent (Ruder et al. 2016): `content` is a video file or
    a folder of frames, `output` a video file (.mp4: H.264, the audio copied) or a folder of
    frames. The first frame is a transfer; each later one starts from the previous result warped
    by the optical flow and is held there, where the flow is reliable, by the temporal term.

    Finished frames are written as they finish (beside a video output in OUTPUT.frames/, removed
    once the video is written) and the flows are kept in OUTPUT.flow/; the same call again skips
    finished frames and continues an interrupted one from its checkpoint, giving the same video.
    `rate`: a folder's frames per second (default 24). `content_mask`: one mask for every
    frame, or a folder with one per frame. `should_stop` stops after the current chunk (the
    frame is checkpointed). Needs `pip install 'jaxstyle[video]'`.

    Returns a `video.stylize.VideoResult`. `options` are `Config` fields, transfer's and the
    video's (temporal_weight, temporal_frames, frame_iterations, tolerance, passes, pass_blend), with
    video's defaults:
    """
    from jaxstyle.clips import require
    require()
    from jaxstyle.clips import stylize
    _paths(content=content, output=output)
    styles = list(style) if isinstance(style, (list, tuple)) else [style]
    cfg = _config("video", config, preset, options)
    if isinstance(weights, Mapping):
        weights_mod.check_params(weights, cfg.content_layers + cfg.style_layers)
    job = stylize.plan(content, styles, output, cfg, rate=rate, weights=weights, style_blend=_blend(style_blend),
                       content_mask=content_mask, style_masks=_masks(style_masks), existing=existing)
    with _interrupt_stops(should_stop) as stop:
        return stylize.stylize(job, progress=_progress(progress, cfg), should_stop=stop,
                               message=lambda m: log.info(m) if isinstance(m, Note) else log.warning(m))


@_speaks_python
def load_weights(path: PathLike | None = None) -> dict:
    """VGG16 parameters, to pass as `weights=` to several runs without reloading them."""
    params, info = weights_mod.load(path)
    if info.warning:
        log.warning(info.warning)
    if info.note:
        log.info(info.note)
    return params


def _document() -> None:
    """Each function's settings, listed from `Config`'s field metadata (as `--help` lists them)."""
    from jaxstyle.config import describe_fields
    for fn, mode in ((transfer, "transfer"), (reconstruct_content, "content"), (reconstruct_style, "style"),
                     (video, "video")):
        if fn.__doc__ is not None:
            lead = "" if fn in (transfer, video) else (
                "\n\n    `progress`: True shows the progress line; a callable gets every `Progress` report."
                f"\n\n    Settings (`options`, `Config` fields), with the {mode} defaults:")
            fn.__doc__ = fn.__doc__.rstrip() + lead + "\n\n" + describe_fields(mode) + "\n"


_document()

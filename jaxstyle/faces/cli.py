"""The `jaxstyle` command line: a thin layer over `jaxstyle.faces.api`.

Options for the settings are generated from `Config`'s fields, and their defaults are the
mode's preset in `config.PRESETS`; nothing here holds a default of its own.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import re
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Iterator

import click
from click.core import ParameterSource

from jaxstyle.config import (COMPILES, DTYPES, PRESETS, STYLE_LOSSES, STYLE_PRESETS, Config, applies,
                             resolved_dtype)
from jaxstyle.errors import EXIT_INTERRUPTED, EXIT_USAGE, JaxstyleError, NumericalError, first_line
from jaxstyle.model import weights as weights_mod
from jaxstyle.platform import devices as devices_mod
from jaxstyle.platform import runtime


class CommaList(click.ParamType):
    """A comma-separated list of strings or floats."""

    def __init__(self, item: type) -> None:
        self.item = item
        self.name = "list"

    def convert(self, value: Any, param, ctx) -> tuple:
        if isinstance(value, tuple):
            return value
        items = [v.strip() for v in str(value).split(",") if v.strip()]
        if self.item in (float, int):
            try:
                return tuple(self.item(v) for v in items)
            except ValueError:
                kind = "numbers" if self.item is float else "integers"
                self.fail(f"{value!r} is not a comma-separated list of {kind}", param, ctx)
        return tuple(items)


def _click_type(f: dataclasses.Field) -> Any:
    if "choices" in f.metadata:
        return click.Choice(f.metadata["choices"])
    return {"int": int, "float": float, "str": str, "bool": bool,
            "tuple[str, ...]": CommaList(str), "tuple[float, ...]": CommaList(float),
            "tuple[int, ...]": CommaList(int)}[f.type]


def _show(value: Any) -> Any:
    return ",".join(str(v) for v in value) if isinstance(value, tuple) else value


def _help_with_default(text: str, flag: str, f: dataclasses.Field, default: Any) -> str:
    """A field's help with its default said once, at the end, in words that wrap at spaces
    (a list's items apart); none for an empty list (its help says what happens then)."""
    if f.type == "bool":
        shown = flag if default else f"--no-{flag[2:]}"
    elif isinstance(default, tuple):
        if not default:
            return text
        shown = ", ".join(str(v) for v in default)
    else:
        shown = str(default)
    return f"{text}  [default: {shown}]"


def config_options(mode: str) -> Callable:
    """Decorator adding one option per `Config` field that applies to `mode`."""
    preset = PRESETS[mode]

    def decorate(fn: Callable) -> Callable:
        for f in reversed(dataclasses.fields(Config)):
            if not applies(f, mode):
                continue
            flag = "--" + f.name.replace("_", "-")
            default = getattr(preset, f.name)
            if f.type == "bool":
                decl = [f"{flag}/--no-{flag[2:]}"]
            else:
                decl = [f.metadata["short"], flag] if "short" in f.metadata else [flag]
            fn = click.option(*decl, f.name, type=_click_type(f), default=_show(default),
                              help=_help_with_default(f.metadata["help"], flag, f, default))(fn)
        return fn

    return decorate


# `--help` of the run commands, in sections: each option by its parameter name (a Config
# field's name for the settings). An option missing here is listed under "Other options".
HELP_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Input and output", ("output", "fmt", "quality", "bits", "weights", "overwrite", "skip_existing", "resume",
                          "checkpoint_every", "keep_checkpoint", "save_every", "gif_path", "trace_path",
                          "content_mask", "style_masks", "rate")),
    ("Style", ("preset", "size", "style_blend", "style_scale", "preserve_colors", "content_weight", "style_weight",
               "tv_weight", "content_layers", "content_layer_weights", "style_layers", "style_layer_weights",
               "style_loss", "normalize", "pooling", "init", "seed", "temporal_weight", "temporal_frames")),
    ("Optimizer", ("iterations", "optimizer", "scales", "scale_iterations", "lbfgs_memory", "linesearch_steps",
                   "precondition", "learning_rate", "average", "frame_iterations", "tolerance", "passes",
                   "pass_blend")),
    ("Devices and memory", ("device", "devices", "batch_size", "split_image", "tile", "dtype", "remat", "bucket",
                            "precision", "compile", "conv", "distributed")),
    ("Progress", ("print_every", "quiet", "verbose", "help")),
)


class GroupedCommand(click.Command):
    """A command whose `--help` lists its options in the sections of HELP_GROUPS."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        order = {name: (g, k) for g, (_, names) in enumerate(HELP_GROUPS) for k, name in enumerate(names)}
        sections: dict[int, list[tuple[tuple[int, int], tuple[str, str]]]] = {}
        help_option = self.get_help_option(ctx)
        for n, param in enumerate(self.get_params(ctx)):
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if record is not None:
                name = "help" if param is help_option else param.name or ""
                g, k = order.get(name, (len(HELP_GROUPS), n))
                sections.setdefault(g, []).append(((g, k), record))
        titles = [title for title, _ in HELP_GROUPS] + ["Other options"]
        column = min(max(len(term) for rows in sections.values() for _, (term, _) in rows), 30) + 2
        for g in sorted(sections):
            with formatter.section(titles[g]):
                for _, (term, text) in sorted(sections[g], key=lambda r: r[0]):
                    _write_row(formatter, term, text, column)


def _write_row(formatter: click.HelpFormatter, term: str, text: str, column: int) -> None:
    """One option of `--help`: its text beside it (below it when it is wider than `column`),
    wrapped at spaces only: no word, default or hyphenated name is cut."""
    indent = " " * formatter.current_indent
    width = max((formatter.width or 80) - formatter.current_indent - column, 20)
    glued = text.replace("[default: ", "[default:\0")  # a default stays beside its label
    lines = [line.replace("\0", " ") for line in
             textwrap.wrap(glued, width, break_on_hyphens=False, break_long_words=False)] or [""]
    if len(term) + 2 <= column:
        formatter.write(f"{indent}{term:<{column}}{lines[0]}\n")
        rest = lines[1:]
    else:
        formatter.write(f"{indent}{term}\n")
        rest = lines
    for line in rest:
        formatter.write(f"{indent}{'':<{column}}{line}\n")


def _settings(mode: str, options: dict[str, Any], preset: str | None = None) -> Config:
    """The mode's defaults, then `--preset`, then the options the user actually gave."""
    ctx = click.get_current_context()
    names = {f.name for f in dataclasses.fields(Config)}
    given = {k: v for k, v in options.items()
             if k in names and ctx.get_parameter_source(k) is not ParameterSource.DEFAULT}
    base = PRESETS[mode].replace(**STYLE_PRESETS[preset]) if preset else PRESETS[mode]
    return base.replace(**given)


class _StopFlag:
    """SIGINT, SIGTERM and SIGHUP ask the run to stop at the next chunk boundary (saving the image
    and a checkpoint); a second one aborts."""

    SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))

    def __init__(self, say: Callable[[str], None]) -> None:
        self.signal: int | None = None
        self.say = say

    def __call__(self) -> bool:
        return self.signal is not None

    def handler(self, signum, frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        self.say(f"{signal.Signals(signum).name}: stopping after the current chunk "
                 "(press Ctrl-C again to abort without saving)")

    def __enter__(self) -> "_StopFlag":
        self._previous = {s: signal.signal(s, self.handler) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)


def _download_bar() -> Callable[[int, int], None]:
    state: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = click.progressbar(length=total or None, label="downloading VGG16 weights",
                                             file=sys.stderr)
            state["bar"].__enter__()
            state["done"] = 0
        state["bar"].update(done - state["done"])
        state["done"] = done
        if total and done >= total:
            state["bar"].__exit__(None, None, None)

    return update


def _compilation_cache(path: str | os.PathLike | None = None) -> None:
    """Turn on JAX's persistent compilation cache (in `path`, default jaxstyle's cache
    directory) unless $JAXSTYLE_NO_COMPILE_CACHE is set."""
    if not os.environ.get("JAXSTYLE_NO_COMPILE_CACHE"):
        runtime.enable_compilation_cache(*([path] if path is not None else []))


class _SayHandler(logging.Handler):
    """Log records as lines on stderr (looked up when written), never raising."""

    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(fmt))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _say(self.format(record))
        except Exception:
            pass


def _start(device: str, verbose: bool, distributed: bool = False) -> None:
    """Before anything touches JAX: pick the platform, start the backends with their start-up
    noise (libtpu's, CUDA's) kept off the terminal unless --verbose, and route Python warnings
    from libraries to the log (shown with --verbose) so that every line on stderr is ours."""
    if not verbose:
        runtime.quiet_native_logs()
    logging.captureWarnings(True)
    ours, noise = logging.getLogger("jaxstyle"), logging.getLogger("py.warnings")
    for logger in (ours, noise):
        logger.handlers = [h for h in logger.handlers if not isinstance(h, _SayHandler)]
    noise.propagate = False  # Python's last-resort handler would print them raw
    if not verbose:
        noise.addHandler(logging.NullHandler())
    ours.addHandler(_SayHandler("jaxstyle: %(message)s" if verbose else "jaxstyle: warning: %(message)s"))
    ours.setLevel(logging.INFO if verbose else logging.WARNING)
    if verbose:
        noise.addHandler(_SayHandler("%(name)s: %(message)s"))
        logging.getLogger("jax").setLevel(logging.INFO)  # jax prints its own records
    devices_mod.choose_platform(device)
    if distributed:
        import jax
        with devices_mod.captured_stderr() as log:
            try:
                jax.distributed.initialize()  # coordinates from the TPU/GPU cluster's environment
                error = None
            except Exception as e:
                error = e
        if verbose and "".join(log).strip():
            _say("".join(log).rstrip())
        if error is not None:
            raise JaxstyleError(f"--distributed: jax.distributed.initialize() failed: {first_line(error)}")
    _, log = devices_mod.start(device)
    if verbose and log.strip():
        _say(log.rstrip())


def _say(text: str) -> None:
    try:
        click.echo(text, err=True)
    except (OSError, ValueError):
        pass  # a closed stderr must not stop a run


def _execute(job: Any, quiet: bool = False) -> None:
    """Run a job with a progress line and signal handling, then summarize (and exit on failures)."""
    from jaxstyle.observers.progress import ProgressPrinter
    from jaxstyle.observers.results import Note
    from jaxstyle.run.execute import run

    _compilation_cache()
    _malloc_policy(job.config, batch=job.config.batch_size or 1)
    printer = ProgressPrinter(precision=job.config.dtype, lines=bool(job.config.print_every))
    with _StopFlag(lambda m: printer.message(m)) as stop:
        try:
            results = run(job, progress=None if quiet else printer, should_stop=stop,
                          message=lambda m: None if quiet and isinstance(m, Note) else
                          printer.message(f"jaxstyle: {m}"),
                          download_progress=None if quiet else _download_bar())
        finally:
            printer.close()
    say = (lambda _t: None) if quiet else _say
    if job.folder:
        _summarize_folder(job, results, say)
    else:
        _summarize(results[0], say)
    _finish_upgrades(say)  # after the summary: the results are written, the wait is for later runs


def _finish_upgrades(say: Callable[[str], None]) -> None:
    """`--compile both`: a run that ended before its full-effort loop compiled waits for it, so
    the next run of the shape starts on it from the cache; Ctrl-C skips the wait."""
    from jaxstyle.run.problem import finish_upgrades, upgrades_pending
    if not upgrades_pending():
        return
    say("jaxstyle: finishing the full-effort compile of this shape for later runs (Ctrl-C skips it; "
        "the result is written)")
    try:
        finish_upgrades()
    except KeyboardInterrupt:
        _exit_now(0)


def _exit_now(code: int) -> None:
    """Leave at once, even with a compile running on a daemon thread (the interpreter's
    shutdown would tear XLA down under it)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _summarize(result: Any, say: Callable[[str], None] = _say) -> None:
    if result.status == "skipped":
        say(f"{result.output}: already there, kept (--skip-existing)")
        return
    if result.status == "non-finite" and result.image is None:
        raise NumericalError(result.message)
    size = f" ({result.image.shape[1]}x{result.image.shape[0]})" if result.image is not None else ""
    what = f"wrote {result.output}{size}" if result.output else f"finished{size}"
    say(f"{what}: {result.iterations} iterations, {result.evaluations} evaluations, "
         f"loss {result.initial.get('total', float('nan')):.4g} -> {result.final.get('total', float('nan')):.4g}, "
         f"{result.seconds_per_iteration:.3g} s/iteration, "
         f"{result.evaluations_per_iteration:.2f} evaluations/iteration, "
         f"compile {result.compile_seconds:.1f}s")
    if result.snapshots:
        say(f"snapshots: {result.snapshots[0].parent}/{result.snapshots[0].name} ... ({len(result.snapshots)})")
    if result.checkpoint and result.status != "interrupted":
        say(f"checkpoint: {result.checkpoint}")
    for label, path in (("animation", result.gif), ("trace", result.trace_file)):
        if path:
            say(f"{label}: {path}")
    if result.status == "non-finite":
        raise NumericalError(result.message)
    if result.status == "stalled":
        _say(f"jaxstyle: {result.message}")
    if result.status == "interrupted":
        if result.message:  # a tiled stage: what was kept, in its own words
            _say(f"jaxstyle: {result.message}; the image so far is in {result.output}")
        elif result.checkpoint is None:
            _say(f"jaxstyle: interrupted at iteration {result.iterations}; the image so far is in "
                 f"{result.output}; no checkpoint was written: run the command again to start over")
        else:
            _say(f"jaxstyle: interrupted at iteration {result.iterations}; the image so far is in "
                 f"{result.output}, the checkpoint in {result.checkpoint}; continue with "
                 f"`jaxstyle resume {result.checkpoint}`")
        sys.exit(EXIT_INTERRUPTED)


def _summarize_folder(job: Any, results: list, say: Callable[[str], None] = _say) -> None:
    count = {k: sum(r.status == k for r in results) for k in ("skipped", "failed", "interrupted")}
    written = [r for r in results if r.output is not None and r.status in ("done", "stalled", "interrupted")
               and r.image is not None]
    outdir = job.items[0].output.parent if job.items and job.items[0].output else "(no files)"
    rate = f", {len(written) / results.seconds * 60:.2f} images/min" if results.seconds and written else ""
    say(f"{len(written)} written, {count['skipped']} already done, {count['failed']} failed, into "
         f"{outdir} in {results.seconds:.1f}s{rate} (compile {results.compile_seconds:.1f}s, "
         f"{results.programs} programs)")
    for r in results:
        if r.status == "failed":
            _say(f"jaxstyle: failed: {r.message}")
    if count["interrupted"]:
        _say("jaxstyle: interrupted; finished images are written, and the others continue from their "
             "checkpoints when the same command runs again")
        sys.exit(EXIT_INTERRUPTED)
    if count["failed"]:
        sys.exit(1)


def _common(fn: Callable) -> Callable:
    fn = click.option("--skip-existing", is_flag=True,
                      help="Keep every result already there, whatever settings made it.")(fn)
    fn = click.option("--overwrite", is_flag=True,
                      help="Make again every result already there (a folder run otherwise keeps those made "
                           "with these settings and inputs, and refuses to start over others).")(fn)
    fn = click.option("--distributed", is_flag=True,
                      help="Call jax.distributed.initialize() first (TPU pod slices, GPU clusters); each "
                           "process then makes its share of a folder's images.")(fn)
    fn = click.option("--format", "fmt", type=click.Choice(["png", "jpg", "webp", "tif"]), default="png",
                      show_default=True, help="Format of the results when the input is a folder or a pattern.")(fn)
    fn = click.option("--resume", type=click.Path(dir_okay=False), default=None,
                      help="Continue from this checkpoint; the inputs and settings must be the ones "
                           "it was made with (iterations, --save-every, --checkpoint-every may differ).")(fn)
    fn = click.option("--trace", "trace_path", type=click.Path(), default=None,
                      help="Write a JSON trace of every iteration (loss terms, evaluations, seconds); "
                           "a folder of them for a folder of images.")(fn)
    fn = click.option("--gif", "gif_path", type=click.Path(), default=None,
                      help="Write an animated GIF of the image approaching the target; a folder of "
                           "them for a folder of images.")(fn)
    fn = click.option("--bit-depth", "bits", type=click.Choice(["8", "16"]), default="8",
                      show_default=True, help="Bits per channel of the result (16: PNG or TIFF).")(fn)
    fn = click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True,
                      help="JPEG/WebP quality of the written images.")(fn)
    fn = click.option("--weights", "weights", type=click.Path(dir_okay=False), default=None,
                      help="VGG16 notop weights (Keras h5). Default: $JAXSTYLE_WEIGHTS, the "
                           "user cache, then a download of Keras' official file.")(fn)
    fn = click.option("-o", "--output", type=click.Path(), default=None,
                      help="Result image (the format follows the extension), or the folder for a "
                           "folder of images. Default for one image: CONTENT_STYLE.png here (the "
                           "next free name; never an existing file).")(fn)
    fn = _verbosity(fn)
    return fn


def _verbosity(fn: Callable) -> Callable:
    fn = click.option("-v", "--verbose", is_flag=True,
                      help="Also show what JAX and other libraries print: backend start-up logs, "
                           "warnings, compilation cache notes.")(fn)
    fn = click.option("-q", "--quiet", is_flag=True,
                      help="No progress line and no summary; warnings and errors only.")(fn)
    return fn


def _job(mode: str, images: str, styles: tuple, options: dict[str, Any], files: dict[str, Any],
         style_blend=None, preset: str | None = None, content_mask: str | None = None,
         style_masks: tuple[str, ...] = ()) -> Any:
    """The job a command line asks for: one image, or a folder or pattern of them."""
    from jaxstyle.run import job as job_mod

    config = _settings(mode, options, preset)
    many = job_mod.is_folder_spec(images)
    if files["quiet"] and config.print_every:
        raise JaxstyleError("--quiet and --print-every contradict each other; give one")
    if many and files["output"] is None:
        raise JaxstyleError(f"{images}: a folder of images needs -o DIR, the folder its results go to")
    if files["resume"] is not None and many:
        raise JaxstyleError("--resume takes one image's checkpoint; a folder run continues each image "
                            "from the checkpoint beside its result by itself")
    fmt_given = click.get_current_context().get_parameter_source("fmt") is not ParameterSource.DEFAULT
    if not many and fmt_given and files["output"] is not None and \
            os.path.splitext(files["output"])[1].lower().lstrip(".") not in (files["fmt"], "jpeg", "tiff"):
        raise JaxstyleError(f"{files['output']}: --format {files['fmt']} contradicts the output's extension; "
                            "the format of one image follows -o")
    _start(config.device, files["verbose"], files["distributed"])
    common = dict(style_blend=style_blend, quality=files["quality"], bits=files["bits"],
                  weights=files["weights"], content_mask=content_mask, style_masks=style_masks or None,
                  existing=files["existing"])
    if content_mask is not None and not Path(content_mask).exists():
        raise JaxstyleError(f"{content_mask}: no such file or folder (--content-mask)")
    if content_mask is not None and Path(content_mask).is_dir() and not many:
        raise JaxstyleError(f"{content_mask}: is a folder; a folder of masks goes with a folder of images, "
                            "one image's mask is a file")
    if many:
        import jax
        paths = job_mod.collect(images)
        mine = job_mod.share(paths, jax.process_index(), jax.process_count())
        if jax.process_count() > 1:
            _say(f"process {jax.process_index()} of {jax.process_count()}: {len(mine)} of {len(paths)} images")
        return job_mod.many(mode, config, mine, styles, outdir=files["output"], suffix=f".{files['fmt']}",
                            gif_dir=files["gif"], trace_dir=files["trace"], **common)
    content = None if mode == "style" else images
    own = (images,) if mode == "style" else styles
    if files["output"] is None:
        if files["resume"] is not None:
            from jaxstyle.observers.checkpoint import load as load_checkpoint
            files["output"] = load_checkpoint(files["resume"]).output
        else:
            files["output"] = files["reserved"] = job_mod.default_output(
                mode, images, styles, suffix=f".{files['fmt']}", reserve=True)
    # With --resume, the run checks the checkpoint against these settings and inputs (resume.find).
    return job_mod.single(mode, config, content, own, output_path=files["output"], gif=files["gif"],
                          trace=files["trace"], resume=files["resume"], **common)


@contextlib.contextmanager
def _reservation(files: dict[str, Any]) -> Iterator[None]:
    """A default output name reserved (created empty) for the run is removed again when the run
    ends without writing anything there (a refusal, a failure, an abort)."""
    try:
        yield
    finally:
        reserved = files.get("reserved")
        with contextlib.suppress(OSError):
            if reserved is not None and reserved.stat().st_size == 0:
                reserved.unlink()


def _files(output, weights, quality, bits, gif_path, trace_path, resume, fmt, distributed, quiet,
           verbose, overwrite: bool = False, skip_existing: bool = False) -> dict[str, Any]:
    if overwrite and skip_existing:
        raise JaxstyleError("--overwrite and --skip-existing contradict each other; give one")
    return {"output": output, "weights": weights, "quality": quality, "bits": int(bits), "gif": gif_path,
            "trace": trace_path, "resume": resume, "fmt": fmt, "distributed": distributed, "quiet": quiet,
            "verbose": verbose, "existing": "overwrite" if overwrite else "skip" if skip_existing else "check"}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="jaxstyle")
def cli() -> None:
    """Neural style transfer (Gatys et al.) with VGG16 in JAX."""


@cli.command(cls=GroupedCommand)
@click.argument("content", type=str)
@click.argument("styles", nargs=-1, required=True, type=str)
@_common
@click.option("--style-blend", type=CommaList(float), default=None,
              help="Weights blending the Gram targets of several style images (default: equal).")
@click.option("--content-mask", type=click.Path(), default=None, metavar="MASK",
              help="Guided transfer: an image with one colour per region of CONTENT (a folder of them, "
                   "by name, for a folder of images); the k-th STYLE paints the k-th region, darkest "
                   "colour first; a STYLE given as 'keep' leaves its region unstyled.")
@click.option("--style-mask", "style_masks", type=click.Path(), multiple=True, metavar="MASK",
              help="Which pixels of a style image count (white: fully, black: not at all); once per "
                   "style image, in order ('none': the whole image).")
@click.option("--preset", type=click.Choice(sorted(STYLE_PRESETS)), default=None,
              help="Named layers and weights: the original write-up's two settings, or Gatys et al.'s; "
                   "options given explicitly still win.")
@config_options("transfer")
def transfer(content: str, styles: tuple[str, ...], output: str, weights: str | None, quality: int,
             bits: str, gif_path, trace_path, resume: str | None, fmt: str, distributed: bool,
             overwrite: bool, skip_existing: bool, quiet: bool, verbose: bool, style_blend,
             content_mask: str | None, style_masks: tuple[str, ...], preset: str | None, **options: Any) -> None:
    """Paint CONTENT in the style of STYLE (several STYLE images are blended, or with
    --content-mask each paints its own region).

    CONTENT may be a directory or a glob pattern ('photos/*.jpg'): every image is stylized into
    the directory given by -o, in batches compiled once per shape bucket and sharded over the
    available devices.
    """
    files = _files(output, weights, quality, bits, gif_path, trace_path, resume, fmt, distributed, quiet,
                   verbose, overwrite, skip_existing)
    with _reservation(files):
        _execute(_job("transfer", content, styles, options, files, style_blend, preset, content_mask,
                      style_masks), quiet)


@cli.command(cls=GroupedCommand)
@click.argument("image", type=str)
@_common
@config_options("content")
def content(image: str, output: str, weights: str | None, quality: int, bits: str, gif_path,
            trace_path, resume: str | None, fmt: str, distributed: bool, overwrite: bool, skip_existing: bool,
            quiet: bool, verbose: bool, **options: Any) -> None:
    """Reconstruct IMAGE (or each image of a folder) from its VGG16 activations, from noise."""
    files = _files(output, weights, quality, bits, gif_path, trace_path, resume, fmt, distributed, quiet,
                   verbose, overwrite, skip_existing)
    with _reservation(files):
        _execute(_job("content", image, (), options, files), quiet)


@cli.command(cls=GroupedCommand)
@click.argument("image", type=str)
@_common
@config_options("style")
def style(image: str, output: str, weights: str | None, quality: int, bits: str, gif_path,
          trace_path, resume: str | None, fmt: str, distributed: bool, overwrite: bool, skip_existing: bool,
          quiet: bool, verbose: bool, **options: Any) -> None:
    """Reconstruct the style (texture) of IMAGE (or of each image of a folder) from its Gram
    matrices, starting from noise."""
    files = _files(output, weights, quality, bits, gif_path, trace_path, resume, fmt, distributed, quiet,
                   verbose, overwrite, skip_existing)
    with _reservation(files):
        _execute(_job("style", image, (), options, files), quiet)


@cli.command("resume", cls=GroupedCommand)
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Result image (default: the output the checkpointed run was writing).")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="VGG16 weights (they must be the same file).")
@click.option("-i", "--iterations", type=click.IntRange(0), default=None,
              help="Total iterations to reach (default: the checkpointed run's).")
@click.option("--save-every", type=click.IntRange(0), default=None, help="Snapshot interval.")
@click.option("--checkpoint-every", type=click.IntRange(0), default=None, help="Checkpoint interval.")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True,
              help="JPEG/WebP quality of the written images.")
@click.option("--bit-depth", "bits", type=click.Choice(["8", "16"]), default="8", show_default=True,
              help="Bits per channel of the result (16: PNG or TIFF).")
@click.option("--gif", "gif_path", type=click.Path(), default=None, help="Animated GIF of the rest of the run.")
@click.option("--trace", "trace_path", type=click.Path(), default=None, help="JSON trace of the rest of the run.")
@click.option("--device", type=str, default="auto", show_default=True,
              help="Where to continue: cpu, gpu or tpu, optionally one device (gpu:1).")
@click.option("--print-every", type=click.IntRange(0), default=None, help="Loss line interval.")
@click.option("--keep-checkpoint", is_flag=True,
              help="Keep the checkpoint when the run finishes (holding its final state), to extend it later.")
@_verbosity
def resume_cmd(checkpoint_path: str, output: str | None, weights: str | None, iterations: int | None,
               save_every: int | None, checkpoint_every: int | None, quality: int, bits: str,
               gif_path: str | None, trace_path: str | None, device: str, print_every: int | None,
               keep_checkpoint: bool, quiet: bool, verbose: bool) -> None:
    """Continue a run from CHECKPOINT, with the inputs and settings stored in it."""
    from jaxstyle.run.resuming import job_from
    Config(device=device)  # a bad value is refused before JAX starts
    if quiet and print_every:
        raise JaxstyleError("--quiet and --print-every contradict each other; give one")
    _start(device, verbose)
    changes = {"iterations": iterations, "save_every": save_every, "checkpoint_every": checkpoint_every,
               "device": device, "print_every": print_every, "keep_checkpoint": keep_checkpoint}
    _execute(job_from(checkpoint_path, changes, output=output, gif=gif_path, trace=trace_path,
                      quality=quality, bits=int(bits), weights=weights), quiet)


@cli.command("weights")
@click.option("--weights", "path", type=str, default=None, help="Check this file instead of resolving.")
@click.option("--fetch", is_flag=True, help="Download Keras' official file into the cache if it is missing.")
def weights_cmd(path: str | None, fetch: bool) -> None:
    """Show where the VGG16 weights come from, verify them, and convert (or --fetch) them."""
    found, source = weights_mod.locate(path)
    click.echo(f"cache directory: {weights_mod.cache_dir()}")
    if found is None and not fetch:
        raise JaxstyleError(f"no VGG16 weights found (no --weights, no $JAXSTYLE_WEIGHTS, nothing at "
                            f"{weights_mod.cached_weights_path()}); run `jaxstyle weights --fetch` "
                            f"to download them or pass --weights PATH")
    params, info = weights_mod.load(path, allow_download=fetch, progress=_download_bar())
    if info.warning:
        _say(f"jaxstyle: warning: {info.warning}")
    if info.note:
        _say(f"jaxstyle: {info.note}")
    n = sum(p["kernel"].size + p["bias"].size for p in params.values())
    click.echo(f"weights: {info.path} (from {info.source})")
    click.echo(f"md5: {info.md5}  sha256: {info.sha256}")
    click.echo("official Keras file: " + ("yes" if info.official else "no (accepted: every layer's shape matches)"))
    click.echo(f"layers: {len(params)} conv layers, {n:,} parameters, all finite, shapes OK")
    click.echo(f"converted parameters: {info.converted or 'not cached (cache directory not writable)'}")


@cli.command()
@click.option("--size", "sizes", type=int, multiple=True, default=(256,), show_default=True,
              help="Image size (square for --objective peer); repeat for several.")
@click.option("--dtype", "dtypes", type=click.Choice(DTYPES), multiple=True, default=("auto",), show_default=True,
              help="Network precision (auto: bfloat16 on a TPU, float32 elsewhere); repeat for several.")
@click.option("--optimizer", "optimizers", type=click.Choice(["lbfgs", "adam"]), multiple=True,
              default=("lbfgs",), show_default=True, help="Optimizer; repeat for several.")
@click.option("--conv", "convs", type=click.Choice(["auto", "direct", "winograd"]), multiple=True,
              default=("auto",), show_default=True, help="Convolution algorithm; repeat for several.")
@click.option("--remat", "remats", type=click.Choice(["off", "on"]), multiple=True, default=("off",),
              show_default=True, help="Rematerialize each VGG block (less memory, more compute); "
                                      "repeat for both.")
@click.option("--objective", type=click.Choice(["default", "peer"]), default="default", show_default=True,
              help="jaxstyle's default transfer objective, or exactly the ../shared/peers one.")
@click.option("--batch", "batches", type=click.IntRange(1), multiple=True, default=(1,), show_default=True,
              help="Images per batch (>1: the batched solver, sharded over --devices); repeat for several.")
@click.option("--devices", type=click.IntRange(0), default=0, show_default=True,
              help="Devices to shard batches over (0: all; set XLA_FLAGS=--xla_force_host_platform_"
                   "device_count=N to split a CPU).")
@click.option("--weights", type=str, default=None, help="VGG16 weights (resolved as for transfer).")
@click.option("--synthetic-weights", is_flag=True,
              help="Random VGG16 weights: same shapes, FLOPs and timings; no file needed.")
@click.option("--content", type=str, default=None, help="Content image (default: synthetic).")
@click.option("--style", type=str, default=None, help="Style image (default: synthetic).")
@click.option("--iterations", type=click.IntRange(1), default=10, show_default=True,
              help="Iterations per timed chunk of the loop.")
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True,
              help="Timed repetitions; medians and min/max are reported.")
@click.option("--target-loss", type=float, default=None,
              help="Also time the whole run as `jaxstyle transfer` makes it (every coarse-to-fine stage, "
                   "compiling included): the wall time until the loss at full size is at most this.")
@click.option("--scales", "scales_list", type=click.IntRange(1, 8), multiple=True, default=(1,),
              show_default=True, help="Coarse-to-fine stages of the whole run timed by --target-loss "
                                      "(as transfer's --scales, each stage --run-iterations); repeat for several.")
@click.option("--run-iterations", type=click.IntRange(0), default=0, show_default=True,
              help="Iterations of the whole run timed by --target-loss (0: transfer's default).")
@click.option("--largest", is_flag=True,
              help="Instead of timing: the largest size whose compiled loop fits in the device's "
                   "available memory, with and without --remat (XLA's memory analysis).")
@click.option("--target", "target_name", type=str, default=None,
              help="Plan for a device that is not here instead of timing: tpu-v5e-1, tpu-v2-8, tpu-v4, "
                   "tpu-v6e-1 (compiled for real with libtpu: `pip install 'jax[tpu]'`), or t4, l4, "
                   "a100-40gb, h100 (from the memory estimate).")
@click.option("--fit", "fit_size", type=str, default=None, metavar="WxH",
              help="With --target: how a WxH image fits the target (e.g. 6000x4000, 24 MP): the memory per "
                   "device of each way (shorter L-BFGS history, bfloat16, split over its devices, tiles), "
                   "the first that fits, compiled deviceless on a TPU.")
@click.option("--compile", "effort", type=click.Choice(COMPILES), default="auto", show_default=True,
              help="With --target: XLA's effort for the programs timed (auto: both on a TPU, fast and full).")
@click.option("--style-loss", "style_losses", type=click.Choice(STYLE_LOSSES), multiple=True, default=("gram",),
              show_default=True, help="With --target: the style statistic of the programs timed; repeat for several.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per configuration.")
def bench(sizes, dtypes, optimizers, convs, remats, objective, batches, devices, weights, synthetic_weights,
          content, style, iterations, repeats, target_loss, scales_list, run_iterations, largest, target_name,
          fit_size, effort, style_losses, as_json) -> None:
    """Measure compile time, seconds per evaluation and per iteration, FLOP/s and memory."""
    import json as json_mod

    _bench_sizes(sizes, fit_size)
    _start("cpu" if target_name is not None else "auto", False)  # deviceless planning needs no TPU
    import jax

    if target_name is None:  # timed here: each --dtype as it runs on this machine's device
        dtypes = tuple(dict.fromkeys(resolved_dtype(d, jax.devices()[0].platform) for d in dtypes))
    if target_name is None and not largest:
        _bench_memory(sizes, dtypes, optimizers, remats, batches, objective)

    from jaxstyle.faces import bench as bench_mod
    from jaxstyle.model import vgg
    from jaxstyle.platform import memory

    if fit_size is not None and target_name is None:
        raise JaxstyleError("--fit plans for a device: give --target too")
    if target_name is not None:  # shapes only: no weights, no timing
        from jaxstyle.faces import targets
        if fit_size is not None:
            m = re.fullmatch(r"(\d+)[x×](\d+)", fit_size.strip())
            if not m:
                raise JaxstyleError(f"--fit takes WIDTHxHEIGHT (6000x4000), got {fit_size!r}")
            plan = targets.fit(target_name, (int(m.group(2)), int(m.group(1))))
            if as_json:
                click.echo(json_mod.dumps(plan))
                return
            click.echo(f"{fit_size} on {plan['target']} ({plan['hbm_bytes'] / 2**30:.0f} GiB per device), "
                       "memory per device by the estimate:")
            for w in plan["ways"]:
                tiles_note = f", {w['tiles']} tiles" if w["tiles"] > 1 else ""
                click.echo(f"  {'fits' if w['fits'] else 'no  '}  {w['need_bytes'] / 2**30:6.1f} GiB  "
                           f"{w['way']}{tiles_note}")
            if plan["chosen"] is None:
                click.echo("nothing above fits")
                return
            click.echo(f"first that fits: {plan['chosen']}")
            if "compiled_bytes" in plan:
                click.echo(f"compiled for {plan['target']} (deviceless, {plan['compile_s']} s): loop "
                           f"{plan['compiled_bytes'] / 2**30:.2f} GiB per device "
                           f"({'fits' if plan['compiled_fits'] else 'does NOT fit'}), "
                           f"{plan['flops_per_iteration'] / 1e12:.2f} TFLOP per iteration (every tile), "
                           f"{plan['seconds_per_iteration']} s per iteration by the {plan['time_source']}")
            return
        content_shape = None
        if content is not None:
            from jaxstyle.images.imageio import load_image
            content_shape = load_image(content).shape[:2]
        for size in sizes:
            for dtype in dtypes:
                for batch in batches:
                    for style_loss in style_losses:
                        config = Config(dtype=dtype, conv=convs[0], remat=remats[0] == "on",
                                        optimizer=optimizers[0], compile=effort, style_loss=style_loss)
                        row = targets.plan(target_name, config, size, batch, content_shape)
                        row.update(dtype=resolved_dtype(dtype, row["platform"]), style_loss=style_loss)
                        if largest:
                            row["largest_size"], row["largest_hbm_needed_bytes"] = targets.largest(target_name,
                                                                                                   config)
                        click.echo(json_mod.dumps(row) if as_json else targets.describe(row))
        return

    if synthetic_weights:
        params = vgg.random_params(0)
    else:
        params, info = weights_mod.load(weights, progress=_download_bar())
        if info.warning and not as_json:
            click.echo(f"jaxstyle: warning: {info.warning}", err=True)
    for path in (content, style):
        if path is not None:
            from jaxstyle.images.imageio import load_image
            load_image(path)  # fail early, with the usual one-line error
    if not largest:
        _malloc_policy(Config(), max(sizes), max(batches))
    if largest:
        free = memory.available(jax.devices()[0])
        for dtype in dtypes:
            for remat in (False, True):
                config = Config(dtype=dtype, remat=remat, conv=convs[0])
                size, need = bench_mod.largest_size(config, params, free)
                row = {"device": f"{jax.devices()[0].platform}", "dtype": dtype, "remat": remat,
                       "conv": convs[0], "available_mb": round(free / 2**20),
                       "largest_size": size, "loop_mb_at_largest": round(need / 2**20)}
                click.echo(json_mod.dumps(row) if as_json else
                           f"{row['device']} {dtype} remat={remat}: largest size {size} px "
                           f"(compiled loop {row['loop_mb_at_largest']} MiB of {row['available_mb']} MiB available)")
        return
    cases = [bench_mod.Case(size, dtype, opt, objective, conv, b, devices, remat == "on", sc, run_iterations)
             for size in sizes for dtype in dtypes for opt in optimizers for conv in convs
             for b in batches for remat in remats for sc in scales_list]
    rows = []
    for row in bench_mod.run(cases, params, content, style, iterations=iterations,
                             repeats=repeats, target_loss=target_loss):
        rows.append(row)
        if as_json:
            click.echo(bench_mod.to_json(row))
        else:
            click.echo(f"measured {bench_mod.device_name(row['device'])} size {row['size']} {row['dtype']} "
                       f"{row['optimizer']} conv={row['conv']} batch={row.get('batch', 1)} "
                       f"remat={row.get('remat', False)}", err=True)
    if not as_json:
        click.echo(bench_mod.format_table(rows))


def _bench_sizes(sizes: tuple[int, ...], fit_size: str | None) -> None:
    """bench's sizes checked as transfer checks --size, and --fit's sides likewise, before any
    work (an absurd --fit would otherwise plan millions of tiles)."""
    from jaxstyle.config import MAX_SIZE, MIN_SIZE
    for size in sizes:
        Config(size=size)
    if fit_size is not None:
        m = re.fullmatch(r"(\d+)[x×](\d+)", fit_size.strip())
        if not m:
            raise JaxstyleError(f"--fit takes WIDTHxHEIGHT (6000x4000), got {fit_size!r}")
        if not all(MIN_SIZE <= int(side) <= MAX_SIZE for side in m.groups()):
            raise JaxstyleError(f"--fit {fit_size}: each side must be from {MIN_SIZE} to {MAX_SIZE} pixels")


def _bench_memory(sizes, dtypes, optimizers, remats, batches, objective: str) -> None:
    """Refuse, as transfer does, a timed configuration whose estimate exceeds the device's memory."""
    import jax

    from jaxstyle.faces.bench import PEER_CONFIG
    from jaxstyle.platform import memory
    from jaxstyle.run.problem import default_width, memory_need
    device = jax.devices()[0]
    free = memory.available(device)
    base = PEER_CONFIG if objective == "peer" else Config()
    for size in sorted(set(sizes), reverse=True):
        for dtype in dtypes:
            for optimizer in optimizers:
                for remat in remats:
                    config = base.replace(size=size, dtype=dtype, optimizer=optimizer, remat=remat == "on")
                    batch = max(batches)
                    need = memory_need(config, (size, size), batch, default_width(device.platform, batch),
                                       device.platform)
                    memory.check(need, size, free, device.platform,
                                 "use a smaller --size" if remat == "on" else "use a smaller --size or --remat on")


@cli.command("video", cls=GroupedCommand)
@click.argument("content", type=str)
@click.argument("styles", nargs=-1, required=True, type=str)
@click.option("-o", "--output", type=click.Path(), required=True,
              help="The stylized video (.mp4, .mov, .m4v: H.264 with the clip's sound), or a folder for its frames.")
@click.option("--rate", type=click.FloatRange(0.01, 1000), default=None,
              help="Frames per second of a folder of frames (default 24); a video file keeps its own.")
@click.option("--weights", "weights", type=click.Path(dir_okay=False), default=None,
              help="VGG16 notop weights (Keras h5), resolved as for transfer.")
@click.option("--style-blend", type=CommaList(float), default=None,
              help="Weights blending the Gram targets of several style images (default: equal).")
@click.option("--content-mask", type=click.Path(), default=None, metavar="MASK",
              help="Guided transfer: one mask for every frame, or a folder with one per frame (in order).")
@click.option("--style-mask", "style_masks", type=click.Path(), multiple=True, metavar="MASK",
              help="Which pixels of a style image count; once per style image ('none': the whole image).")
@click.option("--preset", type=click.Choice(sorted(STYLE_PRESETS)), default=None,
              help="Named layers and weights, as for transfer.")
@click.option("--overwrite", is_flag=True, help="Make the video again where its output or frames are already there.")
@click.option("--skip-existing", is_flag=True, help="Keep every finished frame already there, whatever made it.")
@_verbosity
@config_options("video")
def video_cmd(content: str, styles: tuple[str, ...], output: str, rate: float | None, weights: str | None,
              style_blend, content_mask: str | None, style_masks: tuple[str, ...], preset: str | None,
              overwrite: bool, skip_existing: bool, quiet: bool, verbose: bool, **options: Any) -> None:
    """Stylize a video file or a folder of frames (CONTENT) in the style of STYLE, temporally
    consistent: each frame starts from the previous result warped by the optical flow and is
    held there by the temporal term (Ruder et al. 2016). A re-run of the same command skips
    finished frames and continues an interrupted one. Needs `pip install 'jaxstyle[video]'`."""
    from jaxstyle.clips import VIDEO_EXTRA
    try:
        from jaxstyle.clips import require, stylize
        require()
    except ImportError:
        raise JaxstyleError(VIDEO_EXTRA) from None
    from jaxstyle.observers.progress import ProgressPrinter
    from jaxstyle.observers.results import Note
    if overwrite and skip_existing:
        raise JaxstyleError("--overwrite and --skip-existing contradict each other; give one")
    config = _settings("video", options, preset)
    if quiet and config.print_every:
        raise JaxstyleError("--quiet and --print-every contradict each other; give one")
    _start(config.device, verbose)
    job = stylize.plan(content, styles, output, config, rate=rate, weights=weights, style_blend=style_blend,
                       content_mask=content_mask, style_masks=style_masks or None,
                       existing="overwrite" if overwrite else "skip" if skip_existing else "check")
    _compilation_cache()
    printer = ProgressPrinter(precision=config.dtype, lines=bool(config.print_every))
    with _StopFlag(lambda m: printer.message(m)) as stop:
        try:
            result = stylize.stylize(job, progress=None if quiet else printer, should_stop=stop,
                                     message=lambda m: None if quiet and isinstance(m, Note) else
                                     printer.message(f"jaxstyle: {m}"),
                                     download_progress=None if quiet else _download_bar())
        finally:
            printer.close()
    if result.status != "done":
        _say(f"jaxstyle: {result.message}")
        _leave(EXIT_INTERRUPTED)
    if not quiet:
        per = result.seconds_per_frame
        _say(f"wrote {result.output} ({job.hw[1]}x{job.hw[0]}, {result.frames} frames at "
             f"{float(job.clip.rate):.4g} fps): {result.finished - result.skipped} made in {result.seconds:.1f} s"
             + (f", {per:.2f} s per later frame" if per else "")
             + (f", {result.skipped} kept from an earlier run" if result.skipped else ""))
    _finish_upgrades((lambda _t: None) if quiet else _say)


WEB_EXTRA = "`jaxstyle serve` needs the web extra: pip install 'jaxstyle[web]'"


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; another than localhost lets anyone who can reach this machine "
                   "use the page.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on (0: a free one).")
@click.option("--folder", type=str, default=None,
              help="Working folder for uploads and results; nothing is written outside it. "
                   "Default: serve/ in the user cache (~/.cache/jaxstyle/serve).")
@click.option("--demo", type=str, default=None,
              help="A folder of photos and paintings the page offers besides uploads (e.g. ../shared/images).")
@click.option("--max-upload-mb", type=click.FloatRange(0.01, 1024), default=20.0, show_default=True,
              help="Largest upload; larger ones are refused (HTTP 413).")
@click.option("--max-size", type=click.IntRange(16), default=1024, show_default=True,
              help="Largest size a run may ask for; uploads are stored no larger.")
@click.option("--max-iterations", type=click.IntRange(1), default=2000, show_default=True,
              help="Most iterations a run may ask for.")
@click.option("--weights", type=str, default=None, help="VGG16 weights (resolved as for transfer).")
@click.option("--device", type=str, default="auto", show_default=True,
              help="Where runs go, one at a time: cpu, gpu or tpu, optionally one device (gpu:1).")
@click.option("-v", "--verbose", is_flag=True, help="Also show what JAX and the server libraries log.")
def serve_cmd(host: str, port: int, folder: str | None, demo: str | None, max_upload_mb: float, max_size: int,
              max_iterations: int, weights: str | None, device: str, verbose: bool) -> None:
    """Serve a local web page: pick or upload a photo and a painting, set the options, start a
    run, watch the image and the loss terms evolve, stop it, download the result. Runs are
    queued and go one at a time. Needs `pip install 'jaxstyle[web]'`."""
    from pathlib import Path
    try:
        from jaxstyle.faces import serve as serve_mod
    except ImportError as e:
        if e.name in ("flask", "werkzeug", "waitress"):
            raise JaxstyleError(WEB_EXTRA) from None
        raise
    try:
        import waitress  # noqa: F401  (imported when serving; checked before the slow start)
    except ImportError:
        raise JaxstyleError(WEB_EXTRA) from None
    Config(device=device)  # a bad value is refused before JAX starts
    root = Path(folder).expanduser() if folder else weights_mod.cache_dir() / "serve"
    demo_dir = Path(demo).expanduser() if demo else None
    if demo_dir is not None and not demo_dir.is_dir():
        raise JaxstyleError(f"{demo}: --demo needs a folder of images")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise JaxstyleError(f"{root}: cannot create the server's folder ({first_line(e)})") from None
    _check_host(host, port)  # before the slow start, not after loading the weights
    _start(device, verbose)
    params, info = weights_mod.load(weights, progress=_download_bar())
    if info.warning:
        _say(f"jaxstyle: warning: {info.warning}")
    _compilation_cache(root / "xla")  # inside the folder too
    if not verbose:
        logging.getLogger("waitress").setLevel(logging.ERROR)
    settings = serve_mod.Settings(root, int(max_upload_mb * 2**20), max_size, max_iterations, demo_dir,
                                  device=device)
    if host not in ("127.0.0.1", "localhost", "::1"):
        _say(f"jaxstyle: warning: listening on {host}: anyone who can reach this machine can use the page")
    try:
        serve_mod.serve(settings, params, host, port, say=_say,
                        ready=lambda url: _say(f"jaxstyle: serving {url} (folder {root}); Ctrl-C stops"))
    except OSError as e:
        raise JaxstyleError(f"cannot listen on {host}:{port} ({first_line(e)})") from None
    _say("jaxstyle: stopped serving")


def _check_host(host: str, port: int) -> None:
    """A --host that does not resolve, or an address and port this machine cannot listen on, is
    refused in one line (before the weights are loaded)."""
    import socket
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (OSError, UnicodeError) as e:
        raise JaxstyleError(f"--host {host!r}: no such address ({getattr(e, 'strerror', None) or first_line(e)})"
                            ) from None
    try:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as waitress listens
            probe.bind(address)
    except OSError as e:
        raise JaxstyleError(f"cannot listen on {host}:{port} ({e.strerror or first_line(e)})") from None


_WRITE_ERRNOS = {getattr(errno, n) for n in ("ENOSPC", "EPIPE", "EIO", "EFBIG", "EDQUOT") if hasattr(errno, n)}


def _detach_stdout() -> None:
    """Point the process's standard output at /dev/null, so that the interpreter's last flush of
    what could not be written does not print a second error at exit."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _malloc_policy(config: Any, size: int | None = None, batch: int = 1) -> bool:
    """Keep freed memory for reuse when a run of `config` (at `size`, a square bound) is small."""
    from jaxstyle.platform import memory
    from jaxstyle.platform.devices import select
    from jaxstyle.run.problem import memory_need

    if select(config.device)[0].platform != "cpu":
        return False  # the setting is for XLA:CPU's host allocations
    size = size or config.size
    need = memory_need(config, (size, size), batch, 1, "cpu").total
    free = memory.available()
    return bool(free and need <= runtime.KEEP_FREED_SHARE * free and runtime.keep_freed_memory())


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the CLI and turns errors into one-line messages and exit codes."""
    for name in ("stdout", "stderr"):  # closed (`2>&-`): lines that cannot be shown are dropped
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))
    args = sys.argv[1:] if argv is None else argv
    try:
        os.getcwd()
    except OSError:
        if not {"-h", "--help", "--version"} & set(args):
            _say("jaxstyle: error: the current directory no longer exists; cd to one that does")
            sys.exit(1)
    try:
        code = cli.main(args=argv, prog_name="jaxstyle", standalone_mode=False)
        sys.stdout.flush()  # what is still buffered fails here, not silently at exit
    except OSError as e:  # standard output on a full device or a closed pipe, or the unforeseen
        _detach_stdout()
        if e.errno in _WRITE_ERRNOS and e.filename is None:
            _say(f"jaxstyle: error: cannot write to standard output ({e.strerror})")
        else:
            _say(f"jaxstyle: error: {first_line(e)}")
        sys.exit(1)
    except click.UsageError as e:
        click.echo(f"jaxstyle: error: {e.format_message()}", err=True)
        _leave(EXIT_USAGE)
    except click.ClickException as e:
        click.echo(f"jaxstyle: error: {e.format_message()}", err=True)
        _leave(e.exit_code)
    except JaxstyleError as e:
        click.echo(f"jaxstyle: error: {e.message}", err=True)
        _leave(e.exit_code)
    except (KeyboardInterrupt, click.Abort):
        click.echo("\njaxstyle: aborted; nothing was written", err=True)
        _leave(EXIT_INTERRUPTED)
    except SystemExit as e:  # a summary's exit code (an interrupted or failed run)
        if _compiling():
            _exit_now(e.code if isinstance(e.code, int) else 0 if e.code is None else 1)
        raise
    _leave(code if isinstance(code, int) else 0)


def _leave(code: int) -> None:
    """Exit with `code`; at once when a full-effort compile is still running (`_exit_now`)."""
    if _compiling():
        _exit_now(code)
    sys.exit(code)


def _compiling() -> bool:
    """Whether a full-effort compile (`--compile both`) still runs beside this process's work."""
    problem = sys.modules.get("jaxstyle.run.problem")
    return problem is not None and problem.upgrades_pending() > 0

"""What a run is asked to make: the images, their styles, and every file it may write.

A `Job` is built from the CLI or the Python API (one image, a list, a folder or a glob) and
checked before any work: every path the run may write (results, snapshots, animations, traces,
checkpoints) is writable, has a format we can write, is not a file the run reads, and is not
written twice.
"""
from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from jaxstyle.config import INITS, MODES, Config
from jaxstyle.errors import ConfigError, InputError
from jaxstyle.files import check_name_length, check_output_path, same_file
from jaxstyle.images import masks, output

ImageLike = Any  # a path, a PIL image or an array
# What a run does with a result file that is already there (and has no checkpoint beside it):
# "check": a folder run keeps it when it records these very settings (`resuming.result_note`)
# and refuses to start otherwise, one image's run replaces it; "overwrite": make it again;
# "skip": keep it, whatever made it.
EXISTING = ("check", "overwrite", "skip")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif")


@dataclass(frozen=True)
class Item:
    """One image to make: its content (None when reconstructing a style), its styles, its files."""

    name: str
    content: ImageLike | None
    styles: tuple[ImageLike, ...]
    output: Path | None = None
    gif: Path | None = None
    trace: Path | None = None
    checkpoint: Path | None = None  # where its checkpoint is written, and resumed from
    content_mask: ImageLike | None = None  # guided: one colour per region, a style each
    style_masks: tuple[ImageLike | None, ...] = ()  # guided: one per style (None: all of it)
    # A video frame's (`jaxstyle.clips`): its initial image (instead of --init) and its temporal
    # target and per-pixel weights (RGB 0..255 and (h, w), at the content's size).
    init: ImageLike | None = None
    temporal: tuple[Any, Any] | None = None

    @property
    def inputs(self) -> tuple:
        return tuple(x for x in (self.content, *self.styles, self.content_mask, *self.style_masks)
                     if isinstance(x, (str, os.PathLike)) and not masks.is_keep(x))

    @property
    def regions(self) -> int:
        """Regions of a guided run, one per style (0: unguided, the styles are blended)."""
        guided = self.content_mask is not None or any(m is not None for m in self.style_masks)
        return len(self.styles) if guided else 0


@dataclass(frozen=True)
class Job:
    """A run's images and settings. `folder`: one item's failure does not stop the others, and
    items whose result is already written are skipped."""

    mode: str
    config: Config
    items: tuple[Item, ...]
    style_blend: tuple[float, ...] | None = None
    quality: int = 95
    bits: int = 8
    folder: bool = False
    resume: Path | None = None  # an explicit checkpoint to continue (one item)
    weights: Any = field(default=None, repr=False)  # a path, loaded parameters, or None
    makes_folders: bool = False  # the output folders are made when the run starts
    existing: str = "check"  # a result already there: see EXISTING

    @property
    def regions(self) -> int:
        """Regions of a guided run (every item has as many), 0 when unguided."""
        return max((item.regions for item in self.items), default=0)


def is_folder_spec(spec: Any) -> bool:
    """A directory, or a glob pattern that is not itself an existing file, names many images."""
    if not isinstance(spec, (str, os.PathLike)):
        return False
    path = Path(spec)
    return path.is_dir() or (not path.exists() and any(c in str(spec) for c in "*?["))


def collect(spec: str | os.PathLike) -> list[Path]:
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


def _tag(mode: str, styles: Sequence[Any]) -> str:
    """What a default name adds to the image's: `_painting` (transfer), `_content`, `_style`."""
    if mode == "transfer":
        named = [s for s in styles if isinstance(s, (str, os.PathLike)) and not masks.is_keep(s)]
        return "_" + (Path(named[0]).stem if named else "style")
    return f"_{mode}"


def _existing(existing: str) -> str:
    if existing not in EXISTING:
        raise ConfigError(f"existing={existing!r} is not one of {', '.join(EXISTING)}")
    return existing


def default_output(mode: str, image: str | os.PathLike, styles: Sequence[Any] = (),
                   directory: str | os.PathLike = ".", suffix: str = ".png", reserve: bool = False) -> Path:
    """The result's name when none is given: `photo_painting.png` (transfer), `photo_content.png`
    or `painting_style.png` in `directory`; where that file or its checkpoint exists, the next
    free name (`photo_painting-2.png`, ...), so no earlier result or run is ever replaced. With
    `reserve`, the name is taken by creating it, empty, exclusively: two runs started together
    never pick the same one (the caller removes it if the run writes nothing there)."""
    stem = Path(image).stem + _tag(mode, styles)
    directory = Path(directory)
    for n in range(1, 100000):
        path = directory / f"{stem}{'' if n == 1 else f'-{n}'}{suffix}"
        if not path.exists() and not _checkpoint_path(path).exists():
            if not reserve:
                return path
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                return path
            except FileExistsError:
                continue  # another run took it between the test and the creation
            except OSError as e:
                raise InputError(f"{path}: cannot create the result ({e.strerror})") from None
    raise InputError(f"{directory}: no free name for {stem}{suffix}; give one with -o")


def _abs(p: str | os.PathLike | None) -> Path | None:
    return None if p is None else Path(os.path.abspath(p))


def single(mode: str, config: Config, content: ImageLike | None, styles: Sequence[ImageLike], *,
           output_path: str | os.PathLike | None = None, gif: str | os.PathLike | None = None,
           trace: str | os.PathLike | None = None, style_blend: Sequence[float] | None = None,
           quality: int = 95, bits: int = 8, resume: str | os.PathLike | None = None,
           weights: Any = None, content_mask: ImageLike | None = None,
           style_masks: Sequence[ImageLike | None] | None = None, existing: str = "check",
           init: ImageLike | None = None, temporal: tuple[Any, Any] | None = None) -> Job:
    """A job for one image; `content_mask` and `style_masks` (one per style image, None for a
    whole image) make it guided (see `masks`); `existing`: see EXISTING; `init` and `temporal`:
    a video frame's (see `Item`)."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    out = _abs(output_path)
    ckpt = _abs(resume) if resume is not None else (_checkpoint_path(out) if out is not None else None)
    name = Path(content).name if isinstance(content, (str, os.PathLike)) else \
        (Path(styles[0]).name if mode == "style" and styles and isinstance(styles[0], (str, os.PathLike))
         else "image")
    item = Item(name, content, tuple(styles), out, _abs(gif), _abs(trace), ckpt, content_mask,
                align_style_masks(styles, style_masks), init, temporal)
    job = Job(mode, config, (item,), _blend(style_blend), quality, bits, False, _abs(resume), weights,
              existing=_existing(existing))
    check(job)
    return job


def many(mode: str, config: Config, contents: Sequence[ImageLike], styles: Sequence[ImageLike], *,
         outdir: str | os.PathLike | None = None, suffix: str = ".png",
         gif_dir: str | os.PathLike | None = None, trace_dir: str | os.PathLike | None = None,
         style_blend: Sequence[float] | None = None, quality: int = 95, bits: int = 8,
         weights: Any = None, folder: bool = True, content_mask: Any = None,
         style_masks: Sequence[ImageLike | None] | None = None, existing: str = "check") -> Job:
    """A job for many images: results go to OUTDIR/<stem>_<painting><suffix> as for one image
    (`<stem>_content`, `<stem>_style` in those modes; GIFs and traces to their folders, named
    alike); in style mode each image is its own style. `content_mask`: one mask for every
    image, a folder holding one per image (by name), or a list (one per image). `existing`:
    see EXISTING."""
    bases = [Path(c).stem if isinstance(c, (str, os.PathLike)) else f"image{i + 1}" for i, c in enumerate(contents)]
    names = [base + _tag(mode, styles) for base in bases]
    seen: dict[str, ImageLike] = {}
    for name, c in zip(names, contents):
        if name in seen and outdir is not None:
            raise InputError(f"{c}: has the same name as {seen[name]}; their results would both be "
                             f"{Path(outdir) / (name + suffix)} (rename one, or run them apart)")
        seen[name] = c
    out = _abs(outdir)
    items = []
    content_masks = _content_masks(content_mask, contents)
    aligned = align_style_masks(styles, style_masks)
    for base, name, c, cm in zip(bases, names, contents, content_masks):
        result = out / f"{name}{suffix}" if out is not None else None
        content, own = (None, (c,)) if mode == "style" else (c, tuple(styles))
        items.append(Item(Path(c).name if isinstance(c, (str, os.PathLike)) else base, content, own,
                          result, _abs(gif_dir) / f"{name}.gif" if gif_dir is not None else None,
                          _abs(trace_dir) / f"{name}.json" if trace_dir is not None else None,
                          _checkpoint_path(result) if result is not None else None, cm,
                          aligned if mode != "style" else ()))
    job = Job(mode, config, tuple(items), _blend(style_blend), quality, bits, folder, None, weights, True,
              _existing(existing))
    for d, what in ((outdir, "-o"), (gif_dir, "--gif"), (trace_dir, "--trace")):
        if d is not None:
            _check_folder(Path(d), what, contents)
    check(job)
    return job


def align_style_masks(styles: Sequence[ImageLike], style_masks: Sequence[ImageLike | None] | None
                      ) -> tuple[ImageLike | None, ...]:
    """Style masks given one per style image (`keep` styles have none) as one per style;
    "none" or None: the whole image."""
    if not style_masks:
        return ()
    real = [i for i, s in enumerate(styles) if not masks.is_keep(s)]
    if len(style_masks) != len(real):
        raise ConfigError(f"--style-mask was given {len(style_masks)} time(s) for {len(real)} style image(s); "
                          "give one per style image (none: the whole image)")
    out: list[ImageLike | None] = [None] * len(styles)
    for i, m in zip(real, style_masks):
        out[i] = None if m is None or (isinstance(m, str) and m == "none") else m
    return tuple(out)


def _content_masks(spec: Any, contents: Sequence[ImageLike]) -> list[ImageLike | None]:
    """One content mask per content image from a file (shared), a folder (by name) or a list."""
    if spec is None:
        return [None] * len(contents)
    if isinstance(spec, (list, tuple)):
        if len(spec) != len(contents):
            raise ConfigError(f"content_mask has {len(spec)} mask(s) for {len(contents)} image(s)")
        return list(spec)
    if isinstance(spec, (str, os.PathLike)) and Path(spec).is_dir():
        return [masks.find_in_folder(Path(spec), c if isinstance(c, (str, os.PathLike)) else f"image{i + 1}",
                                     IMAGE_SUFFIXES) for i, c in enumerate(contents)]
    return [spec] * len(contents)


def _blend(b: Sequence[float] | None) -> tuple[float, ...] | None:
    return None if b is None else tuple(float(x) for x in b)


def _checkpoint_path(out: Path) -> Path:
    from jaxstyle.observers.checkpoint import default_path
    return default_path(out)


def _check_folder(d: Path, what: str, contents: Sequence[ImageLike]) -> None:
    if d.exists() and not d.is_dir():
        raise InputError(f"{d}: exists and is not a directory; {what} takes a folder when stylizing many images")
    if not d.exists() and not d.parent.is_dir():
        raise InputError(f"{d}: parent directory {d.parent} does not exist")
    for c in contents:
        if isinstance(c, (str, os.PathLike)) and same_file(Path(c).parent, d):
            raise InputError(f"{d}: is the folder the images are read from; write the results elsewhere")


def shares_styles(job: Job, config: Config) -> bool:
    """Whether a batch's images share one set of style images (and targets): not when colours
    are matched per content, in style mode, or when a `keep` region's style is its own content."""
    keep = any(masks.is_keep(s) for item in job.items for s in item.styles)
    return config.preserve_colors == "none" and job.mode != "style" and not keep


def written_paths(job: Job, item: Item) -> list[tuple[Path, str]]:
    """Every file the run may write for `item`, with what it is."""
    c = job.config
    total = sum(n for _, n in c.stages())
    paths: list[tuple[Path, str]] = []
    if item.output is not None:
        paths.append((item.output, "the result"))
        if c.save_every:
            paths += [(output.snapshot_path(item.output, k), "a snapshot")
                      for k in range(c.save_every, total, c.save_every)]
        if item.checkpoint is not None:
            paths.append((item.checkpoint, "its checkpoint"))
    for p, what in ((item.gif, "the animation"), (item.trace, "the trace")):
        if p is not None:
            paths.append((p, what))
    return paths


def _check_settings(job: Job) -> None:
    """The inputs each mode needs, and the settings that must agree with them."""
    mode, config = job.mode, job.config
    if config.tile and any(item.gif is not None or item.trace is not None for item in job.items):
        raise ConfigError("--gif and --trace cannot see inside a tiled stage (--tile); leave them out")
    for item in job.items:
        if mode == "transfer" and (item.content is None or not item.styles):
            raise ConfigError("transfer needs a content image and at least one style image")
        if mode == "content" and item.content is None:
            raise ConfigError("content reconstruction needs an image")
        if mode == "style" and not item.styles:
            raise ConfigError("style reconstruction needs an image")
        if job.style_blend is not None and len(job.style_blend) != len(item.styles):
            raise ConfigError(f"--style-blend has {len(job.style_blend)} value(s) for "
                              f"{len(item.styles)} style image(s)")
        _check_guided(job, item)
    if mode == "content" and config.content_weight > 0 and not config.content_layers:
        raise ConfigError("content reconstruction needs at least one content layer")
    if mode == "style" and not config.style_layers:
        raise ConfigError("style reconstruction needs at least one style layer")
    if job.style_blend is not None:
        b = job.style_blend
        if any(not math.isfinite(x) or x < 0 for x in b) or not 0 < sum(b) < math.inf:
            raise ConfigError("--style-blend values must be non-negative, finite and not all zero")
    for item in job.items:
        if (config.temporal_weight > 0) != (item.temporal is not None):
            raise ConfigError("the temporal term (--temporal-weight) is for video frames: use `jaxstyle video`"
                              if item.temporal is None else "a video frame's temporal target needs --temporal-weight")
    if config.init == "content" and mode == "style":
        raise ConfigError(f"--init content needs a content image ({mode} mode has none); use --init noise")
    if config.init == "style" and mode == "content":
        raise ConfigError(f"--init style needs a style image ({mode} mode has none); use --init noise")


def _check_guided(job: Job, item: Item) -> None:
    """Masks and `keep` styles only where a guided run can use them."""
    keeps = sum(masks.is_keep(s) for s in item.styles)
    guided = item.regions > 0
    if job.mode != "transfer" and (guided or (keeps and job.mode != "style")):
        raise ConfigError("--content-mask and --style-mask are for transfer mode")
    if job.mode != "transfer":
        return
    if keeps and item.content_mask is None:
        raise ConfigError(f"a style given as {masks.KEEP!r} leaves a region of the content unstyled, so it "
                          "needs --content-mask (to name a file called keep, write ./keep)")
    if keeps == len(item.styles):
        raise ConfigError(f"every style is {masks.KEEP!r}: give at least one style image")
    if guided and job.style_blend is not None:
        raise ConfigError("--style-blend mixes styles over the whole image; with masks each style paints "
                          "its own region, so leave --style-blend out")
    if item.content_mask is None and len(item.styles) > 1 and guided:
        raise ConfigError("--style-mask with several style images needs --content-mask (which region each "
                          "style paints)")
    if guided and job.config.style_weight <= 0:
        raise ConfigError("--content-mask and --style-mask guide the style term, but --style-weight is 0")


def check(job: Job) -> None:
    """Refuse, in one line, a job that cannot run or would write where it must not (see the
    module doc)."""
    _check_settings(job)
    if job.config.init not in INITS:
        init = (job.config.init,)
    else:
        init = ()
    reads = [Path(p) for item in job.items for p in (*item.inputs, *init)]
    seen: dict[Path, str] = {}
    for item in job.items:
        for path, what in written_paths(job, item):
            check_name_length(path, what=what)  # before any stat: a name too long raises there
            if path.exists() and path.is_dir():
                raise InputError(f"{path}: is a directory; it cannot be {what}")
            for r in reads:
                if same_file(path, r):
                    raise InputError(f"{path}: would be {what} of {item.name} but is an input; "
                                     "refusing to overwrite it")
            key = path.resolve()
            if key in seen:
                raise InputError(f"{path}: would be written twice ({seen[key]} and {what})")
            seen[key] = what
        if item.output is not None:
            if not job.makes_folders or item.output.parent.is_dir():
                output.check_output(item.output, item.inputs + init, bits=job.bits)
            else:  # the folder is made when the run starts
                output.check_output(item.output.parent.parent / item.output.name, (), bits=job.bits)
        if item.gif is not None and item.gif.suffix.lower() != ".gif":
            raise InputError(f"{item.gif}: --gif needs a .gif file name")
        for p in (item.gif, item.trace):
            if p is not None and p.parent.is_dir():
                check_output_path(p, item.inputs + init)


def folder_for(spec: str, styles: Sequence[ImageLike], outdir: str | os.PathLike, config: Config,
               mode: str = "transfer", **kwargs: Mapping[str, Any]) -> Job:
    """The job for a folder or glob of content images (or of style images in style mode)."""
    return many(mode, config, collect(spec), styles, outdir=outdir, **kwargs)

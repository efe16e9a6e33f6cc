"""The one source of truth for settings and their defaults.

`Config` is frozen and validated on construction. The CLI builds its options from the
field metadata below (`cli.py`), and each mode's defaults are a preset `Config`
(`PRESETS`), so a default is changed here and nowhere else.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from jaxstyle.errors import ConfigError
from jaxstyle.model.layers import LAYER_NAMES

MODES = ("transfer", "content", "style")
VIDEO = "video"  # `jaxstyle video`: each frame a transfer, with the temporal settings (PRESETS["video"])
OPTIMIZERS = ("lbfgs", "adam")
DTYPES = ("auto", "float32", "bfloat16")
CONVS = ("auto", "direct", "winograd")
POOLINGS = ("max", "avg")
COMPILES = ("auto", "fast", "full", "both")
PRECISIONS = ("auto", "default", "high", "highest")
COLOR_MODES = ("none", "luminance", "covariance", "histogram")
STYLE_LOSSES = ("gram", "w2", "sliced", "histogram", "meanstd", "gram+histogram")
INITS = ("content", "noise", "style")  # or a path to an image file
MIN_SIZE = 16  # VGG16's block5 needs at least one pixel after four 2x2 pools
MAX_SIZE = 16384

# Settings that decide where a run stops or what it writes, not the path it takes: a resumed
# run may change these and still end exactly where an uninterrupted one would.
RUN_ONLY = ("iterations", "scale_iterations", "save_every", "checkpoint_every", "keep_checkpoint", "batch_size",
            "devices", "device", "print_every", "frame_iterations")

STYLE_LAYERS = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3")


def _meta(help: str, modes: tuple[str, ...] = MODES, **extra: Any) -> dict:
    return {"help": help, "modes": modes, **extra}


# Transfer's settings that mean nothing for a video's frames (`clips.stylize` says why).
NOT_FOR_VIDEO = ("save_every", "keep_checkpoint", "batch_size", "devices")


def applies(f: dataclasses.Field, mode: str) -> bool:
    """Whether setting `f` is an option of `mode`: `video` takes transfer's (but NOT_FOR_VIDEO)
    and its own."""
    modes = f.metadata["modes"]
    return mode in modes or (mode == VIDEO and "transfer" in modes and f.name not in NOT_FOR_VIDEO)


@dataclass(frozen=True)
class Config:
    """Every setting of a run. Build with keyword arguments; invalid values raise ConfigError."""

    size: int = field(default=512, metadata=_meta(
        "Longest side of the result in pixels; the content's aspect ratio is kept.", short="-s"))
    iterations: int = field(default=300, metadata=_meta(
        "Optimizer iterations (an L-BFGS iteration is usually one loss+gradient evaluation).",
        short="-i"))
    scales: int = field(default=1, metadata=_meta(
        "Coarse-to-fine stages: N>1 starts at --size/2^(N-1) and doubles up to --size, each stage "
        "starting from the previous result upsampled (it reaches a given loss no sooner at 512 px: "
        "bench/README.md; it makes a first result at a large size sooner)."))
    scale_iterations: tuple[int, ...] = field(default=(), metadata=_meta(
        "Iterations of each stage, coarsest first (comma-separated; default: --iterations each)."))
    preserve_colors: str = field(default="none", metadata=_meta(
        "Keep the content's colours: luminance (transfer on luminance only, then recombine with "
        "the content's chroma), or match the style's colours to the content first (covariance: "
        "mean and covariance; histogram: per channel).", modes=("transfer",), choices=COLOR_MODES))
    style_scale: float = field(default=1.0, metadata=_meta(
        "Size of the style image relative to --size: larger values give larger brush strokes.",
        modes=("transfer", "style")))
    content_layers: tuple[str, ...] = field(default=("block4_conv2",), metadata=_meta(
        "VGG16 conv layers whose activations the result must match (comma-separated).",
        modes=("transfer", "content")))
    content_layer_weights: tuple[float, ...] = field(default=(1.0,), metadata=_meta(
        "Weight of each content layer (comma-separated; equal when --content-layers is given without them).",
        modes=("transfer", "content")))
    style_layers: tuple[str, ...] = field(default=STYLE_LAYERS, metadata=_meta(
        "VGG16 conv layers whose Gram matrices the result must match (comma-separated).",
        modes=("transfer", "style")))
    style_layer_weights: tuple[float, ...] = field(default=(0.05, 0.15, 0.2, 0.3, 0.3), metadata=_meta(
        "Weight of each style layer (comma-separated; equal when --style-layers is given without them).",
        modes=("transfer", "style")))
    style_loss: str = field(default="gram", metadata=_meta(
        "Style statistic matched at each style layer: gram (Gatys et al.'s Gram matrices), w2 "
        "(mean and covariance under the Wasserstein-2 distance), sliced (sliced Wasserstein: the "
        "distribution along C random directions), histogram (each channel's distribution), "
        "meanstd (each channel's mean and standard deviation), gram+histogram (both, as Risser et "
        "al.). README: Style losses.",
        modes=("transfer", "style"), choices=STYLE_LOSSES))
    content_weight: float = field(default=1.0, metadata=_meta(
        "Weight of the content term in the total loss.", modes=("transfer",)))
    style_weight: float = field(default=10.0, metadata=_meta(
        "Weight of the style term in the total loss.", modes=("transfer",)))
    average: float = field(default=0.0, metadata=_meta(
        "Write the exponential moving average of the iterates with this decay (bias-corrected, "
        "restarted at each stage) instead of the last iterate (0: off). Measured: 0.9 helps Adam; "
        "L-BFGS gains little, and a decay near 1 lags in short runs (README: Style losses)."))
    tv_weight: float = field(default=1e-4, metadata=_meta(
        "Weight of the total-variation (smoothness) term, in 0..255 pixel units."))
    normalize: bool = field(default=True, metadata=_meta(
        "Divide each layer's term by its target's mean square, so terms are O(1) whatever the "
        "layer or image; --no-normalize gives raw mean-squared terms."))
    optimizer: str = field(default="lbfgs", metadata=_meta(
        "Optimizer.", choices=OPTIMIZERS))
    lbfgs_memory: int = field(default=0, metadata=_meta(
        "L-BFGS history size (pairs of past steps and gradient changes; each pair holds two "
        "images); 0 (auto): 100 on a CPU up to 1024 px (12% fewer evaluations than 30 at 512 px), "
        "30 elsewhere, where memory is scarcer."))
    linesearch_steps: int = field(default=20, metadata=_meta(
        "Most loss+gradient evaluations one L-BFGS line search may make."))
    precondition: float = field(default=0.25, metadata=_meta(
        "L-BFGS preconditioner: damp spatial frequencies above this many cycles per pixel in "
        "the optimized variable (0: off). Reaches a given loss in ~15% fewer evaluations."))
    learning_rate: float = field(default=5.0, metadata=_meta(
        "Adam learning rate, in 0..255 pixel units."))
    init: str = field(default="content", metadata=_meta(
        "Initial image: content, noise (seeded), style, or the path of an image file."))
    seed: int = field(default=0, metadata=_meta("Random seed for noise initialization."))
    print_every: int = field(default=0, metadata=_meta(
        "Also print a line with the loss terms every N iterations (0: only the live progress line)."))
    save_every: int = field(default=0, metadata=_meta(
        "Save a numbered snapshot beside the output every N iterations (0: never)."))
    checkpoint_every: int = field(default=0, metadata=_meta(
        "Write a resumable checkpoint (OUT.ckpt.npz) every N iterations (0: only when interrupted)."))
    keep_checkpoint: bool = field(default=False, metadata=_meta(
        "Keep the checkpoint when the run finishes, holding its final state, so that a later "
        "`jaxstyle resume --iterations N` can extend the run (a finished run otherwise removes it)."))
    batch_size: int = field(default=0, metadata=_meta(
        "Images per compiled batch when stylizing a folder (0: as many as fit, up to 8 per device)."))
    device: str = field(default="auto", metadata=_meta(
        "Where to run: cpu, gpu or tpu, optionally one device of them (gpu:1); auto: the "
        "accelerator jax finds, else the CPU."))
    devices: int = field(default=0, metadata=_meta(
        "Devices to shard a folder's batches over (0: all of --device's devices)."))
    tile: int = field(default=0, metadata=_meta(
        "Run the full-resolution stage in overlapping tiles of at most N x N pixels, blended "
        "without seams, so its memory is bounded by N, not by --size; the coarser stages run "
        "whole (0: no tiles). Each tile runs the stage's iterations, matching the global style "
        "targets and its own part of the content."))
    split_image: bool = field(default=False, metadata=_meta(
        "Split each image by rows over the run's devices instead of giving each device its own "
        "images: N devices hold N times the pixels of one, with no tiles and no seams (XLA "
        "exchanges the convolutions' border rows and sums the Gram matrices across devices)."))
    dtype: str = field(default="auto", metadata=_meta(
        "Precision of the network's activations (losses are always accumulated in float32); auto: "
        "bfloat16 on a TPU (9% less time per iteration there by XLA's cost model, the loss held), "
        "float32 elsewhere.", choices=DTYPES))
    remat: bool = field(default=False, metadata=_meta(
        "Recompute each VGG block's activations in the backward pass instead of storing them: "
        "larger images fit, at the cost of more compute."))
    pooling: str = field(default="max", metadata=_meta(
        "Pooling between VGG blocks: max (VGG16's own) or avg (Gatys et al.'s choice for image "
        "synthesis: smoother gradients).", choices=POOLINGS))
    bucket: int = field(default=0, metadata=_meta(
        "Round each image's working height and width up to a multiple of N pixels (the padding is "
        "masked out of every loss), so images of similar shapes share one compiled program "
        "(0: automatic, 16 on a CPU, 64 on a GPU or TPU, where compiling costs more)."))
    precision: str = field(default="auto", metadata=_meta(
        "Precision of the convolutions: default (on TPU one bfloat16 pass, TF32 on recent GPUs), "
        "high (three bfloat16 passes), highest (float32); Gram matrices highest on a CPU, high on accelerators. "
        "auto: default (see bench/README.md for what it does to L-BFGS).", choices=PRECISIONS))
    compile: str = field(default="auto", metadata=_meta(
        "XLA's optimization effort: full, fast (a new shape's programs compile several times "
        "faster, and run slower), or both (the run starts with fast programs while full-effort ones "
        "compile beside it and take over at a chunk boundary; a later run of the shape starts with "
        "them from the compilation cache); auto: both on TPU, where compiling costs most, full "
        "elsewhere.", choices=COMPILES))
    conv: str = field(default="auto", metadata=_meta(
        "Convolution algorithm: direct, winograd (F(4x4,3x3): 4x fewer multiplies), or auto "
        "(Winograd on CPU for the deep layers where it measured faster).", choices=CONVS))
    # Video (`jaxstyle video`): frame t is optimized from the previous result warped by the
    # optical flow, and the temporal term holds it there (Ruder et al. 2016; README: Video).
    temporal_weight: float = field(default=0.0, metadata=_meta(
        "Weight of the temporal term: the squared difference to the earlier results warped to "
        "this frame by the optical flow, where the flow is reliable (0..255 pixel units).", modes=("video",)))
    temporal_frames: tuple[int, ...] = field(default=(1,), metadata=_meta(
        "Earlier frames the temporal term holds a frame to, by distance (comma-separated): 1, the previous; "
        "1,2,4, Ruder et al.'s long-term terms, each pixel held to the closest frame that saw it.",
        modes=("video",)))
    frame_iterations: int = field(default=0, metadata=_meta(
        "Iterations of each frame after the first, which starts from the previous result warped "
        "(0: --iterations).", modes=("video",)))
    tolerance: float = field(default=0.0, metadata=_meta(
        "Stop a frame early (the first one too) once L-BFGS has gone 5 iterations without lowering "
        "the loss by this fraction (0: run every iteration).", modes=("video",)))
    passes: int = field(default=1, metadata=_meta(
        "Passes over the video (Ruder et al.'s multi-pass): the first forward, each later one "
        "in the other direction, every frame starting from its last result blended with the neighbour "
        "this pass just made (--pass-blend) and held by the temporal term to the frames on both sides; "
        "--frame-iterations a frame each pass.", modes=("video",)))
    pass_blend: float = field(default=1.0, metadata=_meta(
        "In passes after the first, how much of the neighbour this pass just made (warped, where it "
        "saw the pixel) a frame starts from, against its own last result: 0 none, 1 half each.",
        modes=("video",)))


    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            item = {"tuple[str, ...]": str, "tuple[float, ...]": float, "tuple[int, ...]": int}.get(f.type)
            if item is not None and not isinstance(value, tuple):
                if isinstance(value, (str, bytes)):
                    value = _as_tuple(value)
                    if item is not str:
                        try:
                            value = tuple(item(v) for v in value)
                        except ValueError:
                            raise ConfigError(f"--{f.name.replace('_', '-')} must be a comma-separated "
                                              f"list of {item.__name__}s, got {getattr(self, f.name)!r}") from None
                object.__setattr__(self, f.name, tuple(value))
        _validate(self)

    def replace(self, **changes: Any) -> "Config":
        """A copy with `changes`; changing a layer list without its weights gives equal weights."""
        for kind in ("content", "style"):
            layers, weights = f"{kind}_layers", f"{kind}_layer_weights"
            if changes.get(layers) is not None and changes.get(weights) is None:
                n = len(_as_tuple(changes[layers]))
                changes[weights] = (1.0 / n,) * n if n else ()
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def stages(self) -> list[tuple[int, int]]:
        """(size, iterations) of each coarse-to-fine stage, coarsest first."""
        sizes = [self.size // 2 ** (self.scales - 1 - k) for k in range(self.scales)]
        its = self.scale_iterations or (self.iterations,) * self.scales
        return list(zip(sizes, its))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every setting."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Config":
        """Inverse of `to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return cls(**dict(data))


def describe_fields(mode: str | None = None, indent: str = "    ") -> str:
    """Every setting (those of `mode` only, with its preset's defaults) as `name (type, default
    ...): what it does`, one paragraph each, from the fields' metadata: Config's `__doc__` and
    the API functions' are made from it, so that `help()` says what `--help` says."""
    import textwrap
    base = PRESETS[mode] if mode is not None else Config()
    names = {f.name for f in dataclasses.fields(Config)}
    out = []
    for f in dataclasses.fields(Config):
        if mode is not None and not applies(f, mode):
            continue
        words = re.sub(r"--(no-)?([a-z][a-z0-9-]*)",
                       lambda m: m.group(2).replace("-", "_") + ("=False" * bool(m.group(1)))
                       if m.group(2).replace("-", "_") in names else m.group(0), f.metadata["help"])
        text = f"{f.name} ({f.type}, default {getattr(base, f.name)!r}): {words}"
        out.append(textwrap.fill(text, 96, initial_indent=indent, subsequent_indent=indent + "    "))
    return "\n".join(out)


# The automatic L-BFGS history (`--lbfgs-memory 0`): measured at 512 px on a CPU (bench/README.md),
# 100 pairs reach PyTorch's 300-evaluation loss in 12% fewer evaluations than 30, for 2.6% more
# time per iteration; the history is 2 images per pair, so it stays at 30 on accelerators and
# for large images.
LBFGS_MEMORY = 30
LBFGS_MEMORY_CPU = 100
LBFGS_MEMORY_CPU_UP_TO = 1024


def auto_lbfgs_memory(size: int, platform: str = "cpu") -> int:
    """The L-BFGS history `--lbfgs-memory 0` picks for `size` on `platform`."""
    return LBFGS_MEMORY_CPU if platform == "cpu" and size <= LBFGS_MEMORY_CPU_UP_TO else LBFGS_MEMORY


def resolved_dtype(dtype: str, platform: str) -> str:
    """--dtype made concrete for a device `platform`: auto is bfloat16 on a TPU, float32 elsewhere."""
    return dtype if dtype != "auto" else ("bfloat16" if platform == "tpu" else "float32")


def resolve(config: Config, platform: str) -> Config:
    """`config` with its automatic settings made concrete for a device `platform` ("cpu", "gpu",
    "tpu"); runs store and compare the resolved settings."""
    effort = config.compile if config.compile != "auto" else ("both" if platform == "tpu" else "full")
    precision = config.precision if config.precision != "auto" else "default"
    dtype = resolved_dtype(config.dtype, platform)
    return config.replace(bucket=config.bucket or (16 if platform == "cpu" else 64), compile=effort,
                          precision=precision, dtype=dtype,
                          lbfgs_memory=config.lbfgs_memory or auto_lbfgs_memory(config.size, platform))


def _as_tuple(value: Any) -> tuple:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


def _validate(c: Config) -> None:
    if not isinstance(c.size, int) or isinstance(c.size, bool) or not MIN_SIZE <= c.size <= MAX_SIZE:
        raise ConfigError(f"--size must be an integer from {MIN_SIZE} to {MAX_SIZE}, got {c.size!r}")
    for name in ("iterations", "save_every", "checkpoint_every", "seed", "batch_size", "devices",
                 "print_every"):
        value = getattr(c, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be a non-negative integer, got {value!r}")
    for name, low in (("lbfgs_memory", 0), ("linesearch_steps", 1)):
        value = getattr(c, name)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 1000:
            raise ConfigError(f"--{name.replace('_', '-')} must be an integer from {low} to 1000, got {value!r}")
    for kind in ("content", "style"):
        layers = getattr(c, f"{kind}_layers")
        weights = getattr(c, f"{kind}_layer_weights")
        for layer in layers:
            if layer not in LAYER_NAMES:
                raise ConfigError(f"unknown {kind} layer {layer!r}; VGG16 conv layers are "
                                  f"{', '.join(LAYER_NAMES)}")
        if len(set(layers)) != len(layers):
            raise ConfigError(f"--{kind}-layers lists a layer twice: {','.join(layers)}")
        if len(weights) != len(layers):
            raise ConfigError(f"--{kind}-layer-weights has {len(weights)} value(s) for "
                              f"{len(layers)} {kind} layer(s)")
        for w in weights:
            _check_weight(f"--{kind}-layer-weights", w)
    for name in ("content_weight", "style_weight", "tv_weight"):
        _check_weight(f"--{name.replace('_', '-')}", getattr(c, name))
    if isinstance(c.precondition, bool) or not isinstance(c.precondition, (int, float)) \
            or not 0 <= c.precondition <= 1:
        raise ConfigError(f"--precondition must be from 0 to 1 cycles per pixel, got {c.precondition!r}")
    if not (isinstance(c.learning_rate, (int, float)) and math.isfinite(c.learning_rate)
            and c.learning_rate > 0):
        raise ConfigError(f"--learning-rate must be a positive number, got {c.learning_rate!r}")
    if c.optimizer not in OPTIMIZERS:
        raise ConfigError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {c.optimizer!r}")
    if c.preserve_colors not in COLOR_MODES:
        raise ConfigError(f"--preserve-colors must be one of {', '.join(COLOR_MODES)}, got {c.preserve_colors!r}")
    if c.style_loss not in STYLE_LOSSES:
        raise ConfigError(f"--style-loss must be one of {', '.join(STYLE_LOSSES)}, got {c.style_loss!r}")
    if isinstance(c.average, bool) or not isinstance(c.average, (int, float)) or not 0 <= c.average < 1:
        raise ConfigError(f"--average must be a decay from 0 (off) to below 1, got {c.average!r}")
    if c.pooling not in POOLINGS:
        raise ConfigError(f"--pooling must be one of {', '.join(POOLINGS)}, got {c.pooling!r}")
    if not isinstance(c.bucket, int) or isinstance(c.bucket, bool) or not 0 <= c.bucket <= 1024:
        raise ConfigError(f"--bucket must be an integer from 0 to 1024, got {c.bucket!r}")
    if not isinstance(c.device, str) or not re.fullmatch(r"auto|(cpu|gpu|tpu)(:\d{1,3})?", c.device):
        raise ConfigError(f"--device must be auto, cpu, gpu or tpu, optionally with an index (gpu:1), "
                          f"got {c.device!r}")
    if c.precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {c.precision!r}")
    if c.compile not in COMPILES:
        raise ConfigError(f"--compile must be one of {', '.join(COMPILES)}, got {c.compile!r}")
    if c.conv not in CONVS:
        raise ConfigError(f"--conv must be one of {', '.join(CONVS)}, got {c.conv!r}")
    if c.dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {c.dtype!r}")
    if not isinstance(c.init, str) or not c.init:
        raise ConfigError(f"--init must be {', '.join(INITS)} or an image path, got {c.init!r}")
    if not isinstance(c.scales, int) or isinstance(c.scales, bool) or not 1 <= c.scales <= 8:
        raise ConfigError(f"--scales must be an integer from 1 to 8, got {c.scales!r}")
    if c.scale_iterations and len(c.scale_iterations) != c.scales:
        raise ConfigError(f"--scale-iterations has {len(c.scale_iterations)} value(s) for {c.scales} stage(s)")
    for n in c.scale_iterations:
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ConfigError(f"--scale-iterations must be non-negative integers, got {n!r}")
    if c.scales > 1 and c.size // 2 ** (c.scales - 1) < MIN_SIZE * 2:
        raise ConfigError(f"--scales {c.scales} at --size {c.size} would start at "
                          f"{c.size // 2 ** (c.scales - 1)} pixels; use fewer stages or a larger size")
    if isinstance(c.style_scale, bool) or not isinstance(c.style_scale, (int, float)) \
            or not math.isfinite(c.style_scale) or not 0.05 <= c.style_scale <= 8:
        raise ConfigError(f"--style-scale must be from 0.05 to 8, got {c.style_scale!r}")
    for kind in ("content", "style"):
        weight, layers = getattr(c, f"{kind}_weight"), getattr(c, f"{kind}_layers")
        if weight > 0 and not layers:
            raise ConfigError(f"--{kind}-weight is {weight:g} but --{kind}-layers is empty, so the {kind} "
                              f"term would be dropped; give {kind} layers or --{kind}-weight 0")
        if weight > 0 and not any(getattr(c, f"{kind}_layer_weights")):
            raise ConfigError(f"--{kind}-layer-weights are all 0, so the {kind} term would be 0 although "
                              f"--{kind}-weight is {weight:g}; give a layer a weight or --{kind}-weight 0")
    if not isinstance(c.tile, int) or isinstance(c.tile, bool) or not (c.tile == 0 or 64 <= c.tile <= MAX_SIZE) \
            or c.tile % 16:
        raise ConfigError(f"--tile must be 0 or a multiple of 16 from 64 to {MAX_SIZE}, got {c.tile!r}")
    if c.tile and c.split_image:
        raise ConfigError("--tile and --split-image are two ways to make a large image fit; give one")
    if c.tile and (c.save_every or c.checkpoint_every):
        raise ConfigError("--save-every and --checkpoint-every cannot see inside a tiled stage (--tile); "
                          "leave them out")
    if c.split_image and c.batch_size > 1:
        raise ConfigError("--split-image runs one image at a time over every device; leave --batch-size out")
    _check_weight("--temporal-weight", c.temporal_weight)
    if not c.temporal_frames or len(set(c.temporal_frames)) != len(c.temporal_frames) or any(
            isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 64 for n in c.temporal_frames):
        raise ConfigError(f"--temporal-frames must be distinct distances from 1 to 64, got "
                          f"{','.join(map(str, c.temporal_frames)) or 'none'}")
    if not isinstance(c.frame_iterations, int) or isinstance(c.frame_iterations, bool) or c.frame_iterations < 0:
        raise ConfigError(f"--frame-iterations must be a non-negative integer, got {c.frame_iterations!r}")
    if not isinstance(c.passes, int) or isinstance(c.passes, bool) or not 1 <= c.passes <= 100:
        raise ConfigError(f"--passes must be an integer from 1 to 100, got {c.passes!r}")
    if isinstance(c.pass_blend, bool) or not isinstance(c.pass_blend, (int, float)) or not 0 <= c.pass_blend <= 1:
        raise ConfigError(f"--pass-blend must be from 0 to 1, got {c.pass_blend!r}")
    if isinstance(c.tolerance, bool) or not isinstance(c.tolerance, (int, float)) or not 0 <= c.tolerance < 1:
        raise ConfigError(f"--tolerance must be a fraction from 0 to below 1, got {c.tolerance!r}")
    if c.content_weight == 0 and c.style_weight == 0 and c.tv_weight == 0:
        raise ConfigError("nothing to optimize: --content-weight, --style-weight and --tv-weight are all 0")


def _check_weight(option: str, w: Any) -> None:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
        raise ConfigError(f"{option} must be finite and non-negative, got {w!r}")


# Named layer-and-weight settings (`--preset`), applied over a mode's defaults.
STYLE_PRESETS: dict[str, dict[str, Any]] = {
    # The original write-up's first setting: content at block2_conv2, equal style layers.
    "writeup": dict(content_layers=("block2_conv2",), content_layer_weights=(1.0,),
                    style_layers=STYLE_LAYERS, style_layer_weights=(0.2,) * 5,
                    content_weight=1.0, style_weight=10.0),
    # The write-up's tuned setting (jaxstyle's default): content at block4_conv2, deeper style
    # layers weighted more.
    "writeup-tuned": dict(content_layers=("block4_conv2",), content_layer_weights=(1.0,),
                          style_layers=STYLE_LAYERS, style_layer_weights=(0.05, 0.15, 0.2, 0.3, 0.3),
                          content_weight=1.0, style_weight=10.0),
    # Gatys, Ecker & Bethge (2016): content conv4_2, style conv1_1 ... conv5_1, equal weights.
    "gatys": dict(content_layers=("block4_conv2",), content_layer_weights=(1.0,),
                  style_layers=("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1",
                                "block5_conv1"),
                  style_layer_weights=(0.2,) * 5, content_weight=1.0, style_weight=10.0),
}

# `jaxstyle video`'s defaults: measured with bench/video_consistency.py (bench/README.md: Video).
VIDEO_TEMPORAL_WEIGHT = 0.1
VIDEO_FRAME_ITERATIONS = 100
VIDEO_TOLERANCE = 1e-4

PRESETS: dict[str, Config] = {
    # Combine a photo's content with a painting's style.
    "transfer": Config(),
    # Reconstruct a photo from its activations at one layer, starting from noise.
    "content": Config(content_layers=("block2_conv2",), content_layer_weights=(1.0,),
                      style_layers=(), style_layer_weights=(), style_weight=0.0,
                      tv_weight=1e-5, init="noise", iterations=300),
    # Stylize a video: the first frame a transfer, each later one from the previous result
    # warped by the optical flow, held there by the temporal term (README: Video).
    VIDEO: Config(temporal_weight=VIDEO_TEMPORAL_WEIGHT, frame_iterations=VIDEO_FRAME_ITERATIONS,
                  tolerance=VIDEO_TOLERANCE),
    # Reconstruct a painting's style (texture) from its Gram matrices, starting from noise.
    "style": Config(content_layers=(), content_layer_weights=(), content_weight=0.0,
                    style_weight=1.0, tv_weight=0.0, init="noise", iterations=300),
}

Config.__doc__ = (f"{Config.__doc__}\n\n    Fields (the CLI's options of the same names, "
                  f"`jaxstyle transfer --help`):\n\n" + describe_fields())

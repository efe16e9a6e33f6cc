"""The Python API for scripts and notebooks; the CLI is a thin layer over these functions.

Images may be paths, PIL images or arrays; options are `Config` field names, e.g.
`jaxstyle.transfer("photo.jpg", "painting.jpg", size=256, iterations=100)`.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Mapping, Sequence

from . import pipeline
from . import weights as weights_mod
from .config import PRESETS, STYLE_PRESETS, Config
from .errors import ConfigError
from .pipeline import ImageLike, Progress, Result


def _progress(progress: bool | Callable[[Progress], None] | None):
    if progress is True:
        from .progress import ProgressPrinter
        return ProgressPrinter()
    return progress or None


def _message(progress) -> Callable[[str], None] | None:
    return (lambda msg: print(msg, file=sys.stderr)) if progress else None


def _config(mode: str, config: Config | None, options: Mapping[str, Any]) -> Config:
    return (config or PRESETS[mode]).replace(**options)


def transfer(content: ImageLike, style: ImageLike | Sequence[ImageLike], *,
             output: str | os.PathLike | None = None,
             weights: str | os.PathLike | Mapping | None = None,
             style_blend: Sequence[float] | None = None,
             progress: bool | Callable[[Progress], None] | None = None,
             config: Config | None = None, preset: str | None = None,
             gif: str | os.PathLike | None = None, trace: str | os.PathLike | None = None,
             quality: int = 95, bits: int = 8, **options: Any) -> Result:
    """Render `content` in the style of `style` (one image or several, blended by `style_blend`).

    `preset` names layers and weights from `config.STYLE_PRESETS`; `options` override it. With
    `output`, the result (and snapshots, `gif`, `trace`) are also written to files.
    """
    styles = list(style) if isinstance(style, (list, tuple)) else [style]
    base = config or PRESETS["transfer"]
    if preset is not None:
        if preset not in STYLE_PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; use one of {', '.join(sorted(STYLE_PRESETS))}")
        base = base.replace(**STYLE_PRESETS[preset])
    cfg = base.replace(**options)
    return pipeline.run("transfer", cfg, content, styles, output_path=output, weights=weights,
                        style_blend=style_blend, progress=_progress(progress),
                        message=_message(progress), gif_path=gif, trace_path=trace,
                        quality=quality, bits=bits)


def reconstruct_content(image: ImageLike, *, output: str | os.PathLike | None = None,
                        weights: str | os.PathLike | Mapping | None = None,
                        progress: bool | Callable[[Progress], None] | None = None,
                        config: Config | None = None, gif: str | os.PathLike | None = None,
                        trace: str | os.PathLike | None = None, quality: int = 95, bits: int = 8,
                        **options: Any) -> Result:
    """Recover an image from its VGG16 activations at the content layers, starting from noise."""
    cfg = _config("content", config, options)
    return pipeline.run("content", cfg, image, (), output_path=output, weights=weights,
                        progress=_progress(progress), message=_message(progress), gif_path=gif,
                        trace_path=trace, quality=quality, bits=bits)


def reconstruct_style(image: ImageLike | Sequence[ImageLike], *,
                      output: str | os.PathLike | None = None,
                      weights: str | os.PathLike | Mapping | None = None,
                      style_blend: Sequence[float] | None = None,
                      progress: bool | Callable[[Progress], None] | None = None,
                      config: Config | None = None, gif: str | os.PathLike | None = None,
                      trace: str | os.PathLike | None = None, quality: int = 95, bits: int = 8,
                      **options: Any) -> Result:
    """Synthesize a texture whose Gram matrices match the style image's, starting from noise."""
    styles = list(image) if isinstance(image, (list, tuple)) else [image]
    cfg = _config("style", config, options)
    return pipeline.run("style", cfg, None, styles, output_path=output, weights=weights,
                        style_blend=style_blend, progress=_progress(progress),
                        message=_message(progress), gif_path=gif, trace_path=trace,
                        quality=quality, bits=bits)


def resume(checkpoint: str | os.PathLike, *, output: str | os.PathLike | None = None,
           weights: str | os.PathLike | Mapping | None = None,
           content: ImageLike | None = None, styles: Sequence[ImageLike] | None = None,
           progress: bool | Callable[[Progress], None] | None = None, **changes: Any) -> Result:
    """Continue a checkpointed run (see `pipeline.resume`); `changes` may set iterations,
    save_every and checkpoint_every."""
    return pipeline.resume(checkpoint, output_path=output, weights=weights, changes=changes,
                           content=content, styles=styles, progress=_progress(progress),
                           message=_message(progress))


def load_weights(path: str | os.PathLike | None = None) -> dict:
    """VGG16 parameters, to pass as `weights=` to several runs without reloading them."""
    params, info = weights_mod.load(path)
    if info.warning:
        print(f"warning: {info.warning}", file=sys.stderr)
    return params

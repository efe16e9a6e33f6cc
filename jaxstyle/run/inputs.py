"""One image's inputs at one stage: decoded, resized to the stage's size, colour-treated, with
its initial image (on the host, in the network's input space)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from jaxstyle.config import INITS, Config
from jaxstyle.errors import InputError
from jaxstyle.images import imageio, masks, preprocess
from jaxstyle.run.job import Item


@dataclass
class Sources:
    """An item's decoded images at full resolution (float RGB 0..255)."""

    content: np.ndarray | None
    styles: list[np.ndarray]  # a `keep` style is the content itself
    init: np.ndarray | None  # the --init image file, when one is given
    guide: np.ndarray | None = None  # guided: the content's regions, one-hot (H, W, R)
    style_masks: list[np.ndarray] | None = None  # guided: each style's pixel weights (h, w)
    region_colours: list[str] | None = None  # the content mask's colour of each region

    @property
    def shape(self) -> tuple[int, int]:
        """The source shape the result's aspect ratio follows."""
        return (self.content if self.content is not None else self.styles[0]).shape[:2]


def _name(image, default: str) -> str:
    return str(image) if isinstance(image, (str, Path)) else default


def decode(item: Item, config: Config) -> Sources:
    """Decode (and check) every image of `item`; InputError naming the file on failure."""
    content = imageio.as_rgb(item.content, "content") if item.content is not None else None
    styles = [content if masks.is_keep(s) else imageio.as_rgb(s, f"style {i + 1}")
              for i, s in enumerate(item.styles)]
    init = None
    if item.init is not None:  # a video frame's: the previous result warped
        init = imageio.as_rgb(item.init, "initial image")
    elif config.init not in INITS:
        path = Path(config.init)
        if not path.exists():
            raise InputError(f"{path}: no such file (--init takes {', '.join(INITS)} or an image path)")
        init = imageio.load_image(path)
    sources = Sources(content, styles, init)
    if item.regions and content is not None:
        _decode_masks(item, sources)
    return sources


def _decode_masks(item: Item, src: Sources) -> None:
    """The guide (content regions) and style masks of a guided item, checked against their images."""
    assert src.content is not None
    if item.content_mask is not None:
        name = masks.name_of(item.content_mask, "content mask")
        rgb = imageio.as_rgb(item.content_mask, "content mask")
        masks.check_aspect(rgb.shape[:2], src.content.shape[:2], name, f"the content ({_name(item.content, 'image')})")
        src.guide, src.region_colours = masks.regions(rgb, item.regions, name)
    else:
        src.guide = np.ones((*src.content.shape[:2], 1), np.float32)
    style_masks = []
    for k, (style, image) in enumerate(zip(item.styles, src.styles)):
        mask = item.style_masks[k] if k < len(item.style_masks) else None
        if masks.is_keep(style):
            style_masks.append(src.guide[..., k])  # the region's own pixels of the content
        elif mask is None:
            style_masks.append(np.ones(image.shape[:2], np.float32))
        else:
            name = masks.name_of(mask, f"style mask {k + 1}")
            rgb = imageio.as_rgb(mask, f"style mask {k + 1}")
            masks.check_aspect(rgb.shape[:2], image.shape[:2], name, f"style {_name(style, str(k + 1))}")
            style_masks.append(masks.weights(rgb, name))
    src.style_masks = style_masks


def style_size(config: Config, size: int) -> tuple[int, str | None]:
    """The style images' longest side at a stage of `size`, and how to name it in messages."""
    longest = max(round(size * config.style_scale), 1)
    what = None if config.style_scale == 1 else \
        f"--size {size} with --style-scale {config.style_scale} ({longest} px)"
    return longest, what


def check_sizes(item: Item, shapes: tuple[tuple[int, int] | None, list[tuple[int, int]]],
                config: Config) -> list[tuple[int, int]]:
    """The result's (h, w) at every stage; InputError when an image is too small or too
    elongated for VGG16 at some stage (the smallest is the one that can fail)."""
    content_shape, style_shapes = shapes
    first = content_shape if content_shape is not None else style_shapes[0]
    smallest = config.stages()[0][0]
    if content_shape is not None:
        preprocess.check_size(content_shape, smallest, _name(item.content, "content"))
    longest, what = style_size(config, smallest)
    for i, (s, shape) in enumerate(zip(item.styles, style_shapes)):
        preprocess.check_size(shape, longest, _name(s, f"style {i + 1}"), what)
    return [preprocess.check_size(first, size) for size, _ in config.stages()]


@dataclass
class StageImages:
    """An item's images at one stage, in the network's input space, at their real sizes."""

    content: np.ndarray  # (h, w, 3); zeros in style mode
    x0: np.ndarray  # the initial image
    styles: list[np.ndarray]
    finish: Callable[[np.ndarray], np.ndarray]  # RGB result -> RGB written (colour recombination)
    guide: np.ndarray | None = None  # guided: the regions (h, w, R) at this stage, summing to 1
    style_masks: list[np.ndarray] | None = None  # guided: each style's weights at its size
    temporal: tuple[np.ndarray, np.ndarray] | None = None  # a video frame's: target (network space), weights


def stage_images(src: Sources, item: Item, config: Config, size: int,
                 previous: np.ndarray | None = None) -> StageImages:
    """The item's images for a stage of longest side `size`; `previous` (RGB, any size) is an
    earlier stage's result, which the stage starts from."""
    hw = preprocess.fit_size(src.shape, size)
    content = preprocess.resize(src.content, hw) if src.content is not None else None
    longest, what = style_size(config, size)
    styles = [preprocess.resize_longest(s, longest, _name(n, f"style {i + 1}"), what)
              for i, (s, n) in enumerate(zip(src.styles, item.styles))]
    finish: Callable[[np.ndarray], np.ndarray] = lambda rgb: rgb  # noqa: E731
    if content is not None and config.preserve_colors != "none":
        from jaxstyle.images import color
        if config.preserve_colors == "luminance":
            original = content
            pairs = [color.luminance_images(original, s) for s in styles]
            content, styles = pairs[0][0], [s for _, s in pairs]

            def finish(rgb: np.ndarray) -> np.ndarray:
                return color.recombine(rgb, preprocess.resize(original, rgb.shape[:2]))
        else:
            styles = [color.match_colors(s, content, method=config.preserve_colors) for s in styles]
    if previous is not None:
        x0 = preprocess.resize(previous, hw)
    elif item.init is not None:
        x0 = preprocess.resize(src.init, hw)
    elif config.init == "content":
        x0 = content
    elif config.init == "noise":
        x0 = preprocess.noise_image(hw, config.seed)
    elif config.init == "style":
        x0 = preprocess.resize(styles[0], hw)
    else:
        x0 = preprocess.resize(src.init, hw)
    zeros = np.zeros((*hw, 3), np.float32)
    guide = style_masks = None
    if src.guide is not None and src.style_masks is not None:
        guide = masks.resize(src.guide, hw)
        style_masks = [masks.resize(m, s.shape[:2]) for m, s in zip(src.style_masks, styles)]
    temporal = None
    if item.temporal is not None:
        target, weights = item.temporal
        temporal = (preprocess.to_vgg(preprocess.resize(np.asarray(target, np.float32), hw)),
                    masks.resize(np.asarray(weights, np.float32), hw))
    return StageImages(preprocess.to_vgg(content) if content is not None else zeros,
                       preprocess.to_vgg(x0), [preprocess.to_vgg(s) for s in styles], finish, guide,
                       style_masks, temporal)

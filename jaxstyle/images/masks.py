"""Masks for guided style transfer: which region of the content each style paints, and which
pixels of a style image count.

A content mask is an image with one colour (or grey level) per region. With N styles it has N
regions: its N most frequent colours, ordered darkest first (by luma, then by R, G, B), so the
first style paints the darkest region; every other pixel (antialiased edges) joins the region
of the nearest of those colours. A style given as `keep` leaves its region unstyled: the
region's style target is the content's own there. A style mask is a grey image: white pixels
of the style image count fully, black ones not at all.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from jaxstyle.errors import InputError

KEEP = "keep"  # a style argument that leaves its region of the content unstyled
STRAY_LIMIT = 0.05  # share of a content mask's pixels allowed outside its region colours
MIN_REGION = 0.001  # share of the mask a region's colour must cover (else it is an edge's blend)
ASPECT_TOLERANCE = 0.02

_LUMA = np.asarray([0.299, 0.587, 0.114])


def is_keep(style: Any) -> bool:
    """Whether a style argument is the `keep` marker (a file named keep is given as ./keep)."""
    return isinstance(style, str) and style == KEEP


def name_of(mask: Any, default: str) -> str:
    return str(mask) if isinstance(mask, (str, os.PathLike)) else default


def check_aspect(mask_shape: tuple[int, int], image_shape: tuple[int, int], name: str, what: str) -> None:
    """InputError when a mask's aspect ratio is not its image's (it is a mask of another image)."""
    mh, mw = mask_shape
    h, w = image_shape
    if abs((mw / mh) / (w / h) - 1) > ASPECT_TOLERANCE:
        raise InputError(f"{name}: is {mw}x{mh} but {what} is {w}x{h}; a mask needs its image's aspect "
                         "ratio")


def regions(rgb: np.ndarray, count: int, name: str) -> tuple[np.ndarray, list[str]]:
    """The `count` regions of a content mask (h, w, 3) in 0..255, darkest first: one-hot
    (h, w, count) float32, and each region's colour as #rrggbb."""
    q = np.clip(np.rint(rgb), 0, 255).astype(np.uint32)
    packed = (q[..., 0] << 16) | (q[..., 1] << 8) | q[..., 2]
    colours, counts = np.unique(packed, return_counts=True)
    found = int((counts >= MIN_REGION * packed.size).sum())
    if found < count:
        raise InputError(f"{name}: has {found} colour(s) covering {MIN_REGION:.1%} of it or more, but {count} "
                         "styles were given (one per region: the mask needs a colour for each)")
    top = colours[np.argsort(-counts, kind="stable")[:count]]
    rgb_top = np.stack([(top >> 16) & 255, (top >> 8) & 255, top & 255], axis=1).astype(np.float64)
    order = np.lexsort((rgb_top[:, 2], rgb_top[:, 1], rgb_top[:, 0], rgb_top @ _LUMA))
    top, rgb_top = top[order], rgb_top[order]
    stray = 1.0 - np.isin(packed, top).mean()
    if stray > STRAY_LIMIT:
        raise InputError(f"{name}: {stray:.0%} of its pixels are not one of its {count} main colours "
                         f"({', '.join(_hex(c) for c in rgb_top)}); it seems to have more regions than "
                         f"the {count} styles given")
    flat = q.reshape(-1, 3).astype(np.float32)
    # nearest region colour per pixel, in chunks (a 24 MP mask would need GBs at once)
    nearest = np.empty(len(flat), np.int64)
    for start in range(0, len(flat), 1 << 20):
        d = ((flat[start:start + (1 << 20), None, :] - rgb_top[None].astype(np.float32)) ** 2).sum(-1)
        nearest[start:start + (1 << 20)] = d.argmin(1)
    onehot = np.eye(count, dtype=np.float32)[nearest].reshape(*rgb.shape[:2], count)
    return onehot, [_hex(c) for c in rgb_top]


def weights(rgb: np.ndarray, name: str) -> np.ndarray:
    """A style mask (h, w, 3) in 0..255 as per-pixel weights 0..1 (its grey level)."""
    w = np.clip((rgb.astype(np.float64) @ _LUMA) / 255.0, 0.0, 1.0).astype(np.float32)
    if not w.max() > 0:
        raise InputError(f"{name}: is black everywhere, so no pixel of its style image would count")
    return w


def resize(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A mask (h, w) or (h, w, R) resized to `hw` by area (shrinking) or bilinear (enlarging),
    values kept in 0..1; region masks (h, w, R) still sum to 1 at every pixel."""
    h, w = hw
    planes = mask[..., None] if mask.ndim == 2 else mask
    if planes.shape[:2] != (h, w):
        method = Image.BOX if h * w < planes.shape[0] * planes.shape[1] else Image.BILINEAR
        planes = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(planes[..., r], np.float32), "F")
                                      .resize((w, h), method)) for r in range(planes.shape[-1])], axis=-1)
    planes = np.clip(planes, 0.0, 1.0).astype(np.float32)
    if mask.ndim == 2:
        return planes[..., 0]
    total = planes.sum(-1, keepdims=True)
    return np.where(total > 0, planes / np.maximum(total, 1e-12), 1.0 / planes.shape[-1]).astype(np.float32)


def find_in_folder(folder: Path, image: Any, suffixes: tuple[str, ...]) -> Path:
    """The mask in `folder` for a content image: the file with the image's stem."""
    stem = Path(image).stem if isinstance(image, (str, os.PathLike)) else str(image)
    found = sorted(p for p in folder.iterdir() if p.stem == stem and p.suffix.lower() in suffixes)
    if not found:
        raise InputError(f"{folder}: has no mask for {Path(str(image)).name} (a mask named {stem} with an "
                         f"image suffix)")
    return found[0]


def _hex(rgb: np.ndarray) -> str:
    r, g, b = (int(v) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"

"""Between pixels and the network: resizing, and the caffe/VGG input convention.

VGG16's ImageNet weights expect BGR channels with the ImageNet mean subtracted, on a
0..255 scale. The optimized image lives in that space; `from_vgg` maps it back to RGB.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from jaxstyle.config import MIN_SIZE
from jaxstyle.errors import InputError

BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)


def fit_size(shape: tuple[int, int], longest: int) -> tuple[int, int]:
    """(height, width) with the longest side `longest` and the aspect ratio of `shape` kept."""
    h, w = shape
    scale = longest / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize(rgb: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize float RGB to (height, width): Lanczos when shrinking, bicubic when enlarging."""
    h, w = hw
    if rgb.shape[:2] == (h, w):
        return rgb.astype(np.float32, copy=True)
    method = Image.LANCZOS if h * w < rgb.shape[0] * rgb.shape[1] else Image.BICUBIC
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(rgb[:, :, c]), "F").resize((w, h), method))
                for c in range(rgb.shape[2])]
    return np.clip(np.stack(channels, axis=2), 0.0, 255.0).astype(np.float32)


def check_size(src: tuple[int, int], longest: int, name: str = "image",
               what: str | None = None) -> tuple[int, int]:
    """The (height, width) an image of shape `src` gets at `longest`, or InputError when VGG16
    cannot use it (too small to begin with, or too elongated for that size). `what` names the
    setting that chose `longest` in the message (default "--size N")."""
    if min(src) < MIN_SIZE:
        raise InputError(f"{name}: {src[1]}x{src[0]} pixels is too small; "
                         f"both sides must be at least {MIN_SIZE} pixels")
    hw = fit_size(src, longest)
    if min(hw) < MIN_SIZE:
        raise InputError(f"{name}: at {what or f'--size {longest}'} this {src[1]}x{src[0]} image becomes "
                         f"{hw[1]}x{hw[0]}, narrower than VGG16's minimum of {MIN_SIZE} pixels; "
                         f"use a larger --size or a less elongated image")
    return hw


def resize_longest(rgb: np.ndarray, longest: int, name: str = "image",
                   what: str | None = None) -> np.ndarray:
    """Resize so the longest side is `longest`, refusing images VGG16 cannot use at that size."""
    return resize(rgb, check_size(rgb.shape[:2], longest, name, what))


def to_vgg(rgb: np.ndarray) -> np.ndarray:
    """RGB 0..255 (..., H, W, 3) to the network's input space: BGR minus the ImageNet mean."""
    return (np.asarray(rgb, dtype=np.float32)[..., ::-1] - BGR_MEAN).astype(np.float32)


def from_vgg(x: np.ndarray) -> np.ndarray:
    """Inverse of `to_vgg` (no clipping)."""
    return (np.asarray(x, dtype=np.float32) + BGR_MEAN)[..., ::-1].astype(np.float32)


def noise_image(hw: tuple[int, int], seed: int) -> np.ndarray:
    """Uniform RGB noise on 0..255, repeatable for a given seed on any machine."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 255.0, (*hw, 3)).astype(np.float32)


def bucket(hw: tuple[int, int], step: int) -> tuple[int, int]:
    """The padded (height, width) an (hw) image is optimized at: each side rounded up to a
    multiple of `step`, so images of similar shapes share one compiled program."""
    return tuple(-(-d // step) * step for d in hw)  # type: ignore[return-value]


def pad_image(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An (h, w, 3) network-space image continued to (H, W) by mirroring it at its right and
    bottom edges. The network never sees the padding (it is masked), but the optimizer's
    frequency-domain preconditioner does: a mirrored continuation adds no artificial edge."""
    ph, pw = shape[0] - x.shape[0], shape[1] - x.shape[1]
    while ph > 0 or pw > 0:  # a pad wider than the image mirrors in several steps
        dh, dw = min(ph, x.shape[0]), min(pw, x.shape[1])
        x = np.pad(x, ((0, dh), (0, dw), (0, 0)), mode="symmetric")
        ph, pw = ph - dh, pw - dw
    return np.ascontiguousarray(x, np.float32)

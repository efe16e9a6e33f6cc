"""Image files in and out: decode anything Pillow reads into float RGB, write results atomically."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError
from .files import atomic_write

# Formats we write, by file extension; 16-bit output is chosen by `bits=16`.
WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP",
                 ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP", ".gif": "GIF"}


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file into float32 RGB (H, W, 3) on a 0..255 scale.

    EXIF orientation is applied; grayscale, palette, alpha (composited on white), CMYK and
    16-bit images are converted. Any problem raises InputError naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image file")
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                img = ImageOps.exif_transpose(img)
                return to_rgb_array(img)
    except InputError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise InputError(f"{path}: image too large to decode safely ({e})") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file Pillow can decode") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(f"{path}: corrupt or truncated image ({e})") from None


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Float32 RGB (H, W, 3), 0..255, from a PIL image of any mode."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grayscale (Pillow opens 16-bit PNG/TIFF gray as I;16 or I): keep its precision.
        a = np.asarray(img, dtype=np.float32) / 257.0
        return np.repeat(np.clip(a, 0.0, 255.0)[:, :, None], 3, axis=2)
    if mode == "F":
        a = np.asarray(img, dtype=np.float32)
        scale = 255.0 if np.nanmax(a) <= 1.0 else 1.0  # float images are usually 0..1
        a = np.nan_to_num(a * scale, nan=0.0)
        return np.repeat(np.clip(a, 0.0, 255.0)[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or img.mode in ("RGBA", "LA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    img = img.convert("RGB")
    return np.asarray(img, dtype=np.float32)


def output_format(path: str | os.PathLike) -> str:
    """Pillow format name for an output path, or InputError when we cannot write it."""
    ext = Path(path).suffix.lower()
    if ext not in WRITE_FORMATS:
        known = ", ".join(sorted(WRITE_FORMATS))
        raise InputError(f"{path}: cannot write {ext or 'files without an extension'}; "
                         f"use one of {known}")
    return WRITE_FORMATS[ext]


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Round and clip a 0..255 float RGB array to uint8."""
    return np.clip(np.rint(np.asarray(rgb, dtype=np.float32)), 0, 255).astype(np.uint8)


def save_image(rgb: np.ndarray, path: str | os.PathLike, quality: int = 95) -> Path:
    """Write a 0..255 float RGB (H, W, 3) array atomically; the format follows the extension."""
    path = Path(path)
    fmt = output_format(path)
    img = Image.fromarray(to_uint8(rgb), "RGB")
    kwargs = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    with atomic_write(path) as fh:
        img.save(fh, format=fmt, **kwargs)
    return path


def as_rgb(image: "str | os.PathLike | Image.Image | np.ndarray", name: str = "image") -> np.ndarray:
    """Float32 RGB (H, W, 3), 0..255, from a path, a PIL image or an array.

    Arrays may be uint8/uint16 or float (floats with a maximum of at most 1 are taken as
    0..1), grayscale (H, W) or with 1, 3 or 4 channels (alpha is composited on white).
    """
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return to_rgb_array(ImageOps.exif_transpose(image))
    a = np.asarray(image)
    if a.dtype == np.uint16:
        a = a.astype(np.float32) / 257.0
    elif a.dtype.kind in "ui" or a.dtype == bool:
        a = a.astype(np.float32)
    elif a.dtype.kind == "f":
        a = a.astype(np.float32)
        if a.size and np.nanmax(a) <= 1.0:
            a = a * 255.0
    else:
        raise InputError(f"{name}: cannot use an array of dtype {a.dtype} as an image")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise InputError(f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) array, got {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{name}: array contains NaN or infinite values")
    if a.shape[2] == 4:
        alpha = a[:, :, 3:] / 255.0
        a = a[:, :, :3] * alpha + 255.0 * (1.0 - alpha)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.clip(a, 0.0, 255.0).astype(np.float32)

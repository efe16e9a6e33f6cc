"""The last step of the flow: turning optimized images into files (results, snapshots, the
animation of the run and its trace). Every file is written atomically."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import imageio, preprocess
from .config import Config
from .errors import InputError
from .files import atomic_write, check_output_path


def snapshot_path(output: str | os.PathLike, iteration: int) -> Path:
    """`out.png` -> `out_0040.png`: numbered snapshots sit beside the result."""
    output = Path(output)
    return output.with_name(f"{output.stem}_{iteration:04d}{output.suffix}")


def check_output(output: str | os.PathLike, inputs: tuple = (), bits: int = 8) -> Path:
    """Validate an output path before any work: writable directory, known format, not an input."""
    path = check_output_path(output, inputs)
    imageio.output_format(path)
    if bits not in (8, 16):
        raise InputError(f"{path}: bit depth must be 8 or 16, got {bits}")
    if bits == 16 and path.suffix.lower() not in (".png", ".tif", ".tiff"):
        raise InputError(f"{path}: 16-bit output needs a .png or .tif/.tiff file")
    return path


def write_image(rgb: np.ndarray, path: str | os.PathLike, quality: int = 95, bits: int = 8) -> Path:
    """Write a 0..255 RGB float image atomically (format from the extension)."""
    return imageio.save_image(rgb, path, quality=quality, bits=bits)


def write_gif(frames: list[tuple[int, np.ndarray]], path: str | os.PathLike,
              frame_ms: int = 120, last_ms: int = 1500) -> Path:
    """An animated GIF of (iteration, RGB image) frames, all at the last frame's size."""
    path = Path(path)
    h, w = frames[-1][1].shape[:2]
    images = [Image.fromarray(imageio.to_uint8(preprocess.resize(rgb, (h, w))), "RGB")
              for _, rgb in frames]
    durations = [frame_ms] * (len(images) - 1) + [last_ms]
    with atomic_write(path) as fh:
        images[0].save(fh, format="GIF", save_all=True, append_images=images[1:],
                       duration=durations, loop=0)
    return path


def write_trace(entries: list[dict[str, Any]], path: str | os.PathLike, *, mode: str,
                config: Config, status: str) -> Path:
    """A JSON trace: the settings, and per iteration the loss terms, evaluations and seconds."""
    path = Path(path)
    doc = {"mode": mode, "status": status, "config": config.to_dict(), "iterations": entries}
    with atomic_write(path, "w") as fh:
        json.dump(doc, fh, indent=1)
    return path

"""The last step of the flow: turning optimized images into files (results, snapshots)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import imageio
from .files import check_output_path


def snapshot_path(output: str | os.PathLike, iteration: int) -> Path:
    """`out.png` -> `out_0040.png`: numbered snapshots sit beside the result."""
    output = Path(output)
    return output.with_name(f"{output.stem}_{iteration:04d}{output.suffix}")


def check_output(output: str | os.PathLike, inputs: tuple = ()) -> Path:
    """Validate an output path before any work: writable directory, known format, not an input."""
    path = check_output_path(output, inputs)
    imageio.output_format(path)
    return path


def write_image(rgb: np.ndarray, path: str | os.PathLike, quality: int = 95) -> Path:
    """Write a 0..255 RGB float image atomically (format from the extension)."""
    return imageio.save_image(rgb, path, quality=quality)

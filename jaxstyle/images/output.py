"""The last step of the flow: turning optimized images into files (results, snapshots, the
animation of the run and its trace). Every file is written atomically and verified; one that
cannot be written (full disk, file-size limit, name too long, directory gone, a directory in
its place) raises OutputError after its content is kept elsewhere (`files.write_or_keep`)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from jaxstyle.config import Config
from jaxstyle.errors import InputError
from jaxstyle.files import CHECKPOINT_SUFFIX, atomic_write, check_name_length, check_output_path, write_or_keep
from jaxstyle.images import imageio, preprocess


def snapshot_path(output: str | os.PathLike, iteration: int) -> Path:
    """`out.png` -> `out_0040.png`: numbered snapshots sit beside the result."""
    output = Path(output)
    return output.with_name(f"{output.stem}_{iteration:04d}{output.suffix}")


def check_output(output: str | os.PathLike, inputs: tuple = (), bits: int = 8) -> Path:
    """Validate an output path before any work: writable directory, known format, not an input."""
    path = check_output_path(output, inputs)
    imageio.output_format(path)
    # Its checkpoint's name is the longest name written beside it (snapshots add 5 bytes).
    check_name_length(path, path.name + CHECKPOINT_SUFFIX, "its checkpoint's")
    if bits not in (8, 16):
        raise InputError(f"{path}: bit depth must be 8 or 16, got {bits}")
    if bits == 16 and path.suffix.lower() not in (".png", ".tif", ".tiff"):
        raise InputError(f"{path}: 16-bit output needs a .png or .tif/.tiff file")
    return path


def write_image(rgb: np.ndarray, path: str | os.PathLike, quality: int = 95, bits: int = 8,
                what: str = "finished image", note: str | None = None) -> Path:
    """Write a 0..255 RGB float image atomically (format from the extension), verified, with
    `note` in its metadata (`imageio.save_image`).

    When it cannot be written, the image is kept as a PNG (`STEM.recovered.png`) beside it, in the
    temporary directory or in the current directory, and OutputError says where (the previous
    file at `path` is left as it was)."""
    def keep(p: Path) -> Path:
        return imageio.save_image(rgb, p, bits=bits)

    return write_or_keep(path, lambda p: imageio.save_image(rgb, p, quality=quality, bits=bits, note=note),
                         what=what, keep=keep, keep_suffix=".png")


def write_gif(frames: list[tuple[int, np.ndarray]], path: str | os.PathLike,
              frame_ms: int = 120, last_ms: int = 1500) -> Path:
    """An animated GIF of (iteration, RGB image) frames, all at the last frame's size (kept
    elsewhere, with OutputError, when it cannot be written)."""
    path = Path(path)
    h, w = frames[-1][1].shape[:2]
    images = [Image.fromarray(imageio.to_uint8(preprocess.resize(rgb, (h, w))), "RGB")
              for _, rgb in frames]
    durations = [frame_ms] * (len(images) - 1) + [last_ms]

    def write(p: Path) -> Path:
        with atomic_write(p, verify=imageio.decodes_as((w, h))) as fh:
            images[0].save(fh, format="GIF", save_all=True, append_images=images[1:],
                           duration=durations, loop=0)
        return p

    return write_or_keep(path, write, what="animation")


def write_trace(entries: list[dict[str, Any]], path: str | os.PathLike, *, mode: str,
                config: Config, status: str) -> Path:
    """A JSON trace: the settings, and per iteration the loss terms, evaluations and seconds
    (kept elsewhere, with OutputError, when it cannot be written)."""
    doc = {"mode": mode, "status": status, "config": config.to_dict(), "iterations": entries}
    text = json.dumps(doc, indent=1)

    def write(p: Path) -> Path:
        with atomic_write(p, "w", verify=lambda t: json.loads(Path(t).read_text(encoding="utf-8"))) as fh:
            fh.write(text)
        return p

    return write_or_keep(path, write, what="trace")

"""Synthetic clips for the video tests, made from ../shared/images (pans, a still, a moving
square), written with PyAV directly so the tests read what an independent writer made."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from jaxstyle.images import imageio, preprocess

from conftest import IMAGES


def picture(name: str = "tubingen.jpg", hw: tuple[int, int] = (72, 128)) -> np.ndarray:
    """A shared image resized to `hw` (float32 RGB 0..255)."""
    if not (IMAGES / name).is_file():
        pytest.skip(f"the video clips are made from {IMAGES} (absent here)")
    return preprocess.resize(imageio.load_image(IMAGES / name), hw)


def pan(count: int, hw: tuple[int, int] = (36, 64), step: int = 1, name: str = "tubingen.jpg") -> list[np.ndarray]:
    """A camera panning right by `step` pixels a frame: frame t(x) = frame 0(x + t * step)."""
    h, w = hw
    big = picture(name, (h + 4, w + 4 + step * count))
    return [big[2:2 + h, 2 + t * step:2 + t * step + w].copy() for t in range(count)]


def zoom(count: int, hw: tuple[int, int] = (36, 64), rate: float = 1.02, name: str = "golden_gate.jpg"
         ) -> list[np.ndarray]:
    """A camera zooming in by `rate` a frame about the centre: a point u pixels from the centre
    of frame t is u / rate from it in frame t-1."""
    h, w = hw
    import cv2
    bh, bw = round(1.25 * h), round(1.25 * w)
    big = picture(name, (bh, bw))
    out = []
    for t in range(count):
        ch, cw = bh / rate ** t * 0.8, bw / rate ** t * 0.8  # the crop: about the frame's own pixels
        y0, x0 = (bh - ch) / 2, (bw - cw) / 2
        # the crop resampled by one affine map, so the motion is the stated one to the sub-pixel
        m = np.array([[cw / w, 0, x0 + cw / w / 2 - 0.5], [0, ch / h, y0 + ch / h / 2 - 0.5]], np.float32)
        out.append(cv2.warpAffine(big, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP))
    return out


def square(count: int, hw: tuple[int, int] = (36, 64), step: int = 3, side: int = 10) -> list[np.ndarray]:
    """A red square moving right by `step` pixels a frame over a still photo."""
    bg = picture("tubingen.jpg", hw)
    out = []
    for t in range(count):
        f = bg.copy()
        f[10:10 + side, 10 + step * t:10 + side + step * t] = (255.0, 0.0, 0.0)
        out.append(f)
    return out


def write_clip(path: Path, frames: Sequence[np.ndarray], rate: int = 12, audio: bool = True,
               stamps: Sequence[int] | None = None) -> Path:
    """An MP4 of `frames` at `rate` (or at `stamps`, in milliseconds: a variable rate), with a
    440 Hz AAC tone as long as the video when `audio`."""
    import av
    with av.open(str(path), "w", format="mp4") as out:
        v = out.add_stream("libx264", rate=rate)
        v.width, v.height, v.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        if stamps is not None:
            v.codec_context.time_base = Fraction(1, 1000)
        a = out.add_stream("aac", rate=22050) if audio else None
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.clip(np.rint(f), 0, 255).astype(np.uint8), format="rgb24")
            frame.pts = stamps[i] if stamps is not None else i
            if stamps is not None:
                frame.time_base = Fraction(1, 1000)
            for p in v.encode(frame):
                out.mux(p)
        for p in v.encode(None):
            out.mux(p)
        if a is not None:
            samples = int(22050 * len(frames) / rate)
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 22050)).astype(np.float32)
            for start in range(0, samples, 1024):
                chunk = tone[start:start + 1024][None, :]
                af = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                af.sample_rate, af.pts = 22050, start
                for p in a.encode(af):
                    out.mux(p)
            for p in a.encode(None):
                out.mux(p)
    return path

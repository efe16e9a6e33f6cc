"""Overlapping tiles of a large image and their seamless blending (the tiled full-resolution
stage, `--tile`).

Every tile has the same size (the last ones are moved in, not cut short), so one compiled
program serves them all; neighbours overlap by at least `overlap` pixels, and in an overlap
the two tiles' results are cross-faded linearly, so no edge of a tile shows in the result.
"""
from __future__ import annotations

import math

import numpy as np

Window = tuple[int, int, int, int]  # y0, y1, x0, x1


def overlap_for(tile: int) -> int:
    """The least overlap of neighbouring tiles of side `tile`: an eighth, at least 32 px."""
    return max(32, tile // 8)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def windows(hw: tuple[int, int], tile: int, overlap: int) -> list[Window]:
    """Tiles of at most `tile` x `tile` covering an (h, w) image, row by row."""
    h, w = hw
    th, tw = min(tile, h), min(tile, w)
    return [(y, y + th, x, x + tw) for y in _starts(h, th, overlap) for x in _starts(w, tw, overlap)]


def _ramp(starts: list[int], size: int, index: int) -> np.ndarray:
    """Along one axis: tile `index`'s weights, rising across its overlap with the previous tile
    and falling across its overlap with the next (the two always sum to 1)."""
    r = np.ones(size, np.float32)
    pos = np.arange(size, dtype=np.float32)
    if index > 0:
        o = starts[index - 1] + size - starts[index]
        if o > 0:
            r = np.minimum(r, np.clip((pos + 0.5) / o, 0.0, 1.0))
    if index + 1 < len(starts):
        o = starts[index] + size - starts[index + 1]
        if o > 0:
            r = np.minimum(r, np.clip((size - pos - 0.5) / o, 0.0, 1.0))
    return r


def blend_weights(hw: tuple[int, int], tile: int, overlap: int) -> list[np.ndarray]:
    """Each window's (th, tw) blending weights, in `windows` order."""
    h, w = hw
    th, tw = min(tile, h), min(tile, w)
    ys, xs = _starts(h, th, overlap), _starts(w, tw, overlap)
    return [np.outer(_ramp(ys, th, i), _ramp(xs, tw, j)) for i in range(len(ys)) for j in range(len(xs))]


class Canvas:
    """A full-size image assembled from tiles: where no tile has landed yet it shows `base`."""

    def __init__(self, base: np.ndarray) -> None:
        self.base = base.astype(np.float32)
        self.total = np.zeros(base.shape, np.float32)
        self.weight = np.zeros((*base.shape[:2], 1), np.float32)

    def add(self, window: Window, image: np.ndarray, weight: np.ndarray) -> None:
        y0, y1, x0, x1 = window
        self.total[y0:y1, x0:x1] += image * weight[..., None]
        self.weight[y0:y1, x0:x1] += weight[..., None]

    def image(self) -> np.ndarray:
        done = self.weight > 0
        return np.where(done, self.total / np.maximum(self.weight, 1e-12), self.base)

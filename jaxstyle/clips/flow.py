"""Optical flow between content frames, its reliability, and warping (after Ruder, Dosovitskiy &
Brox 2016, "Artistic style transfer for videos").

Flow is OpenCV's DIS (dense inverse search): a classical estimator, fast and accurate at the
sizes styles are transferred at, with nothing to download. A flow `w` from frame a to frame b
says where each pixel of a is in b: a(x) ~ b(x + w(x)); `warp(b_image, w)` brings an image of b
into a's pixels. Frame t starts from the previous result warped by the flow t -> t-1, and the
temporal term pulls it towards that, weighted per pixel by `reliability`: 0 where the two
directions disagree (occlusions), at motion boundaries, and where the flow leaves the frame.

`FlowCache` keeps each pair's two flows in a small file (float16, what every run uses, so a
run that computes them and one that reads them optimize exactly alike), keyed by the frames'
contents and size.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxstyle.files import atomic_write

# DIS's preset by frame size: MEDIUM up to this many pixels (about 720p), FAST above.
MEDIUM_UP_TO = 1280 * 720
EDGE = 0.1  # pixels past the frame's edge a flow may point and still count as inside
FLOW_VERSION = "dis-2"  # part of the cache key: a change of estimator or settings recomputes
# DIS's patches: 4 px every pixel rather than the preset's 8 every 3. The flow of a moving object
# then stays on the object instead of spreading into the still background around it (measured on
# a square moving over a photo: 0.005 px against 0.13 px of error where both are called reliable);
# 3x the preset's time (0.1 s for a 512x288 pair here), on the thread that prepares frames ahead.
PATCH, STRIDE = 4, 1


def grey(rgb: np.ndarray) -> np.ndarray:
    """uint8 luma (Rec. 601) of a 0..255 RGB frame, what DIS takes."""
    y = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """DIS flow from frame `a` to frame `b` (RGB 0..255 or grey uint8, one size): (H, W, 2)
    float32, (dx, dy) in pixels, with a(x) ~ b(x + w(x))."""
    import cv2
    ga, gb = (grey(f) if f.ndim == 3 else f for f in (a, b))
    preset = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM if ga.size <= MEDIUM_UP_TO else cv2.DISOPTICAL_FLOW_PRESET_FAST
    dis = cv2.DISOpticalFlow_create(preset)
    dis.setFinestScale(0)  # full resolution: small frames need their sub-pixel motion
    dis.setPatchSize(PATCH)
    dis.setPatchStride(STRIDE)
    return dis.calc(ga, gb, None).astype(np.float32)


def _sample(image: np.ndarray, w: np.ndarray) -> np.ndarray:
    import cv2
    h, wd = w.shape[:2]
    gx, gy = np.meshgrid(np.arange(wd, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(np.ascontiguousarray(image, np.float32), gx + w[..., 0], gy + w[..., 1],
                     interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def warp(image: np.ndarray, w: np.ndarray) -> np.ndarray:
    """`image` (of frame b, (H, W) or (H, W, C)) seen from frame a's pixels through the flow
    `w` from a to b: out(x) = image(x + w(x)), bilinear; outside the frame, its edge."""
    return _sample(image, w)


def _checks(w: np.ndarray, w_back: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inconsistent, boundary, outside) boolean (H, W) maps of Ruder's reliability rules."""
    h, wd = w.shape[:2]
    back = _sample(w_back, w)  # w_back at x + w(x)
    total = w + back
    inconsistent = (total ** 2).sum(-1) > 0.01 * ((w ** 2).sum(-1) + (back ** 2).sum(-1)) + 0.5
    du = np.gradient(w[..., 0])
    dv = np.gradient(w[..., 1])
    boundary = du[0] ** 2 + du[1] ** 2 + dv[0] ** 2 + dv[1] ** 2 > 0.01 * (back ** 2).sum(-1) + 0.002
    gx, gy = np.meshgrid(np.arange(wd, dtype=np.float32), np.arange(h, dtype=np.float32))
    x, y = gx + w[..., 0], gy + w[..., 1]
    # A tenth of a pixel past the edge is the edge (flows of still borders are rarely exactly 0).
    outside = (x < -EDGE) | (x > wd - 1 + EDGE) | (y < -EDGE) | (y > h - 1 + EDGE)
    return inconsistent, boundary, outside


def reliability(w: np.ndarray, w_back: np.ndarray) -> np.ndarray:
    """Per-pixel weights in {0, 1} (H, W) float32 for warping through `w` (a -> b), given the
    flow `w_back` (b -> a): 0 where the two disagree (the pixel is occluded in b), at motion
    boundaries of `w`, and where x + w(x) falls outside the frame."""
    inconsistent, boundary, outside = _checks(w, w_back)
    return (~(inconsistent | boundary | outside)).astype(np.float32)


def seen(w: np.ndarray, w_back: np.ndarray) -> np.ndarray:
    """Like `reliability` but without the motion-boundary rule: 1 where frame b saw the pixel
    (its flow is consistent both ways and stays inside the frame)."""
    return reliable_and_seen(w, w_back)[1]


def reliable_and_seen(w: np.ndarray, w_back: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(`reliability`, `seen`) from one pass of the checks."""
    inconsistent, boundary, outside = _checks(w, w_back)
    unseen = inconsistent | outside
    return (~(unseen | boundary)).astype(np.float32), (~unseen).astype(np.float32)


def long_term_weights(reliabilities: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Ruder's long-term weights from the reliabilities of the earlier frames, closest first:
    c_long(j) = max(c_j - sum of c_k over the closer frames k, 0), so each pixel is pulled to the
    closest earlier frame that saw it."""
    out, closer = [], None
    for c in reliabilities:
        out.append(c if closer is None else np.maximum(c - closer, 0.0))
        closer = c.copy() if closer is None else closer + c
    return out


def combine(warped: Sequence[np.ndarray], weights: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One (target, weight map) pair for any number of warped earlier results: sum_j W_j (x -
    m_j)^2 has the gradient of W (x - m)^2 with W = sum_j W_j and m = sum_j W_j m_j / W (where
    W is 0, m is the first frame's warp). Returns (m (H, W, C), W (H, W)) float32."""
    total = np.sum(weights, axis=0).astype(np.float32)
    acc = np.sum([wt[..., None] * m for wt, m in zip(weights, warped)], axis=0)
    target = np.where(total[..., None] > 0, acc / np.maximum(total, 1e-12)[..., None], warped[0])
    return target.astype(np.float32), total


def frame_key(frame: np.ndarray) -> str:
    """A digest of a frame's pixels at the run's size (what its flows are cached by)."""
    a = np.ascontiguousarray(frame, np.float32)
    return hashlib.sha256(f"{a.shape}".encode() + a.tobytes()).hexdigest()


class FlowCache:
    """The two flows of each pair of frames, one file per pair in `folder`, written atomically;
    flows are rounded to float16 whether computed or read, so every run uses the same values."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.computed = self.read = 0

    def path(self, key_a: str, key_b: str) -> Path:
        key = hashlib.sha256(f"{FLOW_VERSION}\0{key_a}\0{key_b}".encode()).hexdigest()[:32]
        return self.folder / f"{key}.npz"

    def pair(self, a: np.ndarray, b: np.ndarray, key_a: str | None = None, key_b: str | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """(flow a -> b, flow b -> a), from the cache or computed and kept."""
        path = self.path(key_a or frame_key(a), key_b or frame_key(b))
        if path.exists():
            try:
                with np.load(path) as data:
                    fw, bw = data["forward"], data["backward"]
                if fw.shape == bw.shape == (*a.shape[:2], 2):
                    self.read += 1
                    return fw.astype(np.float32), bw.astype(np.float32)
            except (OSError, ValueError, KeyError):
                pass  # a damaged file is computed again
        fw = flow(a, b).astype(np.float16)
        bw = flow(b, a).astype(np.float16)
        self.computed += 1
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_write(path) as fh:
                np.savez_compressed(fh, forward=fw, backward=bw)
        except OSError:
            pass  # the cache is an optimization: a run goes on without it
        return fw.astype(np.float32), bw.astype(np.float32)

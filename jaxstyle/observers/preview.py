"""What a live view of a run shows: the current image (fetched at most every few seconds, so
watching does not slow the run) and the loss curve of every term, drawn as a small SVG.

Both live views use this: the notebook's (`progress.LiveNotebookPrinter`) and `jaxstyle
serve`'s page. No plotting library: a log-scale polyline per term is a few lines of SVG, which
every notebook front end and browser shows.
"""
from __future__ import annotations

import io
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from jaxstyle.observers.results import Progress

TERMS = ("total", "content", "style", "tv")
COLORS = {"total": "#222222", "content": "#1f77b4", "style": "#d62728", "tv": "#2ca02c"}


def encode(image: np.ndarray, fmt: str = "PNG", max_side: int | None = None) -> bytes:
    """A 0..255 float RGB (H, W, 3) image as PNG (or JPEG) bytes, scaled down to `max_side`
    if larger."""
    from PIL import Image

    from jaxstyle.images.imageio import to_uint8
    img = Image.fromarray(to_uint8(image), "RGB")
    if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.LANCZOS)
    buf = io.BytesIO()
    # fast settings: previews are replaced within seconds
    img.save(buf, format=fmt, **({"compress_level": 1} if fmt == "PNG" else {"quality": 90, "subsampling": 0}))
    return buf.getvalue()


def loss_svg(rows: Sequence[dict], iterations: int = 0, width: int = 360, height: int = 200) -> str:
    """The loss terms of `rows` ({"iteration", "total", "content", "style", "tv"}) against the
    iteration, on one log scale, as a standalone SVG document with a legend. Non-positive and
    non-finite values are left out; `iterations` fixes the x range (0: up to the last row)."""
    left, right, top, bottom = 44, 8, 8, 34
    pw, ph = width - left - right, height - top - bottom
    series = {k: [(r["iteration"], r[k]) for r in rows
                  if k in r and math.isfinite(r[k]) and r[k] > 0] for k in TERMS}
    values = [v for pts in series.values() for _, v in pts]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#bbb"/>']
    if values:
        lo, hi = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
        hi = max(hi, lo + 1)
        xmax = max(iterations, max(it for pts in series.values() for it, _ in pts), 1)

        def x(it: float) -> float:
            return left + pw * it / xmax

        def y(v: float) -> float:
            return top + ph * (hi - math.log10(v)) / (hi - lo)

        step = max(1, math.ceil((hi - lo) / 6))
        for e in range(lo, hi + 1, step):
            parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(10.0 ** e):.1f}" y2="{y(10.0 ** e):.1f}" '
                         'stroke="#eee"/>')
            parts.append(f'<text x="{left - 4}" y="{y(10.0 ** e) + 3:.1f}" text-anchor="end">1e{e}</text>')
        parts.append(f'<text x="{left}" y="{top + ph + 12}">0</text>')
        parts.append(f'<text x="{left + pw}" y="{top + ph + 12}" text-anchor="end">{xmax} iterations</text>')
        for k, pts in series.items():
            if not pts:
                continue
            path = " ".join(f"{x(it):.1f},{y(v):.1f}" for it, v in pts)
            parts.append(f'<polyline fill="none" stroke="{COLORS[k]}" stroke-width="{2 if k == "total" else 1.3}" '
                         f'points="{path}"/>')
            if len(pts) <= 200:  # a dot per report (a chunk), so one point or a few still show
                parts.extend(f'<circle cx="{x(it):.1f}" cy="{y(v):.1f}" r="{2 if k == "total" else 1.5}" '
                             f'fill="{COLORS[k]}"/>' for it, v in pts)
    legend_x = left
    for k in TERMS:
        last = series[k][-1][1] if series[k] else None
        label = f"{k} {last:.3g}" if last is not None else k
        parts.append(f'<rect x="{legend_x}" y="{height - 11}" width="10" height="3" fill="{COLORS[k]}"/>')
        parts.append(f'<text x="{legend_x + 13}" y="{height - 7}">{label}</text>')
        legend_x += 13 + 6 * len(label) + 10
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True)
class View:
    """What a live view shows at one moment (a copy: safe to read from another thread)."""

    latest: Progress | None  # the last report (any phase)
    rows: tuple[dict, ...]  # one per optimize report of the current image: iteration and terms
    image: np.ndarray | None  # the current image (float RGB 0..255), at most `interval` old
    image_version: int  # how many times the image was fetched (a cache key for pages)


class Watcher:
    """A progress callback that keeps what a live view needs: every report's loss terms, the
    last report, and the current image, fetched at most every `interval` seconds (and always
    at the end of an image, where the report carries the finished image). Other threads read
    it through `view()`; `then`, if given, is called after each report (with the Progress)."""

    def __init__(self, interval: float = 1.5, then: Callable[[Progress], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval, self.then, self.clock = interval, then, clock
        self._rows: list[dict] = []
        self._latest: Progress | None = None
        self._image: np.ndarray | None = None
        self._version = 0
        self._fetched = -math.inf
        self._names: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def __call__(self, p: Progress) -> None:
        if p.phase in ("optimize", "done"):
            with self._lock:
                if p.names != self._names and p.phase == "optimize":  # the next image (a folder)
                    self._rows, self._names = [], p.names
                if p.terms and (not self._rows or p.iteration > self._rows[-1]["iteration"]):
                    self._rows.append({"iteration": p.iteration,
                                       **{k: float(p.terms[k]) for k in TERMS if k in p.terms}})
            now = self.clock()
            if p.image is not None and (p.phase == "done" or now - self._fetched >= self.interval):
                image = np.asarray(p.image())
                with self._lock:
                    self._image, self._version, self._fetched = image, self._version + 1, now
        with self._lock:
            self._latest = p
        if self.then is not None:
            self.then(p)

    def view(self) -> View:
        """A consistent copy of what the view shows now."""
        with self._lock:
            return View(self._latest, tuple(self._rows), self._image, self._version)

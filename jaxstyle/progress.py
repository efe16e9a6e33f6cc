"""Human-readable progress: a live bar on a terminal, periodic plain lines elsewhere."""
from __future__ import annotations

import sys
import time
from typing import TextIO

from .pipeline import Progress


def _fmt(v: float) -> str:
    return f"{v:.4g}"


class ProgressPrinter:
    """Callable that renders `Progress` events to a stream (stderr by default)."""

    def __init__(self, stream: TextIO | None = None, width: int = 24, interval: float = 0.1,
                 plain_interval: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = width
        self.interval = interval if self.tty else plain_interval
        self._last = 0.0
        self._line_open = False

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if p.phase == "compile":
            where = f"stage {p.stage}/{p.stages} ({p.size} px): " if p.stages > 1 else ""
            self._write(f"{where}compiling the optimization loop...", final=True)
            return
        if p.phase == "optimize" and now - self._last < self.interval and p.iteration < p.iterations:
            return
        self._last = now
        self._write(self.line(p), final=(p.phase == "done" or not self.tty))

    def line(self, p: Progress) -> str:
        """One status line: bar, iteration, losses, speed."""
        frac = p.iteration / p.iterations if p.iterations else 1.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        parts = [f"[{bar}] {p.iteration}/{p.iterations}", f"loss {_fmt(p.loss)}"]
        if p.stages > 1:
            parts.insert(1, f"stage {p.stage}/{p.stages} {p.size}px")
        if p.terms:
            t = p.terms
            parts.append(f"content {_fmt(t['content'])} style {_fmt(t['style'])} tv {_fmt(t['tv'])}"
                         + ("" if p.terms_iteration == p.iteration else f" (at it {p.terms_iteration})"))
        if p.seconds_per_iteration:
            evals = p.evaluations / max(p.iteration, 1)
            eta = p.seconds_per_iteration * max(p.iterations - p.iteration, 0)
            parts.append(f"{p.seconds_per_iteration:.3g} s/it, {evals:.2f} eval/it"
                         + (f", {eta:.0f}s left" if p.phase == "optimize" else ""))
        if p.phase == "done":
            parts.append(f"{p.elapsed:.1f}s")
        return " | ".join(parts)

    def _write(self, text: str, final: bool) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
            self._line_open = not final
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End an open live line (after an interruption, say)."""
        if self._line_open:
            self.stream.write("\n")
            self.stream.flush()
            self._line_open = False


class BatchPrinter(ProgressPrinter):
    """Renders a batch run's progress: images done, and the current batch's iterations."""

    def __call__(self, p) -> None:  # p: batch.BatchProgress
        now = time.monotonic()
        last = p.iteration >= p.iterations
        if now - self._last < self.interval and not last:
            return
        self._last = now
        frac = p.images_done / p.images_total if p.images_total else 1.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        rate = p.images_done / p.seconds * 60 if p.seconds and p.images_done else 0.0
        self._write(f"[{bar}] {p.images_done}/{p.images_total} images | {p.bucket[1]}x{p.bucket[0]}, "
                    f"batch of {p.batch_images}: iteration {p.iteration}/{p.iterations} | "
                    f"{rate:.2f} images/min", final=not self.tty)

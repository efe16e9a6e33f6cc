"""The one progress printer: a line updated in place on a terminal (fitted to its width), an
output updated in place in a notebook, plain lines at a readable interval elsewhere (CI, a log
file), and with --print-every a permanent line every N iterations.

Why not rich or tqdm: rich (installed with flax) renders a progress bar well on a terminal,
but measured here, when its output is not a terminal it prints nothing until the run ends (a
30-update, 3 s run wrote one 142-byte line at exit), and a 10-minute run in CI or under
`nohup` must say how it is going; tqdm is not a dependency. What is left to do by hand is
small: cut one line to the terminal's width, and in a notebook update an IPython display
(every Jupyter and Colab has it; no widget library needed). The notebook's live view (the
current image and the loss curve, `LiveNotebookPrinter`) is HTML in one more such display:
an inline JPEG and an SVG drawn by `preview`, no plotting library.
"""
from __future__ import annotations

import shutil
import sys
import time
from typing import Any, Callable, TextIO

from jaxstyle.observers.results import Progress


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _middle_cut(name: str, room: int) -> str:
    """`name` in at most `room` characters, its middle replaced by "…" (the end, with the
    extension, kept)."""
    if len(name) <= room:
        return name
    if room < 5:
        return name[:max(room, 0)]
    tail = min(len(name) // 2, (room - 1) // 2)
    return name[:room - 1 - tail] + "…" + name[-tail:]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ProgressPrinter:
    """Callable that renders `Progress` reports to a stream (stderr by default).

    It never raises: a closed or broken stream (a terminal that went away, `| head`) must not
    stop a run, so write errors silence the printer instead.
    """

    def __init__(self, stream: TextIO | None = None, interval: float = 0.1, plain_interval: float = 10.0,
                 width: int | None = None, precision: str = "float32", lines: bool = False) -> None:
        self.stream = stream or sys.stderr
        try:
            self.tty = bool(self.stream.isatty())
        except (AttributeError, OSError, ValueError):
            self.tty = False
        self.interval = interval if self.tty else plain_interval
        self.lines = lines  # --print-every: its lines replace the periodic plain ones
        self.fixed_width = width
        self.precision = precision
        self._last = 0.0
        self._line_open = False
        self._broken = False
        self._stage: tuple | None = None

    @property
    def width(self) -> int:
        if self.fixed_width:
            return self.fixed_width
        return max(shutil.get_terminal_size((80, 24)).columns - 1, 20)

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if p.phase == "compile":
            self._write(self.header(p), final=True)
            return
        if p.phase == "iteration":
            self.message(self.iteration_line(p))
            return
        stage = (p.names, p.stage)
        new_stage, self._stage = stage != self._stage, stage
        if p.phase == "optimize" and not self.tty and self.lines:
            return
        if p.phase == "optimize" and not new_stage and now - self._last < self.interval:
            return
        self._last = now
        self._write(self.line(p), final=(p.phase == "done" or not self.tty))

    def header(self, p: Progress) -> str:
        """The line before compiling: what for, how many programs, where, how precise, how big.
        Where the width is short the details go first, then the file name loses its middle
        ("tubin…ght.jpg": "…" marks only a cut)."""
        what = p.names[0] if len(p.names) == 1 else f"{len(p.names)} images"
        stage = f", stage {p.stage}/{p.stages}" if p.stages > 1 else ""
        main = f"jaxstyle: compiling {p.programs} program{'s' * (p.programs != 1)} for "
        detail = f" ({p.device}, {p.dtype or self.precision}, {p.shape[1]}x{p.shape[0]}{stage})"
        if (not self.tty and not self.fixed_width) or len(main + what + detail) <= self.width:
            return main + what + detail
        room = self.width - len(main)
        if len(what) <= room:
            return main + what
        return self._fit(main + _middle_cut(what, room))

    def iteration_line(self, p: Progress) -> str:
        """The permanent line --print-every asks for: one iteration's loss and its terms."""
        who = f"{p.names[0]} " if p.images_total > 1 else ""
        terms = p.terms or {}
        parts = [f"{who}it {p.iteration}/{p.iterations}", f"loss {_fmt(p.loss)}"]
        parts += [f"{k} {_fmt(terms[k])}" for k in ("content", "style", "tv") if k in terms]
        return self._fit(" | ".join(parts))

    def line(self, p: Progress) -> str:
        """One status line, most important parts first, cut to the width."""
        if p.phase == "done":
            left = f"done {p.names[0]}" + (f" ({p.images_done}/{p.images_total})" if p.images_total > 1 else "")
            speed = f"{p.seconds_per_iteration:.3g} s/it" if p.seconds_per_iteration else ""
            return self._fit(" | ".join(x for x in (left, f"{p.iteration} its", f"loss {_fmt(p.loss)}", speed) if x))
        count = f"{p.iteration}/{p.iterations}"
        if p.images_total > 1:
            count = f"{p.unit} {p.images_done + 1}-{p.images_done + p.batch}/{p.images_total} it {count}" \
                if p.batch > 1 else f"{p.unit} {p.images_done + 1}/{p.images_total} it {count}"
        if p.tile:
            count = f"{p.tile} it {count}"
        must = [count, f"loss {_fmt(p.loss)}"]
        if p.seconds_per_iteration:
            must.append(f"{p.seconds_per_iteration:.3g} s/it")
        if p.seconds_per_image:
            must.append(f"{p.seconds_per_image:.3g} s/{p.unit}")
        if p.eta is not None:
            must.append(f"ETA {_duration(p.eta)}")
        extra = []
        if p.stages > 1:
            extra.append(f"stage {p.stage}/{p.stages} {p.size}px")
        if p.terms:  # weighted: they add up to the loss
            extra.append(f"c {_fmt(p.terms['content'])} + s {_fmt(p.terms['style'])} + tv {_fmt(p.terms['tv'])}")
        text = " | ".join(must)
        room = self.width - len(text)
        for part in extra:  # optional parts only where they fit
            if len(part) + 3 <= room:
                text += " | " + part
                room -= len(part) + 3
        bar_room = room - 3
        if bar_room >= 8:
            n = min(bar_room, 30)
            done = p.iteration / p.iterations if p.iterations else 1.0
            if p.images_total > 1:
                done = (p.images_done + done * p.batch) / p.images_total
            filled = int(round(min(done, 1.0) * n))
            text = f"[{'#' * filled}{'-' * (n - filled)}] " + text
        return self._fit(text)

    def _fit(self, text: str) -> str:
        if not self.tty and not self.fixed_width:
            return text  # a log file keeps whole lines
        return text if len(text) <= self.width else text[: self.width - 1] + "…"

    def _write(self, text: str, final: bool) -> None:
        if self._broken:
            return
        try:
            if self.tty:
                self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
                self._line_open = not final
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError, AttributeError):  # AttributeError: no stream (sys.stderr is None)
            self._broken = True

    def message(self, text: str) -> None:
        """A line of its own (a warning, a skipped image), above the live line."""
        self.close()
        self._write(text, final=True)

    def close(self) -> None:
        """End an open live line (after an interruption, say)."""
        if self._line_open and not self._broken:
            try:
                self.stream.write("\n")
                self.stream.flush()
            except (OSError, ValueError):
                self._broken = True
        self._line_open = False


class NotebookPrinter(ProgressPrinter):
    """The same lines in a Jupyter or Colab notebook: the live line is an output updated in
    place (an IPython display), permanent lines are printed above it."""

    def __init__(self, display: Callable[..., Any] | None = None, width: int = 110, interval: float = 0.5,
                 **kwargs: Any) -> None:
        super().__init__(stream=sys.stdout, interval=interval, width=width, **kwargs)
        self.tty, self.interval = True, interval
        if display is None:
            from IPython.display import display
        self.display = display
        self.handle: Any = None

    def _write(self, text: str, final: bool) -> None:
        if self._broken:
            return
        try:
            if final:
                if self.handle is not None:
                    self.handle.update({"text/plain": ""}, raw=True)
                    self.handle = None
                print(text, flush=True)
            elif self.handle is None:
                self.handle = self.display({"text/plain": text}, raw=True, display_id=True)
            else:
                self.handle.update({"text/plain": text}, raw=True)
        except Exception:  # a display that went away must not stop the run
            self._broken = True

    def close(self) -> None:
        self.handle = None


class LiveNotebookPrinter(NotebookPrinter):
    """The notebook printer plus a live view below its line: the current image and the loss
    curve of every term (an inline JPEG and SVG in one HTML output updated in place). The image
    is fetched at most every `image_interval` seconds (and once more at the end, the finished
    image), so watching costs the run next to nothing."""

    def __init__(self, display: Callable[..., Any] | None = None, image_interval: float = 1.5,
                 image_side: int = 512, **kwargs: Any) -> None:
        from jaxstyle.observers.preview import Watcher
        super().__init__(display=display, **kwargs)
        self.watcher = Watcher(image_interval)
        self.image_side = image_side
        self.view_handle: Any = None
        self._shown = 0  # the image version on display
        self._view_broken = False

    def __call__(self, p: Progress) -> None:
        super().__call__(p)
        if self._view_broken:
            return
        self.watcher(p)
        view = self.watcher.view()
        if view.image_version == self._shown or view.image is None:
            return
        self._shown = view.image_version
        try:
            data = {"text/html": self.html(view), "text/plain": f"jaxstyle: {p.names[0] if p.names else ''} "
                                                                  f"(live image and loss curve)"}
            if self.view_handle is None:
                self.view_handle = self.display(data, raw=True, display_id=True)
            else:
                self.view_handle.update(data, raw=True)
        except Exception:  # a display that went away must not stop the run
            self._view_broken = True

    def html(self, view: Any) -> str:
        """The live view as one HTML fragment: the image and the loss curve side by side."""
        import base64

        from jaxstyle.observers.preview import encode, loss_svg
        latest = view.latest
        jpeg = base64.b64encode(encode(view.image, "JPEG", self.image_side)).decode("ascii")
        h, w = view.image.shape[:2]
        scale = max(1.0, 256 / max(h, w))  # tiny images shown larger
        iterations = latest.iterations if latest is not None else 0
        return ('<div style="display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start">'
                f'<img alt="current image" width="{round(w * scale)}" height="{round(h * scale)}" '
                f'src="data:image/jpeg;base64,{jpeg}"/>'
                f'{loss_svg(view.rows, iterations)}</div>')

    def close(self) -> None:
        super().close()
        self.view_handle = None


def in_notebook() -> bool:
    """Whether this process is a Jupyter or Colab kernel."""
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython is not None else None
    except Exception:
        return False
    return type(shell).__name__ in ("ZMQInteractiveShell", "Shell")


def printer(precision: str = "float32", lines: bool = False, live: bool = False) -> ProgressPrinter:
    """The printer for where this process runs: a notebook's (with `live`, also the current
    image and the loss curve), else one on stderr."""
    if in_notebook():
        try:
            if live:
                return LiveNotebookPrinter(precision=precision, lines=lines)
            return NotebookPrinter(precision=precision, lines=lines)
        except ImportError:
            pass
    return ProgressPrinter(precision=precision, lines=lines)

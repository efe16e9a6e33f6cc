"""What a run does beside optimizing: snapshots, animation frames, the trace and checkpoints.

Each is a small `observer.Observer` with its own interval, keyed by the job's image index, so
the same objects serve one image and a folder, and they can be tested with hand-made reports
(nothing here compiles anything). Chunk boundaries come from their `next_stop`; none of them
forces one-iteration chunks: the trace reads the per-iteration losses each chunk records.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from jaxstyle.errors import OutputError
from jaxstyle.images import output
from jaxstyle.observers import checkpoint as ckpt_mod
from jaxstyle.observers.observer import Observer, Report

Finish = Callable[[np.ndarray], np.ndarray]  # applied to every image written (colour recombination)


def _next_multiple(every: int, iteration: int, total: int) -> int | None:
    if not every:
        return None
    nxt = (iteration // every + 1) * every
    return nxt if nxt < total else None


class Snapshots(Observer):
    """`OUT_0010.png`-style snapshots of each image every `every` iterations (before the last).

    A snapshot that cannot be written does not stop the run: it is kept elsewhere (see
    `output.write_image`) and its OutputError recorded in `errors`, for the run to report."""

    def __init__(self, every: int, outputs: Mapping[int, Path], totals: Mapping[int, int],
                 finish: Mapping[int, Finish], quality: int = 95) -> None:
        self.every, self.outputs, self.totals, self.finish, self.quality = every, outputs, totals, finish, quality
        self.written: dict[int, list[Path]] = {i: [] for i in outputs}
        self.errors: dict[int, list[OutputError]] = {}
        self._failed: set[Path] = set()

    def next_stop(self, item: int, iteration: int) -> int | None:
        return _next_multiple(self.every, iteration, self.totals[item]) if item in self.outputs else None

    def observe(self, r: Report) -> None:
        if r.item not in self.outputs or not self.every or r.iteration % self.every \
                or not 0 < r.iteration < self.totals[r.item]:
            return
        path = output.snapshot_path(self.outputs[r.item], r.iteration)
        if path not in self.written[r.item] and path not in self._failed:
            try:
                self.written[r.item].append(output.write_image(self.finish[r.item](r.image()), path,
                                                               self.quality, what="snapshot"))
            except OutputError as e:
                self._failed.add(path)
                self.errors.setdefault(r.item, []).append(e)


class Frames(Observer):
    """Frames for an animated GIF of each image: every `every` iterations and at the end."""

    def __init__(self, every: int, items: Mapping[int, Path], totals: Mapping[int, int],
                 finish: Mapping[int, Finish]) -> None:
        self.every, self.paths, self.totals, self.finish = every, items, totals, finish
        self.frames: dict[int, list[tuple[int, np.ndarray]]] = {i: [] for i in items}

    def add(self, item: int, iteration: int, rgb: np.ndarray) -> None:
        """A frame from outside the loop (the initial image)."""
        if item in self.frames and (not self.frames[item] or self.frames[item][-1][0] != iteration):
            self.frames[item].append((iteration, self.finish[item](rgb)))

    def next_stop(self, item: int, iteration: int) -> int | None:
        return _next_multiple(self.every, iteration, self.totals[item]) if item in self.paths else None

    def observe(self, r: Report) -> None:
        if r.item in self.paths and (r.iteration % self.every == 0 or r.final):
            self.add(r.item, r.iteration, r.image())

    def write(self, item: int) -> Path | None:
        """Write item's GIF (atomically); None when it has no frames or no path."""
        frames = self.frames.get(item)
        return output.write_gif(frames, self.paths[item]) if frames else None


class Trace(Observer):
    """Every iteration's loss terms and evaluation count, with the seconds since the run began
    (`start`, a `time.perf_counter()` reading; compiling included; interpolated inside a chunk:
    the loop records losses, not times)."""

    def __init__(self, items: Mapping[int, Path | None], sizes: list[int], start: float | None = None) -> None:
        self.items, self.sizes = items, sizes
        self.entries: dict[int, list[dict]] = {i: [] for i in items}
        self.start = time.perf_counter() if start is None else start
        self.last: dict[int, float] = {}

    def observe(self, r: Report) -> None:
        if r.item not in self.entries:
            return
        entries = self.entries[r.item]
        rows = [{"stage": r.stage + 1, "size": self.sizes[r.stage], **row} for row in r.history]
        if not entries and r.stage == 0 and r.iteration - len(r.history) == 0:
            # The run began here: the initial image's losses are iteration 0 (known after its
            # first evaluation, inside this chunk).
            rows.insert(0, {"stage": 1, "size": self.sizes[0], "iteration": 0, "evaluations": 1, **r.first})
        now = time.perf_counter() - self.start
        before = self.last.get(r.item, 0.0)
        for k, row in enumerate(rows):
            entries.append({**row, "seconds": round(before + (now - before) * (k + 1) / len(rows), 4)})
        self.last[r.item] = now


class Checkpoints(Observer):
    """Resumable checkpoints of each image: every `every` iterations, when the run is
    interrupted, and at the end for the images in `keep` (`--keep-checkpoint`: the run can be
    extended later). A finished image's checkpoint is otherwise removed once its result is
    written (`Runner._finish`).

    A checkpoint that cannot be written does not stop the run: it is kept elsewhere (the same
    place each time, so that place holds the latest state) and its OutputError is in `errors`
    until a later checkpoint of that image is written where it belongs."""

    def __init__(self, every: int, paths: Mapping[int, Path], totals: Mapping[int, int],
                 provenance: Mapping[int, dict[str, Any]]) -> None:
        self.every, self.paths, self.totals, self.provenance = every, paths, totals, provenance
        self.written: dict[int, Path] = {}
        self.keep: set[int] = set()  # images whose checkpoint is written at the end too
        self.errors: dict[int, OutputError] = {}

    def next_stop(self, item: int, iteration: int) -> int | None:
        return _next_multiple(self.every, iteration, self.totals[item]) if item in self.paths else None

    def needs_state(self, item: int, iteration: int) -> bool:
        if item not in self.paths:
            return False
        at_end = iteration >= self.totals[item] and item in self.keep
        return at_end or bool(self.every) and iteration % self.every == 0

    def observe(self, r: Report) -> None:
        if r.item not in self.paths:
            return
        periodic = self.every and r.iteration % self.every == 0 and r.iteration < self.totals[r.item] \
            and not r.final
        at_end = r.final and (r.status == "interrupted" or (r.item in self.keep and r.status in ("done", "stalled")
                                                             and r.iteration >= self.totals[r.item]))
        if periodic or at_end:
            state = r.state()
            offset = (r.iteration - int(state.iteration), r.evaluations - int(state.evaluations))
            failed = self.errors.get(r.item)
            try:
                self.written[r.item] = ckpt_mod.save(self.paths[r.item], state, stage=r.stage, offset=offset,
                                                     keep_at=failed.kept if failed else None,
                                                     **self.provenance[r.item])
            except OutputError as e:
                self.errors[r.item] = e
                return
            if failed is not None:  # written where it belongs now: the kept copy is out of date
                self.errors.pop(r.item)
                if failed.kept is not None:
                    with contextlib.suppress(OSError):
                        Path(failed.kept).unlink()


class Lines(Observer):
    """Every `every` iterations of each image, the loss terms of that exact iteration (read from
    the chunk's per-iteration record, so chunks need not end there), given to `say`."""

    def __init__(self, every: int, say: Callable[[Report, dict], None]) -> None:
        self.every, self.say = every, say
        self.last: dict[int, int] = {}

    def observe(self, r: Report) -> None:
        if not self.every:
            return
        for row in r.history:
            it = row["iteration"]
            if it % self.every == 0 and it > self.last.get(r.item, 0):
                self.last[r.item] = it
                self.say(r, row)

"""One batch of a run through its coarse-to-fine stages, and each image's files at the end.

A batch's images share a layout at every stage; each stage builds the batch's problem (from
the previous stage's results, upsampled), drives it with the run's observers, and hands its
images on. An image whose loss became non-finite, or that was interrupted, leaves the later
stages to the others. At the end every image's result, animation and trace are written.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np

from jaxstyle.config import Config
from jaxstyle.errors import JaxstyleError, OutputError
from jaxstyle.images import masks, output, preprocess, tiles
from jaxstyle.observers import checkpoint as ckpt_mod
from jaxstyle.observers.results import Progress, Result
from jaxstyle.observers.writers import Checkpoints, Frames, Lines, Snapshots, Trace
from jaxstyle.run import inputs
from jaxstyle.run.driver import Outcome, Slot, drive, rgb
from jaxstyle.run.job import Job, shares_styles
from jaxstyle.run.problem import Builder, Layout, default_width, with_states
from jaxstyle.run.resuming import provenance, result_note
from jaxstyle.solver import lbfgs as solver


class Runner:
    """Runs a job's batches, one after another, with one set of observers for all its images."""

    def __init__(self, job: Job, config: Config, builder: Builder, results: list, progress: Callable,
                 notify: Callable[[str], None], should_stop: Callable[[], bool] | None,
                 weights_sha: str | None, weights_path: str | None, total: int, devices: tuple,
                 device: str, started: float | None = None) -> None:
        self.job, self.config, self.builder, self.results = job, config, builder, results
        self.progress, self.notify, self.should_stop = progress, notify, should_stop
        self.total = total
        self.stopped = False
        self.elapsed = 0.0
        stages = config.stages()
        self.iterations = sum(n for _, n in stages)
        items = dict(enumerate(job.items))
        totals = {i: self.iterations for i in items}
        self.finish: dict[int, Callable[[np.ndarray], np.ndarray]] = {}
        outputs = {i: it.output for i, it in items.items() if it.output is not None}
        self.snapshots = Snapshots(config.save_every, outputs, totals, self.finish, job.quality)
        frame_every = config.save_every or max(1, self.iterations // 40)
        self.frames = Frames(frame_every, {i: it.gif for i, it in items.items() if it.gif}, totals, self.finish)
        self.trace = Trace({i: it.trace for i, it in items.items()}, [s for s, _ in stages], started)
        prov = {i: provenance(job, config, it, weights_sha, weights_path) for i, it in items.items()
                if it.checkpoint is not None}
        self.checkpoints = Checkpoints(config.checkpoint_every, {i: items[i].checkpoint for i in prov},
                                       totals, prov)
        if config.keep_checkpoint:  # each image's checkpoint holds its final state
            self.checkpoints.keep.update(prov)
        self.lines = Lines(config.print_every, self._line)
        self.observers = [self.snapshots, self.frames, self.trace, self.checkpoints, self.lines]
        self._said: set[str] = set()  # content masks whose regions were named
        self._shape: tuple[int, int] = (0, 0)  # the current stage's working shape, for `_line`
        self.device = device  # for the progress reports
        self.devices = devices  # every device of the run (a tiled stage uses them all)

    @property
    def images_done(self) -> int:
        return sum(r is not None for r in self.results)

    def batch(self, plans: Sequence[Any], size: int, devices: tuple) -> None:
        """Run one batch of plans (`run._Plan`), `size` slots split over `devices`, and write its
        images' files."""
        config, job = self.config, self.job
        live = []
        for p in plans:  # a folder's images are decoded here, batch by batch
            try:
                p.sources = p.sources or inputs.decode(p.item, config)
                live.append(p)
            except JaxstyleError as e:
                self.results[p.index] = Result(p.item.name, None, job.mode, config, "failed", message=e.message)
                self.notify(f"skipped {e.message}")
        if not live:
            return
        for p in live:
            self._say_regions(p)
        stages = config.stages()
        start = live[0].resumed.stage if live[0].resumed else 0
        state = {p.index: {"previous": None, "status": "running", "offset": (0, 0), "first": {}, "final": {},
                           "run": 0} for p in live}
        for p in live:
            if p.resumed:
                state[p.index]["offset"] = p.resumed.offset
                # the loop state already holds this stage's first iterations: not this run's work
                state[p.index]["run"] = -(p.resumed.iteration - p.resumed.offset[0])
        compile_seconds = seconds = 0.0
        for k in range(start, len(stages)):
            active = [p for p in live if state[p.index]["status"] in ("running", "done", "stalled")]
            if not active:
                break
            stage_size, its = stages[k]
            imgs = [inputs.stage_images(p.sources, p.item, config, stage_size, state[p.index]["previous"])
                    for p in active]
            for p, im in zip(active, imgs):
                self.finish[p.index] = im.finish
            t = self.builder.compile_seconds
            if self._tiled(k, imgs):
                outcome = self._tiled_stage(active, imgs, k, its, state)
            else:
                outcome = self._whole_stage(size, active, imgs, devices, k, its, state)
            compile_seconds += self.builder.compile_seconds - t
            seconds += outcome.seconds
            self.elapsed += outcome.seconds
            for j, p in enumerate(active):
                s = state[p.index]
                s["run"] += outcome.iterations[j] - s["offset"][0]
                s.update(previous=outcome.images[j], status=outcome.status[j],
                         offset=(outcome.iterations[j], outcome.evaluations[j]), final=outcome.final[j])
                s["first"] = s["first"] or outcome.first[j]
            if outcome.interrupted:
                self.stopped = True
                break
        failures = [f for p in live if (f := self._finish(p, state[p.index], compile_seconds, seconds))]
        if failures:  # every image of the batch is finished (and written where possible) first
            raise failures[0] if len(failures) == 1 else _joined(failures)

    def _problem(self, layout: Layout, active, imgs, k: int, contents, x0s, guides) -> Any:
        if self.builder.pending(layout):
            self._report("compile", active, k, layout, programs=self.builder.pending(layout))
        shared = layout.shared_styles
        return self.builder.problem(layout, contents, x0s,
                                    [imgs[0].styles] if shared else [im.styles for im in imgs],
                                    [self._blend(len(imgs[0].styles))], guides if layout.regions else (),
                                    ([imgs[0].style_masks] if shared else [im.style_masks for im in imgs])
                                    if layout.regions else (), [im.temporal for im in imgs]
                                    if self.builder.objective.temporal else ())

    def _whole_stage(self, size: int, active, imgs, devices: tuple, k: int, its: int, state: dict) -> Outcome:
        """A stage on whole images: the batch's problem, resumed slots, driven with every observer."""
        layout = self._layout(size, active, imgs, devices, k)
        problem = self._problem(layout, active, imgs, k, [im.content for im in imgs], [im.x0 for im in imgs],
                                [im.guide for im in imgs])
        like = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), problem.state)
        resumed = {j: p.resumed.state(like) for j, p in enumerate(active)
                   if p.resumed is not None and p.resumed.stage == k}
        problem = with_states(problem, resumed)
        for j, p in enumerate(active):
            if k == 0 and j not in resumed:
                self.frames.add(p.index, 0, rgb(imgs[j].x0, imgs[j].x0.shape[:2]))
        slots = [Slot(p.index, p.item.name, state[p.index]["offset"], its) for p in active]
        self._shape = layout.shape
        return drive(problem, slots, self.observers, stage=k, should_stop=self.should_stop,
                     on_chunk=lambda info: self._chunk(info, active, k, layout))

    def _tiled(self, k: int, imgs) -> bool:
        """Whether stage k runs in tiles: the last stage, with --tile smaller than the image."""
        tile = self.config.tile
        return bool(tile) and k == len(self.config.stages()) - 1 and \
            max(max(im.content.shape[:2]) for im in imgs) > tile

    def _tiled_stage(self, active, imgs, k: int, its: int, state: dict) -> Outcome:
        """A stage in overlapping tiles (`tiles`): each image's tiles run one batch of them per
        device at a time, every tile starting from the result so far and matching the global
        style targets, and are cross-faded into the image. The loss reported is the tiles' mean."""
        config = self.config
        overlap = tiles.overlap_for(config.tile)
        devices = self.devices  # every device of the run takes its own tiles, whatever the batch's
        n = len(devices)
        out = Outcome([], [], [], [], [], [], 0.0, False)
        for p, im in zip(active, imgs):
            hw = im.content.shape[:2]
            tile_hw = tuple(min(config.tile, d) for d in hw)
            offset = state[p.index]["offset"]
            base = rgb(im.x0, hw)
            if out.interrupted:  # a stop asked during an earlier image: this one keeps its last stage
                self._add(out, base, "interrupted", offset, {}, {})
                continue
            wins = tiles.windows(hw, config.tile, overlap)
            weights = tiles.blend_weights(hw, config.tile, overlap)
            canvas = tiles.Canvas(base)
            layout = Layout(n, preprocess.bucket(tile_hw, config.bucket), self._style_shape([im]), len(im.styles),
                            True, devices, 1, self.builder.objective.regions)
            self._shape = layout.shape
            status, evaluations, firsts, finals = "done", 0, [], []
            for first in range(0, len(wins), n):
                group = list(range(first, min(first + n, len(wins))))
                crop = [wins[t] for t in group]
                current = canvas.image()
                problem = self._problem(layout, [p] * len(group), [im] * len(group), k,
                                        [im.content[y0:y1, x0:x1] for y0, y1, x0, x1 in crop],
                                        [preprocess.to_vgg(current[y0:y1, x0:x1]) for y0, y1, x0, x1 in crop],
                                        [im.guide[y0:y1, x0:x1] for y0, y1, x0, x1 in crop]
                                        if im.guide is not None else [])
                names = [f"{p.item.name} tile {t + 1}/{len(wins)}" for t in group]
                label = f"tile {group[0] + 1}/{len(wins)}" if len(group) == 1 else \
                    f"tiles {group[0] + 1}-{group[-1] + 1}/{len(wins)}"
                slots = [Slot(p.index, name, offset, its) for name in names]  # progress counts on
                result = drive(problem, slots, [], stage=k, should_stop=self.should_stop,
                               on_chunk=lambda info: self._chunk(info, [p], k, layout, p.item.name,
                                                                 (first // n, -(-len(wins) // n), label,
                                                                  offset[0], out.seconds)))
                out.seconds += result.seconds
                for i, t in enumerate(group):
                    canvas.add(wins[t], result.images[i], weights[t])
                evaluations += sum(e - offset[1] for e in result.evaluations)
                firsts += result.first
                finals += result.final
                if result.interrupted:
                    status, out.interrupted = "interrupted", True
                    # what the message says: tiles finished, and how far the tile going got
                    state[p.index]["tiles"] = (first, len(wins), min(result.iterations) - offset[0])
                    break
                if "non-finite" in result.status:
                    status = "non-finite"
                    break
            done = status == "done"
            if done:  # a checkpoint of an earlier stage would make the same command redo this one
                self._drop_checkpoint(p)
            final = {key: float(np.mean([f[key] for f in finals])) for key in (finals[0] if finals else {})}
            per_tile = round(evaluations / max(len(finals), 1))  # an iteration of every tile counts once
            got = its if done else state[p.index].get("tiles", (0, 0, 0))[2]  # the interrupted tile's iterations
            self._add(out, canvas.image(), status, (offset[0] + got, offset[1] + per_tile),
                      firsts[0] if firsts else {}, final)
        return out

    def _drop_checkpoint(self, p) -> None:
        """A finished tiled stage's image has no checkpoint (tiles are not checkpointed): one of
        an earlier stage, from this run or the one it resumed, is removed, so that the run is
        final and running its command again does not redo the tiled stage."""
        path = p.item.checkpoint
        self.checkpoints.written.pop(p.index, None)
        self.checkpoints.keep.discard(p.index)
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    @staticmethod
    def _add(out: Outcome, image: np.ndarray, status: str, offset: tuple[int, int], first: dict,
             final: dict) -> None:
        out.images.append(image)
        out.status.append(status)
        out.iterations.append(offset[0])
        out.evaluations.append(offset[1])
        out.first.append(first)
        out.final.append(final)

    def _style_shape(self, imgs) -> tuple[int, int]:
        return tuple(max((preprocess.bucket(s.shape[:2], self.config.bucket)[d]
                          for im in imgs for s in im.styles), default=16) for d in (0, 1))

    def _layout(self, size: int, active, imgs, devices: tuple, k: int) -> Layout:
        shape = preprocess.bucket(imgs[0].content.shape[:2], self.config.bucket)
        style_shape = self._style_shape(imgs)
        split = self.config.split_image and len(devices) > 1
        local = size if split else size // len(devices)
        # One image that fills its bucket needs no padding masks; a folder keeps them, so one
        # program serves every image of a bucket.
        full = len(self.job.items) == 1 and all(tuple(im.content.shape[:2]) == tuple(shape) for im in imgs)
        return Layout(size, shape, style_shape, len(imgs[0].styles), shares_styles(self.job, self.config),
                      devices, 1 if split else default_width(devices[0].platform, local),
                      self.builder.objective.regions, split, full)

    def _say_regions(self, p) -> None:
        """Which style paints which colour of a content mask (once per mask)."""
        colours = p.sources.region_colours if p.sources is not None else None
        key = str(p.item.content_mask)
        if not colours or key in self._said:
            return
        self._said.add(key)
        names = [s if masks.is_keep(s) else _short_name(s, f"style {k + 1}")
                 for k, s in enumerate(p.item.styles)]
        self.notify(f"regions of {_short_name(p.item.content_mask, 'the content mask')}: "
                    + ", ".join(f"{c} -> {n}" for c, n in zip(colours, names)))

    def _blend(self, n: int) -> np.ndarray:
        blend = np.asarray(self.job.style_blend if self.job.style_blend is not None else [1.0] * n, np.float64)
        return (blend / blend.sum()).astype(np.float32)

    def _report(self, phase: str, active, k: int, layout: Layout, programs: int = 0) -> None:
        self.progress(Progress(phase, self.images_done, self.total, tuple(p.item.name for p in active),
                               k + 1, len(self.config.stages()), self.config.stages()[k][0], layout.shape,
                               0, self.iterations, 0, float("nan"), None, self.elapsed, None, None,
                               self.device, programs, len(active), dtype=self.config.dtype))

    def _line(self, r: Any, row: dict) -> None:
        k = r.stage
        terms = self._weighted({key: row[key] for key in ("total", "content", "style", "tv") if key in row})
        self.progress(Progress("iteration", self.images_done, self.total, (r.name,), k + 1,
                               len(self.config.stages()), self.config.stages()[k][0], self._shape, row["iteration"],
                               self.iterations, row["evaluations"], row["total"], terms, self.elapsed, None,
                               None, self.device))

    def _weighted(self, terms: dict[str, float]) -> dict[str, float]:
        """The loss terms as they add up to the total: each times its weight."""
        c = self.config
        weights = {"content": c.content_weight, "style": c.style_weight, "tv": c.tv_weight}
        return {k: v * weights.get(k, 1.0) for k, v in terms.items()}

    def _chunk(self, info: dict, active, k: int, layout: Layout, name: str | None = None,
               tiled: tuple | None = None) -> None:
        """A progress report after a chunk. In a tiled stage (`tiled`: the group of tiles, the
        groups, their name, the iterations before the stage, the stage's seconds so far) an
        iteration is one of every tile, as in the image's Result: the count, s/it and ETA are
        the stage's, and the line names the tiles."""
        its = info["iterations"]
        it = int(its.min())
        per = info["seconds_per_iteration"]
        elapsed = info["elapsed"]
        tile = ""
        if tiled is not None:
            group, groups, tile, before, seconds = tiled
            it = before + (group * self.config.stages()[k][1] + it - before) // groups
            per = per * groups if per else per
            elapsed += seconds
        eta = None
        if per:
            rest = self.total - self.images_done - len(active)
            eta = per * (self.iterations - it + max(rest, 0) / len(active) * self.iterations)
        finish, raw = self.finish[active[0].index], info["image"]
        terms = self._weighted({"total": float(info["values"][0]),
                                **dict(zip(("content", "style", "tv"), map(float, info["terms"][0])))})
        names = (name,) if name else tuple(p.item.name for p in active)
        self.progress(Progress("optimize", self.images_done, self.total, names,
                               k + 1, len(self.config.stages()), self.config.stages()[k][0], layout.shape, it,
                               self.iterations, int(info["evaluations"][0]), float(info["values"][0]), terms,
                               self.elapsed + elapsed, per, eta, self.device, batch=len(active),
                               image=lambda: finish(raw()), tile=tile))

    def _remove_checkpoint(self, item: Any) -> Path | None:
        """A finished image's result is written: its checkpoint (an earlier stage's, or one it
        resumed from) is of no more use and is removed, unless it cannot be proved ours."""
        path = item.checkpoint
        if path is None:
            return None
        if not path.is_file() or not ckpt_mod.is_checkpoint(path):
            return None
        try:
            path.unlink()
        except OSError as e:
            self.notify(f"{path}: the finished run's checkpoint could not be removed ({e.strerror})")
            return path
        return None

    def _finish(self, p, s: dict, compile_seconds: float, seconds: float) -> OutputError | None:
        """Write the image's result, animation and trace, and record its Result. A file that
        cannot be written (its content is kept elsewhere, see `output.write_image`) fails the
        image in a folder; otherwise the OutputError is returned, for `batch` to raise once the
        batch's other images are written."""
        job, config, item = self.job, self.config, p.item
        errors: list[OutputError] = []
        status = s["status"] if s["status"] != "running" else "interrupted"
        raw = s["previous"]
        if status == "non-finite" and s["offset"][0] == 0:
            raw = None  # not one finite step: the "result" would be the initial image
        image = self.finish[p.index](raw) if raw is not None else None
        trace = self.trace.entries.get(p.index, [])
        if trace and s["final"]:
            trace[-1].update(s["final"])
        result = Result(item.name, image, job.mode, config, status, s["offset"][0], s["offset"][1],
                        s["first"], s["final"], compile_seconds, seconds, s["run"], trace, None,
                        self.snapshots.written.get(p.index, []), self.checkpoints.written.get(p.index),
                        message=_message(status, s, config), raw=raw)
        if status == "interrupted" and "tiles" in s:
            result.message, result.checkpoint = _tiled_message(s["tiles"], item.checkpoint)
        if status == "non-finite" and job.folder:
            result.status, result.image = "failed", None
            result.message = f"{item.content}: {result.message}"
            self.notify(f"skipped {result.message}")
        elif item.output is not None and image is not None:
            try:
                note = result_note(job, config, item) if status in ("done", "stalled") else None
                result.output = output.write_image(image, item.output, job.quality, bits=job.bits, note=note)
            except OutputError as e:
                errors.append(e)
        if p.index in self.checkpoints.errors:
            errors.append(self.checkpoints.errors[p.index])
        elif status in ("done", "stalled") and not errors and not config.keep_checkpoint:
            result.checkpoint = self._remove_checkpoint(item)
        errors += self.snapshots.errors.get(p.index, [])
        try:
            if image is not None and item.gif is not None:
                self.frames.add(p.index, s["offset"][0], raw)
                result.gif = self.frames.write(p.index)
        except OutputError as e:
            errors.append(e)
        try:
            if item.trace is not None:
                result.trace_file = output.write_trace(trace, item.trace, mode=job.mode, config=config,
                                                       status=status)
        except OutputError as e:
            errors.append(e)
        failure = _write_failure(errors, result, status)
        if failure is not None and job.folder:
            earlier = f"{result.message}; also " if result.status == "failed" else ""
            result.status, result.message = "failed", earlier + failure.message
            self.notify(failure.message)
        self.results[p.index] = result
        self.progress(Progress("done", self.images_done, self.total, (item.name,), len(config.stages()),
                               len(config.stages()), config.size, image.shape[:2] if image is not None else (0, 0),
                               s["offset"][0], self.iterations, s["offset"][1], s["final"].get("total", float("nan")),
                               s["final"] or None, self.elapsed, result.seconds_per_iteration, None, self.device,
                               image=None if image is None else (lambda: image)))
        return None if job.folder else failure


def _write_failure(errors: list[OutputError], result: Result, status: str) -> OutputError | None:
    """One OutputError for every file of an image that could not be written (None: all were),
    saying which of its files were."""
    if not errors:
        return None
    written = ""
    if result.output is not None:
        written += f"; the result {result.output} was written"
    if status == "interrupted" and result.checkpoint is not None and not any(
            e.path == result.checkpoint for e in errors):
        written += f"; the checkpoint {result.checkpoint} was written"
    return _joined(errors, written)


def _joined(errors: list[OutputError], tail: str = "") -> OutputError:
    """Several write failures as one OutputError (path and kept copy: the first's)."""
    return OutputError("; also ".join(e.message for e in errors) + tail, errors[0].path, errors[0].kept)


def _message(status: str, s: dict, config: Config) -> str | None:
    it = s["offset"][0]
    if status == "non-finite":
        hint = ("lower --style-weight/--content-weight or --learning-rate" if config.optimizer == "adam"
                else "lower --style-weight/--content-weight, or try --optimizer adam")
        if it == 0:
            first = s["first"].get("total", float("nan"))
            return (f"the loss or its gradient is NaN or infinite from the start (initial loss {first:.4g}; "
                    f"float32 overflows above 3.4e+38), so there is no image to keep and nothing was "
                    f"written. Try: smaller weights")
        return (f"the loss or its gradient became NaN or infinite after iteration {it}; "
                f"kept the last image with a finite loss. Try: {hint}")
    if status == "stalled":
        loss = s["final"].get("total", float("nan"))
        return (f"L-BFGS made no progress for {solver.Method.stall_patience} iterations and stopped "
                f"at iteration {it} (loss {loss:.6g}): converged as far as float32 allows, or stuck; "
                "more iterations will not help, other weights or --optimizer adam may")
    return None


def _tiled_message(tiles: tuple[int, int, int], checkpoint: Path | None) -> tuple[str, Path | None]:
    """What an interrupt in a tiled stage kept, and the checkpoint to continue from (None)."""
    done, total, it = tiles
    said = (f"interrupted in the tiled stage at tile {done + 1}/{total}, iteration {it} of that tile; "
            f"the image so far has {done} of {total} tiles finished. A tiled stage is not checkpointed")
    if checkpoint is not None and checkpoint.exists():
        return (f"{said}: continue with `jaxstyle resume {checkpoint}`, from an earlier stage's checkpoint "
                "(the tiled stage starts over)", checkpoint)
    return f"{said}, and no earlier stage's checkpoint was written: run the command again to start over", None


def _short_name(x: Any, default: str) -> str:
    return Path(x).name if isinstance(x, (str, os.PathLike)) else default

"""A video, frame by frame, through the ordinary run path (after Ruder, Dosovitskiy & Brox 2016).

Each frame is a transfer job (`job.single` -> `run.run` -> batch -> problem -> driver) at one
shape, so the frames share one set of compiled programs (`run`'s kept `Builder`). Frame t starts
from the previous result warped by the optical flow t -> t-1 (content where the forward-backward
check finds the pixel occluded or the flow leaves the frame) and carries the temporal term: the earlier results
(`Config.temporal_frames`) warped to it where the flow is reliable, folded into one target and
one per-pixel weight (`flow.combine`), as jit arguments. With `Config.passes`, later passes run
the other way and hold each frame to the frames on both sides (Ruder's multi-pass); passes
before the last keep their frames in OUT.passes/ (with the content frames they read back).

Finished frames are PNG files as they finish, in OUT.frames/ beside a video output (or in the
output folder); the flows are kept in OUT.flow/. A re-run skips the finished frames (their notes
record the settings and inputs that made them), continues an interrupted frame from its
checkpoint, and recomputes no flow: what it makes is bit-identical to an uninterrupted run, since
every frame is warped from its written (8-bit) predecessor and every flow is its stored value.
A thread decodes, resizes and computes the flows of the next frames while a frame optimizes;
another encodes finished frames; memory holds a few frames.
"""
from __future__ import annotations

import os
import queue
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from jaxstyle.clips import flow as flow_mod
from jaxstyle.clips import frames as frames_mod
from jaxstyle.config import INITS, NOT_FOR_VIDEO, Config, resolve
from jaxstyle.errors import ConfigError, InputError, JaxstyleError, NumericalError, OutputError
from jaxstyle.files import atomic_write
from jaxstyle.images import imageio, preprocess
from jaxstyle.observers.results import Note, Progress

QUEUED_FRAMES = 2  # frames the producer prepares ahead of the one optimizing


@dataclass(frozen=True)
class VideoJob:
    """A checked video run: its clip, styles, settings and every place it writes."""

    clip: frames_mod.Clip
    styles: tuple[Any, ...]
    output: Path  # a video file, or a folder of frames
    config: Config  # the first frame's (later frames: `later`)
    hw: tuple[int, int]  # every frame's (height, width) at the run's size
    weights: Any = None
    style_blend: tuple[float, ...] | None = None
    content_masks: tuple[Any, ...] | None = None  # one per frame (the same file repeated for one mask)
    style_masks: tuple[Any, ...] | None = None
    existing: str = "check"

    @property
    def to_folder(self) -> bool:
        return not frames_mod.is_video_file(self.output)

    @property
    def frames_dir(self) -> Path:
        """Where finished frames are written: the output folder, or OUT.frames beside a video."""
        return self.output if self.to_folder else self.output.with_name(self.output.name + ".frames")

    @property
    def flow_dir(self) -> Path:
        return self.output.with_name(self.output.name + ".flow")

    @property
    def passes_dir(self) -> Path:
        """Where passes before the last keep their frames (and the content frames), until the end."""
        return self.output.with_name(self.output.name + ".passes")

    @property
    def content_dir(self) -> Path:
        return self.passes_dir / "content"

    @property
    def later(self) -> Config:
        """Settings of the frames after the first: one stage, `frame_iterations` iterations."""
        c = self.config
        return c.replace(scales=1, scale_iterations=(), iterations=c.frame_iterations or c.iterations)

    def frame_path(self, t: int) -> Path:
        return self.frames_dir / frames_mod.frame_name(t, self.clip.files if self.to_folder else ())

    def pass_path(self, p: int, t: int) -> Path:
        """Frame t's result of pass p: the output's frame for the last pass."""
        if p == self.config.passes:
            return self.frame_path(t)
        return self.passes_dir / f"pass_{p}" / frames_mod.frame_name(t)


@dataclass
class VideoResult:
    """What a video run made."""

    output: Path
    frames: int  # of the clip
    finished: int  # frames of the video finished (the last pass's), by this run or an earlier one
    skipped: int  # frames an earlier run had finished (every pass's)
    status: str  # "done" or "interrupted"
    seconds: float = 0.0  # wall-clock of this run
    frame_seconds: list[float] = field(default_factory=list)  # each frame (of each pass) this run optimized
    programs: int = 0  # programs compiled
    compile_seconds: float = 0.0
    flows_computed: int = 0
    flows_read: int = 0
    iterations: list[int] = field(default_factory=list)  # each optimized frame's
    message: str | None = None
    passes: int = 1

    @property
    def seconds_per_frame(self) -> float | None:
        """Mean seconds of the frames after the first that this run optimized (the first frame's
        longer schedule and compiling aside)."""
        later = self.frame_seconds[1:] if self.skipped == 0 else self.frame_seconds
        return sum(later) / len(later) if later else None


# Why each of `config.NOT_FOR_VIDEO` means nothing for a video's frames.
_REFUSED = {
    "save_every": "snapshots of every frame",
    "keep_checkpoint": "each frame's checkpoint kept",
    "batch_size": "frames run one after another, each from the one before",
    "devices": "frames run one after another, each from the one before",
}


def plan(content: str | os.PathLike, styles: Sequence[Any], output: str | os.PathLike, config: Config, *,
         rate: float | None = None, weights: Any = None, style_blend: Sequence[float] | None = None,
         content_mask: Any = None, style_masks: Sequence[Any] | None = None, existing: str = "check") -> VideoJob:
    """Check a video run before any work; ConfigError or InputError in one line."""
    from jaxstyle.run import job as job_mod
    for name in NOT_FOR_VIDEO:
        what = _REFUSED[name]
        if getattr(config, name) != getattr(Config(), name):
            raise ConfigError(f"--{name.replace('_', '-')} is not for video ({what}); leave it out")
    if config.init not in INITS:
        raise ConfigError("--init takes content, noise or style for a video: later frames start from the "
                          "previous result warped")
    if config.temporal_weight <= 0:
        raise ConfigError("--temporal-weight must be positive for a video (its frames are held together by it)")
    if existing not in job_mod.EXISTING:
        raise ConfigError(f"existing={existing!r} is not one of {', '.join(job_mod.EXISTING)}")
    if not styles:
        raise ConfigError("video needs at least one style image")
    clip = frames_mod.open_clip(content, rate)
    out = Path(os.path.abspath(output))
    if frames_mod.is_video_file(out):
        if out.suffix.lower() not in frames_mod.OUTPUT_SUFFIXES:
            raise InputError(f"{out}: a video is written as {', '.join(frames_mod.OUTPUT_SUFFIXES)} "
                             "(or give a folder for frames)")
        if not out.parent.is_dir():
            raise InputError(f"{out}: parent directory {out.parent} does not exist")
        if out.exists() and out.is_dir():
            raise InputError(f"{out}: is a directory; it cannot be the video")
    elif out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is neither a folder nor a video file name "
                         f"({', '.join(frames_mod.OUTPUT_SUFFIXES)})")
    elif not out.exists() and not out.parent.is_dir():
        raise InputError(f"{out}: parent directory {out.parent} does not exist")
    if out.resolve() == clip.path.resolve():
        raise InputError(f"{out}: is the clip the frames are read from; write the result elsewhere")
    hw = preprocess.fit_size(clip.size, config.size)
    masks_per_frame = _content_masks(content_mask, clip)
    job = VideoJob(clip, tuple(styles), out, config, hw, weights,
                   None if style_blend is None else tuple(float(b) for b in style_blend),
                   masks_per_frame, None if style_masks is None else tuple(style_masks), existing)
    if not job.to_folder and out.exists() and not job.frames_dir.exists() and existing == "check":
        raise InputError(f"{out}: already there; --overwrite makes it again")
    # The first frame's job is checked now (styles, masks, settings), as every frame's will be.
    job_mod.single("transfer", config, np.zeros((*hw, 3), np.float32), list(styles), weights=weights,
                   style_blend=style_blend, content_mask=masks_per_frame[0] if masks_per_frame else None,
                   style_masks=style_masks, temporal=(np.zeros((*hw, 3), np.float32), np.zeros(hw, np.float32)))
    return job


def _content_masks(spec: Any, clip: frames_mod.Clip) -> tuple[Any, ...] | None:
    """One content mask per frame: one mask for all, or a folder holding one per frame (in order)."""
    if spec is None:
        return None
    if isinstance(spec, (str, os.PathLike)) and Path(spec).is_dir():
        files = sorted(p for p in Path(spec).iterdir() if p.suffix.lower() in frames_mod.FRAME_SUFFIXES)
        if len(files) != clip.count:
            raise InputError(f"{spec}: {len(files)} mask(s) for {clip.count} frames; give one mask, or a folder "
                             "with one per frame (in the frames' order)")
        return tuple(files)
    return (spec,) * clip.count


@dataclass
class _Prepared:
    """A frame ready to optimize: its content at the run's size, and its flows to the frames the
    temporal term holds it to."""

    index: int
    content: np.ndarray
    flows: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]  # offset o -> (flow t -> t+o, reliable, seen)


def _neighbours(job: VideoJob, t: int, both: bool) -> list[int]:
    """Offsets of the frames frame t is held to: the earlier ones at --temporal-frames' distances,
    and in passes after the first the later ones too."""
    offsets = [-d for d in job.config.temporal_frames if t - d >= 0]
    return offsets + ([d for d in job.config.temporal_frames if t + d < job.clip.count] if both else [])


def _flows(cache: flow_mod.FlowCache, here: np.ndarray, key: str, offsets: Sequence[int],
           frame_at: Callable[[int], tuple[np.ndarray, str]]) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A frame's flows to the frames at `offsets` (`frame_at(o)`: that frame's content and key),
    each with its masks (`flow.reliable_and_seen`). A pair is cached with the later frame first,
    as the first pass computed it."""
    flows = {}
    for o in offsets:
        there, there_key = frame_at(o)
        if o < 0:
            w, back = cache.pair(here, there, key, there_key)
        else:
            back, w = cache.pair(there, here, there_key, key)
        flows[o] = (w, *flow_mod.reliable_and_seen(w, back))
    return flows


def _prepare_frames(job: VideoJob, cache: flow_mod.FlowCache, keep: Path | None) -> Iterator[_Prepared]:
    """The first pass's frames in order, decoded one at a time, with their flows to the earlier
    frames (computed, or read from the cache); with `keep`, each content frame is also saved
    there for the later passes."""
    needed = max(job.config.temporal_frames)
    recent: deque[tuple[np.ndarray, str]] = deque(maxlen=needed)
    for t, frame in enumerate(job.clip.frames_iter()):
        content = preprocess.resize(frame, job.hw) if frame.shape[:2] != job.hw else frame
        key = flow_mod.frame_key(content)
        if keep is not None:
            _save_array(keep / f"{t:06d}.npy", content)
        yield _Prepared(t, content, _flows(cache, content, key, _neighbours(job, t, both=False), recent.__getitem__))
        recent.append((content, key))


def _save_array(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        np.save(fh, np.ascontiguousarray(a, np.float32))


def _prepare_pass(job: VideoJob, cache: flow_mod.FlowCache, kept: Path, order: Sequence[int]
                  ) -> Iterator[_Prepared]:
    """A later pass's frames in `order`, from the content frames the first pass kept, with their
    flows to the frames on both sides (the first pass computed every pair; these are read)."""
    loaded: dict[int, tuple[np.ndarray, str]] = {}

    def content(t: int) -> tuple[np.ndarray, str]:
        if t not in loaded:
            try:
                a = np.load(kept / f"{t:06d}.npy")
            except (OSError, ValueError) as e:
                raise InputError(f"{kept}: frame {t + 1}'s content, kept by the first pass, cannot be read "
                                 f"({e}); run again with --overwrite") from None
            loaded[t] = (a, flow_mod.frame_key(a))
        return loaded[t]

    reach = max(job.config.temporal_frames)
    for t in order:
        here, key = content(t)
        yield _Prepared(t, here, _flows(cache, here, key, _neighbours(job, t, both=True),
                                        lambda o, t=t: content(t + o)))
        for k in [k for k in loaded if abs(k - t) > reach]:
            del loaded[k]


def _ahead(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """`items` produced on a thread, up to `depth` ahead of the consumer (exceptions re-raised here)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as e:  # noqa: B902 - handed to the consumer
            q.put((done, e))

    thread = threading.Thread(target=work, name="jaxstyle-video-frames", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()


class _Encoder:
    """Finished frames into the output video on a thread, in order; errors come out at `close`."""

    def __init__(self, job: VideoJob) -> None:
        self.writer = frames_mod.VideoWriter(job.output, job.clip.rate, job.hw,
                                             audio_from=None if job.clip.is_folder else job.clip.path)
        self.queue: queue.Queue = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name="jaxstyle-video-encode", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        while True:
            frame = self.queue.get()
            if frame is None:
                return
            if self.error is None:
                try:
                    self.writer.write(frame)
                except BaseException as e:  # noqa: B902 - reported by close
                    self.error = e

    def add(self, frame: np.ndarray) -> None:
        self.queue.put(frame)

    def close(self, finish: bool) -> Path | None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None or not finish:
            self.writer.abort()
            if self.error is not None:
                raise self.error
            return None
        return self.writer.close()


def _rounded(rgb: np.ndarray) -> np.ndarray:
    """A result as its 8-bit file holds it: what later frames are warped from, in every run."""
    return imageio.to_uint8(rgb).astype(np.float32)


def _temporal(job: VideoJob, prepared: _Prepared, near: Mapping[int, np.ndarray], own: np.ndarray | None,
              forward: bool) -> tuple[np.ndarray | None, tuple[np.ndarray, np.ndarray]]:
    """Frame t's initial image (None: the first frame's --init) and temporal (target, weights).

    `near`: the latest result of each frame in `prepared.flows` (by offset); `own`: this frame's
    result of the previous pass (None in the first). On each side the frames are folded closest
    first (`flow.long_term_weights`); with both sides, each side has half the weight. The start is
    the neighbour this pass just made, warped where it saw the pixel (`flow.seen`: the term's
    reliability without the motion-boundary rule, whose pixels are better started from a warp a
    little off than restyled from the content): over the content frame in the first pass,
    blended with `own` (--pass-blend) in later ones."""
    content = prepared.content
    if not prepared.flows:
        return own, (content, np.zeros(job.hw, np.float32))
    warped = {o: flow_mod.warp(near[o], prepared.flows[o][0]) for o in prepared.flows}
    sides = [sorted((o for o in warped if o * sign > 0), key=abs) for sign in (-1, 1)]
    sides = [side for side in sides if side]
    targets, weights = [], []
    for side in sides:
        targets += [warped[o] for o in side]
        weights += [w / len(sides) for w in flow_mod.long_term_weights([prepared.flows[o][1] for o in side])]
    target, weight = flow_mod.combine(targets, weights)
    behind = -1 if forward else 1  # the neighbour this pass has just made
    if behind in warped:  # warped wherever that frame saw the pixel, motion boundaries included
        c, start = prepared.flows[behind][2][..., None], warped[behind]
    else:
        c, start = np.zeros((*job.hw, 1), np.float32), content
    if own is None:
        init = c * start + (1.0 - c) * content
    else:
        c = c * job.config.pass_blend
        init = (own + c * start) / (1.0 + c)
    init = np.clip(init, 0.0, 255.0).astype(np.float32)
    if job.config.preserve_colors == "luminance":  # the run optimizes a grey image: start and hold it grey
        init, target = _grey(init), _grey(target)
    return init, (target, weight)


def _grey(rgb: np.ndarray) -> np.ndarray:
    """The luminance repeated in three channels: the space a --preserve-colors luminance run
    optimizes in (its written frames are that luminance with the content's colours)."""
    from jaxstyle.images import color
    return np.repeat(color.luminance(rgb)[..., None], 3, axis=-1).clip(0.0, 255.0).astype(np.float32)


def stylize(job: VideoJob, *, progress: Callable[[Progress], None] | None = None,
            message: Callable[[str], None] | None = None, should_stop: Callable[[], bool] | None = None,
            download_progress: Callable[[int, int], None] | None = None) -> VideoResult:
    """Run a video job (see the module doc)."""
    from jaxstyle.model import weights as weights_mod
    from jaxstyle.platform.devices import select
    started = time.perf_counter()
    notify = message or (lambda _m: None)
    params = job.weights
    if not isinstance(params, Mapping):
        params, info = weights_mod.load(params, progress=download_progress)
        if info.warning:
            notify(f"warning: {info.warning}")
    platform = select(job.config.device)[0].platform
    if job.config.lbfgs_memory == 0:  # one history for every frame, never shortened by a moment's free memory
        job = replace(job, config=job.config.replace(lbfgs_memory=resolve(job.config, platform).lbfgs_memory))
    n, passes = job.clip.count, job.config.passes
    job.frames_dir.mkdir(exist_ok=True)
    for p in range(1, passes):
        job.pass_path(p, 0).parent.mkdir(parents=True, exist_ok=True)
    cache = flow_mod.FlowCache(job.flow_dir)
    out = VideoResult(job.output, n, 0, 0, "done", passes=passes)
    run = _Runner(job, params, platform, out, progress or (lambda _p: None), notify, should_stop)
    encoder = _Encoder(job) if not job.to_folder else None
    finished_ok = False
    try:
        for p in range(1, passes + 1):
            forward = p % 2 == 1
            order = range(n) if forward else range(n - 1, -1, -1)
            frames = (_prepare_frames(job, cache, job.content_dir if passes > 1 else None) if p == 1
                      else _prepare_pass(job, cache, job.content_dir, order))
            if not run.one_pass(p, frames, forward, encoder if passes == 1 else None):
                break
        else:
            if encoder is not None and passes > 1:  # the last pass may have run backwards
                for t in range(n):
                    encoder.add(imageio.load_image(job.frame_path(t)))
        finished_ok = out.status == "done"
    finally:
        out.flows_computed, out.flows_read = cache.computed, cache.read
        if encoder is not None:
            try:
                written = encoder.close(finished_ok)
            except (OSError, JaxstyleError) as e:
                text = e.message if isinstance(e, JaxstyleError) else str(e)
                raise OutputError(f"{job.output}: {text}; the {out.finished} finished frames are kept in "
                                  f"{job.frames_dir}", path=job.output) from None
            if written is not None:
                shutil.rmtree(job.frames_dir, ignore_errors=True)
    if finished_ok and passes > 1:
        shutil.rmtree(job.passes_dir, ignore_errors=True)
    out.seconds = time.perf_counter() - started
    if out.status == "done":
        notify(Note(f"{job.output}: {n} frames ({out.skipped} from an earlier run), flows computed "
                    f"{out.flows_computed}, read {out.flows_read}"))
    return out


class _Runner:
    """The frames of each pass through the run path, one after another (`stylize`'s loop)."""

    def __init__(self, job: VideoJob, params: Mapping, platform: str, out: VideoResult,
                 report: Callable[[Progress], None], notify: Callable[[str], None],
                 should_stop: Callable[[], bool] | None) -> None:
        self.job, self.params, self.platform, self.out = job, params, platform, out
        self.report, self.notify, self.should_stop = report, notify, should_stop
        self.builders: dict = {}  # one set of compiled programs for every frame of every pass
        self.done = 0  # frames finished in every pass so far, by this run or an earlier one

    def one_pass(self, p: int, frames: Iterator[_Prepared], forward: bool, encoder: "_Encoder | None") -> bool:
        """Pass `p` over `frames`; False when the run stops before its end."""
        from jaxstyle.run import job as job_mod
        from jaxstyle.run.execute import run
        from jaxstyle.run.resuming import result_note
        job, out = self.job, self.out
        n, passes = job.clip.count, job.config.passes
        last = p == passes
        where = f" (pass {p} of {passes})" if passes > 1 else ""
        made: dict[int, np.ndarray] = {}  # this pass's results the next frames are warped from
        before: dict[int, np.ndarray] = {}  # the previous pass's, read once each

        def previous(k: int) -> np.ndarray:
            if k not in before:
                before[k] = imageio.load_image(job.pass_path(p - 1, k))
            return before[k]

        reach = max(job.config.temporal_frames)
        for prepared in _ahead(frames, QUEUED_FRAMES):
            t = prepared.index
            near = {o: made[t + o] if (o < 0) == forward else previous(t + o) for o in prepared.flows}
            own = previous(t) if p > 1 else None
            config = job.config if p == 1 and t == 0 else job.later
            init, temporal = _temporal(job, prepared, near, own, forward)
            path = job.pass_path(p, t)
            frame_job = job_mod.single(
                "transfer", config, prepared.content, list(job.styles), output_path=path, weights=self.params,
                style_blend=job.style_blend, content_mask=job.content_masks[t] if job.content_masks else None,
                style_masks=job.style_masks, existing="overwrite", init=init, temporal=temporal)
            item = frame_job.items[0]
            for k in [k for k in made if abs(k - t) >= reach]:
                del made[k]
            for k in [k for k in before if (k <= t if forward else k >= t)]:  # passed: not needed again
                del before[k]
            if path.exists() and not (item.checkpoint and item.checkpoint.exists()) and job.existing != "overwrite":
                if job.existing == "skip" or imageio.read_note(path) == result_note(
                        frame_job, resolve(config, self.platform), item):
                    made[t] = imageio.load_image(path)
                    out.skipped += 1
                    self._finished(made[t], last, encoder)
                    continue
                raise InputError(f"{path}: already there, made with other settings or inputs; --overwrite makes "
                                 "the video again with these")
            begun = time.perf_counter()
            got = run(frame_job, progress=self._progress(t, p), message=self.notify,
                      should_stop=self.should_stop, builders=self.builders)
            r = got[0]
            out.programs += got.programs
            out.compile_seconds += got.compile_seconds
            if r.status == "interrupted":
                out.status = "interrupted"
                out.message = (f"interrupted at frame {t + 1} of {n}{where}; run the same command again to "
                               f"continue (from {path.name}'s checkpoint)")
                return False
            if r.status not in ("done", "stalled") or r.image is None:
                raise NumericalError(f"frame {t + 1} of {n}{where}: {r.message or r.status}")
            made[t] = _rounded(r.image)
            out.iterations.append(r.iterations)
            out.frame_seconds.append(time.perf_counter() - begun)
            self._finished(made[t], last, encoder)
            if self.should_stop is not None and self.should_stop() and self.done < n * passes:
                out.status = "interrupted"
                out.message = (f"stopped after frame {t + 1} of {n}{where}; run the same command again to "
                               "continue")
                return False
        return True

    def _finished(self, image: np.ndarray, last: bool, encoder: "_Encoder | None") -> None:
        self.done += 1
        if last:
            self.out.finished += 1
        if encoder is not None:
            encoder.add(image)

    def _progress(self, t: int, p: int) -> Callable[[Progress], None]:
        """A frame's progress as the video's: frames done of all (every pass's), this frame's
        iterations, seconds per frame and the video's ETA."""
        n, passes, out, done = self.job.clip.count, self.job.config.passes, self.out, self.done
        total = n * passes
        name = f"frame {t + 1}" + (f", pass {p} of {passes}" if passes > 1 else "")
        report = self.report

        def forward(q: Progress) -> None:
            per_frame = out.seconds_per_frame
            eta = None
            if q.eta is not None or per_frame is not None:
                now = q.eta if q.eta is not None else 0.0
                if per_frame is None and q.seconds_per_iteration:
                    per_frame = q.seconds_per_iteration * q.iterations
                eta = now + (total - done - 1) * (per_frame or 0.0)
            report(replace(q, images_done=done + (q.phase == "done"), images_total=total, names=(name,),
                           eta=eta, unit="frame", seconds_per_image=per_frame))
        return forward


def frames_of(path: str | os.PathLike) -> tuple[frames_mod.Clip, list[np.ndarray]]:
    """A written video's or frame folder's frames (for tests and measurements)."""
    return frames_mod.read_video(path)


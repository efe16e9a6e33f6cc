"""A video, frame by frame, through the ordinary run path (after Ruder, Dosovitskiy & Brox 2016).

Each frame is a transfer job (`job.single` -> `run.run` -> batch -> problem -> driver) at one
shape, so the frames share one set of compiled programs (`run`'s kept `Builder`). Frame t starts
from the previous result warped by the optical flow t -> t-1 (content where the flow is not
reliable) and carries the temporal term: the earlier results (`Config.temporal_frames`) warped to
it, folded into one target and one per-pixel weight (`flow.combine`), as jit arguments.

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
    def later(self) -> Config:
        """Settings of the frames after the first: one stage, `frame_iterations` iterations."""
        c = self.config
        return c.replace(scales=1, scale_iterations=(), iterations=c.frame_iterations or c.iterations)

    def frame_path(self, t: int) -> Path:
        return self.frames_dir / frames_mod.frame_name(t, self.clip.files if self.to_folder else ())


@dataclass
class VideoResult:
    """What a video run made."""

    output: Path
    frames: int  # of the clip
    finished: int  # frames finished, by this run or an earlier one
    skipped: int  # frames an earlier run had finished
    status: str  # "done" or "interrupted"
    seconds: float = 0.0  # wall-clock of this run
    frame_seconds: list[float] = field(default_factory=list)  # each frame this run optimized
    programs: int = 0  # programs compiled
    compile_seconds: float = 0.0
    flows_computed: int = 0
    flows_read: int = 0
    iterations: list[int] = field(default_factory=list)  # each optimized frame's
    message: str | None = None

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
    """A frame ready to optimize: its content at the run's size, and its flows to earlier frames."""

    index: int
    content: np.ndarray
    flows: dict[int, tuple[np.ndarray, np.ndarray]]  # distance -> (flow t -> t-d, reliability)


def _prepare_frames(job: VideoJob, cache: flow_mod.FlowCache, start: int) -> Iterator[_Prepared]:
    """Frames from `start`... with their flows (the earlier frames they need are decoded too)."""
    needed = max(job.config.temporal_frames)
    recent: deque[tuple[np.ndarray, str]] = deque(maxlen=needed)
    first = max(start - needed, 0)
    for t, frame in enumerate(job.clip.frames_iter(first), start=first):
        content = preprocess.resize(frame, job.hw) if frame.shape[:2] != job.hw else frame
        key = flow_mod.frame_key(content)
        flows = {}
        if t >= start:
            for d in job.config.temporal_frames:
                if d <= len(recent):
                    earlier, earlier_key = recent[-d]
                    w, back = cache.pair(content, earlier, key, earlier_key)
                    flows[d] = (w, flow_mod.reliability(w, back))
            yield _Prepared(t, content, flows)
        recent.append((content, key))


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


def _temporal(job: VideoJob, prepared: _Prepared, results: Mapping[int, np.ndarray]
              ) -> tuple[np.ndarray | None, tuple[np.ndarray, np.ndarray]]:
    """Frame t's initial image (None: the first frame's --init) and temporal (target, weights)."""
    t, content = prepared.index, prepared.content
    if not prepared.flows:
        return None, (content, np.zeros(job.hw, np.float32))
    distances = sorted(prepared.flows)
    warped = [flow_mod.warp(results[t - d], prepared.flows[d][0]) for d in distances]
    reliable = [prepared.flows[d][1] for d in distances]
    target, weights = flow_mod.combine(warped, flow_mod.long_term_weights(reliable))
    c = reliable[0][..., None] if distances[0] == 1 else np.zeros((*job.hw, 1), np.float32)
    init = np.clip(c * warped[0] + (1.0 - c) * content, 0.0, 255.0).astype(np.float32)
    if job.config.preserve_colors == "luminance":  # the run optimizes a grey image: start and hold it grey
        init, target = _grey(init), _grey(target)
    return init, (target, weights)


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
    from jaxstyle.run import job as job_mod
    from jaxstyle.run.execute import run
    from jaxstyle.run.resuming import result_note
    started = time.perf_counter()
    notify = message or (lambda _m: None)
    report = progress or (lambda _p: None)
    params = job.weights
    if not isinstance(params, Mapping):
        params, info = weights_mod.load(params, progress=download_progress)
        if info.warning:
            notify(f"warning: {info.warning}")
    platform = select(job.config.device)[0].platform
    if job.config.lbfgs_memory == 0:  # one history for every frame, never shortened by a moment's free memory
        job = replace(job, config=job.config.replace(lbfgs_memory=resolve(job.config, platform).lbfgs_memory))
    n = job.clip.count
    job.frames_dir.mkdir(exist_ok=True)
    cache = flow_mod.FlowCache(job.flow_dir)
    out = VideoResult(job.output, n, 0, 0, "done")
    results: dict[int, np.ndarray] = {}
    builders: dict = {}
    encoder = _Encoder(job) if not job.to_folder else None
    finished_ok = False
    try:
        for prepared in _ahead(_prepare_frames(job, cache, 0), QUEUED_FRAMES):
            t = prepared.index
            config = job.config if t == 0 else job.later
            init, temporal = _temporal(job, prepared, results)
            path = job.frame_path(t)
            frame_job = job_mod.single(
                "transfer", config, prepared.content, list(job.styles), output_path=path, weights=params,
                style_blend=job.style_blend, content_mask=job.content_masks[t] if job.content_masks else None,
                style_masks=job.style_masks, existing="overwrite", init=init, temporal=temporal)
            item = frame_job.items[0]
            if path.exists() and not (item.checkpoint and item.checkpoint.exists()) and job.existing != "overwrite":
                if job.existing == "skip" or imageio.read_note(path) == result_note(
                        frame_job, resolve(config, platform), item):
                    results[t] = imageio.load_image(path)
                    out.finished += 1
                    out.skipped += 1
                    if encoder is not None:
                        encoder.add(results[t])
                    _forget(results, t, job.config.temporal_frames)
                    continue
                raise InputError(f"{path}: already there, made with other settings or inputs; --overwrite makes "
                                 "the video again with these")
            begun = time.perf_counter()
            got = run(frame_job, progress=_frame_progress(report, t, n, out, begun), message=notify,
                      should_stop=should_stop, builders=builders)
            r = got[0]
            out.programs += got.programs
            out.compile_seconds += got.compile_seconds
            if r.status == "interrupted":
                out.status = "interrupted"
                out.message = (f"interrupted at frame {t + 1} of {n}; run the same command again to continue "
                               f"(from {path.name}'s checkpoint)")
                break
            if r.status not in ("done", "stalled") or r.image is None:
                raise NumericalError(f"frame {t + 1} of {n}: {r.message or r.status}")
            results[t] = _rounded(r.image)
            out.finished += 1
            out.iterations.append(r.iterations)
            out.frame_seconds.append(time.perf_counter() - begun)
            if encoder is not None:
                encoder.add(results[t])
            _forget(results, t, job.config.temporal_frames)
            if should_stop is not None and should_stop():
                out.status = "interrupted" if t + 1 < n else "done"
                if t + 1 < n:
                    out.message = f"stopped after frame {t + 1} of {n}; run the same command again to continue"
                    break
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
    out.seconds = time.perf_counter() - started
    if out.status == "done":
        notify(Note(f"{job.output}: {n} frames ({out.skipped} from an earlier run), flows computed "
                    f"{out.flows_computed}, read {out.flows_read}"))
    return out


def _forget(results: dict[int, np.ndarray], t: int, distances: Sequence[int]) -> None:
    """Keep only the results later frames are warped from."""
    for k in [k for k in results if k <= t - max(distances)]:
        del results[k]


def _frame_progress(report: Callable[[Progress], None], t: int, n: int, out: VideoResult,
                    begun: float) -> Callable[[Progress], None]:
    """A frame's progress as the video's: frames done of all, this frame's iterations, seconds
    per frame and the video's ETA."""
    def forward(p: Progress) -> None:
        per_frame = out.seconds_per_frame
        left = n - t - 1
        eta = None
        if p.eta is not None or per_frame is not None:
            now = p.eta if p.eta is not None else 0.0
            if per_frame is None and p.seconds_per_iteration:
                per_frame = p.seconds_per_iteration * p.iterations
            eta = now + left * (per_frame or 0.0)
        done = out.finished + (p.phase == "done")
        report(replace(p, images_done=done, images_total=n, names=(f"frame {t + 1}",),
                       eta=eta, unit="frame", seconds_per_image=per_frame))
    return forward


def frames_of(path: str | os.PathLike) -> tuple[frames_mod.Clip, list[np.ndarray]]:
    """A written video's or frame folder's frames (for tests and measurements)."""
    return frames_mod.read_video(path)


"""Frames in and out: a video file (PyAV, which ships its own ffmpeg) or a folder of images.

`open_clip` checks a clip up front from its packets alone (no decoding): its frame count, a
constant frame rate, one size, its duration and whether it has sound; `Clip.frames_iter`
then decodes one frame at a time, so memory holds a few frames whatever the clip's length.
`VideoWriter` encodes frames as they come (H.264, yuv420p, in MP4: what browsers and phones
play) into a temporary file beside the output, copies the source's audio stream into it, and
renames it onto the output only when the video is complete; `FolderWriter` writes each frame
as a PNG file, atomically.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from jaxstyle.errors import InputError, OutputError
from jaxstyle.files import describe, finish_part, part_name
from jaxstyle.images import imageio

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".gif")
OUTPUT_SUFFIXES = (".mp4", ".mov", ".m4v")  # H.264 + AAC/copied audio in an MP4-family container
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
FOLDER_RATE = Fraction(24)  # a folder of frames has no rate of its own
# A frame-to-frame time step further than this from the clip's typical one makes it variable-rate.
RATE_TOLERANCE = 0.25


@dataclass(frozen=True)
class Clip:
    """A checked clip: where its frames come from and what the output must keep."""

    path: Path
    count: int  # frames
    rate: Fraction  # frames per second (FOLDER_RATE, or the one given, for a folder)
    size: tuple[int, int]  # (height, width) of every frame
    audio: bool  # a video file with an audio stream (copied into a video output)
    files: tuple[Path, ...] = ()  # a folder's frames, in order (empty for a video file)

    @property
    def duration(self) -> float:
        """Seconds: frames over the rate."""
        return float(self.count / self.rate)

    @property
    def is_folder(self) -> bool:
        return bool(self.files)

    def frames_iter(self, start: int = 0) -> Iterator[np.ndarray]:
        """Frames `start`.. as float32 RGB (H, W, 3) on 0..255, decoded one at a time."""
        if self.files:
            for path in self.files[start:]:
                frame = imageio.load_image(path)
                if frame.shape[:2] != self.size:
                    raise InputError(f"{path}: {frame.shape[1]}x{frame.shape[0]} pixels, the other frames "
                                     f"{self.size[1]}x{self.size[0]}")
                yield frame
            return
        import av
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for i, frame in enumerate(container.decode(stream)):
                    if i >= self.count:
                        break
                    if i >= start:
                        yield frame.to_ndarray(format="rgb24").astype(np.float32)
        except av.error.FFmpegError as e:
            raise InputError(f"{self.path}: cannot decode ({_short(e)})") from None


def _short(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e)  # ffmpeg's words, without the errno and the path
    return " ".join(str(text).split())[:160] or type(e).__name__


def is_video_file(path: str | os.PathLike) -> bool:
    """Whether `path` names a video file by its extension (existing or to be written)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def open_clip(path: str | os.PathLike, rate: float | Fraction | None = None) -> Clip:
    """Check a video file or a folder of frames; InputError (one line, naming it) when it is not
    a video, has fewer than two frames, a variable frame rate, or frames of different sizes.
    `rate`: a folder's frame rate (a video file keeps its own)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        return _open_folder(path, rate)
    return _open_video(path)


def _open_folder(path: Path, rate: float | Fraction | None) -> Clip:
    files = tuple(sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES))
    _check_count(path, len(files))
    size = imageio.image_size(files[0])  # (h, w) by the header
    for f in files[1:]:
        other = imageio.image_size(f)
        if other != size:
            raise InputError(f"{f}: {other[1]}x{other[0]} pixels, but {files[0].name} is {size[1]}x{size[0]}; "
                             "every frame of a folder must have one size")
    r = Fraction(rate).limit_denominator(1001) if rate is not None else FOLDER_RATE
    if r <= 0:
        raise InputError(f"--rate must be positive, got {rate}")
    return Clip(path, len(files), r, size, False, files)


def _check_count(path: Path, count: int) -> None:
    if count == 0:
        raise InputError(f"{path}: no frames ({', '.join(FRAME_SUFFIXES)} images or a video file)")
    if count == 1:
        raise InputError(f"{path}: one frame only; stylize a single image with `jaxstyle transfer`")


def _open_video(path: Path) -> Clip:
    import av
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            audio = bool(container.streams.audio)
            h, w = stream.codec_context.height, stream.codec_context.width
            stamps = [p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0]
            time_base = stream.time_base
            declared = stream.average_rate or stream.guessed_rate
    except av.error.FFmpegError as e:
        raise InputError(f"{path}: not a video file ffmpeg can read ({_short(e)})") from None
    _check_count(path, len(stamps))
    if not h or not w:
        raise InputError(f"{path}: the video stream has no frame size")
    stamps.sort()
    steps = np.diff(np.asarray(stamps, np.int64))
    typical = float(np.median(steps))
    if typical <= 0 or np.any(np.abs(steps - typical) > max(1.0, RATE_TOLERANCE * typical)):
        raise InputError(f"{path}: variable frame rate (frames {float(np.min(steps) * time_base):.4g} s to "
                         f"{float(np.max(steps) * time_base):.4g} s apart); convert it to a constant rate first, "
                         "e.g. ffmpeg -i IN -vf fps=30 OUT.mp4")
    measured = 1 / (Fraction(typical).limit_denominator(1 << 20) * time_base)
    rate = Fraction(declared) if declared and abs(float(declared) / float(measured) - 1) < 0.01 else \
        measured.limit_denominator(1001)
    return Clip(path, len(stamps), rate, (h, w), audio)


def even_size(size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) rounded up to even numbers: yuv420p's chroma halves each side."""
    return (size[0] + size[0] % 2, size[1] + size[1] % 2)


def pad_even(rgb: np.ndarray) -> np.ndarray:
    """`rgb` with its last row and column repeated where a side is odd (the codec needs even sides)."""
    h, w = rgb.shape[:2]
    return np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class VideoWriter:
    """Encode frames, as they come, into an MP4 (H.264, yuv420p, `crf` quality) at `path`, with
    `audio_from`'s audio stream copied in. Nothing is at `path` until `close` has written the
    whole video; `abort` (or an error) removes the temporary file. Odd sizes are padded by one
    row or column (`pad_even`)."""

    def __init__(self, path: str | os.PathLike, rate: Fraction, size: tuple[int, int],
                 audio_from: str | os.PathLike | None = None, crf: int = 18) -> None:
        import av
        self.path = Path(path)
        if self.path.suffix.lower() not in OUTPUT_SUFFIXES:
            raise InputError(f"{self.path}: a video is written as {', '.join(OUTPUT_SUFFIXES)} (or give a folder)")
        self.size, self.count = size, 0
        self._tmp = self.path.parent / part_name(self.path)
        self._src = self._audio = None
        h, w = even_size(size)
        try:
            self._out = av.open(str(self._tmp), "w", format="mp4", options={"movflags": "+faststart"})
            self._stream = self._out.add_stream("libx264", rate=rate)
            self._stream.width, self._stream.height, self._stream.pix_fmt = w, h, "yuv420p"
            self._stream.options = {"crf": str(crf), "preset": "medium"}
            if audio_from is not None:  # every stream is added before the first packet writes the header
                self._src = av.open(str(audio_from))
                if self._src.streams.audio:
                    self._audio = self._out.add_stream_from_template(self._src.streams.audio[0])
        except (av.error.FFmpegError, OSError) as e:
            self.abort()
            raise self._error(e) from None

    def _error(self, e: BaseException) -> OutputError:
        reason = describe(e, self.path) if isinstance(e, OSError) else _short(e)
        return OutputError(f"{self.path}: cannot be written ({reason}); the finished frames are kept",
                           path=self.path)

    def write(self, rgb: np.ndarray) -> None:
        """Encode one frame (float or uint8 RGB, 0..255, of the writer's size)."""
        import av
        if tuple(rgb.shape[:2]) != tuple(self.size):
            raise ValueError(f"frame of shape {rgb.shape[:2]}, the video's is {self.size}")
        frame = av.VideoFrame.from_ndarray(pad_even(imageio.to_uint8(np.asarray(rgb))), format="rgb24")
        frame.pts = self.count
        try:
            for packet in self._stream.encode(frame):
                self._out.mux(packet)
        except (av.error.FFmpegError, OSError) as e:
            self.abort()
            raise self._error(e) from None
        self.count += 1

    def close(self) -> Path:
        """Flush the encoder, copy the audio, and put the finished video at `path`."""
        import av
        try:
            for packet in self._stream.encode(None):
                self._out.mux(packet)
            if self._audio is not None:
                self._copy_audio()
            self._out.close()
            self._verify()
            finish_part(self._tmp, self.path)
        except (av.error.FFmpegError, OSError) as e:
            self.abort()
            raise self._error(e) from None
        return self.path

    def _copy_audio(self) -> None:
        src = self._src
        for packet in src.demux(src.streams.audio[0]):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            packet.stream = self._audio
            self._out.mux(packet)
        src.close()

    def _verify(self) -> None:
        import av
        with av.open(str(self._tmp)) as check:
            n = sum(1 for p in check.demux(check.streams.video[0]) if p.size > 0)
        if n != self.count:
            raise OSError(5, f"the written video holds {n} of {self.count} frames")

    def _remove(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)

    def abort(self) -> None:
        """Drop the unfinished video (`path` is left as it was)."""
        for container in (getattr(self, "_out", None), self._src):
            if container is not None:
                with contextlib.suppress(Exception):
                    container.close()
        self._remove()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is not None:
            self.abort()


def frame_name(index: int, names: Sequence[Path] = ()) -> str:
    """The file name of frame `index` (from 0) in an output folder: the input frame's own stem
    for a folder of frames, else frame_000001.png, ... (numbered from 1)."""
    if names:
        return Path(names[index]).stem + ".png"
    return f"frame_{index + 1:06d}.png"


def read_video(path: str | os.PathLike) -> tuple[Clip, list[np.ndarray]]:
    """A whole (short) clip in memory: for tests and measurements, not for runs."""
    clip = open_clip(path)
    return clip, list(clip.frames_iter())

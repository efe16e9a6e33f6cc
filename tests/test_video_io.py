"""Video and frame-folder I/O: what a clip keeps through a round trip, and bad input in one line."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

pytest.importorskip("av")

from jaxstyle.images import imageio  # noqa: E402
from jaxstyle.errors import InputError  # noqa: E402
from jaxstyle.clips import frames as V  # noqa: E402

from video_clips import pan, write_clip  # noqa: E402


def _streams(path):
    import av
    with av.open(str(path)) as c:
        return {s.type: (s.codec_context.name, getattr(s.codec_context, "pix_fmt", None),
                         float(s.duration * s.time_base)) for s in c.streams}


def test_round_trip_keeps_frames_rate_duration_and_audio(tmp_path):
    clip = V.open_clip(write_clip(tmp_path / "in.mp4", pan(12), rate=12))
    assert (clip.count, clip.rate, clip.size, clip.audio) == (12, Fraction(12), (36, 64), True)
    frames = list(clip.frames_iter())
    assert len(frames) == 12 and frames[0].dtype == np.float32
    with V.VideoWriter(tmp_path / "out.mp4", clip.rate, clip.size, audio_from=clip.path) as w:
        for f in frames:
            w.write(255.0 - f)
        w.close()
    out = V.open_clip(tmp_path / "out.mp4")
    assert (out.count, out.rate, out.size, out.audio) == (12, clip.rate, clip.size, True)
    assert abs(out.duration - clip.duration) <= 1 / float(clip.rate)
    streams = _streams(tmp_path / "out.mp4")
    assert streams["video"][:2] == ("h264", "yuv420p")  # what browsers and phones play
    assert abs(streams["audio"][2] - _streams(clip.path)["audio"][2]) < 1e-3  # the audio copied as it was
    back = list(out.frames_iter())
    assert np.abs(back[5] - (255.0 - frames[5])).mean() < 6  # H.264 at crf 18


def test_odd_sizes_are_padded_and_no_audio_is_fine(tmp_path):
    clip = V.open_clip(write_clip(tmp_path / "in.mp4", pan(3), audio=False))
    assert not clip.audio
    with V.VideoWriter(tmp_path / "odd.mp4", clip.rate, (35, 63), audio_from=clip.path) as w:
        for f in clip.frames_iter():
            w.write(f[:35, :63])
        w.close()
    out = V.open_clip(tmp_path / "odd.mp4")
    assert (out.count, out.size, out.audio) == (3, (36, 64), False)


def test_an_aborted_video_leaves_nothing(tmp_path):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"earlier")
    with pytest.raises(RuntimeError):
        with V.VideoWriter(target, Fraction(12), (36, 64)) as w:
            w.write(pan(1)[0])
            raise RuntimeError("stopped")
    assert target.read_bytes() == b"earlier" and sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_folder_of_frames(tmp_path):
    for i, f in enumerate(pan(3)):
        imageio.save_image(f, tmp_path / f"f{i:02d}.png")
    clip = V.open_clip(tmp_path, rate=30)
    assert (clip.count, clip.rate, clip.size, clip.audio, clip.is_folder) == (3, Fraction(30), (36, 64), False, True)
    assert [f.shape for f in clip.frames_iter(1)] == [(36, 64, 3)] * 2
    assert V.frame_name(1, clip.files) == "f01.png" and V.frame_name(1) == "frame_000002.png"


@pytest.mark.parametrize("case, words", [
    ("text", "not a video file ffmpeg can read"),
    ("empty-folder", "no frames"),
    ("one-frame", "one frame only"),
    ("variable-rate", "variable frame rate"),
    ("other-size", "every frame of a folder must have one size"),
    ("missing", "no such file"),
])
def test_bad_clips_say_why_in_one_line(tmp_path, case, words):
    if case == "text":
        path = tmp_path / "notes.mp4"
        path.write_text("not a video")
    elif case == "empty-folder":
        path = tmp_path / "frames"
        path.mkdir()
    elif case == "one-frame":
        path = write_clip(tmp_path / "one.mp4", pan(1), audio=False)
    elif case == "variable-rate":
        path = write_clip(tmp_path / "vfr.mp4", pan(8), audio=False, stamps=[0, 83, 166, 250, 300, 350, 450, 533])
    elif case == "other-size":
        path = tmp_path / "frames"
        path.mkdir()
        for i, f in enumerate(pan(3)):
            imageio.save_image(f if i != 2 else f[:30], path / f"{i}.png")
    else:
        path = tmp_path / "nothing.mp4"
    with pytest.raises(InputError) as e:
        V.open_clip(path)
    assert words in e.value.message and str(path) in e.value.message and "\n" not in e.value.message

"""`jaxstyle video` end to end on tiny clips: one compile for a whole video, the temporal term at
work, resuming bit-identical, the CLI, and bad input in one line. Every run here shares one
shape and one setting, so the programs compile once for the module (shallow layers, direct
convolutions: a few seconds)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("cv2")

from jaxstyle.faces import cli  # noqa: E402
from jaxstyle.images import imageio  # noqa: E402
from jaxstyle.run import problem  # noqa: E402
from jaxstyle.clips import stylize as S  # noqa: E402
from jaxstyle.config import PRESETS  # noqa: E402
from jaxstyle.errors import ConfigError, InputError  # noqa: E402

from video_clips import pan, picture, write_clip  # noqa: E402

CONFIG = PRESETS["video"].replace(size=32, iterations=6, frame_iterations=6, conv="direct", tolerance=0.0,
                                  content_layers=("block2_conv2",), style_layers=("block1_conv2", "block2_conv2"))


@pytest.fixture(scope="module")
def style():
    return picture("starry_night.jpg", (32, 32))


@pytest.fixture(scope="module")
def warm(tmp_path_factory, style, synthetic_params):
    """The module's programs compiled (whichever worker runs a test first), so the tests that
    count programs count their own."""
    folder = tmp_path_factory.mktemp("warm")
    S.stylize(S.plan(_folder(folder / "in", pan(2, (24, 32))), [style], folder / "out", CONFIG,
                     weights=synthetic_params))


def _folder(path, frames):
    path.mkdir()
    for i, f in enumerate(frames):
        imageio.save_image(f, path / f"f{i:03d}.png")
    return path


def _frames(folder):
    return [imageio.load_image(p) for p in sorted(folder.iterdir()) if p.suffix == ".png"]


def test_a_video_compiles_once_and_an_interrupted_one_resumes_bit_identically(tmp_path, style, synthetic_params):
    clip = _folder(tmp_path / "in", pan(3, (24, 32), step=2))
    problem.forget_programs()
    whole = S.stylize(S.plan(clip, [style], tmp_path / "whole", CONFIG.replace(checkpoint_every=2),
                             weights=synthetic_params))
    assert (whole.status, whole.finished, whole.programs) == ("done", 3, 2)  # prepare and loop, once
    assert whole.iterations == [6, 6, 6] and whole.flows_computed == 2

    seen = []
    job = S.plan(clip, [style], tmp_path / "cut", CONFIG.replace(checkpoint_every=2), weights=synthetic_params)
    first = S.stylize(job, progress=lambda p: seen.append((p.phase, p.names, p.iteration)),
                      should_stop=lambda: ("optimize", ("frame 2",)) in [s[:2] for s in seen])
    assert (first.status, first.finished) == ("interrupted", 1)
    assert job.frame_path(1).with_name(job.frame_path(1).name + ".ckpt.npz").exists()  # mid-frame
    again = S.stylize(S.plan(clip, [style], tmp_path / "cut", CONFIG.replace(checkpoint_every=2),
                             weights=synthetic_params))
    assert (again.status, again.skipped, again.programs, again.flows_computed) == ("done", 1, 0, 0)
    a, b = _frames(tmp_path / "whole"), _frames(tmp_path / "cut")
    assert len(a) == len(b) == 3 and all(np.array_equal(x, y) for x, y in zip(a, b))
    # A third run finds every frame finished and changes nothing.
    third = S.stylize(S.plan(clip, [style], tmp_path / "cut", CONFIG.replace(checkpoint_every=2),
                             weights=synthetic_params))
    assert (third.skipped, third.frame_seconds) == (3, [])


def test_the_temporal_term_holds_a_still_clip_still(tmp_path, style, synthetic_params, warm):
    """A still frame repeated: with the temporal term, later frames stay where the first ended;
    without it (a negligible weight) each frame keeps changing its own way from the warped start."""
    still = [picture("golden_gate.jpg", (24, 32))] * 3
    clip = _folder(tmp_path / "in", still)
    held = S.stylize(S.plan(clip, [style], tmp_path / "held", CONFIG, weights=synthetic_params))
    loose = S.stylize(S.plan(clip, [style], tmp_path / "loose", CONFIG.replace(temporal_weight=1e-9),
                             weights=synthetic_params))
    assert held.programs == loose.programs == 0  # the module's programs: weights are data

    def change(folder):
        f = _frames(folder)
        return np.mean([np.abs(f[i + 1] - f[i]).mean() for i in range(len(f) - 1)])

    assert change(tmp_path / "held") < 0.5 * change(tmp_path / "loose")


def test_a_video_file_in_and_out_keeps_rate_count_and_sound(tmp_path, style, synthetic_params):
    """Two passes, the second backwards: the video is encoded in order once the last pass ends
    (the CLI test below encodes a single pass as its frames finish)."""
    src = write_clip(tmp_path / "in.mp4", pan(3, (24, 32)), rate=10)
    result = S.stylize(S.plan(src, [style], tmp_path / "out.mp4", CONFIG.replace(passes=2), weights=synthetic_params))
    from jaxstyle.clips import frames as V
    out = V.open_clip(tmp_path / "out.mp4")
    assert (out.count, out.rate, out.audio, out.size) == (3, 10, True, (24, 32))
    assert result.status == "done" and not (tmp_path / "out.mp4.frames").exists()  # encoded, then removed
    assert not (tmp_path / "out.mp4.passes").exists() and len(result.iterations) == 6
    assert len(list((tmp_path / "out.mp4.flow").iterdir())) == 2  # kept for a re-run


@pytest.mark.parametrize("changes, words", [
    (dict(save_every=2), "--save-every is not for video"),
    (dict(batch_size=2), "--batch-size is not for video"),
    (dict(temporal_weight=0.0), "--temporal-weight must be positive"),
    (dict(init="somefile.png"), "--init takes content, noise or style"),
])
def test_settings_without_meaning_for_a_video_are_refused(tmp_path, changes, words):
    clip = _folder(tmp_path / "in", pan(2, (24, 32)))
    with pytest.raises(ConfigError) as e:
        S.plan(clip, [picture("starry_night.jpg", (16, 16))], tmp_path / "out", CONFIG.replace(**changes))
    assert words in e.value.message


def test_bad_video_inputs_and_outputs_say_why(tmp_path):
    clip = _folder(tmp_path / "in", pan(2, (24, 32)))
    style = picture("starry_night.jpg", (16, 16))
    with pytest.raises(InputError, match="is the clip the frames are read from"):
        S.plan(clip, [style], clip, CONFIG)
    with pytest.raises(InputError, match="a video is written as"):
        S.plan(clip, [style], tmp_path / "out.webm", CONFIG)
    (tmp_path / "done.mp4").write_bytes(b"an earlier video")
    with pytest.raises(InputError, match="already there"):
        S.plan(clip, [style], tmp_path / "done.mp4", CONFIG)
    with pytest.raises(InputError, match="one frame only"):
        S.plan(_folder(tmp_path / "one", pan(1, (24, 32))), [style], tmp_path / "o", CONFIG)
    with pytest.raises(InputError, match=r"1 mask\(s\) for 2 frames"):
        masks = tmp_path / "masks"
        masks.mkdir()
        imageio.save_image(np.zeros((24, 32, 3)), masks / "m.png")
        S.plan(clip, [style], tmp_path / "o", CONFIG, content_mask=masks)


def test_video_without_the_extra_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    with pytest.raises(SystemExit) as e:
        cli.main(["video", "clip.mp4", "painting.jpg", "-o", "out.mp4"])
    assert e.value.code != 0
    assert capsys.readouterr().err.strip().splitlines() == [
        "jaxstyle: error: `jaxstyle video` needs the video extra: pip install 'jaxstyle[video]' (av is missing)"]


def test_the_core_never_imports_the_video_libraries():
    code = ("import sys, jaxstyle, jaxstyle.faces.api, jaxstyle.faces.cli, jaxstyle.run.execute; "
            "print(sorted(m for m in ('av', 'cv2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_full_disk_mid_video_says_so_in_one_line_and_keeps_the_finished_frames(tmp_path, style, synthetic_params,
                                                                                  monkeypatch):
    import errno

    from test_write_faults import in_dir, inject_write_fault
    from jaxstyle.errors import OutputError
    clip = _folder(tmp_path / "in", pan(3, (24, 32), step=2))
    out = tmp_path / "out"

    def fill_disk(p):
        if p.phase == "optimize" and p.names == ("frame 2",):
            inject_write_fault(monkeypatch, in_dir(out), errno.ENOSPC)

    with pytest.raises(OutputError) as e:
        S.stylize(S.plan(clip, [style], out, CONFIG, weights=synthetic_params), progress=fill_disk)
    assert "f001.png: cannot be written (no space left on the device)" in e.value.message
    assert "\n" not in e.value.message
    assert [p.name for p in sorted(out.iterdir()) if p.suffix == ".png"] == ["f000.png"]
    monkeypatch.undo()  # space again: the same call finishes the video from frame 2
    again = S.stylize(S.plan(clip, [style], out, CONFIG, weights=synthetic_params))
    assert (again.status, again.skipped, again.finished) == ("done", 1, 3)


def test_the_cli_makes_a_video_and_says_what_it_made(tmp_path, capsys, synthetic_h5):
    from test_cli import run_cli
    src = write_clip(tmp_path / "in.mp4", pan(3, (24, 32)), rate=10)
    imageio.save_image(picture("starry_night.jpg", (32, 32)), tmp_path / "style.png")
    settings = ["--size", 32, "--iterations", 6, "--frame-iterations", 6, "--conv", "direct", "--tolerance", 0,
                "--content-layers", "block2_conv2", "--style-layers", "block1_conv2,block2_conv2",
                "--weights", synthetic_h5]
    code, _, err = run_cli(capsys, "video", src, tmp_path / "style.png", "-o", tmp_path / "out.mp4", *settings)
    assert code == 0, err
    assert "wrote " + str(tmp_path / "out.mp4") + " (32x24, 3 frames at 10 fps)" in err
    code, _, err = run_cli(capsys, "video", src, tmp_path / "style.png", "-o", tmp_path / "out.mp4", *settings)
    assert code != 0 and err.strip().splitlines()[-1].endswith("already there; --overwrite makes it again")


def test_the_api_makes_a_video_and_documents_its_settings(tmp_path, style, synthetic_params, warm):
    import jaxstyle
    clip = _folder(tmp_path / "in", pan(2, (24, 32)))
    settings = {k: getattr(CONFIG, k) for k in ("size", "iterations", "frame_iterations", "conv", "tolerance",
                                                 "content_layers", "style_layers")}
    result = jaxstyle.video(clip, style, tmp_path / "out", weights=synthetic_params, **settings)
    assert (result.status, result.finished, result.programs) == ("done", 2, 0)
    assert len(list((tmp_path / "out").glob("f*.png"))) == 2
    assert callable(jaxstyle.video)  # the subpackage (clips) never shadows the function
    assert "temporal_weight (float, default 0.1)" in jaxstyle.video.__doc__
    with pytest.raises(ConfigError, match="temporal_weight"):
        jaxstyle.transfer(pan(1)[0], style, weights=synthetic_params, temporal_weight=0.5, size=32)
    for name, value in (("passes", 3), ("pass_blend", 0.5), ("frame_iterations", 10)):
        with pytest.raises(ConfigError, match=f"{name} is a setting of jaxstyle.video, not of transfer"):
            jaxstyle.transfer(pan(1)[0], style, weights=synthetic_params, size=32, **{name: value})


def test_luminance_only_frames_start_and_are_held_grey(tmp_path, style, synthetic_params):
    """--preserve-colors luminance optimizes a grey image: a frame starts from, and is held to,
    the luminance of the previous (coloured) result, not its colours."""
    clip = _folder(tmp_path / "in", pan(2, (24, 32)))
    job = S.plan(clip, [style], tmp_path / "out", CONFIG.replace(preserve_colors="luminance"))
    frames = list(S._prepare_frames(job, S.flow_mod.FlowCache(tmp_path / "flow"), None))
    previous = {-1: picture("starry_night.jpg", (24, 32))}
    init, (target, _) = S._temporal(job, frames[1], previous, None, forward=True)
    for image in (init, target):
        assert np.abs(image[..., 0] - image[..., 1]).max() < 1e-3 and np.abs(image[..., 1] - image[..., 2]).max() < 1e-3


def test_later_frames_are_not_refused_for_memory_another_process_took(tmp_path, style, synthetic_params,
                                                                      monkeypatch):
    """The first frame's memory check stands for the video: its shape ran; a later frame that
    found the memory taken meanwhile would otherwise fail the whole video."""
    from jaxstyle.platform import memory
    clip = _folder(tmp_path / "in", pan(3, (24, 32)))

    def squeeze(p):
        if p.names == ("frame 2",):
            monkeypatch.setattr(memory, "available", lambda device=None: 1 << 20)

    result = S.stylize(S.plan(clip, [style], tmp_path / "out", CONFIG, weights=synthetic_params), progress=squeeze)
    assert (result.status, result.finished) == ("done", 3)
    monkeypatch.undo()


def test_long_term_frames_fold_into_the_same_programs(tmp_path, style, synthetic_params, warm):
    """--temporal-frames 1,2: frame 2 is also held to frame 0 (a third flow pair), through the
    programs of the single-frame term (one target, one weight map, whatever their number)."""
    clip = _folder(tmp_path / "in", pan(3, (24, 32), step=2))
    result = S.stylize(S.plan(clip, [style], tmp_path / "out", CONFIG.replace(temporal_frames=(1, 2)),
                              weights=synthetic_params))
    assert (result.status, result.flows_computed, result.programs) == ("done", 3, 0)


def test_multi_pass_alternates_directions_and_resumes_mid_pass_bit_identically(tmp_path, style, synthetic_params,
                                                                               warm):
    """--passes 3 (Ruder's multi-pass): every frame once per pass, the second pass backwards,
    through the same programs and the first pass's flows; a run stopped in the second pass
    continues to the same frames; the passes' own folders are gone at the end."""
    clip = _folder(tmp_path / "in", pan(3, (24, 32), step=2))
    config = CONFIG.replace(passes=3, checkpoint_every=2)
    names = []
    whole = S.stylize(S.plan(clip, [style], tmp_path / "whole", config, weights=synthetic_params),
                      progress=lambda p: names.append(p.names[0]) if p.phase == "done" else None)
    assert (whole.status, whole.finished, whole.programs, whole.flows_computed, whole.flows_read) == (
        "done", 3, 0, 2, 8)
    assert whole.iterations == [6] * 9
    assert names == [f"frame {t}, pass {p} of 3" for p, order in ((1, (1, 2, 3)), (2, (3, 2, 1)), (3, (1, 2, 3)))
                     for t in order]
    assert not (tmp_path / "whole.passes").exists()
    one = S.stylize(S.plan(clip, [style], tmp_path / "one", CONFIG, weights=synthetic_params))
    a, b = _frames(tmp_path / "whole"), _frames(tmp_path / "one")
    assert not any(np.array_equal(x, y) for x, y in zip(a[1:], b[1:]))  # the later passes changed the frames
    assert one.status == "done"

    seen = []
    cut = S.plan(clip, [style], tmp_path / "cut", config, weights=synthetic_params)
    first = S.stylize(cut, progress=lambda p: seen.append((p.phase, p.names)),
                      should_stop=lambda: ("optimize", ("frame 2, pass 2 of 3",)) in seen)
    assert (first.status, first.finished) == ("interrupted", 0) and "pass 2 of 3" in first.message
    assert cut.pass_path(2, 1).with_name(cut.pass_path(2, 1).name + ".ckpt.npz").exists()
    again = S.stylize(S.plan(clip, [style], tmp_path / "cut", config, weights=synthetic_params))
    # flows read: the first pass's 2 pairs, then each later pass's 4 (frames 1 and 3 one side, frame 2 both)
    assert (again.status, again.skipped, again.flows_computed, again.flows_read) == ("done", 4, 0, 10)
    assert all(np.array_equal(x, y) for x, y in zip(a, _frames(tmp_path / "cut")))


def test_a_later_pass_starts_from_its_last_result_blended_by_pass_blend(tmp_path, style):
    """--pass-blend 0: a frame of a later pass starts from its own last result; 1: half of it and
    half the neighbour this pass just made (warped) where the flow is reliable. The term holds it
    to both sides, each side half the weight."""
    clip = _folder(tmp_path / "in", pan(3, (24, 32)))
    h, w = 24, 32
    own, before, after = (np.full((h, w, 3), v, np.float32) for v in (100.0, 200.0, 40.0))
    ones, still = np.ones((h, w), np.float32), np.zeros((h, w, 2), np.float32)
    prepared = S._Prepared(1, np.zeros((h, w, 3), np.float32), {-1: (still, ones, ones), 1: (still, ones, ones)})
    for blend, start in ((0.0, 100.0), (1.0, 150.0), (0.5, (100.0 + 0.5 * 200.0) / 1.5)):
        job = S.plan(clip, [style], tmp_path / "out", CONFIG.replace(passes=2, pass_blend=blend))
        init, (target, weight) = S._temporal(job, prepared, {-1: before, 1: after}, own, forward=True)
        np.testing.assert_allclose(init, start, rtol=1e-6)
        np.testing.assert_allclose(target, 120.0, rtol=1e-6)  # both sides, alike
        np.testing.assert_allclose(weight, 1.0)
    # Going backwards, the neighbour just made is the later frame.
    init, _ = S._temporal(job, prepared, {-1: before, 1: after}, own, forward=False)
    np.testing.assert_allclose(init, (100.0 + 0.5 * 40.0) / 1.5, rtol=1e-6)

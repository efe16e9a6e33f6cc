"""Interruption, checkpoints and resume: the resumed result equals the uninterrupted one."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import jaxstyle
from conftest import run_one
from jaxstyle.observers import checkpoint
from jaxstyle.config import PRESETS
from jaxstyle.config import resolve
from jaxstyle.errors import EXIT_INTERRUPTED, EXIT_NUMERICAL, InputError

from test_cli import run_cli


def _stop_after(n_iterations: int):
    """A should_stop callback that asks to stop once `n_iterations` are done."""
    seen = {"it": 0}

    def progress(p):
        seen["it"] = p.iteration

    def should_stop():
        return seen["it"] >= n_iterations

    return progress, should_stop


def test_interrupt_then_resume_equals_uninterrupted_run(tmp_path, image_dir, synthetic_h5):
    # Snapshots every 5 iterations fix the chunk boundaries (small images otherwise run in a
    # few long chunks), so the stop request lands mid-run.
    config = PRESETS["transfer"].replace(size=40, iterations=14, save_every=5)
    args = ("transfer", config, image_dir / "content.png", [image_dir / "style.png"])
    whole = run_one(*args, output_path=tmp_path / "whole.png", weights=synthetic_h5)
    assert whole.status == "done" and whole.iterations == 14

    progress, should_stop = _stop_after(5)
    part = run_one(*args, output_path=tmp_path / "part.png", weights=synthetic_h5,
                   progress=progress, should_stop=should_stop)
    assert part.status == "interrupted" and 5 <= part.iterations < 14
    assert part.checkpoint == tmp_path / "part.png.ckpt.npz" and part.checkpoint.is_file()
    assert (tmp_path / "part.png").is_file()  # the image so far
    ck = checkpoint.load(part.checkpoint)
    assert ck.iteration == part.iterations and ck.mode == "transfer"
    assert ck.config == resolve(config, "cpu")  # automatic settings are stored as they were resolved

    resumed = jaxstyle.resume(part.checkpoint, weights=synthetic_h5)
    assert resumed.status == "done" and resumed.iterations == 14
    assert resumed.output == tmp_path / "part.png"
    np.testing.assert_array_equal(resumed.image, whole.image)
    assert resumed.evaluations == whole.evaluations
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "part.png")),
                                  np.asarray(Image.open(tmp_path / "whole.png")))


def test_checkpoint_every_and_extending_a_finished_run(tmp_path, image_dir, synthetic_h5):
    config = PRESETS["content"].replace(size=32, iterations=8, checkpoint_every=3)
    gone = run_one("content", config, image_dir / "content.png", (),
                   output_path=tmp_path / "gone.png", weights=synthetic_h5)
    # a finished run removes its checkpoint, unless asked to keep it
    assert gone.checkpoint is None and not (tmp_path / "gone.png.ckpt.npz").exists()
    first = run_one("content", config.replace(keep_checkpoint=True), image_dir / "content.png", (),
                    output_path=tmp_path / "c.png", weights=synthetic_h5)
    assert first.checkpoint is not None and checkpoint.load(first.checkpoint).iteration == 8
    longer = jaxstyle.resume(first.checkpoint, weights=synthetic_h5, iterations=12)
    straight = run_one("content", config.replace(iterations=12), image_dir / "content.png", (),
                       weights=synthetic_h5)
    assert longer.iterations == 12
    np.testing.assert_array_equal(longer.image, straight.image)


def test_corrupted_or_foreign_checkpoints_are_refused(tmp_path, image_dir, synthetic_h5):
    config = PRESETS["transfer"].replace(size=32, iterations=3, checkpoint_every=1, keep_checkpoint=True)
    result = run_one("transfer", config, image_dir / "content.png", [image_dir / "style.png"],
                     output_path=tmp_path / "o.png", weights=synthetic_h5)
    good = result.checkpoint.read_bytes()

    bad = tmp_path / "flipped.ckpt.npz"
    data = bytearray(good)
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError, match="flipped.ckpt.npz: damaged checkpoint"):
        checkpoint.load(bad)
    trunc = tmp_path / "trunc.ckpt.npz"
    trunc.write_bytes(good[: len(good) // 3])
    with pytest.raises(InputError, match="not a readable jaxstyle checkpoint"):
        checkpoint.load(trunc)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(InputError, match="not a readable jaxstyle checkpoint"):
        checkpoint.load(other)

    # The same output with other settings: the checkpoint beside it is not thrown away.
    with pytest.raises(InputError, match="made with --style-weight 10.0, not 20.0; continue it with"):
        run_one("transfer", config.replace(style_weight=20.0), image_dir / "content.png",
                [image_dir / "style.png"], output_path=tmp_path / "o.png", weights=synthetic_h5)

    changed = tmp_path / "content.png"
    changed.write_bytes((image_dir / "content.png").read_bytes())
    moved = run_one("transfer", config, changed, [image_dir / "style.png"],
                    output_path=tmp_path / "m.png", weights=synthetic_h5)
    Image.open(image_dir / "style2.png").resize((64, 48)).save(changed)
    with pytest.raises(InputError, match="input content differs"):
        jaxstyle.resume(moved.checkpoint, weights=synthetic_h5)


def test_cli_resume_checks_mode_and_settings(capsys, tmp_path, image_dir, synthetic_h5):
    out = tmp_path / "o.png"
    code, _, err = run_cli(capsys, "transfer", image_dir / "content.png", image_dir / "style.png", "-o", out,
                           "--weights", synthetic_h5, "--size", 32, "--iterations", 4,
                           "--checkpoint-every", 2, "--keep-checkpoint")
    assert code == 0, err
    ck = tmp_path / "o.png.ckpt.npz"
    assert f"checkpoint: {ck}" in err
    code, _, err = run_cli(capsys, "content", image_dir / "content.png", "-o", out, "--weights", synthetic_h5,
                           "--resume", ck)
    assert code == 1 and "checkpoint is from `jaxstyle transfer`" in err
    code, _, err = run_cli(capsys, "transfer", image_dir / "content.png", image_dir / "style.png", "-o", out,
                           "--weights", synthetic_h5, "--size", 32, "--iterations", 6, "--tv-weight", 0.5,
                           "--resume", ck)
    assert code == 1 and "made with --tv-weight 0.0001, not 0.5" in err
    code, _, err = run_cli(capsys, "transfer", image_dir / "content.png", image_dir / "style.png", "-o", out,
                           "--weights", synthetic_h5, "--size", 32, "--iterations", 6, "--resume", ck)
    assert code == 0 and "6 iterations" in err and not ck.exists()  # finished: the checkpoint is removed
    code, _, err = run_cli(capsys, "transfer", image_dir / "content.png", image_dir / "style.png", "-o", out,
                           "--weights", synthetic_h5, "--size", 32, "--iterations", 6, "--keep-checkpoint")
    assert code == 0 and ck.is_file()
    code, _, err = run_cli(capsys, "resume", ck, "--weights", synthetic_h5, "--iterations", 8)
    assert code == 0 and "8 iterations" in err and "resumed at iteration 6 of 8" in err and not ck.exists(), err


def _wait_for(path: Path, timeout: float) -> None:
    end = time.time() + timeout
    while not path.exists():
        if time.time() > end:
            raise AssertionError(f"{path} did not appear within {timeout}s")
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_image_and_checkpoint_and_resume_matches(tmp_path, image_dir, synthetic_h5, sig):
    # one compilation cache for the three runs: the resume and the whole run load the programs
    env = {**os.environ, "JAXSTYLE_CACHE": str(tmp_path / "cache")}
    common = [str(image_dir / "content.png"), str(image_dir / "style.png"), "--weights", str(synthetic_h5),
              "--size", "40", "--iterations", "400", "--save-every", "3",
              # shallow layers: the point is the signal, not the network's depth (many
              # iterations, so the run is still going when the signal comes)
              "--content-layers", "block2_conv1", "--style-layers", "block1_conv1,block2_conv1"]
    out = tmp_path / "sig.png"
    proc = subprocess.Popen([sys.executable, "-m", "jaxstyle", "transfer", *common, "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _wait_for(tmp_path / "sig_0003.png", 120)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "Traceback" not in err
    ck = tmp_path / "sig.png.ckpt.npz"
    assert f"checkpoint in {ck}" in err and out.is_file() and ck.is_file()
    stopped_at = checkpoint.load(ck).iteration
    assert 3 <= stopped_at < 400
    if sig != signal.SIGINT:
        return  # the image so far and the checkpoint, as for SIGINT; its resume is checked once, there
    r = subprocess.run([sys.executable, "-m", "jaxstyle", "resume", str(ck)], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stderr
    whole = tmp_path / "whole.png"
    r = subprocess.run([sys.executable, "-m", "jaxstyle", "transfer", *common, "-o", str(whole)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(whole)))


def test_non_finite_loss_exits_with_advice_and_keeps_a_finite_image(capsys, tmp_path, image_dir, synthetic_h5):
    out = tmp_path / "nan.png"
    code, _, err = run_cli(capsys, "transfer", image_dir / "content.png", image_dir / "style.png", "-o", out,
                           "--weights", synthetic_h5, "--size", 32, "--iterations", 5, "--optimizer", "adam",
                           "--learning-rate", 1e30)  # finite at first, infinite after the first step
    assert code == EXIT_NUMERICAL
    assert "NaN or infinite" in err and "Try: lower" in err and "Traceback" not in err
    with Image.open(out) as img:
        assert np.isfinite(np.asarray(img, np.float32)).all()

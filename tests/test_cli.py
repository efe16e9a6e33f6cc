"""The `jaxstyle` CLI end to end on tiny images with synthetic weights, and its bad-input errors."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxstyle.faces import cli
from jaxstyle.errors import EXIT_ERROR


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """Run `jaxstyle ARGS` in-process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def _losses(err: str) -> tuple[float, float]:
    m = re.search(r"loss ([0-9.eE+-]+) -> ([0-9.eE+-]+)", err)
    assert m, err
    return float(m.group(1)), float(m.group(2))


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


@pytest.mark.parametrize("mode", ["transfer", "content", "style"])
def test_each_mode_writes_an_image_and_lowers_the_loss(capsys, tmp_path, image_dir, synthetic_h5, mode):
    out = tmp_path / f"{mode}.png"
    inputs = {"transfer": [image_dir / "content.png", image_dir / "style.png"],
              "content": [image_dir / "content.png"], "style": [image_dir / "style.png"]}[mode]
    code, _, err = run_cli(capsys, mode, *inputs, "-o", out, "--weights", synthetic_h5,
                           "--size", 48, "--iterations", 12, "--save-every", 5)
    assert code == 0, err
    with Image.open(out) as img:
        img.load()
        assert img.mode == "RGB"
        assert max(img.size) == 48
        expected = Image.open(inputs[0]).size
        assert img.size[0] / img.size[1] == pytest.approx(expected[0] / expected[1], rel=0.05)
    before, after = _losses(err)
    assert after < 0.8 * before
    snaps = sorted(p.name for p in tmp_path.iterdir() if p.name != out.name)
    assert snaps == [f"{mode}_0005.png", f"{mode}_0010.png"]
    assert "Traceback" not in err


def test_python_m_jaxstyle_works(tmp_path):
    r = subprocess.run([sys.executable, "-m", "jaxstyle", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "transfer" in r.stdout and "weights" in r.stdout
    r = subprocess.run([sys.executable, "-m", "jaxstyle", "content", str(tmp_path / "none.png"),
                        "-o", str(tmp_path / "o.png")], capture_output=True, text=True)
    assert r.returncode == EXIT_ERROR
    assert r.stderr.strip() == f"jaxstyle: error: {tmp_path / 'none.png'}: no such file"


def test_seed_makes_runs_repeatable(capsys, tmp_path, image_dir, synthetic_h5):
    outs = []
    for name, seed in (("a.png", 3), ("b.png", 3), ("c.png", 4)):
        code, _, err = run_cli(capsys, "content", image_dir / "content.png", "-o", tmp_path / name,
                               "--weights", synthetic_h5, "--size", 32, "--iterations", 3, "--seed", seed)
        assert code == 0, err
        outs.append(np.asarray(Image.open(tmp_path / name)))
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])


def test_weights_command_reports_and_verifies(capsys, synthetic_h5):
    code, out, err = run_cli(capsys, "weights", "--weights", synthetic_h5)
    assert code == 0, err
    assert str(synthetic_h5) in out and "official Keras file: no" in out and "13 conv layers" in out


@pytest.mark.parametrize("args, message", [
    (["--size", "0"], "--size must be an integer from 16"),
    (["--size", "-3"], "--size must be"),
    (["--style-layers", "block1_conv1,bogus"], "unknown style layer 'bogus'"),
    (["--style-layer-weights", "1,2"], "has 2 value(s) for 5 style layer(s)"),
    (["--style-weight", "-1"], "--style-weight must be finite and non-negative"),
    (["--content-weight", "nan"], "--content-weight must be finite"),
    (["--style-layer-weights", "a,b"], "not a comma-separated list of numbers"),
])
def test_bad_options_give_one_line_errors(capsys, tmp_path, image_dir, synthetic_h5, args, message):
    code, out, err = run_cli(capsys, "transfer", image_dir / "content.png", image_dir / "style.png",
                             "-o", tmp_path / "o.png", "--weights", synthetic_h5, *args)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "o.png").exists()


def test_accelerator_notes_say_what_a_gpu_holds_and_how_to_get_an_accelerator_jax(tmp_path):
    from jaxstyle.platform import devices as runtime

    class GPU:
        platform = "gpu"

        def memory_stats(self):
            return {"bytes_limit": 60 * 2**30}

    note, = runtime.accelerator_notes([GPU()], environ={})
    assert "60.0 GiB of this GPU (75% of it)" in note and "XLA_PYTHON_CLIENT_MEM_FRACTION" in note
    assert runtime.accelerator_notes([GPU()], environ={"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}) == []

    class CPU:
        platform = "cpu"

    note, = runtime.accelerator_notes([CPU()], environ={"TPU_ACCELERATOR_TYPE": "v5litepod-1"})
    assert "has a TPU but jax sees only the CPU" in note and "jax[tpu]" in note

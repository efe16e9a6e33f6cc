"""A folder run's results: named after the painting, "already done" only with the same settings,
--overwrite and --skip-existing as batch tools have them."""
from __future__ import annotations

import shutil

import numpy as np
from PIL import Image

from jaxstyle.images import imageio

from test_cli import run_cli


def test_a_folder_rerun_keeps_redoes_or_refuses_by_settings(capsys, tmp_path, image_dir, synthetic_h5):
    src, out = tmp_path / "photos", tmp_path / "styled"
    src.mkdir()
    for name in ("a", "b"):
        shutil.copy(image_dir / "content.png", src / f"{name}.png")
    other = tmp_path / "scream.png"  # another painting of the same shape: the programs are reused
    Image.fromarray(255 - np.asarray(Image.open(image_dir / "style.png"))).save(other)
    tiny = ["--weights", synthetic_h5, "-s", 32, "-i", 2]

    def run(*args):
        return run_cli(capsys, "transfer", src, *args, "-o", out, *tiny)

    code, _, err = run(image_dir / "style.png")
    assert code == 0 and "2 written, 0 already done" in err, err
    first = (out / "a_style.png").read_bytes()
    assert imageio.read_note(out / "a_style.png").startswith("jaxstyle result, settings ")
    code, _, err = run(other)  # another painting: results of their own, beside the first ones
    assert code == 0 and "2 written, 0 already done" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["a_scream.png", "a_style.png", "b_scream.png", "b_style.png"]

    code, _, err = run(image_dir / "style.png")  # the same command: done, nothing made again
    assert code == 0 and "0 written, 2 already done" in err, err

    code, _, err = run(image_dir / "style.png", "--style-weight", 3)  # another setting: refused before any work
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert f"{out / 'a_style.png'} (and 1 more): already there, made with other settings" in err
    assert "--overwrite" in err and "--skip-existing" in err
    assert (out / "a_style.png").read_bytes() == first

    code, _, err = run(image_dir / "style.png", "--style-weight", 3, "--skip-existing")
    assert code == 0 and "0 written, 2 already done" in err and (out / "a_style.png").read_bytes() == first
    code, _, err = run(image_dir / "style.png", "--style-weight", 3, "--overwrite")
    assert code == 0 and "2 written, 0 already done" in err and (out / "a_style.png").read_bytes() != first
    code, _, err = run(image_dir / "style.png", "--style-weight", 3)  # now done with these settings
    assert code == 0 and "0 written, 2 already done" in err, err

    code, _, err = run(image_dir / "style.png", "--overwrite", "--skip-existing")
    assert code == 1 and "contradict" in err


def test_notes_in_every_result_format(tmp_path):
    rgb = np.random.default_rng(0).uniform(0, 255, (12, 10, 3)).astype(np.float32)
    for name, bits in (("a.png", 8), ("a.jpg", 8), ("a.webp", 8), ("a.tif", 8), ("b.png", 16), ("b.tif", 16)):
        for note in ("jaxstyle result, settings 0123", "jaxstyle result, settings 01234"):  # odd and even
            imageio.save_image(rgb, tmp_path / name, bits=bits, note=note)
            assert imageio.read_note(tmp_path / name) == note, name
            assert imageio.load_image(tmp_path / name).shape == (12, 10, 3)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    assert imageio.read_note(tmp_path / "junk.png") is None

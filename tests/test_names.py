"""Names that collide: every file a run may write is checked, before any work, against every
file it reads and against each other; odd characters in names are just characters."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from test_cli import run_cli


def _tiny(synthetic_h5) -> list:
    return ["--weights", synthetic_h5, "-s", 32, "-i", 4]


def _refused(capsys, args, expected: str, untouched: dict[Path, bytes]) -> None:
    code, _, err = run_cli(capsys, *args)
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], err
    for path, data in untouched.items():
        assert path.read_bytes() == data, path


@pytest.mark.parametrize("case", ["snapshot", "gif", "trace", "checkpoint"])
def test_a_written_file_that_is_an_input_is_refused(capsys, tmp_path, image_dir, synthetic_h5, case):
    """An input named like the snapshot, animation, trace or checkpoint the run would write."""
    content, style, out = image_dir / "content.png", image_dir / "style.png", tmp_path / "out.png"
    if case == "snapshot":
        victim = tmp_path / "out_0002.png"
        shutil.copy(content, victim)
        args = [victim, style, "-o", out, "--save-every", 2]
    elif case == "gif":
        victim = tmp_path / "init.gif"
        Image.open(content).convert("RGB").save(victim)
        args = [content, style, "-o", out, "--init", victim, "--gif", victim]
    elif case == "trace":
        victim = tmp_path / "style.png"
        shutil.copy(style, victim)
        args = [content, victim, "-o", out, "--trace", victim]
    else:
        victim = tmp_path / "out.png.ckpt.npz"
        Image.open(style).save(victim, format="PNG")  # an image whose name is the checkpoint's
        args = [content, victim, "-o", out, "--checkpoint-every", 2]
    _refused(capsys, ["transfer", *args, *_tiny(synthetic_h5)], str(victim), {victim: victim.read_bytes()})
    assert not out.exists()


def test_two_files_of_one_run_with_one_name_are_refused(capsys, tmp_path, image_dir, synthetic_h5):
    out = tmp_path / "out.png"
    _refused(capsys, ["transfer", image_dir / "content.png", image_dir / "style.png", "-o", out,
                      "--trace", tmp_path / "out.png.ckpt.npz", "--checkpoint-every", 2, *_tiny(synthetic_h5)],
             "would be written twice", {})
    assert not out.exists()


def test_glob_characters_in_a_file_name_are_just_characters(capsys, tmp_path, image_dir, synthetic_h5):
    for name in ("photo[1].png", "what?.png", "star*.png"):
        src = tmp_path / name
        shutil.copy(image_dir / "content.png", src)
        out = tmp_path / f"out {name}"
        code, _, err = run_cli(capsys, "transfer", src, image_dir / "style.png", "-o", out, *_tiny(synthetic_h5))
        assert code == 0, err
        assert out.is_file(), name  # a file, not a folder of results


def test_a_folder_with_two_images_of_one_stem_is_refused(capsys, tmp_path, image_dir, synthetic_h5):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(image_dir / "content.png", src / "a.png")
    shutil.copy(image_dir / "content.png", src / "a.jpg")
    code, _, err = run_cli(capsys, "transfer", src, image_dir / "style.png", "-o", tmp_path / "out",
                           *_tiny(synthetic_h5))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "a.jpg" in err and "a.png" in err, err
    assert not (tmp_path / "out").exists()  # a refused start leaves no empty folder


def test_results_into_the_input_folder_are_refused(capsys, tmp_path, image_dir, synthetic_h5):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(image_dir / "content.png", src / "a.png")
    before = (src / "a.png").read_bytes()
    _refused(capsys, ["transfer", src, image_dir / "style.png", "-o", src, *_tiny(synthetic_h5)],
             "is the folder the images are read from", {src / "a.png": before})

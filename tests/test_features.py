"""Everything users expect: several styles, colour preservation, style scale, coarse-to-fine,
inits, optimizers, presets, GIF and trace, output formats, and the Python API."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import jaxstyle
from conftest import run_one
from jaxstyle.images import color
from jaxstyle.images import imageio
from jaxstyle.run import inputs
from jaxstyle.images import preprocess
from jaxstyle.config import PRESETS, STYLE_PRESETS
from jaxstyle.run.job import Item
from test_cli import _losses, run_cli


def test_several_styles_blend(capsys, tmp_path, image_dir, synthetic_h5):
    out = tmp_path / "blend.png"
    code, _, err = run_cli(capsys, "transfer", image_dir / "content.png", image_dir / "style.png",
                           image_dir / "style2.png", "--style-blend", "0.7,0.3", "-o", out,
                           "--weights", synthetic_h5, "--size", 40, "--iterations", 6)
    assert code == 0, err
    before, after = _losses(err)
    assert after < before and Image.open(out).size == (40, 30)


def test_luminance_only_transfer_keeps_the_content_colours(tmp_path, image_dir, synthetic_h5):
    result = jaxstyle.transfer(image_dir / "content.png", image_dir / "style.png", weights=synthetic_h5,
                               size=48, iterations=8, preserve_colors="luminance")
    content = preprocess.resize_longest(imageio.load_image(image_dir / "content.png"), 48)
    got, want = color.rgb_to_yiq(result.image), color.rgb_to_yiq(content)
    inside = (result.image > 1).all(axis=2) & (result.image < 254).all(axis=2)  # unclipped pixels
    assert inside.mean() > 0.5
    np.testing.assert_allclose(got[inside][:, 1:], want[inside][:, 1:], atol=1.0)
    # ... while the luminance is the optimized one, not the content's.
    assert np.abs(got[..., 0] - want[..., 0]).mean() > 1.0


@pytest.mark.parametrize("method", ["covariance", "histogram"])
def test_colour_matching_runs(image_dir, synthetic_h5, method):
    result = jaxstyle.transfer(image_dir / "content.png", image_dir / "style.png", weights=synthetic_h5,
                               size=32, iterations=3, preserve_colors=method)
    assert result.status == "done" and result.image.shape == (24, 32, 3)


def test_style_scale_changes_the_style_images(image_dir, synthetic_h5):
    config = PRESETS["transfer"].replace(size=64)
    item = Item("content.png", image_dir / "content.png", (image_dir / "style.png",))
    src = inputs.decode(item, config)
    a = inputs.stage_images(src, item, config, 64)
    b = inputs.stage_images(src, item, config.replace(style_scale=0.5), 64)
    assert max(a.styles[0].shape[:2]) == 64 and max(b.styles[0].shape[:2]) == 32
    assert a.content.shape == b.content.shape == (48, 64, 3)
    with pytest.raises(jaxstyle.JaxstyleError, match=r"style.png: at --size 64 with --style-scale 0.05 \(3 px\)"):
        run_one("transfer", config.replace(style_scale=0.05), image_dir / "content.png",
                [image_dir / "style.png"], weights=synthetic_h5)


def test_coarse_to_fine_runs_every_stage_and_traces_them(tmp_path, image_dir, synthetic_h5):
    seen = []
    result = jaxstyle.transfer(image_dir / "content.png", image_dir / "style.png", weights=synthetic_h5,
                               size=64, scales=2, scale_iterations=(4, 3), output=tmp_path / "ms.png",
                               trace=tmp_path / "ms.json", progress=seen.append)
    assert Image.open(tmp_path / "ms.png").size == (64, 48)
    assert result.iterations == 7
    stages = {(p.stage, p.size) for p in seen if p.phase == "optimize"}
    assert stages == {(1, 32), (2, 64)}
    doc = json.loads((tmp_path / "ms.json").read_text())
    its = [e["iteration"] for e in doc["iterations"]]
    assert its == list(range(0, 8)) and {e["stage"] for e in doc["iterations"]} == {1, 2}
    assert all({"content", "style", "tv", "total", "evaluations", "seconds"} <= set(e)
               for e in doc["iterations"])


def test_coarse_to_fine_interrupt_and_resume_equals_uninterrupted(tmp_path, image_dir, synthetic_h5):
    config = PRESETS["transfer"].replace(size=64, scales=2, scale_iterations=(6, 6), save_every=2)
    whole = run_one("transfer", config, image_dir / "content.png", [image_dir / "style.png"],
                    weights=synthetic_h5, output_path=tmp_path / "w.png")
    seen = {"it": 0}
    part = run_one("transfer", config, image_dir / "content.png", [image_dir / "style.png"],
                   weights=synthetic_h5, output_path=tmp_path / "p.png",
                   progress=lambda p: seen.update(it=p.iteration), should_stop=lambda: seen["it"] >= 8)
    assert part.status == "interrupted" and 8 <= part.iterations < 12
    resumed = jaxstyle.resume(part.checkpoint)
    assert resumed.iterations == 12 and resumed.status == "done"
    np.testing.assert_array_equal(resumed.image, whole.image)


@pytest.mark.parametrize("init", ["style", "file"])
def test_init_from_style_or_file(image_dir, synthetic_h5, init):
    value = str(image_dir / "style2.png") if init == "file" else "style"
    result = jaxstyle.transfer(image_dir / "content.png", image_dir / "style.png", weights=synthetic_h5,
                               size=32, iterations=2, init=value)
    start = preprocess.resize(imageio.load_image(image_dir / ("style2.png" if init == "file" else "style.png")),
                              (24, 32))
    assert result.status == "done"
    # The run started from that image: its initial content term is the image's, not zero.
    assert result.initial["content"] > 0.01
    assert np.abs(result.image - start).mean() < np.abs(result.image - 128).mean()


def test_adam_and_lbfgs_settings(capsys, tmp_path, image_dir, synthetic_h5):
    code, _, err = run_cli(capsys, "style", image_dir / "style.png", "-o", tmp_path / "a.png", "--weights",
                           synthetic_h5, "--size", 32, "--iterations", 10, "--optimizer", "adam",
                           "--learning-rate", "8", "--style-layers", "block1_conv1,block2_conv1")
    assert code == 0 and "10 evaluations" in err
    code, _, err = run_cli(capsys, "style", image_dir / "style.png", "-o", tmp_path / "l.png", "--weights",
                           synthetic_h5, "--size", 32, "--iterations", 5, "--lbfgs-memory", 3,
                           "--linesearch-steps", 4, "--style-layers", "block1_conv1,block2_conv1")
    assert code == 0, err


def test_presets_set_layers_and_explicit_options_win(capsys, tmp_path, image_dir, synthetic_h5):
    gatys = STYLE_PRESETS["gatys"]
    result = jaxstyle.transfer(image_dir / "content.png", image_dir / "style.png", weights=synthetic_h5,
                               size=32, iterations=1, preset="gatys", style_weight=3.0)
    assert result.config.style_layers == gatys["style_layers"] and result.config.style_weight == 3.0
    code, _, err = run_cli(capsys, "transfer", image_dir / "content.png", image_dir / "style.png", "-o",
                           tmp_path / "w.png", "--weights", synthetic_h5, "--size", 32, "--iterations", 1,
                           "--preset", "writeup", "--trace", tmp_path / "t.json")
    assert code == 0, err
    cfg = json.loads((tmp_path / "t.json").read_text())["config"]
    assert cfg["content_layers"] == ["block2_conv2"] and cfg["style_layer_weights"] == [0.2] * 5


def test_gif_animates_the_run(capsys, tmp_path, image_dir, synthetic_h5):
    code, _, err = run_cli(capsys, "content", image_dir / "content.png", "-o", tmp_path / "c.png", "--gif",
                           tmp_path / "c.gif", "--weights", synthetic_h5, "--size", 32, "--iterations", 8,
                           "--save-every", 2)
    assert code == 0, err
    with Image.open(tmp_path / "c.gif") as gif:
        assert gif.is_animated and gif.n_frames == 5 and gif.size == (32, 24)  # 0, 2, 4, 6, 8
    code, _, err = run_cli(capsys, "content", image_dir / "content.png", "-o", tmp_path / "d.png", "--gif",
                           tmp_path / "d.png.txt", "--weights", synthetic_h5, "--size", 32)
    assert code == 1 and "--gif needs a .gif file name" in err


@pytest.mark.parametrize("name, fmt, bits", [("o.jpg", "JPEG", 8), ("o.webp", "WEBP", 8),
                                             ("o.tif", "TIFF", 16), ("o.png", "PNG", 16)])
def test_output_formats(capsys, tmp_path, image_dir, synthetic_h5, name, fmt, bits):
    code, _, err = run_cli(capsys, "style", image_dir / "style.png", "-o", tmp_path / name, "--weights",
                           synthetic_h5, "--size", 32, "--iterations", 2, "--bit-depth", bits,
                           "--quality", 60)
    assert code == 0, err
    with Image.open(tmp_path / name) as img:
        assert img.format == fmt and img.size == (24, 32)
    if bits == 16 and fmt == "PNG":
        data = (tmp_path / name).read_bytes()
        assert data[24] == 16 and data[25] == 2  # IHDR: 16 bits per channel, RGB


def test_jpeg_quality_changes_the_file(capsys, tmp_path, image_dir, synthetic_h5):
    sizes = []
    for q in (30, 95):
        code, _, err = run_cli(capsys, "style", image_dir / "style.png", "-o", tmp_path / f"q{q}.jpg",
                               "--weights", synthetic_h5, "--size", 48, "--iterations", 2, "--quality", q)
        assert code == 0, err
        sizes.append((tmp_path / f"q{q}.jpg").stat().st_size)
    assert sizes[0] < sizes[1]


def test_python_api_takes_pil_images_and_arrays(image_dir, synthetic_h5):
    params = jaxstyle.load_weights(synthetic_h5)
    content = Image.open(image_dir / "content.png")
    style = np.asarray(Image.open(image_dir / "style.png"))
    result = jaxstyle.transfer(content, style, weights=params, size=32, iterations=3)
    assert isinstance(result, jaxstyle.Result) and result.image.shape == (24, 32, 3)
    assert result.to_pil().size == (32, 24)
    assert [e["iteration"] for e in result.trace][0] == 0 and result.trace[-1]["iteration"] == 3
    assert result.final["total"] < result.initial["total"]


def test_a_second_run_of_the_same_shape_in_a_process_compiles_nothing(image_dir, synthetic_h5):
    """A notebook calling the API again (other weights and images, same shapes) reuses the
    programs the first call compiled, and gets what a cold run gets."""
    from conftest import count_programs
    from jaxstyle.run import problem
    params = jaxstyle.load_weights(synthetic_h5)
    problem.forget_programs()
    first = jaxstyle.transfer(image_dir / "content.png", image_dir / "style.png", weights=params, size=36,
                              iterations=3, style_weight=50.0)
    assert first.compile_seconds > 0
    flipped = np.asarray(Image.open(image_dir / "content.png"))[::-1]
    other_style = np.asarray(Image.open(image_dir / "style.png"))[:, ::-1]
    with count_programs() as programs:
        again = jaxstyle.transfer(flipped, other_style, weights=params, size=36, iterations=4,
                                  style_weight=500.0, content_weight=3.0)
        from jaxstyle.run import job as job_mod
        from jaxstyle.run import execute as run_mod
        short = PRESETS["transfer"].replace(size=36, iterations=2)
        results = run_mod.run(job_mod.single("transfer", short, flipped, [other_style], weights=params))
    assert programs.count == 0 and again.compile_seconds == 0
    assert results.programs == 0 and results.compile_seconds == 0  # the run's summary counts none
    problem.forget_programs()
    cold = jaxstyle.transfer(flipped, other_style, weights=params, size=36, iterations=4,
                             style_weight=500.0, content_weight=3.0)
    assert cold.compile_seconds > 0
    np.testing.assert_array_equal(again.image, cold.image)


def test_python_api_takes_a_list_of_images(tmp_path, image_dir, synthetic_h5):
    params = jaxstyle.load_weights(synthetic_h5)
    a = Image.open(image_dir / "content.png")
    b = np.asarray(Image.open(image_dir / "style2.png"))
    results = jaxstyle.transfer([a, b], image_dir / "style.png", weights=params, size=32, iterations=3,
                                output=tmp_path / "styled")
    assert [type(r) for r in results] == [jaxstyle.Result] * 2
    assert results[0].image.shape == (24, 32, 3) and results[1].image.shape == (32, 32, 3)
    assert sorted(p.name for p in (tmp_path / "styled").iterdir()) == ["image1_style.png", "image2_style.png"]
    alone = jaxstyle.transfer(a, image_dir / "style.png", weights=params, size=32, iterations=3)
    np.testing.assert_array_equal(alone.image, results[0].image)  # a list changes nothing per image

"""Guided style transfer: content masks map regions to styles, style masks pick a style's pixels,
`keep` leaves a region unstyled; in the API, the CLI and folders. (The guided loss and gradient
against the float64 reference are in test_losses.py.)"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import jaxstyle
from jaxstyle.objective import losses
from jaxstyle.images import masks
from jaxstyle.images import preprocess
from jaxstyle.model import vgg
from jaxstyle.errors import InputError
from test_cli import run_cli

H, W = 48, 64


def _split_mask(path, left=(0, 0, 0), right=(255, 255, 255), shape=(H, W), soft=False):
    """Left half one colour, right half another (antialiased at the border when `soft`)."""
    h, w = shape
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = left
    img[:, w // 2:] = right
    if soft:
        img[:, w // 2] = ((np.asarray(left) + np.asarray(right)) // 2).astype(np.uint8)
    Image.fromarray(img).save(path)
    return path


def _texture(kind, shape=(64, 64), seed=0):
    rng = np.random.default_rng(seed)
    h, w = shape
    img = np.zeros((h, w, 3))
    if kind == "stripes":  # red and green horizontal stripes
        band = (np.arange(h) // 4) % 2 == 0
        img[band] = (220, 30, 30)
        img[~band] = (30, 200, 40)
    else:  # blue noise
        img[...] = (20, 40, 200)
        img += rng.normal(0, 35, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def guided_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("guided")
    Image.fromarray(_texture("stripes")).save(d / "stripes.png")
    Image.fromarray(_texture("noise")).save(d / "noise.png")
    _split_mask(d / "mask.png", soft=True)
    return d


def test_regions_are_the_most_frequent_colours_darkest_first():
    img = np.zeros((100, 100, 3), np.float32)
    img[:, :60] = (0, 0, 255)  # blue: luma 29
    img[:, 60:] = (0, 255, 0)  # green: luma 150
    img[0, 59] = (10, 10, 240)  # an antialiased pixel joins the nearest region (blue)
    onehot, colours = masks.regions(img, 2, "m.png")
    assert colours == ["#0000ff", "#00ff00"]
    assert onehot.shape == (100, 100, 2) and onehot[0, 59, 0] == 1 and onehot[:, 60:, 1].all()
    with pytest.raises(InputError, match="m.png: has 2 colour"):  # the antialiased pixel is no region
        masks.regions(img, 3, "m.png")
    three = img.copy()
    three[50:] = (255, 0, 0)
    with pytest.raises(InputError, match="more regions than the 2 styles"):
        masks.regions(three, 2, "m.png")


def test_mask_resizing_keeps_regions_summing_to_one_and_weights_in_range():
    onehot = np.zeros((30, 40, 2), np.float32)
    onehot[:, :17, 0] = 1
    onehot[:, 17:, 1] = 1
    for hw in ((15, 20), (7, 9), (60, 80)):
        r = masks.resize(onehot, hw)
        assert r.shape == (*hw, 2) and np.allclose(r.sum(-1), 1) and r.min() >= 0
    grey = np.full((8, 8, 3), 128.0)
    assert np.allclose(masks.weights(grey, "s.png"), 128 / 255, atol=1e-3)
    with pytest.raises(InputError, match="s.png: is black everywhere"):
        masks.weights(np.zeros((8, 8, 3)), "s.png")
    with pytest.raises(InputError, match="m.png: is 40x20 but the content"):
        masks.check_aspect((20, 40), (48, 48), "m.png", "the content (c.png)")


def _region_grams(image, params, guide):
    """Guided Gram matrices (R, C, C) of an RGB image at block1_conv2 and block2_conv2."""
    x = jnp.asarray(preprocess.to_vgg(image.astype(np.float32)))
    variables = vgg.prepare_variables(params)
    feats = vgg.features(variables, x, ("block1_conv2", "block2_conv2"))
    return [np.asarray(losses.guided_gram(feats[n], losses.layer_guide(jnp.asarray(guide), None, n)))
            for n in ("block1_conv2", "block2_conv2")]


def _style_grams(image, params):
    return [g[0] for g in _region_grams(image, params, np.ones((*image.shape[:2], 1), np.float32))]


def test_each_region_takes_its_own_style(guided_dir, image_dir, synthetic_params):
    """Left region: red/green stripes; right region: blue noise. Each half's style statistics
    (its guided Gram matrices) end nearer its own style's than the other's, and so do its colours."""
    result = jaxstyle.transfer(image_dir / "content.png", [guided_dir / "stripes.png", guided_dir / "noise.png"],
                               content_mask=guided_dir / "mask.png", weights=synthetic_params, size=64,
                               iterations=40, style_weight=1000.0, content_layers="block2_conv2")
    assert result.status == "done"
    out = result.image
    guide = masks.resize(masks.regions(np.asarray(Image.open(guided_dir / "mask.png"), np.float32), 2, "m")[0],
                         out.shape[:2])
    got = _region_grams(out, synthetic_params, guide)
    own = {k: _style_grams(_texture(k), synthetic_params) for k in ("stripes", "noise")}
    for layer in range(2):
        for r, (mine, other) in enumerate((("stripes", "noise"), ("noise", "stripes"))):
            near, far = (np.linalg.norm(got[layer][r] - own[k][layer]) for k in (mine, other))
            assert near < 0.7 * far, (layer, r, near, far)
    left, right = out[:, : W // 2 - 2].reshape(-1, 3).mean(0), out[:, W // 2 + 2:].reshape(-1, 3).mean(0)
    assert right[2] > left[2] + 40 and left[1] > right[1]  # blue on the right; green on the left


def test_keep_leaves_its_region_nearer_the_content(guided_dir, image_dir, synthetic_params):
    content = np.asarray(Image.open(image_dir / "content.png"), np.float32)
    result = jaxstyle.transfer(content, ["keep", guided_dir / "noise.png"], content_mask=guided_dir / "mask.png",
                               weights=synthetic_params, size=48, iterations=15, style_weight=1000.0)
    content = preprocess.resize(content, result.image.shape[:2])
    diff = np.abs(result.image.astype(np.float32) - content)
    w = diff.shape[1]
    kept, styled = diff[:, : w // 2 - 3].mean(), diff[:, w // 2 + 3:].mean()
    assert kept < 0.5 * styled, (kept, styled)


def test_a_style_mask_picks_the_pixels_a_style_is_taken_from(tmp_path, image_dir, synthetic_params):
    """A style image half stripes, half noise, masked to its noise half: the result matches the
    noise's statistics, not the whole image's."""
    both = np.concatenate([_texture("stripes", (64, 32)), _texture("noise", (64, 32))], axis=1)
    Image.fromarray(both).save(tmp_path / "both.png")
    smask = np.zeros((64, 64, 3), np.uint8)
    smask[:, 32:] = 255
    Image.fromarray(smask).save(tmp_path / "smask.png")
    result = jaxstyle.transfer(image_dir / "content.png", tmp_path / "both.png", style_masks=[tmp_path / "smask.png"],
                               weights=synthetic_params, size=48, iterations=15, style_weight=1000.0)
    mean = result.image.reshape(-1, 3).mean(0)
    assert mean[2] > mean[0] + 60 and mean[2] > mean[1] + 60, mean  # blue: the noise half only


def test_cli_guided_folder_and_refusals(capsys, tmp_path, guided_dir, image_dir, synthetic_h5):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a", "b"):
        Image.open(image_dir / "content.png").save(photos / f"{name}.png")
    mask_dir = tmp_path / "masks"
    mask_dir.mkdir()
    _split_mask(mask_dir / "a.png")
    _split_mask(mask_dir / "b.png", left=(255, 255, 255), right=(0, 0, 0))  # the other way round
    styles = [str(guided_dir / "stripes.png"), str(guided_dir / "noise.png")]
    common = ["--weights", str(synthetic_h5), "--size", "32", "--iterations", "4"]
    code, _, err = run_cli(capsys, "transfer", str(photos), *styles, "--content-mask", str(mask_dir),
                           "-o", str(tmp_path / "out"), *common)
    assert code == 0, err
    assert "regions of a.png: #000000 -> stripes.png, #ffffff -> noise.png" in err
    assert (tmp_path / "out" / "a_stripes.png").is_file() and (tmp_path / "out" / "b_stripes.png").is_file()

    one = str(image_dir / "content.png")
    cases = [
        (["--content-mask", str(tmp_path / "nope.png")], "nope.png: no such file"),
        (["--content-mask", str(mask_dir)], "is a folder"),
        (["--content-mask", str(mask_dir / "a.png"), "--style-blend", "1,1"], "leave --style-blend out"),
        (["--style-mask", str(mask_dir / "a.png")], "--style-mask was given 1 time(s) for 2 style image(s)"),
    ]
    for extra, message in cases:
        code, _, err = run_cli(capsys, "transfer", one, *styles, *extra, "-o", str(tmp_path / "x.png"), *common)
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli(capsys, "transfer", one, "keep", styles[1], "-o", str(tmp_path / "x.png"), *common)
    assert code != 0 and "needs --content-mask" in err
    Image.fromarray(np.zeros((10, 40, 3), np.uint8)).save(tmp_path / "wide.png")
    code, _, err = run_cli(capsys, "transfer", one, *styles, "--content-mask", str(tmp_path / "wide.png"),
                           "-o", str(tmp_path / "x.png"), *common)
    assert code != 0 and "wide.png: is 40x10 but the content" in err and not (tmp_path / "x.png").exists()
    (mask_dir / "b.png").unlink()
    code, _, err = run_cli(capsys, "transfer", str(photos), *styles, "--content-mask", str(mask_dir),
                           "-o", str(tmp_path / "out2"), *common)
    assert code != 0 and "has no mask for b.png" in err


def test_a_guided_run_resumes_to_the_uninterrupted_image_and_refuses_a_changed_mask(tmp_path, guided_dir,
                                                                                   image_dir, synthetic_h5):
    from test_resume import _stop_after
    mask = _split_mask(tmp_path / "mask.png")
    args = dict(content_mask=mask, weights=synthetic_h5, size=40, iterations=12, save_every=4,
                content_layers=("block2_conv1",), style_layers=("block1_conv1", "block2_conv1"))  # depth: not the point
    styles = ["keep", guided_dir / "noise.png"]
    whole = jaxstyle.transfer(image_dir / "content.png", styles, output=tmp_path / "whole.png", **args)
    progress, should_stop = _stop_after(4)
    part = jaxstyle.transfer(image_dir / "content.png", styles, output=tmp_path / "part.png", progress=progress,
                             should_stop=should_stop, **args)
    assert part.status == "interrupted" and part.iterations < 12
    _split_mask(tmp_path / "other.png", left=(255, 255, 255), right=(0, 0, 0))
    mask.write_bytes((tmp_path / "other.png").read_bytes())  # the mask changed since
    with pytest.raises(InputError, match="input content_mask differs"):
        jaxstyle.resume(part.checkpoint, weights=synthetic_h5)
    _split_mask(mask)
    resumed = jaxstyle.resume(part.checkpoint, weights=synthetic_h5)
    assert resumed.status == "done" and resumed.iterations == 12
    np.testing.assert_array_equal(resumed.image, whole.image)

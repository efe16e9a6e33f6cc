"""Image decoding of every common mode, EXIF rotation, bad files, and atomic saving."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jaxstyle.images import imageio
from jaxstyle.images import preprocess
from jaxstyle.errors import InputError


def _gradient(h=20, w=30):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.full((h, w), 77)], axis=2).astype(np.uint8)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "1", "F"])
def test_modes_are_converted_to_rgb(tmp_path, mode):
    rgb = Image.fromarray(_gradient())
    if mode == "I;16":
        img = Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)
        path = tmp_path / "x.png"
    elif mode == "I":
        img = Image.fromarray(np.asarray(rgb.convert("L"), np.int32) * 257)
        path = tmp_path / "x.tif"
    elif mode == "F":
        img = Image.fromarray(np.asarray(rgb.convert("L"), np.float32) / 255.0)
        path = tmp_path / "x.tif"
    elif mode == "CMYK":
        img = rgb.convert("CMYK")
        path = tmp_path / "x.jpg"
    else:
        img = rgb.convert(mode)
        path = tmp_path / "x.png"
    img.save(path)
    a = imageio.load_image(path)
    assert Image.open(path).mode.startswith(mode[0]) or mode in ("LA", "P", "1")
    assert a.shape == (20, 30, 3) and a.dtype == np.float32
    assert 0 <= a.min() and a.max() <= 255
    if mode in ("L", "I;16", "I", "F"):
        np.testing.assert_allclose(a[:, :, 0], np.asarray(rgb.convert("L"), np.float32), atol=1.0)


def test_sixteen_bit_precision_is_kept(tmp_path):
    a16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    Image.fromarray(a16).save(tmp_path / "g16.png")
    a = imageio.load_image(tmp_path / "g16.png")
    np.testing.assert_allclose(a[:, :, 0], a16 / 257.0, atol=1e-3)
    assert len(np.unique(a[:, :, 0])) > 256  # more levels than 8 bits hold


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:, :8] = (255, 0, 0, 255)  # opaque red left, fully transparent black right
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    a = imageio.load_image(tmp_path / "a.png")
    np.testing.assert_array_equal(a[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(a[0, 15], [255, 255, 255])
    pal = Image.fromarray(rgba, "RGBA").convert("P")
    pal.info["transparency"] = pal.getpixel((15, 0))
    pal.save(tmp_path / "p.png", transparency=pal.getpixel((15, 0)))
    p = imageio.load_image(tmp_path / "p.png")
    np.testing.assert_array_equal(p[0, 15], [255, 255, 255])


def test_exif_rotation_is_applied(tmp_path):
    img = Image.fromarray(_gradient(20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "r.jpg", exif=exif)
    a = imageio.load_image(tmp_path / "r.jpg")
    assert a.shape == (30, 20, 3)


@pytest.mark.parametrize("kind, message", [
    ("missing", "no such file"),
    ("directory", "is a directory"),
    ("empty", "empty file"),
    ("text", "not an image file"),
    ("truncated", "corrupt or truncated"),
])
def test_bad_files_raise_one_line_errors_naming_the_file(tmp_path, kind, message):
    path = tmp_path / "bad.jpg"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a picture\n")
    elif kind == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path, quality=95)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as e:
        imageio.load_image(path)
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_save_is_atomic_and_round_trips(tmp_path):
    a = _gradient().astype(np.float32)
    out = imageio.save_image(a, tmp_path / "o.png")
    np.testing.assert_array_equal(imageio.load_image(out), a)
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]
    with pytest.raises(InputError, match="cannot write .xyz"):
        imageio.save_image(a, tmp_path / "o.xyz")


def test_as_rgb_accepts_arrays_and_pil():
    g = _gradient()
    np.testing.assert_array_equal(imageio.as_rgb(g), g.astype(np.float32))
    np.testing.assert_allclose(imageio.as_rgb(g / 255.0), g, atol=1e-3)
    np.testing.assert_array_equal(imageio.as_rgb(Image.fromarray(g)), g.astype(np.float32))
    assert imageio.as_rgb(g[:, :, 0]).shape == (20, 30, 3)
    with pytest.raises(InputError, match="expected an"):
        imageio.as_rgb(np.zeros((4, 4, 2)))


def test_resize_keeps_aspect_and_refuses_tiny_images():
    a = np.zeros((300, 400, 3), np.float32)
    assert preprocess.resize_longest(a, 100).shape == (75, 100, 3)
    with pytest.raises(InputError, match="too small"):
        preprocess.resize_longest(np.zeros((1, 1, 3), np.float32), 64)
    with pytest.raises(InputError, match="narrower than VGG16's minimum"):
        preprocess.resize_longest(np.zeros((20, 2000, 3), np.float32), 512)


def test_vgg_space_round_trip():
    a = _gradient().astype(np.float32)
    x = preprocess.to_vgg(a)
    np.testing.assert_allclose(x[0, 0], a[0, 0, ::-1] - preprocess.BGR_MEAN, rtol=1e-6)
    np.testing.assert_allclose(preprocess.from_vgg(x), a, atol=1e-4)

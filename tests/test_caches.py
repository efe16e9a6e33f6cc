"""Damage tolerance of what jaxstyle reads back: the converted-weights cache is keyed by content
(never by path, size or mtime), a damaged cache entry is dropped and rebuilt with a one-line
note, and a damaged image file gives a decoded image or the one-line InputError, never another
exception, with the libraries' warnings forwarded as one line to the `jaxstyle` logger."""
from __future__ import annotations

import io
import logging
import os
import random
import shutil
import warnings
import zipfile

import numpy as np
import pytest
from PIL import Image

from conftest import write_keras_h5
from jaxstyle.images import imageio
from jaxstyle.model import weights
from jaxstyle.errors import InputError


def _same(params, expected) -> bool:
    return all(np.array_equal(params[n]["kernel"], expected[n]["kernel"])
               and np.array_equal(params[n]["bias"], expected[n]["bias"]) for n in weights.LAYER_NAMES)


@pytest.fixture(scope="module")
def other_params(synthetic_params):
    """Parameters different from `synthetic_params` in every layer, with the same shapes."""
    return {n: {"kernel": p["kernel"] * np.float32(0.5), "bias": p["bias"] + np.float32(1)}
            for n, p in synthetic_params.items()}


# -- 1. the converted cache is keyed by content ----------------------------------------------

@pytest.mark.parametrize("how", ["rewritten in place", "cp -p over it", "renamed over it"])
def test_swapped_weights_with_same_size_and_mtime_are_used(tmp_path, cache, synthetic_h5, synthetic_params,
                                                           other_params, how):
    path = tmp_path / "w.h5"
    shutil.copyfile(synthetic_h5, path)
    first, info1 = weights.load(path)
    assert _same(first, synthetic_params)
    st = path.stat()
    other = write_keras_h5(tmp_path / "other.h5", other_params)
    assert other.stat().st_size == st.st_size  # the swap is invisible to size + mtime
    if how == "rewritten in place":
        path.write_bytes(other.read_bytes())
    elif how == "cp -p over it":
        os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
        shutil.copy2(other, path)  # what `cp -p` and `rsync -a` do
    else:
        os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(other, path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    second, info2 = weights.load(path)
    assert _same(second, other_params) and not _same(second, synthetic_params)
    assert info2.sha256 != info1.sha256 and info2.md5 != info1.md5
    assert info2.converted != info1.converted
    again, info3 = weights.load(path)  # and the second file's own cache entry is used from now on
    assert _same(again, other_params) and info3.converted == info2.converted


def test_a_stale_digest_index_from_older_versions_is_not_trusted(tmp_path, cache, synthetic_h5, other_params):
    """Older versions cached digests by (path, size, mtime) in digests.json; such an index,
    even one naming the wrong digests for this very file, is ignored (and removed)."""
    path = write_keras_h5(tmp_path / "w.h5", other_params)
    weights.load(synthetic_h5)  # leaves a cache entry for the synthetic file's content
    md5, sha = weights.file_digests(synthetic_h5)
    st = path.stat()
    cache.mkdir(exist_ok=True)
    (cache / "digests.json").write_text(
        f'{{"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}": ["{md5}", "{sha}"]}}')
    params, info = weights.load(path)
    assert _same(params, other_params) and info.sha256 != sha
    assert not (cache / "digests.json").exists()


@pytest.mark.parametrize("index", ["garbage", "not json list", "directory", "binary"])
def test_a_damaged_digest_index_is_harmless(cache, synthetic_h5, synthetic_params, index):
    cache.mkdir(exist_ok=True)
    target = cache / "digests.json"
    if index == "garbage":
        target.write_text("{not json at all")
    elif index == "not json list":
        target.write_text('["a", 1, null]')
    elif index == "directory":
        target.mkdir()
        (target / "x").write_text("x")
    else:
        target.write_bytes(os.urandom(4096))
    params, info = weights.load(synthetic_h5)
    assert _same(params, synthetic_params) and info.sha256 == weights.file_digests(synthetic_h5)[1]
    params, _ = weights.load(synthetic_h5)
    assert _same(params, synthetic_params)


# -- 2. damaged converted-cache entries are dropped and rebuilt --------------------------------

def _flip_inside_an_array(entry) -> None:
    """Flip one byte in the middle of a kernel's stored data (the zip's CRC must notice)."""
    with zipfile.ZipFile(entry) as z:
        info = z.getinfo("block3_conv1/kernel.npy")
    data = bytearray(entry.read_bytes())
    at = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.file_size // 2
    data[at] ^= 0x55
    entry.write_bytes(bytes(data))


def _rewrite(entry, change) -> None:
    with np.load(entry) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    with open(entry, "wb") as fh:
        np.savez(fh, **arrays)


def _damage(entry, how: str, other_entry=None) -> None:
    if how == "truncated to half":
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    elif how == "truncated to 100 bytes":
        entry.write_bytes(entry.read_bytes()[:100])
    elif how == "empty":
        entry.write_bytes(b"")
    elif how == "garbage":
        entry.write_bytes(os.urandom(5000))
    elif how == "text":
        entry.write_text("this is not an npz file\n")
    elif how == "byte flipped":
        _flip_inside_an_array(entry)
    elif how == "a directory":
        entry.unlink()
        entry.mkdir()
        (entry / "inner").write_text("x")
    elif how == "folder is a file":
        shutil.rmtree(entry.parent)
        entry.parent.write_text("not a folder")
    elif how == "another file's entry":
        shutil.copyfile(other_entry, entry)
    elif how == "layer missing":
        _rewrite(entry, lambda a: a.pop("block4_conv2/kernel"))
    elif how == "wrong shape":
        _rewrite(entry, lambda a: a.__setitem__("block1_conv1/kernel", np.zeros((3, 3, 3, 32), np.float32)))
    elif how == "NaN":
        def nan(a):
            a["block5_conv3/bias"] = a["block5_conv3/bias"].copy()
            a["block5_conv3/bias"][7] = np.nan
        _rewrite(entry, nan)
    elif how == "pickled object":
        _rewrite(entry, lambda a: a.__setitem__("block2_conv1/bias", np.array([object()], dtype=object)))
    else:
        raise AssertionError(how)


DAMAGES = ["truncated to half", "truncated to 100 bytes", "empty", "garbage", "text", "byte flipped",
           "a directory", "folder is a file", "another file's entry", "layer missing", "wrong shape", "NaN",
           "pickled object"]


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_converted_entry_is_dropped_and_rebuilt(tmp_path, cache, synthetic_h5, synthetic_params,
                                                          other_params, monkeypatch, how):
    other_entry = None
    if how == "another file's entry":
        _, other_info = weights.load(write_keras_h5(tmp_path / "other.h5", other_params))
        other_entry = other_info.converted
    _, info = weights.load(synthetic_h5)
    entry = info.converted
    assert entry is not None and entry.is_file()
    _damage(entry, how, other_entry)

    params, info2 = weights.load(synthetic_h5)  # the faulty run: correct params, one-line note
    assert _same(params, synthetic_params)
    assert info2.converted == entry and entry.is_file()
    assert info2.warning and "\n" not in info2.warning
    assert f"converted-weights cache entry {entry} was damaged" in info2.warning and "rebuilt it" in info2.warning

    def parse_again(*_):
        raise AssertionError("the h5 was converted again: the rebuilt entry was not used")

    monkeypatch.setattr(weights, "read_h5", parse_again)
    params, info3 = weights.load(synthetic_h5)  # the next run: the rebuilt entry, no note
    assert _same(params, synthetic_params) and "damaged" not in (info3.warning or "")


def test_an_entry_from_an_older_version_is_replaced_quietly(cache, synthetic_h5, synthetic_params):
    _, info = weights.load(synthetic_h5)
    _rewrite(info.converted, lambda a: [a.pop("meta/sha256"), a.pop("meta/md5")])
    params, info2 = weights.load(synthetic_h5)
    assert _same(params, synthetic_params) and info2.warning is None  # quietly: no damage note
    with np.load(info2.converted) as z:
        assert str(z["meta/sha256"][()]) == info2.sha256 and str(z["meta/md5"][()]) == info2.md5


def test_the_official_file_gets_only_the_damage_note(cache, synthetic_h5, synthetic_params, monkeypatch):
    monkeypatch.setattr(weights, "OFFICIAL_MD5", weights.file_digests(synthetic_h5)[0])
    _, info = weights.load(synthetic_h5)
    assert info.official and info.warning is None
    info.converted.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    params, info2 = weights.load(synthetic_h5)
    assert _same(params, synthetic_params)
    assert info2.warning.startswith("the converted-weights cache entry") and info2.warning.count(";") == 1
    assert weights.load(synthetic_h5)[1].warning is None


def test_a_cache_directory_that_is_a_file_costs_only_the_cache(tmp_path, synthetic_h5, synthetic_params,
                                                               monkeypatch):
    blocker = tmp_path / "cache-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("JAXSTYLE_CACHE", str(blocker))
    params, info = weights.load(synthetic_h5)
    assert _same(params, synthetic_params) and info.converted is None
    assert blocker.read_text() == "not a directory"


# -- 4. damaged images: decoded, or one line -------------------------------------------------

FORMATS = {"png": ("PNG", {}), "jpg": ("JPEG", {"quality": 90}), "tif": ("TIFF", {}),
           "lzw.tif": ("TIFF", {"compression": "tiff_lzw"}), "gif": ("GIF", {}), "bmp": ("BMP", {}),
           "webp": ("WEBP", {"quality": 80})}


def _encoded(fmt: str, options: dict, exif: bool) -> bytes:
    rgb = np.random.default_rng(3).integers(0, 255, (12, 16, 3), np.uint8)
    options = dict(options)
    if exif and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        e = Image.Exif()
        e[0x0112] = 6  # orientation: the reader rotates, so it parses and rewrites the EXIF
        e[0x010F] = "jaxstyle"
        options["exif"] = e
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **options)
    return buf.getvalue()


def _variants(good: bytes, seed: int, n: int = 60):
    """Truncations at several lengths, and single- and multi-byte corruptions, most of them in
    the header region where the parsers (not the codecs) have to cope."""
    r = random.Random(seed)
    for cut in (1, 8, 16, 33, len(good) // 4, len(good) // 2, len(good) - 1):
        yield f"truncated to {cut}", good[:cut]
    for i in range(n):
        data = bytearray(good)
        for _ in range(1 if i % 3 == 0 else r.randrange(2, 8)):
            at = r.randrange(min(len(data), 160)) if r.random() < 0.75 else r.randrange(len(data))
            data[at] = r.choice([0x00, 0xFF, 0x7F, 0x80, r.randrange(256), data[at] ^ (1 << r.randrange(8))])
        yield f"corrupted #{i}", bytes(data)


def _check_decodes_or_one_line(path) -> str:
    try:
        a = imageio.load_image(path)
    except InputError as e:
        msg = str(e)
        assert msg.startswith(f"{path}: ") and "\n" not in msg and len(msg) < 400, msg
        return "error"
    assert a.dtype == np.float32 and a.ndim == 3 and a.shape[2] == 3 and np.isfinite(a).all()
    return "decoded"


@pytest.mark.parametrize("exif", [False, True], ids=["plain", "exif"])
@pytest.mark.parametrize("ext", list(FORMATS))
def test_damaged_images_decode_or_fail_in_one_line(tmp_path, ext, exif, caplog):
    fmt, options = FORMATS[ext]
    good = _encoded(fmt, options, exif)
    outcomes = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping the reader fails the test
        for i, (label, data) in enumerate(_variants(good, seed=len(ext) * 7 + exif)):
            path = tmp_path / f"{i}.{ext}"
            path.write_bytes(data)
            try:
                outcomes.append(_check_decodes_or_one_line(path))
            except AssertionError:
                raise
            except BaseException as e:  # noqa: BLE001
                pytest.fail(f"{ext} {label}: {type(e).__name__}: {e}")
    assert "error" in outcomes  # the corpus does reach the error path
    for record in caplog.records:
        assert record.name == "jaxstyle" and "\n" not in record.getMessage()


def _retagged(fmt: str, old: bytes, new: bytes, exif: bool = True) -> bytes:
    data = _encoded(fmt, {}, exif)
    assert data.count(old) == 1, (fmt, old)
    return data.replace(old, new)


@pytest.mark.parametrize("name, make", [
    # EXIF entry 0x010F (Make, ASCII) turned into 0x0100 (ImageWidth): rewriting the EXIF while
    # applying the orientation raises struct.error inside Pillow.
    ("exif.jpg", lambda: _retagged("JPEG", b"\x01\x0f\x00\x02", b"\x01\x00\x00\x02")),
    ("exif.webp", lambda: _retagged("WEBP", b"\x01\x0f\x00\x02", b"\x01\x00\x00\x02")),
    # StripOffsets (273) given the RATIONAL type: Pillow raises TypeError seeking to a fraction.
    ("rational.tif", lambda: _retagged("TIFF", b"\x11\x01\x04\x00", b"\x11\x01\x05\x00", exif=False)),
], ids=["jpeg exif struct.error", "webp exif struct.error", "tiff TypeError"])
def test_pillow_errors_other_than_oserror_become_one_line(tmp_path, name, make):
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(InputError) as e:
        imageio.load_image(path)
    assert str(e.value).startswith(f"{path}: corrupt or truncated image (") and "\n" not in str(e.value)


def test_reader_warnings_go_to_the_jaxstyle_logger_as_one_line(tmp_path, caplog, monkeypatch):
    path = tmp_path / "w.png"
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(path)
    real = imageio.to_rgb_array

    def noisy(img):
        warnings.warn("Possibly corrupt EXIF data.\nSecond line", UserWarning, stacklevel=2)
        warnings.warn("Possibly corrupt EXIF data.\nSecond line", UserWarning, stacklevel=2)  # duplicates count once
        np.float32(1e38) * np.float32(1e38)  # NumPy: RuntimeWarning, overflow
        logging.getLogger("PIL.TiffImagePlugin").error("More samples per pixel than can be decoded: 9")
        logging.getLogger("PIL.PngImagePlugin").debug("STREAM b'IHDR'")  # below WARNING: passes on
        return real(img)

    monkeypatch.setattr(imageio, "to_rgb_array", noisy)
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = imageio.load_image(path)
    assert a.shape == (8, 8, 3)
    assert [r.name for r in caplog.records if r.levelno >= logging.WARNING] == ["jaxstyle"]
    assert "STREAM b'IHDR'" in [r.getMessage() for r in caplog.records if r.name == "PIL.PngImagePlugin"]
    msg = caplog.records[-1].getMessage()
    assert msg == f"{path}: More samples per pixel than can be decoded: 9 (and 2 more)", msg
    assert logging.getLogger("PIL").propagate and imageio._pillow_log not in logging.getLogger("PIL").handlers


def test_a_failed_read_says_one_line_and_logs_nothing(tmp_path, caplog):
    path = tmp_path / "t.tif"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:2000])  # pixel data cut: Pillow warns "Truncated File Read"
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match="corrupt or truncated image"):
            imageio.load_image(path)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_decompression_bomb_warning_still_refuses(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 - 1)  # warning level; 2x is the error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match="image too large to decode safely"):
            imageio.load_image(path)

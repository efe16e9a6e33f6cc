"""16-bit RGB output: the hand-written PNG and TIFF encoders, decoded independently here."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from jaxstyle.images import imageio
from jaxstyle.errors import InputError


def _distinctive(h=5, w=7):
    """uint16 RGB whose every sample differs, with both bytes of each sample varying."""
    n = np.arange(h * w * 3, dtype=np.uint64)
    a = (n * 40503 + 257) % 65536  # byte-order or channel mix-ups change the values
    a[0], a[-1] = 0, 65535
    return a.reshape(h, w, 3).astype(np.uint16)


def _decode_png16(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds, idat, header = 8, [], b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body), f"bad CRC on {kind!r}"
        kinds.append(kind)
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert pos == len(data)
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    w, h, depth, colour, compression, filt, interlace = header
    assert (depth, colour, compression, filt, interlace) == (16, 2, 0, 0, 0)
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * 6)
    assert (raw[:, 0] == 0).all()  # filter type 0 (None) on every scanline
    return np.frombuffer(raw[:, 1:].tobytes(), ">u2").reshape(h, w, 3).astype(np.uint16)


def _decode_tiff16(data: bytes) -> np.ndarray:
    assert data[:4] == b"II*\0"
    (ifd,) = struct.unpack("<I", data[4:8])
    (n,) = struct.unpack("<H", data[ifd:ifd + 2])
    sizes, fmts, tags = {3: 2, 4: 4, 5: 8}, {3: "H", 4: "I", 5: "II"}, {}
    for i in range(n):
        tag, typ, count, field = struct.unpack("<HHI4s", data[ifd + 2 + 12 * i:ifd + 14 + 12 * i])
        size = sizes[typ] * count
        raw = field[:size] if size <= 4 else data[struct.unpack("<I", field)[0]:][:size]
        tags[tag] = list(struct.unpack("<" + fmts[typ] * count, raw))
    assert list(tags) == sorted(tags)
    assert struct.unpack("<I", data[ifd + 2 + 12 * n:ifd + 6 + 12 * n]) == (0,)
    assert tags[258] == [16, 16, 16] and tags[259] == [1] and tags[262] == [2]
    assert tags[277] == [3] and tags[284] == [1] and tags[296] == [2]
    assert tags[282] == [72, 1] and tags[283] == [72, 1]
    (w,), (h,), (rows,) = tags[256], tags[257], tags[278]
    offsets, counts = tags[273], tags[279]
    assert len(offsets) == len(counts) == -(-h // rows)
    assert counts == [min(rows, h - y) * w * 6 for y in range(0, h, rows)]
    pixels = b"".join(data[o:o + c] for o, c in zip(offsets, counts))
    return np.frombuffer(pixels, "<u2").reshape(h, w, 3).astype(np.uint16)


def test_png16_decodes_exactly(tmp_path):
    a = _distinctive()
    p = tmp_path / "x.png"
    with open(p, "wb") as fh:
        imageio.write_png16(fh, a)
    np.testing.assert_array_equal(_decode_png16(p.read_bytes()), a)
    with Image.open(p) as img:
        assert img.size == (7, 5)
    back = imageio.load_image(p)  # Pillow reduces 16-bit RGB PNG to 8 bits
    assert back.shape == (5, 7, 3)
    assert np.abs(back - a / 257.0).max() <= 1.0


def test_png16_many_rows_and_idat_chunks(tmp_path):
    a = np.random.default_rng(1).integers(0, 65536, (300, 701, 3)).astype(np.uint16)
    p = tmp_path / "big.png"
    with open(p, "wb") as fh:
        imageio.write_png16(fh, a)
    np.testing.assert_array_equal(_decode_png16(p.read_bytes()), a)


@pytest.mark.parametrize("shape", [(5, 7, 3), (120, 90, 3)])  # one strip, several strips
def test_tiff16_decodes_exactly(tmp_path, shape):
    a = _distinctive(*shape[:2])
    p = tmp_path / "x.tif"
    with open(p, "wb") as fh:
        imageio.write_tiff16(fh, a)
    np.testing.assert_array_equal(_decode_tiff16(p.read_bytes()), a)
    # Pillow 13 opens 16-bit RGB TIFF (as 8-bit RGB, keeping the high byte).
    with Image.open(p) as img:
        assert img.size == shape[1::-1] and img.mode == "RGB"
    back = imageio.load_image(p)
    assert np.abs(back - a / 257.0).max() <= 1.0


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint16),
                                 np.zeros((4, 4, 4), np.uint16), np.zeros((0, 4, 3), np.uint16)])
def test_encoders_reject_bad_arrays(tmp_path, bad):
    for encode in (imageio.write_png16, imageio.write_tiff16):
        with open(tmp_path / "x", "wb") as fh, pytest.raises(ValueError):
            encode(fh, bad)


@pytest.mark.parametrize("name", ["out.png", "out.tif", "OUT.TIFF"])
def test_save_image_16_bit_scaling(tmp_path, name):
    rgb = np.array([[[255.0, 0.0, 128.0], [1.0, 0.5, 254.999]],
                    [[-3.0, 300.0, 1e9], [100.4, 100.6, 0.002]]], np.float32)
    p = imageio.save_image(rgb, tmp_path / name, bits=16)
    decode = _decode_png16 if name.endswith(".png") else _decode_tiff16
    expected = np.rint(np.clip(rgb.astype(np.float64), 0, 255) * 257).astype(np.uint16)
    got = decode(p.read_bytes())
    np.testing.assert_array_equal(got, expected)
    assert got[0, 0].tolist() == [65535, 0, 32896]
    assert got[1, 0].tolist() == [0, 65535, 65535]  # clipped
    assert got[0, 1].tolist() == [257, 128, 65535]  # 0.5 * 257 = 128.5 -> 128 (half to even)
    assert [p.name] == [f.name for f in tmp_path.iterdir()]


def test_save_image_8_bit_unchanged(tmp_path):
    rgb = np.full((3, 4, 3), 200.4, np.float32)
    p = imageio.save_image(rgb, tmp_path / "x.png")
    with Image.open(p) as img:
        assert img.mode == "RGB"
        assert (np.asarray(img) == 200).all()


def test_16_bit_jpeg_is_refused_without_a_file(tmp_path):
    with pytest.raises(InputError, match=r"16-bit output needs a \.png or \.tif/\.tiff file"):
        imageio.save_image(np.zeros((2, 2, 3), np.float32), tmp_path / "x.jpg", bits=16)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bits", [12, 0, 32, True])
def test_bad_bit_depth_is_refused(tmp_path, bits):
    with pytest.raises(InputError, match="8 or 16"):
        imageio.save_image(np.zeros((2, 2, 3), np.float32), tmp_path / "x.png", bits=bits)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name,encoder", [("x.png", "write_png16"), ("x.tiff", "write_tiff16")])
def test_failed_16_bit_write_leaves_old_file(tmp_path, monkeypatch, name, encoder):
    p = tmp_path / name
    p.write_bytes(b"previous contents")
    real = getattr(imageio, encoder)

    def broken(fh, a, *note):
        real(fh, a, *note)  # the whole image is written to the temporary file first
        assert fh.tell() > 0
        raise OSError("disk full")

    monkeypatch.setattr(imageio, encoder, broken)
    with pytest.raises(OSError, match="disk full"):
        imageio.save_image(np.ones((4, 5, 3), np.float32), p, bits=16)
    assert p.read_bytes() == b"previous contents"
    assert [f.name for f in tmp_path.iterdir()] == [name]
    p.unlink()
    with pytest.raises(OSError):
        imageio.save_image(np.ones((4, 5, 3), np.float32), p, bits=16)
    assert list(tmp_path.iterdir()) == []

"""Image files in and out: decode anything Pillow reads into float RGB, write results atomically."""
from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import warnings
import zlib
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from jaxstyle.errors import InputError, captured_stderr
from jaxstyle.files import atomic_write

# Formats we write, by file extension; 16-bit output is chosen by `bits=16`.
# A result's formats (GIF, 256 colours, is for the animation of a run: --gif).
WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP",
                 ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}


# What Pillow (and NumPy behind it) can raise for a damaged or hostile file, besides OSError:
# plugins parse headers with struct and index into tables, so a damaged file can surface as
# almost any of these. MemoryError and KeyboardInterrupt are deliberately not among them.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, LookupError,
                 TypeError, AttributeError, ArithmeticError, RuntimeError, AssertionError,
                 BufferError, Image.DecompressionBombError)

log = logging.getLogger("jaxstyle")


def _short(e: BaseException) -> str:
    text = str(e).strip()
    line = text.splitlines()[0][:160] if text else ""
    if not line or isinstance(e, (struct.error, zlib.error, LookupError, TypeError, AttributeError,
                                  ArithmeticError, AssertionError, RuntimeError, BufferError)):
        return f"{type(e).__name__}: {line}" if line else type(e).__name__
    return line


class _PillowLog(logging.Handler):
    """While images are being read, Pillow's own log records (e.g. TiffImagePlugin's "More
    samples per pixel than can be decoded", which an application without logging set up would
    print raw) are collected for the reading thread instead of propagating; records from other
    threads, and those below WARNING, go on to the root logger as they would have."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.local = threading.local()
        self.guard = threading.Lock()
        self.depth = 0
        self.pil_propagate = True

    def emit(self, record: logging.LogRecord) -> None:
        sink = getattr(self.local, "sink", None)
        if sink is not None and record.levelno >= logging.WARNING:
            sink.append(record.getMessage())
        elif self.pil_propagate:
            logging.getLogger().handle(record)

    @contextlib.contextmanager
    def collecting(self, sink: list) -> Iterator[None]:
        pil = logging.getLogger("PIL")
        with self.guard:
            if self.depth == 0:
                self.pil_propagate, pil.propagate = pil.propagate, False
                pil.addHandler(self)
            self.depth += 1
        outer, self.local.sink = getattr(self.local, "sink", None), sink
        try:
            yield
        finally:
            self.local.sink = outer
            with self.guard:
                self.depth -= 1
                if self.depth == 0:
                    pil.removeHandler(self)
                    pil.propagate = self.pil_propagate


_pillow_log = _PillowLog()


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Decode under this: a damaged file gives InputError naming it, never another exception.
    What the libraries say while an image is read (Pillow's "Possibly corrupt EXIF data" and
    "Truncated File Read" warnings and its log records, NumPy's RuntimeWarnings) does not escape
    raw: when the image decodes, it goes to the `jaxstyle` logger as one short line; when it
    does not, the error's line says it all. A DecompressionBombWarning refuses the file."""
    said: list[str] = []
    try:
        with _pillow_log.collecting(said), warnings.catch_warnings(record=True) as caught, \
                captured_stderr() as printed:  # libtiff and libjpeg print from C
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
        said.extend(str(w.message) for w in caught)
        said.extend(line for text in printed for line in text.splitlines())
    except InputError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise InputError(f"{path}: image too large to decode safely ({_short(e)})") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file Pillow can decode") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except DECODE_ERRORS as e:
        raise InputError(f"{path}: corrupt or truncated image ({_short(e)})") from None
    _forward(path, said)


def _forward(path: Path, said: list[str]) -> None:
    messages = list(dict.fromkeys(" ".join(m.split())[:160] for m in said if m.strip()))
    if messages:
        more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
        with contextlib.suppress(Exception):  # a broken log handler must not stop a read
            log.warning("%s: %s%s", path, messages[0], more)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file into float32 RGB (H, W, 3) on a 0..255 scale.

    EXIF orientation is applied; grayscale, palette, alpha (composited on white), CMYK and
    16-bit images are converted. Any problem raises InputError naming the file; warnings
    raised while decoding go to the `jaxstyle` logger as one line.
    """
    path = Path(path)
    try:
        if not path.exists():
            raise InputError(f"{path}: no such file")
        if path.is_dir():
            raise InputError(f"{path}: is a directory, not an image file")
        if path.stat().st_size == 0:
            raise InputError(f"{path}: empty file")
    except OSError as e:
        raise InputError(f"{path}: cannot read image ({_short(e)})") from None
    with _reading(path):
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return to_rgb_array(img)


def load_image_within(path: str | os.PathLike, max_side: int, max_pixels: int) -> np.ndarray:
    """`load_image`, for untrusted uploads: an image of more than `max_pixels` (by its header)
    is refused before decoding, a JPEG is decoded at the smallest DCT scale that still covers
    `max_side`, others are reduced by an integer factor on their own 8-bit pixels, and only an
    image no larger than `max_side` on its longest side becomes float32. Peak memory is about
    `max_pixels` x 4 bytes, never the float32 of the whole image."""
    path = Path(path)
    try:
        usual = not path.is_file() or path.stat().st_size == 0
    except OSError:
        usual = True
    if usual:  # the same messages as load_image for a missing, empty or unreadable file
        return load_image(path)
    with _reading(path):
        with Image.open(path) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise InputError(f"{path}: {w}×{h} is {w * h / 1e6:.0f} megapixels; the most an upload "
                                 f"may have is {max_pixels / 1e6:g}")
            img.draft("RGB", (max_side, max_side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
            img.load()
            img = ImageOps.exif_transpose(img)
            if max(img.size) > max_side:
                if img.mode.startswith("I;16"):
                    img = img.convert("I")  # keeps the 16 bits that to_rgb_array scales
                elif img.mode not in ("L", "LA", "RGB", "RGBA", "I", "F"):
                    has_alpha = "A" in img.getbands() or "transparency" in img.info
                    img = img.convert("RGBA" if has_alpha else "RGB")
                factor = max(img.size) // (2 * max_side)
                if factor > 1:
                    img = img.reduce(factor)
                img.thumbnail((max_side, max_side), Image.LANCZOS)
            return to_rgb_array(img)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file as `load_image` will return it (EXIF rotation applied),
    from its header only. Any problem raises InputError naming the file."""
    path = Path(path)
    if not path.is_file():
        return load_image(path).shape[:2]  # the usual message for a missing file or a directory
    try:  # what the libraries say is reported once, when load_image decodes the file
        with _pillow_log.collecting([]), warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                orientation = img.getexif().get(0x0112, 1)
    except Exception:
        return load_image(path).shape[:2]  # decoding gives the precise message
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Float32 RGB (H, W, 3), 0..255, from a PIL image of any mode."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grayscale (Pillow opens 16-bit PNG/TIFF gray as I;16 or I): keep its precision.
        a = np.asarray(img, dtype=np.float32) / 257.0
        return np.repeat(np.clip(a, 0.0, 255.0)[:, :, None], 3, axis=2)
    if mode == "F":
        a = np.asarray(img, dtype=np.float32)
        scale = 255.0 if np.nanmax(a) <= 1.0 else 1.0  # float images are usually 0..1
        a = np.nan_to_num(a * scale, nan=0.0)
        return np.repeat(np.clip(a, 0.0, 255.0)[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or img.mode in ("RGBA", "LA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    img = img.convert("RGB")
    return np.asarray(img, dtype=np.float32)


def output_format(path: str | os.PathLike) -> str:
    """Pillow format name for an output path, or InputError when we cannot write it."""
    ext = Path(path).suffix.lower()
    if ext == ".gif":
        raise InputError(f"{path}: a GIF holds 256 colours, too few for a result; use .png, .jpg, .webp, .tif "
                         "or .bmp (--gif FILE.gif writes an animation of the run)")
    if ext not in WRITE_FORMATS:
        known = ", ".join(sorted(WRITE_FORMATS))
        raise InputError(f"{path}: cannot write {ext or 'files without an extension'}; "
                         f"use one of {known}")
    return WRITE_FORMATS[ext]


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Round and clip a 0..255 float RGB array to uint8."""
    return np.clip(np.rint(np.asarray(rgb, dtype=np.float32)), 0, 255).astype(np.uint8)


def to_uint16(rgb: np.ndarray) -> np.ndarray:
    """Scale a 0..255 float RGB array to uint16 (255 -> 65535), rounding and clipping."""
    a = np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 255.0)
    return np.rint(a * 257.0).astype(np.uint16)


# Extensions `save_image(..., bits=16)` accepts; Pillow cannot write 16-bit RGB, so we encode.
WRITE16_EXTENSIONS = (".png", ".tif", ".tiff")


NOTE_KEY = "jaxstyle"  # PNG text chunk keyword; other formats carry the note as their image description
_DESCRIPTION = 0x010E  # the TIFF/EXIF ImageDescription tag


def read_note(path: str | os.PathLike) -> str | None:
    """The note `save_image(..., note=)` stored in an image file (None: none, or unreadable)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                note = img.info.get(NOTE_KEY) if img.format == "PNG" else img.getexif().get(_DESCRIPTION)
    except Exception:  # a damaged or foreign file simply carries no note
        return None
    return note.rstrip("\0") if isinstance(note, str) else None


def save_image(rgb: np.ndarray, path: str | os.PathLike, quality: int = 95, bits: int = 8,
               note: str | None = None) -> Path:
    """Write a 0..255 float RGB (H, W, 3) array atomically; the format follows the extension.

    bits=16 writes 16 bits per channel (PNG or TIFF only), 255.0 becoming 65535. The file is
    decoded again before it replaces `path`: a short write (full disk, file-size limit) raises
    OSError and leaves the previous file as it was (see `files.atomic_write`). `note` (ASCII)
    is stored in the file's metadata, for `read_note` (BMP has none: it is not stored there).
    """
    path = Path(path)
    if bits not in (8, 16) or isinstance(bits, bool):
        raise InputError(f"{path}: bits per channel must be 8 or 16, not {bits!r}")
    h, w = np.shape(rgb)[:2]
    if bits == 16:
        ext = path.suffix.lower()
        if ext not in WRITE16_EXTENSIONS:
            raise InputError(f"{path}: 16-bit output needs a .png or .tif/.tiff file")
        a = to_uint16(rgb)
        encode = write_png16 if ext == ".png" else write_tiff16
        with atomic_write(path, verify=decodes_as((w, h))) as fh:
            encode(fh, a, note)
        return path
    fmt = output_format(path)
    img = Image.fromarray(to_uint8(rgb), "RGB")
    kwargs: dict[str, Any] = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    if note is not None and fmt == "PNG":
        from PIL.PngImagePlugin import PngInfo
        info = PngInfo()
        info.add_text(NOTE_KEY, note)
        kwargs["pnginfo"] = info
    elif note is not None and fmt in ("JPEG", "WEBP", "TIFF"):
        exif = Image.Exif()
        exif[_DESCRIPTION] = note
        kwargs["exif"] = exif.tobytes()
    with atomic_write(path, verify=decodes_as((w, h))) as fh:
        img.save(fh, format=fmt, **kwargs)
    return path


def decodes_as(size: tuple[int, int]):
    """A check for `atomic_write`: the written file decodes completely, at `size` (w, h)."""
    def verify(path: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                img.load()
                if img.size != tuple(size):
                    raise ValueError(f"decodes at {img.size[0]}x{img.size[1]}, not {size[0]}x{size[1]}")
    return verify


def _check_rgb16(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.uint16 or a.ndim != 3 or a.shape[2] != 3 or 0 in a.shape:
        raise ValueError(f"expected a non-empty uint16 (H, W, 3) array, got {a.dtype} {a.shape}")
    return a


def write_png16(fh: IO[bytes], a: np.ndarray, note: str | None = None) -> None:
    """Write a uint16 (H, W, 3) array to a binary file as a 16-bit-per-channel RGB PNG (with
    `note` as a text chunk)."""
    a = _check_rgb16(a)
    h, w, _ = a.shape

    def chunk(kind: bytes, data: bytes) -> None:
        fh.write(struct.pack(">I", len(data)) + kind + data
                 + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind))))

    fh.write(b"\x89PNG\r\n\x1a\n")
    chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))  # 16 bits, RGB, no interlace
    if note is not None:
        chunk(b"tEXt", NOTE_KEY.encode("latin-1") + b"\0" + note.encode("latin-1"))
    z = zlib.compressobj(6)
    step = max(1, (1 << 20) // (w * 6 + 1))  # about 1 MiB of scanlines at a time
    for y in range(0, h, step):
        rows = a[y:y + step].astype(">u2").view(np.uint8).reshape(-1, w * 6)
        lines = np.zeros((rows.shape[0], w * 6 + 1), np.uint8)  # column 0: filter type 0
        lines[:, 1:] = rows
        data = z.compress(lines.tobytes())
        if data:
            chunk(b"IDAT", data)
    chunk(b"IDAT", z.flush())
    chunk(b"IEND", b"")


def write_tiff16(fh: IO[bytes], a: np.ndarray, note: str | None = None) -> None:
    """Write a uint16 (H, W, 3) array to a binary file as an uncompressed 16-bit RGB TIFF (with
    `note` as its ImageDescription)."""
    a = _check_rgb16(a)
    h, w, _ = a.shape
    row = w * 6
    rows_per_strip = max(1, min(h, (1 << 16) // row))  # strips of about 64 KiB
    starts = range(0, h, rows_per_strip)
    counts = [min(rows_per_strip, h - y) * row for y in starts]
    ASCII, SHORT, LONG, RATIONAL = 2, 3, 4, 5
    text = list(note.encode("ascii", "replace") + b"\0" + (b"" if len(note) % 2 else b"\0")) if note else []
    tags = [(256, LONG, [w]), (257, LONG, [h]), (258, SHORT, [16, 16, 16]),
            (259, SHORT, [1]), (262, SHORT, [2]), *([(_DESCRIPTION, ASCII, text)] if text else []),
            (273, LONG, [0] * len(counts)),
            (277, SHORT, [3]), (278, LONG, [rows_per_strip]), (279, LONG, counts),
            (282, RATIONAL, [72, 1]), (283, RATIONAL, [72, 1]), (284, SHORT, [1]),
            (296, SHORT, [2])]  # sorted by tag, as the IFD requires
    strips = [t for t, _, _ in tags].index(273)

    def pack(typ: int, values: list) -> bytes:
        if typ == ASCII:
            return bytes(values)
        return struct.pack(f"<{len(values)}{'H' if typ == SHORT else 'I'}", *values)

    ifd_size = 2 + 12 * len(tags) + 4
    extra_size = sum(len(pack(t, v)) for _, t, v in tags if len(pack(t, v)) > 4)
    data_start = 8 + ifd_size + extra_size  # all sizes are even: offsets stay word-aligned
    if data_start + h * row >= 1 << 32:
        raise ValueError(f"image of {w}x{h} is too large for a classic TIFF")
    tags[strips] = (273, LONG, [data_start + y * row for y in starts])
    ifd, extra = [struct.pack("<H", len(tags))], []
    offset = 8 + ifd_size
    for tag, typ, values in tags:
        payload = pack(typ, values)
        count = len(values) // 2 if typ == RATIONAL else len(values)
        if len(payload) <= 4:
            ifd.append(struct.pack("<HHI", tag, typ, count) + payload.ljust(4, b"\0"))
        else:
            ifd.append(struct.pack("<HHII", tag, typ, count, offset))
            extra.append(payload)
            offset += len(payload)
    ifd.append(struct.pack("<I", 0))  # no further IFDs
    fh.write(b"II*\0" + struct.pack("<I", 8) + b"".join(ifd) + b"".join(extra))
    for y in starts:
        fh.write(a[y:y + rows_per_strip].astype("<u2").tobytes())


def as_rgb(image: "str | os.PathLike | Image.Image | np.ndarray", name: str = "image") -> np.ndarray:
    """Float32 RGB (H, W, 3), 0..255, from a path, a PIL image or an array.

    Arrays may be uint8/uint16 or float (floats with a maximum of at most 1 are taken as
    0..1), grayscale (H, W) or with 1, 3 or 4 channels (alpha is composited on white).
    """
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return to_rgb_array(ImageOps.exif_transpose(image))
    a = np.asarray(image)
    if a.dtype == np.uint16:
        a = a.astype(np.float32) / 257.0
    elif a.dtype.kind in "ui" or a.dtype == bool:
        a = a.astype(np.float32)
    elif a.dtype.kind == "f":
        a = a.astype(np.float32)
        if a.size and np.nanmax(a) <= 1.0:
            a = a * 255.0
    else:
        raise InputError(f"{name}: cannot use an array of dtype {a.dtype} as an image")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise InputError(f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) array, got {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{name}: array contains NaN or infinite values")
    if a.shape[2] == 4:
        alpha = a[:, :, 3:] / 255.0
        a = a[:, :, :3] * alpha + 255.0 * (1.0 - alpha)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.clip(a, 0.0, 255.0).astype(np.float32)

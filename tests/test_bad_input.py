"""The bad-input corpus: every case gives a one-line error naming the problem, a non-zero exit
code, no traceback, and leaves every file as it was. Unusual but valid images work."""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_keras_h5
from jaxstyle.errors import EXIT_ERROR, EXIT_USAGE
from test_cli import run_cli


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, image_dir, synthetic_params):
    """Bad files, written once: name -> path."""
    d = tmp_path_factory.mktemp("corpus")
    good = image_dir / "content.png"
    files = {}
    (d / "empty.jpg").write_bytes(b"")
    files["empty"] = d / "empty.jpg"
    (d / "text.jpg").write_text("these are not the pixels you are looking for\n")
    files["text"] = d / "text.jpg"
    rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    Image.fromarray(rgb).save(d / "full.jpg", quality=90)
    (d / "trunc.jpg").write_bytes((d / "full.jpg").read_bytes()[:700])
    files["truncated jpeg"] = d / "trunc.jpg"
    (d / "trunc.png").write_bytes(good.read_bytes()[:300])
    files["truncated png"] = d / "trunc.png"
    (d / "bomb.png").write_bytes(_png_claiming(20000, 20000))
    files["bomb"] = d / "bomb.png"
    Image.new("RGB", (1, 1), (200, 10, 10)).save(d / "dot.png")
    files["1x1"] = d / "dot.png"
    (d / "dir.png").mkdir()
    files["directory"] = d / "dir.png"
    import h5py
    with h5py.File(d / "notvgg.h5", "w") as f:
        f.create_dataset("dense/kernel", data=np.zeros((4, 4), np.float32))
    files["h5 not vgg"] = d / "notvgg.h5"
    full_h5 = write_keras_h5(d / "full.h5", synthetic_params)
    (d / "trunc.h5").write_bytes(full_h5.read_bytes()[: 5_000_000])
    files["h5 truncated"] = d / "trunc.h5"
    k = np.zeros((3, 3, 64, 32), np.float32)
    files["h5 misshapen"] = write_keras_h5(d / "shape.h5", synthetic_params,
                                           override={"block1_conv2": (k, np.zeros(32, np.float32))})
    nan_k = synthetic_params["block5_conv1"]["kernel"].copy()
    nan_k[1, 1, 1, 1] = np.nan
    files["h5 nan"] = write_keras_h5(d / "nan.h5", synthetic_params,
                                     override={"block5_conv1": (nan_k, synthetic_params["block5_conv1"]["bias"])})
    return files


def _cases(corpus, image_dir, out_dir):
    c, s = image_dir / "content.png", image_dir / "style.png"
    o = out_dir / "out.png"
    ro = Path("/proc") if os.geteuid() == 0 else out_dir / "readonly"
    # (label, argv after `jaxstyle`, exit code, message fragment); {W} = synthetic weights
    return [
        ("missing file", ["transfer", out_dir / "nope.jpg", s, "-o", o], EXIT_ERROR, "nope.jpg: no such file"),
        ("directory as image", ["transfer", c, corpus["directory"], "-o", o], EXIT_ERROR, "is a directory"),
        ("empty file", ["transfer", corpus["empty"], s, "-o", o], EXIT_ERROR, "empty.jpg: empty file"),
        ("truncated jpeg", ["transfer", corpus["truncated jpeg"], s, "-o", o], EXIT_ERROR,
         "trunc.jpg: corrupt or truncated image"),
        ("truncated png", ["transfer", c, corpus["truncated png"], "-o", o], EXIT_ERROR,
         "trunc.png: corrupt or truncated image"),
        ("text named .jpg", ["content", corpus["text"], "-o", o], EXIT_ERROR,
         "text.jpg: not an image file Pillow can decode"),
        ("decompression bomb", ["style", corpus["bomb"], "-o", o], EXIT_ERROR,
         "bomb.png: image too large to decode safely"),
        ("1x1 image", ["transfer", corpus["1x1"], s, "-o", o], EXIT_ERROR, "dot.png: 1x1 pixels is too small"),
        ("size 0", ["transfer", c, s, "-o", o, "--size", "0"], EXIT_ERROR, "--size must be an integer from 16"),
        ("size negative", ["transfer", c, s, "-o", o, "--size", "-7"], EXIT_ERROR, "--size must be"),
        ("size absurd", ["transfer", c, s, "-o", o, "--size", "1000000"], EXIT_ERROR, "--size must be"),
        ("size not a number", ["transfer", c, s, "-o", o, "--size", "big"], EXIT_USAGE, "'big' is not a valid integer"),
        ("unknown layer", ["transfer", c, s, "-o", o, "--content-layers", "block4_conv9"], EXIT_ERROR,
         "unknown content layer 'block4_conv9'"),
        ("layer weights length", ["style", s, "-o", o, "--style-layer-weights", "1,1,1"], EXIT_ERROR,
         "--style-layer-weights has 3 value(s) for 5 style layer(s)"),
        ("negative weight", ["transfer", c, s, "-o", o, "--tv-weight", "-1"], EXIT_ERROR,
         "--tv-weight must be finite and non-negative"),
        ("nan weight", ["transfer", c, s, "-o", o, "--style-weight", "nan"], EXIT_ERROR,
         "--style-weight must be finite"),
        ("inf layer weight", ["transfer", c, s, "-o", o, "--style-layer-weights", "1,1,inf,1,1"], EXIT_ERROR,
         "--style-layer-weights must be finite"),
        ("h5 not vgg16", ["transfer", c, s, "-o", o, "--weights", corpus["h5 not vgg"]], EXIT_ERROR,
         "layer block1_conv1 is missing; not a VGG16 notop weights file"),
        ("h5 truncated", ["transfer", c, s, "-o", o, "--weights", corpus["h5 truncated"]], EXIT_ERROR,
         "trunc.h5"),
        ("h5 misshapen", ["transfer", c, s, "-o", o, "--weights", corpus["h5 misshapen"]], EXIT_ERROR,
         "layer block1_conv2 has kernel (3, 3, 64, 32)"),
        ("h5 with nan", ["transfer", c, s, "-o", o, "--weights", corpus["h5 nan"]], EXIT_ERROR,
         "layer block5_conv1 contains NaN"),
        ("missing weights file", ["transfer", c, s, "-o", o, "--weights", out_dir / "no.h5"], EXIT_ERROR,
         "no.h5: no such weights file"),
        ("missing output dir", ["transfer", c, s, "-o", out_dir / "nodir" / "o.png"], EXIT_ERROR,
         "output directory"),
        ("unwritable output dir", ["transfer", c, s, "-o", ro / "o.png"], EXIT_ERROR, "is not writable"),
        ("output is an input", ["transfer", c, s, "-o", s], EXIT_ERROR, "is an input; refusing to overwrite it"),
        ("output is a directory", ["transfer", c, s, "-o", out_dir], EXIT_ERROR, "is a directory"),
        ("unknown extension", ["transfer", c, s, "-o", out_dir / "o.xyz"], EXIT_ERROR, "cannot write .xyz"),
        ("no extension", ["transfer", c, s, "-o", out_dir / "result"], EXIT_ERROR,
         "cannot write files without an extension"),
        ("init file missing", ["transfer", c, s, "-o", o, "--init", out_dir / "start.png"], EXIT_ERROR,
         "start.png: no such file"),
        ("init content in style mode", ["style", s, "-o", o, "--init", "content"], EXIT_ERROR,
         "--init content needs a content image"),
        ("blend length", ["transfer", c, s, "-o", o, "--style-blend", "0.5,0.5"], EXIT_ERROR,
         "--style-blend has 2 value(s) for 1 style image(s)"),
        ("checkpoint missing", ["resume", out_dir / "none.ckpt.npz"], EXIT_ERROR, "no such checkpoint file"),
        ("checkpoint not one", ["resume", c], EXIT_ERROR, "not a readable jaxstyle checkpoint"),
        ("unknown option", ["transfer", c, s, "-o", o, "--colour", "red"], EXIT_USAGE, "No such option"),
    ]


def _state(*dirs: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for d in dirs for p in sorted(d.rglob("*")) if p.is_file()}


def test_bad_input_corpus(capsys, tmp_path, corpus, image_dir, synthetic_h5):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    if os.geteuid() != 0:
        (out_dir / "readonly").mkdir()
        (out_dir / "readonly").chmod(0o500)
    corpus_dir = next(iter(corpus.values())).parent
    failures = []
    for label, argv, code, message in _cases(corpus, image_dir, out_dir):
        argv = [str(a) for a in argv]
        if "--weights" not in argv and argv[0] != "resume":
            argv += ["--weights", str(synthetic_h5)]
        argv += [] if argv[0] == "resume" else ["--size", "32"] if "--size" not in argv else []
        argv += [] if argv[0] == "resume" else ["--iterations", "2"]
        before = _state(out_dir, image_dir, corpus_dir)
        got_code, out, err = run_cli(capsys, *argv)
        lines = err.strip().splitlines()
        problems = []
        if got_code != code:
            problems.append(f"exit {got_code} != {code}")
        if len(lines) != 1 or not lines[0].startswith("jaxstyle: error: "):
            problems.append(f"not one error line: {err!r}")
        elif message not in lines[0]:
            problems.append(f"message {lines[0]!r} lacks {message!r}")
        if "Traceback" in out + err:
            problems.append("traceback printed")
        if _state(out_dir, image_dir, corpus_dir) != before:
            problems.append("files changed")
        if problems:
            failures.append(f"{label}: {'; '.join(problems)}")
    assert not failures, "\n".join(failures)


# Where the network's depth is not the point, two layers of it: a tenth of the default's compile time.
SHALLOW = ("--content-layers", "block1_conv2", "--style-layers", "block1_conv1")


def test_unusual_valid_images_work(capsys, tmp_path, image_dir, synthetic_h5):
    base = Image.open(image_dir / "content.png").convert("RGB")
    rgba = base.convert("RGBA")
    alpha = np.full(base.size[::-1], 255, np.uint8)
    alpha[:, :10] = 0
    rgba.putalpha(Image.fromarray(alpha))
    pal = base.convert("P", palette=Image.ADAPTIVE, colors=16)
    variants = {
        "gray.png": base.convert("L"),
        "rgba.png": rgba,
        "palette_transparent.png": pal,
        "cmyk.jpg": base.convert("CMYK"),
        "gray16.png": Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257),
        "wide.png": base.resize((400, 40)),
        "tall.png": base.resize((40, 400)),
    }
    (tmp_path / "long").mkdir()
    for name, img in variants.items():
        kwargs = {"transparency": 0} if name == "palette_transparent.png" else {}
        img.save(tmp_path / ("long" if name in ("wide.png", "tall.png") else "") / name, **kwargs)
    exif = Image.Exif()
    exif[0x0112] = 6
    base.save(tmp_path / "rotated.jpg", exif=exif)
    expected = {"wide.png": (160, 16), "tall.png": (16, 160), "rotated.jpg": (48, 64)}
    # Two folder runs (one compiled layout per shape) decode every file as a single run does.
    for folder, size in ((tmp_path, 64), (tmp_path / "long", 160)):
        code, _, err = run_cli(capsys, "transfer", folder, image_dir / "style.png", "-o", folder / "out",
                               "--weights", synthetic_h5, "--size", size, "--iterations", 1,
                               *SHALLOW)
        assert code == 0, err
    for name in [*variants, "rotated.jpg"]:
        folder = tmp_path / "long" if name in ("wide.png", "tall.png") else tmp_path
        out = folder / "out" / f"{Path(name).stem}_style.png"
        assert Image.open(out).size == expected.get(name, (64, 48)), name

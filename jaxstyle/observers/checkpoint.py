"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a ZIP file holding a JSON header (`header.json`: the configuration, the mode,
the inputs and their SHA-256, the weights' SHA-256, the seed, each array's dtype and shape, and
a digest of the arrays) and every array of one image's loop state (the image, the L-BFGS
history, counters), each deflated after its bytes are regrouped by significance (all first
bytes, then all second bytes, ...: the exponents of float32 values compress, their mantissas
hardly). The arrays keep their own dtype: resuming must give the image an uninterrupted run
gives, bit for bit, so nothing is rounded. Resuming rebuilds the targets from the same inputs
and continues the same compiled loop.

Reading trusts nothing in the file: any damage (a flipped bit, a truncated file, another
version's header, a header claiming arrays larger than the file can hold) is one InputError
naming the file, and nothing is allocated beyond what the file's bytes actually decompress to.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxstyle.config import MODES, Config
from jaxstyle.errors import InputError, first_line
from jaxstyle.files import CHECKPOINT_SUFFIX, atomic_write, write_or_keep

FORMAT = "jaxstyle-checkpoint"
VERSION = 3  # 3: byte-grouped, deflated arrays in a ZIP with a JSON header (2: numpy's .npz)
HEADER = "header.json"
MAX_HEADER_BYTES = 1 << 20
MAX_LEAVES = 4096
DEFLATE_MAX_RATIO = 1032  # deflate cannot expand a stream's compressed bytes more than this
# Measured on a 256 px loop state (the L-BFGS history, 2 x 100 images of 192x256x3 float32, is
# 98% of it): its bytes grouped by significance deflate to 0.70 of their size at level 1 in 3.0 s,
# 0.68 at level 6 in 11.5 s (ungrouped: 0.82). The middle two bytes of a float32 mantissa do not
# compress at all, so no lossless setting does much better.
COMPRESS_LEVEL = 1
DTYPES = ("float32", "float64", "float16", "bfloat16", "int32", "int64", "uint32", "uint8", "int8", "bool")


def _dtype(name: str) -> np.dtype:
    return np.dtype(jax.numpy.dtype(name)) if name == "bfloat16" else np.dtype(name)


class _Damaged(Exception):
    """What is wrong with a checkpoint file (becomes one InputError)."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the header's facts and the loop state's arrays."""

    path: Path
    mode: str
    config: Config
    inputs: dict[str, Any]  # {"content": path | None, "styles": [paths], "style_blend": [...] | None}
    input_sha256: dict[str, str]  # path -> sha256, for every input file
    weights_sha256: str | None
    weights_path: str | None
    iteration: int
    evaluations: int
    output: str | None
    leaves: list[np.ndarray]
    stage: int = 0  # coarse-to-fine stage the state belongs to (0 = first)
    offset: tuple[int, int] = (0, 0)  # iterations and evaluations of the stages before it


def default_path(output: str | os.PathLike) -> Path:
    """`out.png` -> `out.png.ckpt.npz`, beside the result (`out.jpg` gets its own)."""
    output = Path(output)
    return output.with_name(output.name + CHECKPOINT_SUFFIX)


def _digest(leaves: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in leaves:
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _grouped(a: np.ndarray) -> bytes:
    """The array's bytes regrouped by significance: every element's byte 0, then byte 1, ..."""
    raw = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    return raw.reshape(-1, a.dtype.itemsize).T.tobytes() if a.dtype.itemsize > 1 else raw.tobytes()


def _ungrouped(data: bytes | bytearray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    raw = np.frombuffer(data, np.uint8)
    if dtype.itemsize > 1:
        raw = raw.reshape(dtype.itemsize, -1).T
    return np.ascontiguousarray(raw).view(dtype).reshape(shape)


def save(path: str | os.PathLike, state: Any, *, mode: str, config: Config, inputs: dict[str, Any],
         input_sha256: dict[str, str], weights_sha256: str | None, weights_path: str | None,
         output: str | None, stage: int = 0, offset: tuple[int, int] = (0, 0),
         keep_at: Path | None = None) -> Path:
    """Write the loop state `state` (a pytree) and its provenance atomically.

    When it cannot be written, the checkpoint is kept elsewhere (`keep_at` first if given, then
    beside it, the temporary directory, the current directory) and OutputError says where and
    how to resume from it; the previous checkpoint at `path` is left as it was."""
    path = Path(path)
    leaves = [np.asarray(x) for x in jax.tree.leaves(state)]
    header = {
        "format": FORMAT, "version": VERSION, "mode": mode, "config": config.to_dict(),
        "inputs": inputs, "input_sha256": input_sha256, "weights_sha256": weights_sha256,
        "weights_path": weights_path,
        "iteration": int(np.asarray(state.iteration)), "evaluations": int(np.asarray(state.evaluations)),
        "output": output, "seed": config.seed, "stage": stage, "offset": [int(v) for v in offset],
        "leaves": [{"dtype": a.dtype.name, "shape": list(a.shape)} for a in leaves], "digest": _digest(leaves),
    }

    def write(p: Path) -> Path:
        with atomic_write(p, verify=_readable_zip) as fh:
            with zipfile.ZipFile(fh, "w") as z:
                z.writestr(HEADER, json.dumps(header), compress_type=zipfile.ZIP_STORED)
                for i, a in enumerate(leaves):
                    z.writestr(_leaf_name(i), _grouped(a), compress_type=zipfile.ZIP_DEFLATED,
                               compresslevel=COMPRESS_LEVEL)
        return p

    return write_or_keep(path, write, what="checkpoint", keep_at=keep_at,
                         advice=lambda kept: f"continue with `jaxstyle resume {kept}`")


def _leaf_name(i: int) -> str:
    return f"leaf_{i:04d}.bin"


def _readable_zip(path: Path) -> None:
    """The written archive's directory (at its end) reads back: it was written to the end."""
    with zipfile.ZipFile(path) as z:
        if HEADER not in z.namelist():
            raise ValueError("no header in the archive")


def _int(value: Any, what: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _Damaged(f"{what} is {str(value)[:40]!r}, not an integer from {low}")
    return value


def _text(value: Any, what: str, optional: bool = True) -> str | None:
    if (value is None and optional) or isinstance(value, str):
        return value
    raise _Damaged(f"{what} is not text")


def _read_header(z: zipfile.ZipFile, file_size: int) -> dict[str, Any]:
    """The header, checked field by field (types and ranges), before any array is read."""
    names = z.namelist()
    if HEADER not in names:
        if "header.npy" in names:
            raise _Damaged("it is an earlier jaxstyle's checkpoint (format version 2); this jaxstyle reads "
                           f"version {VERSION}")
        raise _Damaged("no jaxstyle header in it")
    info = z.getinfo(HEADER)
    if info.file_size > MAX_HEADER_BYTES or info.compress_size > file_size:
        raise _Damaged(f"its header claims {info.file_size} bytes")
    with z.open(info) as fh:
        raw = fh.read(MAX_HEADER_BYTES + 1)
    if len(raw) > MAX_HEADER_BYTES:
        raise _Damaged("its header is too large")
    header = json.loads(raw.decode("utf-8"))
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _Damaged("not a jaxstyle checkpoint header")
    if header.get("version") != VERSION:
        raise _Damaged(f"format version {str(header.get('version'))[:20]}; this jaxstyle reads version {VERSION}")
    if header.get("mode") not in MODES:
        raise _Damaged("unknown mode")
    for key in ("iteration", "evaluations", "stage"):
        _int(header.get(key), key)
    offset = header.get("offset")
    if not isinstance(offset, list) or len(offset) != 2:
        raise _Damaged("offset is not two integers")
    for v in offset:
        _int(v, "offset")
    for key in ("output", "weights_sha256", "weights_path"):
        _text(header.get(key), key)
    _text(header.get("digest"), "digest", optional=False)
    inputs, hashes = header.get("inputs"), header.get("input_sha256")
    if not isinstance(inputs, dict) or not isinstance(hashes, dict) or \
            not all(isinstance(k, str) and isinstance(v, str) for k, v in hashes.items()):
        raise _Damaged("inputs are not a table of names")
    if not isinstance(header.get("config"), dict):
        raise _Damaged("no settings")
    leaves = header.get("leaves")
    if not isinstance(leaves, list) or len(leaves) > MAX_LEAVES:
        raise _Damaged("no list of arrays")
    for spec in leaves:
        if not isinstance(spec, dict) or spec.get("dtype") not in DTYPES or not isinstance(spec.get("shape"), list) \
                or len(spec["shape"]) > 8:
            raise _Damaged("an array of unknown type or shape")
        for d in spec["shape"]:
            _int(d, "an array's dimension")
    return header


def _read_leaf(z: zipfile.ZipFile, i: int, spec: dict[str, Any], file_size: int) -> np.ndarray:
    """Array `i`, read only as far as the file's bytes go: its claimed size must agree with the
    archive's entry, which deflate must be able to make from the bytes the entry occupies."""
    dtype, shape = _dtype(spec["dtype"]), tuple(spec["shape"])
    nbytes = math.prod(shape) * dtype.itemsize
    info = z.getinfo(_leaf_name(i))
    if info.compress_size > file_size or info.file_size != nbytes or \
            nbytes > DEFLATE_MAX_RATIO * info.compress_size + 1024:
        raise _Damaged(f"array {i} claims {nbytes} bytes, its entry {info.file_size} in {info.compress_size}")
    data = bytearray()
    with z.open(info) as fh:
        while len(data) <= nbytes:
            chunk = fh.read(min(1 << 22, nbytes + 1 - len(data)))
            if not chunk:
                break
            data += chunk
    if len(data) != nbytes:
        raise _Damaged(f"array {i} holds {len(data)} bytes, not {nbytes}")
    return _ungrouped(data, dtype, shape)


def load(path: str | os.PathLike) -> Checkpoint:
    """Read and verify a checkpoint; one InputError naming the file if it is missing, damaged,
    of another version, or not one (see the module doc)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint file")
    try:
        file_size = path.stat().st_size
        with zipfile.ZipFile(path) as z:
            header = _read_header(z, file_size)
            leaves = [_read_leaf(z, i, spec, file_size) for i, spec in enumerate(header["leaves"])]
        if _digest(leaves) != header["digest"]:
            raise _Damaged("its arrays do not match their digest")
        config = Config.from_dict(header["config"])
    except Exception as e:  # zipfile, zlib, json and Config raise many kinds; every one means damage
        reason = first_line(e, 120) if isinstance(e, _Damaged) else f"{type(e).__name__}: {first_line(e, 100)}"
        raise InputError(f"{path}: damaged checkpoint, not a readable jaxstyle checkpoint ({reason}); "
                         "delete it to start over") from None
    return Checkpoint(path, header["mode"], config, header["inputs"], header["input_sha256"],
                      header["weights_sha256"], header["weights_path"], header["iteration"],
                      header["evaluations"], header["output"], leaves, header["stage"], tuple(header["offset"]))


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is a file with a jaxstyle checkpoint's header (its arrays are not read)."""
    try:
        path = Path(path)
        with zipfile.ZipFile(path) as z:
            _read_header(z, path.stat().st_size)
        return True
    except Exception:
        return False


def restore(checkpoint: Checkpoint, like: Any) -> Any:
    """The checkpoint's loop state, as a pytree shaped like `like` (checked leaf by leaf)."""
    flat, treedef = jax.tree.flatten(like)
    if len(flat) != len(checkpoint.leaves):
        raise InputError(f"{checkpoint.path}: checkpoint holds {len(checkpoint.leaves)} arrays, this "
                         f"run's optimizer state has {len(flat)}; it was made with other settings")
    for a, b in zip(checkpoint.leaves, flat):
        if a.shape != tuple(b.shape) or a.dtype != b.dtype:
            raise InputError(f"{checkpoint.path}: checkpoint array {a.shape} {a.dtype} does not fit this "
                             f"run's {tuple(b.shape)} {b.dtype}; it was made with other settings")
    return jax.tree.unflatten(treedef, [jax.numpy.asarray(a) for a in checkpoint.leaves])

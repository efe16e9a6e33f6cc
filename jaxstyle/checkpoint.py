"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is an .npz file holding every array of one image's loop state (the image, the
L-BFGS history, counters) and a JSON header with the configuration, the mode, the inputs and
their SHA-256, the weights' SHA-256, the seed, and a digest of the arrays. Resuming rebuilds
the targets from the same inputs and continues the same compiled loop, so the final image
equals that of an uninterrupted run.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .config import Config
from .errors import InputError, first_line
from .files import CHECKPOINT_SUFFIX, atomic_write, write_or_keep

FORMAT = "jaxstyle-checkpoint"
VERSION = 2  # 2: the loop state of the one-run-path solver (its own line search)


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
        "output": output, "seed": config.seed, "stage": stage, "offset": list(offset),
        "leaves": len(leaves), "digest": _digest(leaves),
    }
    arrays = {f"leaf_{i:04d}": a for i, a in enumerate(leaves)}

    def write(p: Path) -> Path:
        with atomic_write(p, verify=_readable_zip) as fh:
            np.savez(fh, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)
        return p

    return write_or_keep(path, write, what="checkpoint", keep_at=keep_at,
                         advice=lambda kept: f"continue with `jaxstyle resume {kept}`")


def _readable_zip(path: Path) -> None:
    """The written archive's directory (at its end) reads back: it was written to the end."""
    with zipfile.ZipFile(path) as z:
        if "header.npy" not in z.namelist():
            raise ValueError("no header in the archive")


def load(path: str | os.PathLike) -> Checkpoint:
    """Read and verify a checkpoint; InputError naming the file if it is not a valid one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint file")
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(bytes(z["header"]).decode())
            if header.get("format") != FORMAT:
                raise ValueError("not a jaxstyle checkpoint")
            leaves = [z[f"leaf_{i:04d}"] for i in range(int(header["leaves"]))]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable jaxstyle checkpoint ({first_line(e, 120)})") from None
    if header.get("version") != VERSION:
        raise InputError(f"{path}: checkpoint format version {header.get('version')} is not supported "
                         f"(this jaxstyle reads version {VERSION})")
    if _digest(leaves) != header.get("digest"):
        raise InputError(f"{path}: checkpoint is corrupted (its arrays do not match their digest)")
    try:
        config = Config.from_dict(header["config"])
    except Exception as e:  # a ConfigError with its own message, or a malformed header
        raise InputError(f"{path}: checkpoint has an invalid configuration ({e})") from None
    return Checkpoint(path, header["mode"], config, header["inputs"], header["input_sha256"],
                      header.get("weights_sha256"), header.get("weights_path"), int(header["iteration"]),
                      int(header["evaluations"]), header.get("output"), leaves,
                      int(header.get("stage", 0)), tuple(header.get("offset", (0, 0))))


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

"""Continuing from checkpoints: finding an image's checkpoint, and refusing one that belongs to
another run.

A run that finds a checkpoint beside an output (`OUT.png.ckpt.npz`) continues from it when it
was made by the same settings, inputs and weights, and refuses otherwise: optimizer state is
never discarded silently. `jaxstyle resume CKPT` builds its job from the checkpoint itself.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jaxstyle.config import INITS, RUN_ONLY, Config
from jaxstyle.errors import InputError
from jaxstyle.files import file_sha256
from jaxstyle.images import imageio, masks
from jaxstyle.observers import checkpoint as ckpt_mod
from jaxstyle.run.job import Item, Job


@dataclass
class Resumed:
    """Where one image continues: its stage, the counts of the stages before, its loop state."""

    path: Path
    stage: int
    offset: tuple[int, int]
    weights_sha256: str | None
    iteration: int = 0  # the image's iterations over all stages

    def finished(self, config: Config) -> bool:
        """Whether the checkpointed image has done all its iterations (at the last stage)."""
        return self.stage == config.scales - 1 and self.iteration >= sum(n for _, n in config.stages())

    def check_weights(self, sha256: str | None) -> None:
        if self.weights_sha256 and sha256 and sha256 != self.weights_sha256:
            raise InputError(f"{self.path}: checkpoint was made with other VGG16 weights (SHA-256 "
                             f"{self.weights_sha256[:12]}..., these are {sha256[:12]}...)")

    def state(self, like: Any) -> Any:
        """The loop state, shaped like `like` (one image's), checked leaf by leaf (read now: a
        folder's checkpoints are not all held in memory at once)."""
        import jax
        leaves = ckpt_mod.load(self.path).leaves
        flat, treedef = jax.tree.flatten(like)
        if len(flat) != len(leaves):
            raise InputError(f"{self.path}: checkpoint holds {len(leaves)} arrays, this run's "
                             f"optimizer state has {len(flat)}; it was made with other settings")
        for a, b in zip(leaves, flat):
            if a.shape != tuple(b.shape) or a.dtype != b.dtype:
                raise InputError(f"{self.path}: checkpoint array {a.shape} {a.dtype} does not fit this "
                                 f"run's {tuple(b.shape)} {b.dtype}; it was made with other settings")
        return jax.tree.unflatten(treedef, leaves)


def _show(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)


def _sha256(image: Any) -> str:
    if isinstance(image, (str, os.PathLike)):
        return file_sha256(image)
    return hashlib.sha256(np.ascontiguousarray(imageio.as_rgb(image)).tobytes()).hexdigest()


def input_hashes(item: Item, config: Config) -> dict[str, str]:
    """SHA-256 of every input (files' bytes, or in-memory images' pixels), by role."""
    named = {"content": item.content} if item.content is not None else {}
    named.update({f"style{i + 1}": s for i, s in enumerate(item.styles) if not masks.is_keep(s)})
    if item.content_mask is not None:
        named["content_mask"] = item.content_mask
    named.update({f"style_mask{i + 1}": m for i, m in enumerate(item.style_masks) if m is not None})
    if item.init is not None:
        named["init"] = item.init
    elif config.init not in INITS:
        named["init"] = config.init
    out = {k: _sha256(v) for k, v in named.items()}
    if item.temporal is not None:  # a video frame's target and weights, as arrays
        out["temporal"] = hashlib.sha256(b"".join(np.ascontiguousarray(a, np.float32).tobytes()
                                                  for a in item.temporal)).hexdigest()
    return out


# Settings that change neither the result nor its file: a result made with other values of
# these is the same result.
NOT_IN_RESULT = ("save_every", "checkpoint_every", "keep_checkpoint", "batch_size", "devices", "device",
                 "print_every")
NOTE_PREFIX = "jaxstyle result, settings "


def result_note(job: Job, config: Config, item: Item) -> str:
    """What a finished result's file records about how it was made (`imageio.save_image`'s
    note): a digest of the mode, the settings that shape the image (`config`, resolved), every
    input's SHA-256, the style blend and the file's own quality and bit depth. A folder run
    finds a result "already done" only when its note is the one it would write."""
    settings = {k: v for k, v in config.to_dict().items() if k not in NOT_IN_RESULT}
    doc = {"mode": job.mode, "config": settings, "inputs": input_hashes(item, config),
           "style_blend": list(job.style_blend) if job.style_blend is not None else None,
           "quality": job.quality, "bits": job.bits}
    return NOTE_PREFIX + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


def find(job: Job, config: Config, item: Item) -> Resumed | None:
    """The checkpoint `item` continues from (the job's explicit one, or the one beside its
    output), checked against this run's settings and inputs; None when there is none."""
    path = job.resume or item.checkpoint
    if path is None or (job.resume is None and not path.exists()):
        return None
    ck = ckpt_mod.load(path)
    if ck.mode != job.mode:
        raise InputError(f"{path}: checkpoint is from `jaxstyle {ck.mode}`, not `jaxstyle {job.mode}`")
    advice = f"continue it with `jaxstyle resume {path}`, or delete it to start over"
    for f in dataclasses.fields(Config):
        mine, theirs = getattr(config, f.name), getattr(ck.config, f.name)
        if f.name not in RUN_ONLY and mine != theirs:
            raise InputError(f"{path}: checkpoint was made with --{f.name.replace('_', '-')} {_show(theirs)}, "
                             f"not {_show(mine)}; {advice}")
    hashes = input_hashes(item, config)
    for name in sorted(set(ck.input_sha256) | set(hashes)):
        if hashes.get(name) != ck.input_sha256.get(name):
            what = "differs from the one" if name in hashes and name in ck.input_sha256 else \
                ("was not given to the run" if name in hashes else "is missing from the inputs")
            raise InputError(f"{path}: input {name} {what} the checkpoint was made with; {advice}")
    return Resumed(Path(path), ck.stage, ck.offset, ck.weights_sha256, ck.offset[0] + ck.iteration)


def provenance(job: Job, config: Config, item: Item, weights_sha256: str | None,
               weights_path: str | None) -> dict[str, Any]:
    """What a checkpoint of `item` records about where it came from (absolute paths)."""
    def where(x):
        if masks.is_keep(x):
            return x
        return str(Path(x).resolve()) if isinstance(x, (str, os.PathLike)) else None

    return {"mode": job.mode, "config": config,
            "inputs": {"content": where(item.content) if item.content is not None else None,
                       "styles": [where(s) for s in item.styles],
                       "style_blend": list(job.style_blend) if job.style_blend is not None else None,
                       "content_mask": where(item.content_mask) if item.content_mask is not None else None,
                       "style_masks": [where(m) if m is not None else None for m in item.style_masks]},
            "input_sha256": input_hashes(item, config), "weights_sha256": weights_sha256,
            "weights_path": weights_path, "output": where(item.output) if item.output else None}


def job_from(path: str | os.PathLike, changes: dict[str, Any], *, output: str | os.PathLike | None = None,
             content: Any = None, styles: Any = None, gif: Any = None, trace: Any = None,
             quality: int = 95, bits: int = 8, weights: Any = None) -> Job:
    """The job `jaxstyle resume CKPT` continues: the checkpoint's own, with `changes` to the
    settings that do not change the optimization's path (`config.RUN_ONLY`)."""
    from jaxstyle.run import job as job_mod
    ck = ckpt_mod.load(path)
    changes = {"keep_checkpoint": False, **changes}  # kept again only when asked again
    unknown = set(k for k, v in changes.items() if v is not None) - set(RUN_ONLY)
    if unknown:
        raise InputError(f"resume can only change {', '.join(RUN_ONLY)}")
    config = ck.config.replace(**{k: v for k, v in changes.items() if v is not None})
    content = content if content is not None else ck.inputs.get("content")
    styles = list(styles) if styles is not None else list(ck.inputs.get("styles") or [])
    if any(s is None for s in styles) or (ck.mode != "style" and content is None):
        raise InputError(f"{ck.path}: this checkpoint's run used in-memory images; pass them again")
    if weights is None and ck.weights_path and Path(ck.weights_path).is_file():
        weights = ck.weights_path  # the file the run used (its hash is checked)
    named_masks = [m for s, m in zip(styles, ck.inputs.get("style_masks") or []) if not masks.is_keep(s)]
    content_mask = ck.inputs.get("content_mask")
    if "content_mask" in ck.input_sha256 and content_mask is None:
        raise InputError(f"{ck.path}: this checkpoint's run used an in-memory content mask, which a "
                         "checkpoint does not hold; start the run again")
    return job_mod.single(ck.mode, config, content, styles, output_path=output or ck.output, gif=gif,
                          trace=trace, style_blend=ck.inputs.get("style_blend"), quality=quality, bits=bits,
                          resume=ck.path, weights=weights, content_mask=content_mask,
                          style_masks=named_masks if any(m is not None for m in named_masks) else None)

#!/usr/bin/env python
"""What accelerator precision does to L-BFGS, emulated on a CPU.

On a TPU, float32 convolutions and matrix products run by default as one bfloat16 pass
(float32 accumulation), "high" as three; XLA:CPU always computes float32. This script emulates
those passes (`vgg.product`: operands rounded to bfloat16, products accumulated in float32) for
the convolutions and, separately, the Gram matrices, runs jaxstyle's default transfer with the
real weights, and reports the loss after 50/100/N iterations (each image scored by the float32
objective, so variants compare on one scale), evaluations per iteration, failed line searches,
stalls, and how far the final picture is from the float32 one (PSNR):

    python bench/precision.py --size 256 --iterations 150 --json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import jax
import numpy as np

from jaxstyle.images import imageio
from jaxstyle.images import preprocess
from jaxstyle.run import problem
from jaxstyle.solver import lbfgs as solver
from jaxstyle.model import vgg
from jaxstyle.model import weights as weights_mod
from jaxstyle.config import Config, resolve

SHARED = Path(__file__).resolve().parents[2] / "shared"
VARIANTS = {  # name: (convolutions, Gram matrices, activations)
    "float32": ("highest", "highest", "float32"),
    "tpu-default": ("bf16", "bf16", "float32"),
    "tpu-default-conv, gram-highest": ("bf16", "highest", "float32"),
    "tpu-high-conv, gram-highest": ("bf16x3", "highest", "float32"),
    "tpu-default-conv, gram-high": ("bf16", "bf16x3", "float32"),
    "bfloat16 activations, gram-highest": ("bf16", "highest", "bfloat16"),
}


def run(variant: str, size: int, iterations: int, params, content, style, score=None) -> dict:
    conv, gram, dtype = VARIANTS[variant]
    # direct convolutions, as accelerators run them (Winograd's transforms are XLA:CPU's, and
    # they lose too much in bfloat16: with them the emulation stalls where a TPU would not)
    config = resolve(Config(size=size, iterations=iterations, dtype=dtype, conv="direct"), "cpu")
    builder = problem.Builder(config, vgg.prepare_variables(params))
    builder.objective = dataclasses.replace(builder.objective, precision=conv, gram_precision=gram)
    c = preprocess.to_vgg(preprocess.resize_longest(content, size))
    s = preprocess.to_vgg(preprocess.resize_longest(style, size))
    layout = problem.Layout(1, preprocess.bucket(c.shape[:2], config.bucket),
                            preprocess.bucket(s.shape[:2], config.bucket), 1, True, tuple(jax.devices()[:1]))
    p = builder.problem(layout, [c], [c], [[s]], [np.ones(1, np.float32)])
    score = score or _scorer(p)
    state, losses = p.state, {}
    for until in range(50, iterations + 1, 50):
        state, summary = p.chunk(state, np.array([until]))
        summary = jax.device_get(summary)
        losses[int(summary.iteration[0])] = score(summary.image[0])
    host = jax.device_get(state)
    image = np.clip(preprocess.from_vgg(summary.image[0][: c.shape[0], : c.shape[1]]), 0, 255)
    return {"variant": variant, "convolutions": conv, "grams": gram, "activations": dtype, "size": size,
            "loss": losses, "first": float(summary.first[0][0]),
            "evals_per_iter": int(summary.evaluations[0]) / max(int(summary.iteration[0]), 1),
            "failed_line_searches": int(host.failures[0]), "stalled": int(summary.status[0]) == solver.STALLED,
            "image": image, "score": score}


def _scorer(p):
    """The float32 objective of problem `p` (its targets), as a function of a padded image."""
    from jaxstyle.objective import losses
    targets = jax.tree.map(lambda a: a[0], p.targets)
    objective = dataclasses.replace(p.objective, precision="highest", gram_precision="highest", dtype="float32")
    fn = jax.jit(lambda x: losses.total(x, p.loop_variables, targets, objective))
    return lambda x: float(fn(x))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--iterations", type=int, default=150)
    ap.add_argument("--weights", default=str(SHARED / "weights" / "vgg16_imagenet_notop.h5"))
    ap.add_argument("--content", default=str(SHARED / "images" / "tubingen.jpg"))
    ap.add_argument("--style", default=str(SHARED / "images" / "starry_night.jpg"))
    ap.add_argument("--save", default=None, help="folder for the final pictures")
    ap.add_argument("--variant", action="append", choices=sorted(VARIANTS), help="only these (repeatable)")
    a = ap.parse_args()
    params, _ = weights_mod.load(a.weights)
    content, style = imageio.load_image(a.content), imageio.load_image(a.style)
    reference, score = None, None
    for variant in ["float32"] + [v for v in (a.variant or VARIANTS) if v != "float32"]:
        row = run(variant, a.size, a.iterations, params, content, style, score)
        image, score = row.pop("image"), row.pop("score")
        if reference is None:
            reference = image
        mse = float(np.mean((image - reference) ** 2))
        row["psnr_vs_float32_db"] = round(10 * math.log10(255 ** 2 / mse), 1) if mse else None
        if a.save:
            Path(a.save).mkdir(exist_ok=True)
            imageio.save_image(image, Path(a.save) / f"{variant.replace(', ', '_')}.png")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""The style losses side by side (README "Style losses"): one photo, two paintings, one column
per `--style-loss`, each with and without `--average` (one run gives both: its last iterate and
the average of its iterates), at a fixed iteration budget; each painting is resized to the
photo's shape.

For every run it reports the loss it minimizes (total, its own style statistic) at its output
(the written image: with --average, the average), the Gram style term of its output (one
yardstick for all), the seconds per iteration, and the output's
colourfulness: the spread of its colours in the CIELAB chroma plane, sqrt(var a* + var b*),
relative to the painting's (below 1: washed out). It writes a contact sheet (rows: painting x
averaged or not; columns: losses) and prints a Markdown table and JSON lines:

    python bench/style_losses.py --size 128 --iterations 60 --out /tmp/losses --sheet docs/style_losses.jpg

Each run's image and record go to --out (results.jsonl), and the sheet and table are made from
everything there, so several invocations (e.g. --losses w2 apart: its square roots dominate on
a CPU) add up to one sheet.

`--scale` prints instead each loss's normalized style term at the content image against the
Gram term's, for photo x painting pairs: what `losses.STYLE_LOSS_SCALE` was set from (run it
with the scales at 1).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxstyle
from jaxstyle.images import imageio
from jaxstyle.objective import losses
from jaxstyle.images import preprocess
from jaxstyle.run import problem
from jaxstyle.solver import lbfgs as solver
from jaxstyle.model import vgg
from jaxstyle.config import STYLE_LOSSES, Config, resolve

SHARED = Path(__file__).resolve().parents[2] / "shared"
IMAGES = SHARED / "images"


def lab_chroma_spread(rgb: np.ndarray) -> float:
    """sqrt(var a* + var b*) of an RGB image (0..255) in CIELAB (D65)."""
    c = np.clip(rgb.reshape(-1, 3) / 255.0, 0, 1)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                          [0.0193, 0.1192, 0.9505]]).T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    a, b = 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])
    return float(np.sqrt(a.var() + b.var()))


def start_terms(variables, content: np.ndarray, style: np.ndarray, size: int) -> dict[str, float]:
    """Each loss's normalized style term at the content image."""
    c = preprocess.to_vgg(preprocess.resize_longest(content, size))
    s = preprocess.to_vgg(preprocess.resize_longest(style, size))
    out = {}
    for loss in STYLE_LOSSES:
        objective, targets = losses.targets_for(variables, Config(style_loss=loss), c, [s])
        out[loss] = float(jax.jit(losses.terms, static_argnums=3)(jnp.asarray(c), variables, targets,
                                                                  objective).style)
    return out


_terms = jax.jit(losses.terms, static_argnums=3)


def score(variables, rgb: np.ndarray, c: np.ndarray, s: np.ndarray, loss: str) -> tuple[float, float]:
    """(total, style) terms under `loss` of an RGB image against content c and style s (network
    space, the image's shape)."""
    objective, targets = losses.targets_for(variables, Config(style_loss=loss), c, [s])
    t = _terms(jnp.asarray(preprocess.to_vgg(rgb)), variables, targets, objective)
    return float(t.total), float(t.style)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--average", type=float, default=0.99)
    ap.add_argument("--optimizer", default="lbfgs", choices=("lbfgs", "adam"))
    ap.add_argument("--weights", default=str(SHARED / "weights" / "vgg16_imagenet_notop.h5"))
    ap.add_argument("--content", default=str(IMAGES / "tubingen.jpg"))
    ap.add_argument("--styles", default=f"{IMAGES / 'starry_night.jpg'},{IMAGES / 'the_scream.jpg'}")
    ap.add_argument("--losses", default=",".join(STYLE_LOSSES))
    ap.add_argument("--out", default="style_losses", help="folder for each run's image and results.jsonl")
    ap.add_argument("--sheet", default=None, help="write the contact sheet of --out here (JPEG)")
    ap.add_argument("--scale", action="store_true", help="print the start-term ratios instead")
    a = ap.parse_args()
    params = jaxstyle.load_weights(a.weights)
    variables = vgg.prepare_variables(params)
    content = imageio.load_image(a.content)
    styles = [imageio.load_image(p) for p in a.styles.split(",")]
    names = [Path(p).stem for p in a.styles.split(",")]
    chosen = a.losses.split(",")
    if a.scale:
        photos = [content, imageio.load_image(IMAGES / "golden_gate.jpg")]
        for photo in photos:
            for name, style in zip(names, styles):
                terms = start_terms(variables, photo, style, a.size)
                print(json.dumps({"style": name, **terms,
                                  **{f"gram/{k}": terms["gram"] / v for k, v in terms.items()}}), flush=True)
        return
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    c = preprocess.to_vgg(preprocess.resize_longest(content, a.size))
    # Each painting at the photo's shape, so both share one compiled program per loss.
    paintings = [preprocess.to_vgg(preprocess.resize(s, c.shape[:2])) for s in styles]
    for loss in chosen:
        config = resolve(Config(size=a.size, iterations=a.iterations, style_loss=loss, average=a.average,
                                optimizer=a.optimizer), "cpu")
        builder = problem.Builder(config, variables)
        shape = preprocess.bucket(c.shape[:2], config.bucket)
        layout = problem.Layout(1, shape, shape, 1, True, tuple(jax.devices()[:1]))
        for name, s in zip(names, paintings):
            t = time.perf_counter()
            p = builder.problem(layout, [c], [c], [[s]], [np.ones(1, np.float32)])
            compile_s = time.perf_counter() - t
            t = time.perf_counter()
            state, summary = p.chunk(p.state, np.array([a.iterations]))
            summary = jax.device_get(summary)
            seconds = time.perf_counter() - t
            h, w = c.shape[:2]
            last = np.asarray(p.method.to_image(state.u[0]))
            painting = lab_chroma_spread(preprocess.from_vgg(s))
            # One run gives both: the last iterate, and the average of the iterates (--average).
            for average, x in ((0.0, last), (a.average, summary.image[0])):
                image = np.clip(preprocess.from_vgg(x[:h, :w]), 0, 255)
                rec = {"style": name, "loss": loss, "average": average, "size": a.size, "optimizer": a.optimizer,
                       "iterations": int(summary.iteration[0]), "status": solver.STATUS_NAMES[int(summary.status[0])],
                       "loss_of_output": round(score(variables, image, c, s, loss)[0], 4),
                       "gram_style_of_output": round(score(variables, image, c, s, "gram")[1], 4),
                       "s_per_iteration": round(seconds / max(int(summary.iteration[0]), 1), 3),
                       "evaluations": int(summary.evaluations[0]),
                       "compile_s": round(compile_s, 1),
                       "colourfulness": round(lab_chroma_spread(image) / painting, 3)}
                print(json.dumps(rec), flush=True)
                imageio.save_image(image, out / f"{name}_{loss}_{average}.png")
                with open(out / "results.jsonl", "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    print("\n| painting | loss | average | its loss at the output | Gram style term | s/iteration | colourfulness |")
    print("|---|---|---|---|---|---|---|")
    for r in records:
        print(f"| {r['style']} | {r['loss']} | {r['average'] or 'off'} | {r['loss_of_output']} | "
              f"{r['gram_style_of_output']} | {r['s_per_iteration']} | {r['colourfulness']} |")
    if a.sheet:
        make_sheet(records, out, a.sheet)


def make_sheet(records: list[dict], out: Path, path: str) -> None:
    """Rows: painting x averaged or not; columns: losses (in STYLE_LOSSES order); blank where a
    run is missing."""
    from PIL import Image
    losses_ = [x for x in STYLE_LOSSES if any(r["loss"] == x for r in records)]
    rows = list(dict.fromkeys((r["style"], r["average"]) for r in records))
    first = imageio.load_image(out / f"{records[0]['style']}_{records[0]['loss']}_{records[0]['average']}.png")
    h, w = first.shape[:2]
    sheet = np.full((len(rows) * h, len(losses_) * w, 3), 255, np.uint8)
    for i, (style, average) in enumerate(rows):
        for j, loss in enumerate(losses_):
            f = out / f"{style}_{loss}_{average}.png"
            if f.is_file():
                sheet[i * h:(i + 1) * h, j * w:(j + 1) * w] = imageio.to_uint8(imageio.load_image(f))[:h, :w]
    Image.fromarray(sheet).save(path, quality=90)


if __name__ == "__main__":
    main()

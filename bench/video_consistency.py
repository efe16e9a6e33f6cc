#!/usr/bin/env python
"""Temporal consistency of `jaxstyle video` (README "Video", bench/README.md "Video"): synthetic
clips made from ../shared/images (a pan, a zoom, a square moving over a photo, a still image
repeated), each stylized three ways with the same iterations per frame:

  independent   every frame on its own, from its content frame (a transfer per frame);
  warped start  each frame from the previous result warped by the flow, no temporal term;
  temporal      the warped start and the temporal term (`jaxstyle video`'s default).

For each it prints the warping error: the mean over frames t >= 1 of the reliability-masked
mean squared difference, in 0..1 pixel units, between output frame t and output frame t-1
warped to it. The flow for this measure is not the run's: the clip's exact motion (known for
each: the strip entering the frame and the square's uncovered trail masked), and beside it
OpenCV's Farneback with Ruder's reliability rules (`clips.flow.reliability`), the only other
dense estimator in opencv-python-headless. Farneback is off by 0.12 px on average here (2 px in
the pan's flat sky, where both directions agree on no motion and no rule masks it), so on a
stylized texture its error measures Farneback more than the video. Also the mean style term
per frame (the Gram term of the output against its style, the same yardstick for all), the
seconds per frame after the first, and for the still clip the drift: the first and last frames'
mean colours apart (0..255) and the mean frame-to-frame difference (0..255). `--passes 3`
makes the temporal way multi-pass (the other two stay single: the baselines).

    python bench/video_consistency.py --weights ../shared/weights/vgg16_imagenet_notop.h5 \
        --clips pan,zoom,square --frames 12 --still-frames 24 --out /tmp/video-bench

It writes each run's frames under --out and, with --gif, an animated image of the pan clip:
content | independent | temporal side by side.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jaxstyle.clips import flow as flow_mod  # noqa: E402
from jaxstyle.clips import stylize  # noqa: E402
from jaxstyle.config import PRESETS  # noqa: E402
from jaxstyle.images import imageio, preprocess  # noqa: E402
from jaxstyle.model import vgg  # noqa: E402
from jaxstyle.model import weights as weights_mod  # noqa: E402
from jaxstyle.objective import losses  # noqa: E402
from jaxstyle.run import job as job_mod  # noqa: E402
from jaxstyle.run.execute import run  # noqa: E402

IMAGES = REPO.parent / "shared" / "images"
HW = (72, 128)
ZOOM = 1.02  # the zoom clip's magnification a frame


def _photo(name: str, hw: tuple[int, int]) -> np.ndarray:
    return preprocess.resize(imageio.load_image(IMAGES / name), hw)


def clip(kind: str, count: int) -> list[np.ndarray]:
    """A synthetic clip at 128x72: pan (2 px a frame), zoom (ZOOM a frame), square (3 px a
    frame over a still photo), still (one photo repeated)."""
    h, w = HW
    if kind == "pan":
        big = _photo("tubingen.jpg", (h + 8, w + 8 + 2 * count))
        return [big[4:4 + h, 4 + 2 * t:4 + 2 * t + w].copy() for t in range(count)]
    if kind == "zoom":  # the crop resampled by one affine map, so the motion is exactly `exact`'s
        import cv2
        bh, bw = round(1.25 * h), round(1.25 * w)
        big = _photo("golden_gate.jpg", (bh, bw))
        out = []
        for t in range(count):
            ch, cw = bh / ZOOM ** t * 0.9, bw / ZOOM ** t * 0.9  # every frame resampled alike
            y0, x0 = (bh - ch) / 2, (bw - cw) / 2
            m = np.array([[cw / w, 0, x0 + cw / w / 2 - 0.5], [0, ch / h, y0 + ch / h / 2 - 0.5]], np.float32)
            out.append(cv2.warpAffine(big, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP))
        return out
    if kind == "square":
        bg = _photo("tubingen.jpg", HW)
        out = []
        for t in range(count):
            f = bg.copy()
            f[20:44, 10 + 3 * t:34 + 3 * t] = (230.0, 40.0, 40.0)
            out.append(f)
        return out
    if kind == "still":
        return [_photo("golden_gate.jpg", HW)] * count
    raise SystemExit(f"unknown clip {kind!r}")


def _farneback(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import cv2
    # The most accurate of the settings tried on the pan (mean error 0.12 px; DIS: 0.001 px)
    return cv2.calcOpticalFlowFarneback(flow_mod.grey(a), flow_mod.grey(b), None, 0.5, 3, 21, 10, 7, 1.5, 0)


def exact(kind: str, hw: tuple[int, int], t: int) -> tuple[np.ndarray, np.ndarray]:
    """The true flow from frame t to frame t-1 of a synthetic clip, and where it is reliable:
    pan, the strip that enters the frame is not; square, the trail it uncovers is not."""
    h, w = hw
    flow = np.zeros((h, w, 2), np.float32)
    c = np.ones((h, w), np.float32)
    if kind == "pan":
        flow[..., 0] = 2.0
        c[:, -2:] = 0.0
    elif kind == "square":
        x = 10 + 3 * t
        flow[20:44, x:x + 24, 0] = -3.0
        c[20:44, x - 3:x] = 0.0
    elif kind == "zoom":  # towards the centre by 1 - 1/ZOOM of the distance; nothing leaves or enters
        gx, gy = np.meshgrid(np.arange(w) - (w - 1) / 2, np.arange(h) - (h - 1) / 2)
        flow[...] = np.stack([gx, gy], -1) * (1 / ZOOM - 1)
    elif kind != "still":
        raise ValueError(f"no exact flow for {kind!r}")
    return flow, c


def warping_error(content: list[np.ndarray], out: list[np.ndarray], kind: str | None = None) -> float:
    """Mean over t >= 1 of sum(c (o_t - warp(o_{t-1}))^2) / (3 sum c), in 0..1 units, with the
    clip's exact flow (`kind`), or else Farneback's flows between the content frames and
    Ruder's reliability c."""
    errors = []
    for t in range(1, len(out)):
        if kind is not None:
            w, c = exact(kind, HW, t)
        else:
            w, back = _farneback(content[t], content[t - 1]), _farneback(content[t - 1], content[t])
            c = flow_mod.reliability(w, back)
        d = (out[t] - flow_mod.warp(out[t - 1], w)) / 255.0
        errors.append(float(np.sum(c[..., None] * d * d) / max(3 * c.sum(), 1.0)))
    return float(np.mean(errors))


def style_terms(params, config, content: list[np.ndarray], out: list[np.ndarray], style: np.ndarray) -> float:
    """Mean Gram style term (unweighted) of the output frames against the style."""
    import jax
    plain = config.replace(temporal_weight=0.0)
    variables = vgg.prepare_variables(params)
    terms = jax.jit(losses.terms, static_argnums=3)
    values = []
    for c, o in zip(content, out):
        objective, targets = losses.targets_for(variables, plain, preprocess.to_vgg(c),
                                                [preprocess.to_vgg(preprocess.resize_longest(style, max(HW)))])
        values.append(float(terms(preprocess.to_vgg(o), variables, targets, objective).style))
    return float(np.mean(values))


def independent(params, config, frames: list[np.ndarray], style: np.ndarray, folder: Path) -> tuple[list, list]:
    """Each frame a transfer of its own, the first with `iterations`, later ones with
    `frame_iterations` (the video's budget per frame)."""
    plain = config.replace(temporal_weight=0.0, tolerance=0.0, temporal_frames=(1,), frame_iterations=0, passes=1)
    out, seconds = [], []
    builders: dict = {}
    for t, f in enumerate(frames):
        its = config.iterations if t == 0 else (config.frame_iterations or config.iterations)
        begun = time.perf_counter()
        r = run(job_mod.single("transfer", plain.replace(iterations=its), f, [style], weights=params,
                               existing="overwrite", output_path=folder / f"{t:03d}.png"), builders=builders)[0]
        seconds.append(time.perf_counter() - begun)
        out.append(imageio.to_uint8(r.image).astype(np.float32))
    return out, seconds


def video(params, config, frames: list[np.ndarray], style: np.ndarray, folder: Path) -> tuple[list, list]:
    src = folder / "in"
    src.mkdir(parents=True, exist_ok=True)
    for t, f in enumerate(frames):
        imageio.save_image(f, src / f"{t:03d}.png")
    result = stylize.stylize(stylize.plan(src, [style], folder / "out", config, weights=params, existing="overwrite"))
    out = [imageio.load_image(p) for p in sorted((folder / "out").iterdir()) if p.suffix == ".png"]
    return out, result.frame_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default=None)
    ap.add_argument("--clips", default="pan,zoom,square")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--still-frames", type=int, default=24)
    ap.add_argument("--iterations", type=int, default=PRESETS["video"].iterations)
    ap.add_argument("--frame-iterations", type=int, default=PRESETS["video"].frame_iterations)
    ap.add_argument("--temporal-weight", type=float, default=PRESETS["video"].temporal_weight)
    ap.add_argument("--tolerance", type=float, default=PRESETS["video"].tolerance)
    ap.add_argument("--passes", type=int, default=PRESETS["video"].passes)
    ap.add_argument("--style", default="starry_night.jpg")
    ap.add_argument("--ways", default="independent,warped,temporal")
    ap.add_argument("--out", type=Path, default=Path("/tmp/jaxstyle-video-bench"))
    ap.add_argument("--gif", type=Path, default=None)
    args = ap.parse_args()
    params, _ = weights_mod.load(args.weights)
    style = imageio.load_image(IMAGES / args.style)
    config = PRESETS["video"].replace(size=max(HW), iterations=args.iterations,
                                      frame_iterations=args.frame_iterations, temporal_weight=args.temporal_weight,
                                      tolerance=args.tolerance, passes=args.passes)
    kinds = [k for k in args.clips.split(",") if k] + (["still"] if args.still_frames else [])
    rows = []
    for kind in kinds:
        frames = clip(kind, args.still_frames if kind == "still" else args.frames)
        made = {}
        for way in args.ways.split(","):
            folder = args.out / kind / way
            folder.mkdir(parents=True, exist_ok=True)
            if way == "independent":
                out, seconds = independent(params, config, frames, style, folder)
            else:
                cfg = config if way == "temporal" else config.replace(temporal_weight=1e-9, passes=1)
                out, seconds = video(params, cfg, frames, style, folder)
            made[way] = out
            row = {"clip": kind, "way": way, "frames": len(frames),
                   "warping_error": warping_error(frames, out, kind),
                   "warping_error_farneback": warping_error(frames, out),
                   "style": style_terms(params, config, frames, out, style),
                   "s_per_frame": float(np.mean(seconds[1:])) if len(seconds) > 1 else None}
            if kind == "still":
                row["drift_mean_colour"] = float(np.abs(out[-1].mean((0, 1)) - out[0].mean((0, 1))).max())
                row["frame_difference"] = float(np.mean([np.abs(out[t] - out[t - 1]).mean()
                                                         for t in range(1, len(out))]))
            rows.append(row)
            print(json.dumps(row), flush=True)
        if args.gif is not None and kind == "pan" and {"independent", "temporal"} <= set(made):
            sheet = [np.concatenate([frames[t], made["independent"][t], made["temporal"][t]], axis=1)
                     for t in range(len(frames))]
            from PIL import Image
            images = [Image.fromarray(imageio.to_uint8(s)) for s in sheet]
            images[0].save(args.gif, save_all=True, append_images=images[1:], duration=125, loop=0)
            print(f"wrote {args.gif}")
    print("\n| clip | way | warping error, exact flow (x1e-4) | Farneback (x1e-4) | style term | s/frame | drift |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        drift = f"{r['drift_mean_colour']:.2f} / {r['frame_difference']:.2f}" if "drift_mean_colour" in r else ""
        spf = f"{r['s_per_frame']:.2f}" if r["s_per_frame"] else ""
        print(f"| {r['clip']} | {r['way']} | {1e4 * r['warping_error']:.3f} | "
              f"{1e4 * r['warping_error_farneback']:.3f} | {r['style']:.4g} | {spf} | {drift} |")


if __name__ == "__main__":
    main()

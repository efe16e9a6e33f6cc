#!/usr/bin/env python
"""jaxstyle against the PyTorch (and optionally Keras + SciPy) peers of ../shared/peers.

Runs the PyTorch peer and `jaxstyle bench --objective peer --target-loss` alternately, in one
session, on the same weights and images, for several rounds, and prints medians and ratios:
  - time to quality: the wall time (compilation included) jaxstyle's whole run needs to reach
    the loss the PyTorch peer reaches after N evaluations, against the peer's time for those N;
    jaxstyle's run is the default command's (one stage, 300 iterations, the default L-BFGS
    history) unless --scales / --run-iterations say otherwise;
  - the whole jaxstyle run's wall time and final loss, against the peer's;
  - seconds per loss+gradient evaluation (in each optimizer loop, and jaxstyle's on its own),
    and what a jaxstyle iteration costs beyond one evaluation.
Every raw result is also written as JSON lines (--log). With --pictures DIR, the peer's result
after N evaluations, the peer's result at jaxstyle's whole-run wall time, and jaxstyle's
default result are written there, with a side-by-side JPEG.

  python bench/compare_peers.py --size 512 --rounds 3 --peer-evals 300 \\
      --peer-python /path/to/venv-with-torch/bin/python
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"


def run_json(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def _ratio_cell(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} (range {min(values):.3f}–{max(values):.3f})"


def pictures(a: argparse.Namespace, out: Path, torch_cmd: list[str], evals_equal_time: int) -> None:
    """The three results side by side: the peer after N evaluations, the peer at jaxstyle's
    wall time, and jaxstyle's default command (`jaxstyle transfer` with the peers' objective on
    the peers' square images)."""
    from PIL import Image, ImageDraw

    sys.path.insert(0, str(HERE.parent))
    from jaxstyle.faces import bench  # the peers' square resize, exactly as the bench uses it

    tmp = Path(tempfile.mkdtemp())
    c, s = tmp / "content.png", tmp / "style.png"
    Image.fromarray(bench.square_image(a.content, a.size).astype("uint8")).save(c)
    Image.fromarray(bench.square_image(a.style, a.size).astype("uint8")).save(s)
    n = a.peer_evals
    torch_n, torch_t, ours = out / f"torch_{n}_{a.size}.png", out / f"torch_equal_time_{a.size}.png", \
        out / f"jaxstyle_default_{a.size}.png"
    run_json(_with(_with(torch_cmd, "--iters", str(evals_equal_time)), "--out", str(torch_t)),
             cwd=Path(a.peers_dir))
    subprocess.run([sys.executable, "-m", "jaxstyle", "transfer", str(c), str(s), "--size", str(a.size),
                    "--weights", a.weights, "--no-normalize", "--style-weight", "100", "--tv-weight", "0",
                    "--content-layers", "block4_conv2", "--bucket", "1", "--scales", str(a.scales),
                    "-q", "-o", str(ours)], check=True)
    tiles = [(torch_n, f"PyTorch, {n} evaluations"), (torch_t, f"PyTorch at jaxstyle's time ({evals_equal_time})"),
             (ours, "jaxstyle, default command")]
    w = 384
    sheet = Image.new("RGB", (3 * w + 20, w + 28), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (path, label) in enumerate(tiles):
        sheet.paste(Image.open(path).convert("RGB").resize((w, w), Image.LANCZOS), (k * (w + 10), 28))
        draw.text((k * (w + 10) + 4, 8), label, fill="black")
    sheet.save(out / f"compare_{a.size}.jpg", quality=90)
    print(f"pictures: {out / f'compare_{a.size}.jpg'}")


def _with(cmd: list[str], flag: str, value: str) -> list[str]:
    cmd = list(cmd)
    if flag in cmd:
        cmd[cmd.index(flag) + 1] = value
    else:
        cmd += [flag, value]
    return cmd


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--peer-evals", type=int, default=300,
                   help="PyTorch iterations (= evaluations) whose final loss is the quality target")
    p.add_argument("--scales", type=int, default=1,
                   help="jaxstyle's coarse-to-fine stages (1: the default command's)")
    p.add_argument("--run-iterations", type=int, default=0,
                   help="jaxstyle's iterations (0: the default command's)")
    p.add_argument("--peer-python", default=sys.executable, help="Python with torch (and tensorflow)")
    p.add_argument("--peers-dir", default=str(SHARED / "peers"))
    p.add_argument("--weights", default=str(SHARED / "weights" / "vgg16_imagenet_notop.h5"))
    p.add_argument("--content", default=str(SHARED / "images" / "tubingen.jpg"))
    p.add_argument("--style", default=str(SHARED / "images" / "starry_night.jpg"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--keras", action="store_true", help="also run the Keras + SciPy peer")
    p.add_argument("--pictures", default=None, help="write the results side by side into this folder")
    p.add_argument("--log", default=None, help="append every raw JSON result to this file")
    a = p.parse_args()
    if a.pictures:
        Path(a.pictures).mkdir(parents=True, exist_ok=True)

    common = ["--weights", a.weights, "--content", a.content, "--style", a.style, "--size", str(a.size)]
    torch_cmd = [a.peer_python, "peer_torch.py", *common, "--iters", str(a.peer_evals),
                 "--threads", str(a.threads)]
    keras_cmd = [a.peer_python, "peer_tf_scipy.py", *common, "--iters", "5", "--threads", str(a.threads)]
    jax_base = [sys.executable, "-m", "jaxstyle", "bench", "--objective", "peer", "--json",
                "--size", str(a.size), "--weights", a.weights, "--content", a.content,
                "--style", a.style, "--iterations", "10", "--repeats", "5", "--scales", str(a.scales),
                "--run-iterations", str(a.run_iterations)]
    env = {**os.environ, "JAXSTYLE_NO_COMPILE_CACHE": "1"}
    log = open(a.log, "a") if a.log else None
    torch_runs, jax_runs, keras_runs = [], [], []
    for r in range(a.rounds):
        first_picture = ["--out", str(Path(a.pictures) / f"torch_{a.peer_evals}_{a.size}.png")] \
            if a.pictures and r == 0 else []
        t = run_json(torch_cmd + first_picture, cwd=Path(a.peers_dir))
        torch_runs.append(t)
        j = run_json(jax_base + ["--target-loss", repr(t["final_loss"])], env=env)
        jax_runs.append(j)
        rows = [t, j]
        if a.keras:
            k = run_json(keras_cmd, cwd=Path(a.peers_dir))
            keras_runs.append(k)
            rows.append(k)
        for row in rows:
            if log:
                log.write(json.dumps({"round": r, **row}) + "\n")
                log.flush()
        print(f"round {r + 1}: torch {t['s_per_eval']:.4f} s/eval, loss after {t['evals']} evals "
              f"{t['final_loss']:.6g} in {t['total_s']:.2f}s | jaxstyle {j['s_per_eval_loop']:.4f} s/eval "
              f"in loop ({j['s_per_eval']:.4f} alone), {j['s_per_iter']:.4f} s/iter; run "
              f"{'+'.join(f'{n}@{s}' for s, n in j['stages'])}: target in {j['time_to_target_s']} s "
              f"({j['target_evaluations']} evals), whole run {j['run_s']:.2f} s to loss "
              f"{j['run_final_loss']:.6g}", flush=True)

    med = statistics.median
    reached = [j for j in jax_runs if j["target_reached"]]
    ratios_ttq = [j["time_to_target_s"] / t["total_s"] for t, j in zip(torch_runs, jax_runs)
                  if j["target_reached"]]
    ratios_run = [j["run_s"] / t["total_s"] for t, j in zip(torch_runs, jax_runs)]
    ratios_eval = [j["s_per_eval_loop"] / t["s_per_eval"] for t, j in zip(torch_runs, jax_runs)]
    stages = "+".join(f"{n}@{s}" for s, n in jax_runs[0]["stages"])
    print()
    print(f"size {a.size}x{a.size}, {a.rounds} alternating rounds, {a.threads} threads, "
          f"weights {Path(a.weights).name}; jaxstyle's run: {stages} (iterations@size)")
    print("| measure | PyTorch peer | jaxstyle | ratio (median of per-round ratios) |")
    print("| --- | --- | --- | --- |")
    if ratios_ttq:
        print(f"| time to PyTorch's {a.peer_evals}-evaluation loss, compile included | "
              f"{med(t['total_s'] for t in torch_runs):.2f} s | "
              f"{med(j['time_to_target_s'] for j in reached):.2f} s "
              f"({med(j['target_evaluations'] for j in reached):.0f} evals) | **{_ratio_cell(ratios_ttq)}** |")
    print(f"| targets reached | | {len(reached)} of {len(jax_runs)} | |")
    print(f"| whole run, compile included | {med(t['total_s'] for t in torch_runs):.2f} s "
          f"({a.peer_evals} evals) | {med(j['run_s'] for j in jax_runs):.2f} s | {_ratio_cell(ratios_run)} |")
    print(f"| final loss of the whole run | {med(t['final_loss'] for t in torch_runs):.6g} | "
          f"{med(j['run_final_loss'] for j in jax_runs):.6g} | "
          f"{med(j['run_final_loss'] for j in jax_runs) / med(t['final_loss'] for t in torch_runs):.3f} |")
    print(f"| s per evaluation, in the optimizer loop | {med(t['s_per_eval'] for t in torch_runs):.4f} | "
          f"{med(j['s_per_eval_loop'] for j in jax_runs):.4f} | {_ratio_cell(ratios_eval)} |")
    print(f"| s per evaluation on its own | – | {med(j['s_per_eval'] for j in jax_runs):.4f} | |")
    print(f"| s per iteration / evaluations per iteration | | {med(j['s_per_iter'] for j in jax_runs):.4f} / "
          f"{med(j['evals_per_iter'] for j in jax_runs):.3f} | |")
    print(f"| s per iteration ÷ s per evaluation on its own | | "
          f"{med(j['iter_over_eval'] for j in jax_runs):.3f} | |")
    print(f"| compile s | {med(t['compile_s'] for t in torch_runs):.2f} (first eval) | "
          f"{med(j['run_compile_s'] for j in jax_runs):.2f} (every stage) | |")
    print(f"| loss at iteration 0 | {torch_runs[0]['loss0']:.8g} | {jax_runs[0]['loss0']:.8g} | "
          f"{jax_runs[0]['loss0'] / torch_runs[0]['loss0']:.7f} |")
    if keras_runs:
        k_eval = med(k["s_per_eval"] for k in keras_runs)
        print(f"| Keras + SciPy peer, s per evaluation | {k_eval:.4f} | | "
              f"jaxstyle/keras {med(j['s_per_eval_loop'] for j in jax_runs) / k_eval:.3f} |")
    if a.pictures:
        equal = int(med(j["run_s"] for j in jax_runs) / med(t["s_per_eval"] for t in torch_runs))
        pictures(a, Path(a.pictures), torch_cmd, max(1, equal))


if __name__ == "__main__":
    main()

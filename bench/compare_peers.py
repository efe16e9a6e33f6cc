#!/usr/bin/env python
"""jaxstyle against the PyTorch (and optionally Keras + SciPy) peers of ../shared/peers.

Runs the peers and `jaxstyle bench --objective peer` alternately, in one session, on the same
weights and images, for several rounds, and prints medians and ratios:
  - seconds per loss+gradient evaluation in each optimizer loop;
  - time to quality: the wall time (compilation included) jaxstyle needs to reach the loss
    the PyTorch peer reaches after N evaluations, against the peer's time for those N.
Every raw result is also written as JSON lines (--log).

  python bench/compare_peers.py --size 256 --rounds 5 \\
      --peer-python /path/to/venv-with-torch/bin/python
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"


def run_json(cmd: list[str], cwd: Path | None = None) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--peer-evals", type=int, default=100,
                   help="PyTorch iterations (= evaluations) whose final loss is the quality target")
    p.add_argument("--peer-python", default=sys.executable, help="Python with torch (and tensorflow)")
    p.add_argument("--peers-dir", default=str(SHARED / "peers"))
    p.add_argument("--weights", default=str(SHARED / "weights" / "vgg16_imagenet_notop.h5"))
    p.add_argument("--content", default=str(SHARED / "images" / "tubingen.jpg"))
    p.add_argument("--style", default=str(SHARED / "images" / "starry_night.jpg"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--keras", action="store_true", help="also run the Keras + SciPy peer")
    p.add_argument("--log", default=None, help="append every raw JSON result to this file")
    a = p.parse_args()

    common = ["--weights", a.weights, "--content", a.content, "--style", a.style, "--size", str(a.size)]
    torch_cmd = [a.peer_python, "peer_torch.py", *common, "--iters", str(a.peer_evals),
                 "--threads", str(a.threads)]
    keras_cmd = [a.peer_python, "peer_tf_scipy.py", *common, "--iters", "5", "--threads", str(a.threads)]
    jax_base = [sys.executable, "-m", "jaxstyle", "bench", "--objective", "peer", "--json",
                "--size", str(a.size), "--weights", a.weights, "--content", a.content,
                "--style", a.style, "--iterations", "10", "--repeats", "5"]
    log = open(a.log, "a") if a.log else None
    torch_runs, jax_runs, keras_runs = [], [], []
    for r in range(a.rounds):
        t = run_json(torch_cmd, cwd=Path(a.peers_dir))
        torch_runs.append(t)
        j = run_json(jax_base + ["--target-loss", repr(t["final_loss"])])
        jax_runs.append(j)
        rows = [t, j]
        if a.keras:
            k = run_json(keras_cmd, cwd=Path(a.peers_dir))
            keras_runs.append(k)
            rows.append(k)
        for row in rows:
            if log:
                log.write(json.dumps({"round": r, **row}) + "\n")
        print(f"round {r + 1}: torch {t['s_per_eval']:.4f} s/eval, loss after {t['evals']} evals "
              f"{t['final_loss']:.6g} in {t['total_s']:.2f}s | jaxstyle {j['s_per_eval_loop']:.4f} s/eval "
              f"in loop ({j['s_per_eval']:.4f} alone), {j['s_per_iter']:.4f} s/iter, "
              f"target in {j['time_to_target_s']}s ({j['target_evaluations']} evals)", flush=True)

    med = statistics.median
    t_eval = med(t["s_per_eval"] for t in torch_runs)
    j_eval = med(j["s_per_eval_loop"] for j in jax_runs)
    j_alone = med(j["s_per_eval"] for j in jax_runs)
    j_iter = med(j["s_per_iter"] for j in jax_runs)
    ratios_eval = [j["s_per_eval_loop"] / t["s_per_eval"] for t, j in zip(torch_runs, jax_runs)]
    t_wall = med(t["total_s"] for t in torch_runs)
    reached = [j for j in jax_runs if j["target_reached"]]
    ratios_ttq = [j["time_to_target_s"] / t["total_s"] for t, j in zip(torch_runs, jax_runs)
                  if j["target_reached"]]
    print()
    print(f"size {a.size}x{a.size}, {a.rounds} alternating rounds, {a.threads} threads, "
          f"weights {Path(a.weights).name}")
    print("| measure | PyTorch peer | jaxstyle | ratio (median of per-round ratios) |")
    print("| --- | --- | --- | --- |")
    print(f"| s per evaluation, in the optimizer loop | {t_eval:.4f} | {j_eval:.4f} | "
          f"{med(ratios_eval):.3f} (range {min(ratios_eval):.3f}–{max(ratios_eval):.3f}) |")
    print(f"| s per evaluation on its own | – | {j_alone:.4f} | |")
    print(f"| s per iteration / evaluations per iteration | {t_eval:.4f} / 1.00 | {j_iter:.4f} / "
          f"{med(j['evals_per_iter'] for j in jax_runs):.2f} | |")
    print(f"| s per iteration / s per evaluation alone | | {med(j['iter_over_eval'] for j in jax_runs):.3f} | |")
    if ratios_ttq:
        print(f"| time to PyTorch's {a.peer_evals}-evaluation loss, compile included | {t_wall:.2f} s | "
              f"{med(j['time_to_target_s'] for j in reached):.2f} s "
              f"({med(j['target_evaluations'] for j in reached):.0f} evals) | {med(ratios_ttq):.3f} "
              f"(range {min(ratios_ttq):.3f}–{max(ratios_ttq):.3f}) |")
    print(f"| compile s | {med(t['compile_s'] for t in torch_runs):.2f} (first eval) | "
          f"{med(j['compile_s'] for j in jax_runs):.2f} | |")
    print(f"| loss at iteration 0 | {torch_runs[0]['loss0']:.8g} | {jax_runs[0]['loss0']:.8g} | "
          f"{jax_runs[0]['loss0'] / torch_runs[0]['loss0']:.7f} |")
    if keras_runs:
        print(f"| Keras + SciPy peer, s per evaluation | {med(k['s_per_eval'] for k in keras_runs):.4f} | | "
              f"jaxstyle/keras {j_eval / med(k['s_per_eval'] for k in keras_runs):.3f} |")


if __name__ == "__main__":
    main()

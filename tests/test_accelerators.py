"""The programs a run compiles, proven for accelerators on a CPU-only machine.

- TPU: compiled for real by XLA:TPU against TPU topologies (deviceless; needs the libtpu
  wheel: `pip install '.[tpu]'`, the CI's second step, run with JAX_PLATFORMS=cpu), for one
  image on a v5e-1 and a 2-image batch over a v2-8's Mesh. They must hold no host callback, no
  CPU-only custom call and no host transfer, and fit in the memory the estimate promises.
- CUDA: lowered with `jax.export` (catches lowering errors and CPU-only constructs).
"""
from __future__ import annotations

import importlib.util
import re

import jax
import numpy as np
import pytest

from jaxstyle.run import problem
from jaxstyle.faces import targets
from jaxstyle.model import vgg
from jaxstyle.config import Config

_skip_without_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                          reason="libtpu not installed (pip install '.[tpu]')")


def needs_libtpu(fn):
    """A TPU test: skipped without libtpu, and marked `tpu` (CI's TPU step runs only these)."""
    return pytest.mark.tpu(_skip_without_libtpu(fn))
# Custom-call targets that need a CPU or the host (LAPACK, Python callbacks, host offloading).
HOST_ONLY = re.compile(r"callback|lapack|ducc|cpu|host", re.IGNORECASE)
HOST_TRANSFER = re.compile(r"\b(send|recv|send-done|recv-done|infeed|outfeed)\(")


def _check_device_only(hlo: str) -> None:
    calls = targets._custom_calls(hlo)
    assert not [c for c in calls if HOST_ONLY.search(c)], calls
    assert not HOST_TRANSFER.search(hlo)


@needs_libtpu
@pytest.mark.parametrize("name, batch, regions", [("tpu-v5e-1", 1, 0), ("tpu-v2-8", 2, 2)])
def test_the_run_compiles_for_tpu_without_host_work_and_within_the_estimate(name, batch, regions):
    devices = targets.topology_devices(targets.target(name))[:batch]
    assert devices[0].platform == "tpu" and len(devices) == batch
    config = Config(size=64)
    programs = targets.compile_for(config, devices, (48, 64), (64, 48), batch, regions=regions)
    for compiled in (programs.prepare, programs.chunk):
        _check_device_only(compiled.as_text())
    local = batch // len(devices)
    estimate = problem.memory_need(config, (64, 64), local, local, "tpu")
    assert programs.loop_bytes() <= estimate.total - estimate.runtime, (programs.loop_bytes(), estimate)


@needs_libtpu
@pytest.mark.parametrize("loss", ["w2", "sliced", "histogram", "meanstd", "gram+histogram"])
def test_each_style_loss_compiles_for_tpu_without_host_work(loss):
    """The sorts, quantile gathers and Newton–Schulz square roots, at the smallest size."""
    devices = targets.topology_devices(targets.target("tpu-v5e-1"))[:1]
    programs = targets.compile_for(Config(size=32, style_loss=loss), devices, (32, 32), (32, 32))
    for compiled in (programs.prepare, programs.chunk):
        _check_device_only(compiled.as_text())


@needs_libtpu
def test_a_video_frames_programs_compile_for_tpu_without_host_work():
    """A video frame's: the temporal term's target and weights among prepare's arguments, the
    loop with the early stop by tolerance."""
    from jaxstyle.config import PRESETS
    devices = targets.topology_devices(targets.target("tpu-v5e-1"))[:1]
    config = PRESETS["video"].replace(size=32, bucket=16)
    assert config.temporal_weight > 0 and config.tolerance > 0
    programs = targets.compile_for(config, devices, (32, 32), (32, 32))
    for compiled in (programs.prepare, programs.chunk):
        _check_device_only(compiled.as_text())
    params = programs.prepare.as_text()
    assert "f32[1,32,32]" in params  # the per-pixel temporal weights, one map per image


@needs_libtpu
def test_an_image_split_over_a_v2_8_needs_less_memory_per_core_with_more_cores():
    """--split-image: one 512x384 image by rows over 1 and 8 cores of a v2-8 (deviceless;
    `bench/split_memory.py` prints the table at larger sizes)."""
    config = Config(size=512, split_image=True)
    cores = targets.topology_devices(targets.target("tpu-v2-8"))
    need = {}
    for n in (1, 8):
        programs = targets.compile_for(config, cores[:n], (384, 512), (384, 512), 1)
        _check_device_only(programs.chunk.as_text())
        need[n] = programs.loop_bytes()
    assert need[8] < 0.5 * need[1], need  # the image-sized parts split; weights and styles whole


@needs_libtpu
def test_24_megapixels_fit_a_16_gib_v5e_in_tiles_compiled_deviceless():
    plan = targets.fit("tpu-v5e-1", (4000, 6000))
    assert plan["chosen"] == "--lbfgs-memory 30 --tile 1024"
    assert plan["compiled_fits"] and plan["compiled_bytes"] < 0.9 * 16 * 2**30, plan
    assert plan["flops_per_iteration"] > 35 * 1e11  # 35 tiles of ~0.25 TFLOP each


@needs_libtpu
def test_bench_plans_a_tpu_run(capsys):
    import json

    from jaxstyle.faces import cli
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--target", "tpu-v5e-1", "--size", "32", "--json"])
    assert e.value.code == 0
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert {"target", "size", "compile_s", "programs", "hbm_needed_bytes", "hbm_bytes", "fits",
            "flops_per_iteration", "iteration_ms", "seconds_per_500_iterations", "breakdown_ms",
            "xla_lower_bound_ms", "xla_bytes_accessed", "matrix_unit_share"} <= set(row)
    assert row["programs"] == 2 and row["fits"] and row["flops_per_iteration"] > 1e8
    assert row["shape"] == [32, 32]  # --size 32 is 32x32
    assert "cost model" in row["time_source"] and "at_30pct" not in str(row)
    # the default effort on a TPU runs the fast loop, then the full-effort one: both timed
    assert row["compile_effort"] == "both" and set(row["efforts"]) == {"fast", "full"}
    for effort in row["efforts"].values():
        assert effort["iteration_ms"] > 0
        assert sum(effort["breakdown_ms"].values()) == pytest.approx(effort["iteration_ms"], abs=1e-3)  # rounded
        assert effort["breakdown_ms"]["convolutions"] > 0 and effort["breakdown_ms"]["lbfgs"] > 0
    assert row["iteration_ms"] == row["efforts"]["full"]["iteration_ms"]
    assert row["first_run_s"] >= row["later_run_s"] > 0


@pytest.mark.parametrize("regions, loss", [(0, "gram"), (2, "gram"), (0, "w2"), (2, "sliced"), (0, "histogram"),
                                           (2, "meanstd"), (2, "gram+histogram")])
def test_the_run_lowers_for_cuda(synthetic_params, regions, loss):
    config = Config(size=64, conv="direct", style_loss=loss)
    host = vgg.prepare_variables(synthetic_params)
    builder = problem.Builder(config, host, regions)
    layout = problem.Layout(1, (48, 64), (64, 48), max(regions, 1), True, tuple(jax.devices()[:1]),
                            regions=regions)
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.float32), host)
    for fn, args in problem.jitted(builder.objective, builder.method, layout, abstract, abstract,
                                   builder.weights):
        exported = jax.export.export(fn, platforms=("cuda",))(*args)
        _check_device_only(exported.mlir_module())


def test_gpu_targets_are_planned_from_the_estimate_and_timed_by_a_roofline():
    row = targets.plan("t4", Config(), 64)
    assert row["estimated"] and row["compile_s"] is None and row["fits"] and row["shape"] == [64, 64]
    assert row["flops_per_iteration"] > 1e9  # VGG16 to block5_conv3 at 64x64, forward and backward
    assert "roofline estimate" in row["time_source"]
    assert sum(row["breakdown_ms"].values()) == pytest.approx(row["iteration_ms"], abs=1e-3)  # rounded
    # a T4 (8.1 TFLOP/s, 320 GB/s) cannot beat its peak on the convolutions' FLOPs
    assert row["iteration_ms"] / 1e3 > row["flops_per_iteration"] / 8.1e12
    assert "custom_calls" not in row
    assert targets.run_shape(128, (300, 600)) == (64, 128)  # a photo's aspect with --content
    # 4096 px does not fit a T4 by the estimate the plan reports (checked without compiling it)
    assert problem.memory_need(Config(), (3072, 4096), 1, 1, "gpu").total > 0.9 * targets.target("t4").hbm_bytes


def test_an_unknown_target_is_refused_in_one_line():
    with pytest.raises(Exception, match="unknown target 'tpu-v9'; use one of tpu-v5e-1"):
        targets.target("tpu-v9")


@needs_libtpu
def test_bench_target_keeps_libtpus_log_lines_off_stderr_without_verbose(tmp_path):
    """libtpu loads when the TPU program is compiled, long after start-up: its loggers are
    told to be quiet at start-up (runtime.quiet_native_logs)."""
    import os
    import subprocess
    import sys
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAXSTYLE_CACHE": str(tmp_path)}
    for name in ("TPU_STDERR_LOG_LEVEL", "TPU_MIN_LOG_LEVEL", "TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY"):
        env.pop(name, None)
    r = subprocess.run([sys.executable, "-m", "jaxstyle", "bench", "--target", "tpu-v5e-1", "--size", "32", "--json"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    noise = [line for line in r.stderr.splitlines() if re.match(r"[IWEF]\d{4} |WARNING: All log messages", line)]
    assert not noise, r.stderr

"""The benchmark suite runs (a tiny smoke configuration: benchmarks are not timed tests)."""
from __future__ import annotations

import json

import pytest

from jaxstyle.faces import bench
from jaxstyle.faces import cli

KEYS = {"device", "size", "dtype", "compile_s", "s_per_eval", "s_per_eval_loop", "s_per_iter",
        "iter_over_eval", "evals_per_iter", "evals_per_s", "flops_per_eval", "peak_mem_mb", "stages"}


def test_bench_json_has_the_documented_keys(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--size", "32", "--synthetic-weights", "--iterations", "2", "--repeats", "2",
                  "--objective", "peer", "--json", "--target-loss", "1e30", "--conv", "direct",
                  "--run-iterations", "5"])
    assert e.value.code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(rows) == 1
    row = rows[0]
    assert KEYS <= set(row)
    assert row["size"] == 32 and row["dtype"] == "float32" and row["objective"] == "peer"
    assert row["s_per_eval"] > 0 and row["s_per_iter"] > 0 and row["evals_per_iter"] >= 1
    assert row["flops_per_eval"] > 1e8  # VGG16 to block5_conv3 at 32x32: ~1.1 GFLOP
    assert row["target_reached"] and 0 < row["time_to_target_s"] <= row["run_s"]
    assert row["s_per_eval_min"] <= row["s_per_eval"] <= row["s_per_eval_max"]
    assert row["iter_over_eval"] > 0.5 and row["stages"] == [[32, 5]]


def test_bench_times_a_multi_stage_run_to_a_target(capsys):
    """Time to a target counts every stage: compiling each, the coarse iterations, the fine ones;
    a target below every loss of the run is reported as not reached."""
    args = ["bench", "--size", "64", "--synthetic-weights", "--iterations", "1", "--repeats", "1",
            "--objective", "peer", "--json", "--scales", "2", "--run-iterations", "4", "--conv", "direct"]
    with pytest.raises(SystemExit) as e:
        cli.main(args + ["--target-loss", "1e30"])
    assert e.value.code == 0
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert row["stages"] == [[32, 4], [64, 4]]
    assert [st["size"] for st in row["run_stages"]] == [32, 64]
    assert row["target_reached"] and row["target_iterations"] == 5  # the fine stage's first iteration
    assert row["time_to_target_s"] > row["run_stages"][0]["seconds_to"]
    assert row["run_compile_s"] > 0 and row["run_s"] >= row["time_to_target_s"]
    with pytest.raises(SystemExit):
        cli.main(args + ["--target-loss", "1e-30"])
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert not row["target_reached"] and row["time_to_target_s"] is None


def test_bench_table_and_peaks(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--size", "32", "--synthetic-weights", "--iterations", "1", "--repeats", "1"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "s/eval" in out and "GFLOP/s" in out and "cpu" in out

    class Fake:
        device_kind = "NVIDIA H100 80GB HBM3"

    assert bench.peak_flops(Fake(), "bfloat16") == pytest.approx(989.4e12)
    assert bench.peak_flops(Fake(), "float32") == pytest.approx(494.7e12)


def test_the_table_fits_100_columns_and_says_shared_settings_once():
    row = {"device": "cpu:cpu", "devices": 1, "batch": 1, "size": 512, "dtype": "float32", "optimizer": "lbfgs",
           "conv": "auto", "remat": False, "compile_s": 12.345, "s_per_eval": 1.2345, "s_per_iter": 1.3456,
           "iter_over_eval": 1.09, "evals_per_iter": 1.12, "evals_per_s": 0.81, "flops_per_eval": 1.234e12,
           "flops_per_s": 9.87e11, "fraction_of_peak": 0.41, "peak_mem_mb": 2345.0, "stages": [[512, 300]],
           "time_to_target_s": 123.4, "run_s": 456.7}
    table = bench.format_table([row, {**row, "size": 1024, "peak_mem_mb": 9000.0}])
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 100, table
    assert "cpu:cpu" not in table and lines[0].startswith("cpu, float32, opt lbfgs")
    assert "size" in lines[1] and "1024" in lines[3]  # what differs is a column
    alone = bench.format_table([{**row, "time_to_target_s": None, "run_s": None}])
    assert "to loss" not in alone and max(len(line) for line in alone.splitlines()) <= 100, alone

"""Hostile use of the command line and the API (issue 29): two runs picking one default name,
a closed standard error, standard output on a full device, a deleted current directory, an
unresolvable --host, absurd bench sizes, and API arguments of the wrong kind. Each is injected
and must give one line (or, for the run, go on), never a traceback."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from jaxstyle import cli
from jaxstyle import job as job_mod


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """Run `jaxstyle ARGS` in-process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_two_runs_without_o_in_one_folder_never_pick_the_same_name(tmp_path, capsys, monkeypatch, image_dir):
    got: list[Path] = []
    start = threading.Barrier(8)

    def pick() -> None:
        start.wait()
        got.append(job_mod.default_output("transfer", "photo.jpg", ["painting.jpg"], tmp_path, reserve=True))

    threads = [threading.Thread(target=pick) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.name for p in got) == sorted(["photo_painting.png"] + [f"photo_painting-{n}.png"
                                                                          for n in range(2, 9)])
    assert all(p.is_file() for p in got)  # each one taken at once, created exclusively
    # a run that writes nothing gives its reserved name back
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "transfer", image_dir / "content.png", image_dir / "style.png",
                           "--weights", tmp_path / "missing.h5", "--size", 32, "--iterations", 2)
    assert code != 0 and "missing.h5" in err and "Traceback" not in err
    assert not (tmp_path / "content_style.png").exists()


def test_a_closed_stderr_does_not_stop_a_run(tmp_path, monkeypatch, image_dir, synthetic_h5):
    from jaxstyle import run as run_mod
    from jaxstyle.results import Result
    reached: list[str] = []

    def run(job, *, progress, should_stop, message, download_progress):  # the run, after its first message
        message("warning: the weights are not the official file")
        reached.append("work")
        return [Result("content.png", None, "transfer", job.config, "done", iterations=2)]

    monkeypatch.setattr(run_mod, "run", run)
    monkeypatch.setattr(sys, "stderr", None)  # `2>&-`
    with pytest.raises(SystemExit) as e:
        cli.main([str(a) for a in ("transfer", image_dir / "content.png", image_dir / "style.png", "-o",
                                   tmp_path / "out.png", "--weights", synthetic_h5, "--size", 32)])
    assert e.value.code == 0 and reached == ["work"]


def test_a_full_stdout_a_deleted_directory_and_a_bad_host_are_one_line(tmp_path, capsys, monkeypatch,
                                                                      synthetic_h5):
    for args in (["--help"], ["weights", "--weights", str(synthetic_h5)]):
        with open("/dev/full", "w") as full:  # (a fresh one: the error points the old one at /dev/null)
            monkeypatch.setattr(sys, "stdout", full)
            with pytest.raises(SystemExit) as e:
                cli.main(args)
            monkeypatch.undo()
        err = capsys.readouterr().err.splitlines()
        assert e.value.code == 1 and err[-1] == "jaxstyle: error: cannot write to standard output " \
                                                "(No space left on device)", (args, err)
        assert not any("Traceback" in line for line in err)
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    code, _, err = run_cli(capsys, "transfer", "photo.jpg", "painting.jpg", "-o", "out.png")
    assert code == 1 and err == "jaxstyle: error: the current directory no longer exists; cd to one that does\n"
    monkeypatch.chdir(tmp_path)
    # refused before the weights are loaded: the missing weights file is never reached
    code, _, err = run_cli(capsys, "serve", "--host", "no.such.host.invalid", "--folder", tmp_path / "srv",
                           "--weights", tmp_path / "missing.h5")
    assert code == 1 and err.startswith("jaxstyle: error: --host 'no.such.host.invalid': no such address ("), err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("args, words", [
    (["--size", "-5"], "--size must be an integer from 16 to 16384, got -5"),
    (["--size", "20000"], "--size must be an integer from 16 to 16384, got 20000"),
    (["--size", "12000"], "at --size 12000 this run needs about"),
    (["--target", "h100", "--fit", "10000000x10000000"], "--fit 10000000x10000000: each side must be from 16"),
    (["--target", "tpu-v5e-1", "--fit", "0x4000"], "--fit 0x4000: each side must be from 16"),
])
def test_bench_refuses_sizes_as_transfer_does_before_any_work(capsys, args, words):
    code, _, err = run_cli(capsys, "bench", "--synthetic-weights", *args)
    assert code == 1 and err.startswith(f"jaxstyle: error: {words}") and len(err.splitlines()) == 1, err

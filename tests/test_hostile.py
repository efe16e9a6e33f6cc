"""Hostile use of the command line and the API (issue 29): two runs picking one default name,
a closed standard error, standard output on a full device, a deleted current directory, an
unresolvable --host, absurd bench sizes, and API arguments of the wrong kind. Each is injected
and must give one line (or, for the run, go on), never a traceback."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from jaxstyle.faces import cli
from jaxstyle.run import job as job_mod


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
    from jaxstyle.run import execute as run_mod
    from jaxstyle.observers.results import Result
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


def test_the_api_refuses_wrong_arguments_in_one_line_before_any_work(tmp_path, image_dir, synthetic_params):
    import numpy as np

    import jaxstyle
    from jaxstyle.faces import api
    from jaxstyle.errors import ConfigError, WeightsError
    c, s = image_dir / "content.png", image_dir / "style.png"
    missing = {k: v for k, v in synthetic_params.items() if k != "block1_conv2"}
    turned = {**synthetic_params, "block2_conv1": {"kernel": np.zeros((3, 3, 128, 64), np.float32),
                                                   "bias": synthetic_params["block2_conv1"]["bias"]}}
    for kwargs, error, words in (
            (dict(output=tmp_path / "x.jpg", quality=500), ConfigError, "quality must be an integer from 1 to 100"),
            (dict(output=tmp_path / "x.webp", quality="high"), ConfigError, "quality must be an integer"),
            (dict(bits=12), ConfigError, "bits must be 8 or 16"),
            (dict(weights=missing), WeightsError, "weights: layer block1_conv2 is missing"),
            (dict(weights=turned), WeightsError, "weights: layer block2_conv1 has kernel (3, 3, 128, 64) and bias "
                                                 "(128,), expected (3, 3, 64, 128) and (128,) (transposed?"),
            (dict(weights=[1, 2]), ConfigError, "weights must be a path or a dict"),
            (dict(style_masks=np.ones((24, 32))), ConfigError, "style_masks takes a list"),
            (dict(progress="yes please"), ConfigError, "progress must be True, False, None or a callable"),
            (dict(should_stop=1), ConfigError, "should_stop must be None or a callable"),
            (dict(config={"size": 32}), ConfigError, "config must be a jaxstyle.Config"),
            (dict(style_blend="ab"), ConfigError, "style_blend must be a list of numbers"),
            (dict(output=123), ConfigError, "output must be a path (str or os.PathLike), not int"),
            (dict(trace=["t.json"]), ConfigError, "trace must be a path"),
    ):
        with pytest.raises(error) as e:
            jaxstyle.transfer(c, s, **{"weights": synthetic_params, **kwargs})
        assert str(e.value).startswith(words) and "\n" not in str(e.value), (kwargs, str(e.value))
    assert list(tmp_path.iterdir()) == []
    # NumPy numbers are numbers
    cfg = api._config("transfer", None, None, {"size": np.int64(32), "style_weight": np.float32(1e4),
                                                "style_layer_weights": (np.float64(1),) * 5})
    assert type(cfg.size) is int and cfg.size == 32 and type(cfg.style_weight) is float
    assert api._quality(np.int64(90), np.int32(16)) == (90, 16)


def test_the_api_returns_the_image_when_its_file_cannot_be_written(tmp_path, image_dir, synthetic_h5,
                                                                    monkeypatch, caplog):
    import shutil
    import tempfile

    import jaxstyle
    keep = tmp_path / "systemp"
    keep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(keep))
    out = tmp_path / "out" / "result.png"
    out.parent.mkdir()

    def progress(p) -> None:  # the output's folder is removed while the run goes
        if p.phase == "optimize":
            shutil.rmtree(out.parent, ignore_errors=True)

    result = jaxstyle.transfer(image_dir / "content.png", image_dir / "style.png", weights=synthetic_h5,
                               size=32, iterations=3, output=out, progress=progress)
    assert result.image is not None and result.image.shape == (24, 32, 3) and result.output is None
    kept = keep / "result.recovered.png"
    assert kept.is_file() and str(kept) in result.message and str(kept) in caplog.text


def test_tiled_runs_say_what_an_interrupt_kept_and_a_finished_one_leaves_no_checkpoint(tmp_path, image_dir,
                                                                                      synthetic_h5):
    import jaxstyle
    from jaxstyle.run.batch import _tiled_message
    out = tmp_path / "tiled.png"
    ckpt = Path(f"{out}.ckpt.npz")
    seen: list[str] = []

    def stop_in(word):
        return lambda: any(word in n for n in seen)

    def run(should_stop):
        seen.clear()
        return jaxstyle.transfer(image_dir / "content.png", image_dir / "style.png", weights=synthetic_h5,
                                 size=96, scales=2, iterations=3, tile=64, output=out, should_stop=should_stop,
                                 content_layers=("block2_conv1",), style_layers=("block1_conv1", "block2_conv1"),
                                 progress=lambda p: seen.extend((*p.names, p.tile)) if p.phase == "optimize"
                                 else None)

    # Ctrl-C in the coarse (whole-image) stage: a checkpoint
    first = run(lambda: bool(seen))
    assert first.status == "interrupted" and ckpt.is_file()
    # the same run again resumes it; Ctrl-C in the tiled stage says exactly what is kept (never
    # `resume None`, never 0 iterations) and that the coarse stage's checkpoint is where to go on
    cut = run(stop_in("tile 2/"))
    assert cut.status == "interrupted" and cut.iterations > 2 and out.is_file()
    assert cut.message.startswith("interrupted in the tiled stage at tile 2/") and "None" not in cut.message
    assert f"continue with `jaxstyle resume {ckpt}`, from an earlier stage's checkpoint" in cut.message
    assert cut.checkpoint == ckpt and ckpt.is_file()
    # the same run again finishes, and leaves no checkpoint to redo the tiled stage from
    done = run(None)
    assert done.status == "done" and done.checkpoint is None and not ckpt.exists()
    message, path = _tiled_message((1, 6, 3), None)  # with no checkpoint at all
    assert path is None and message.endswith("no earlier stage's checkpoint was written: run the command "
                                             "again to start over")

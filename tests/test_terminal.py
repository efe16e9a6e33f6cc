"""The terminal and the package as a user meets them: the printer at several widths, in a
notebook and without a terminal; the conventions of the command line (short flags, a default
output name, --device, --quiet, --print-every, --pooling); a quiet start on a machine with
libtpu and no TPU; the compilation cache's repair."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxstyle.platform import devices
from jaxstyle.run import job
from jaxstyle.platform import runtime
from jaxstyle.errors import ConfigError, JaxstyleError
from jaxstyle.observers.progress import NotebookPrinter, ProgressPrinter
from jaxstyle.observers.results import Progress

from test_cli import run_cli


def _progress(phase="optimize", iteration=40, **kw) -> Progress:
    base = dict(phase=phase, images_done=0, images_total=1, names=("tubingen.jpg",), stage=1, stages=1,
                size=512, shape=(384, 512), iteration=iteration, iterations=300, evaluations=41, loss=1.2345,
                terms={"total": 1.2345, "content": 0.5, "style": 0.7, "tv": 1000.0}, elapsed=4.0,
                seconds_per_iteration=0.1234, eta=32.0, device="cpu", programs=2)
    base.update(kw)
    return Progress(**base)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("width", [40, 60, 80, 120, 200])
def test_the_live_line_fits_the_width_and_keeps_speed_and_eta(width):
    stream = _Tty()
    printer = ProgressPrinter(stream, width=width, interval=0)
    printer(_progress())
    text = stream.getvalue()
    assert text.startswith("\r\x1b[2K") and "\n" not in text  # rewritten in place
    line = text[len("\r\x1b[2K"):]
    assert len(line) <= width
    assert "40/300" in line and "loss 1.234" in line
    if width >= 60:
        assert "s/it" in line and "ETA 32s" in line
    if width >= 120:
        assert "c 0.5 + s 0.7 + tv 1000" in line and "[" in line  # terms and a bar where they fit


def test_a_tiled_stage_names_its_tiles():
    stream = _Tty()
    ProgressPrinter(stream, width=100, interval=0)(_progress(tile="tile 3/6"))
    assert "tile 3/6 it 40/300" in stream.getvalue()


def test_without_a_terminal_lines_are_plain_and_spaced():
    stream = io.StringIO()
    printer = ProgressPrinter(stream, plain_interval=3600)
    for it in range(1, 50):
        printer(_progress(iteration=it))
    printer(_progress(phase="done", iteration=300))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()
    assert lines[0].startswith("[") and "1/300" in lines[0] and lines[1].startswith("done tubingen.jpg")


def test_print_every_lines_replace_the_periodic_ones_without_a_terminal():
    stream = io.StringIO()
    printer = ProgressPrinter(stream, plain_interval=0, lines=True)
    printer(_progress(iteration=3))
    printer(_progress(phase="iteration", iteration=10, seconds_per_iteration=None, eta=None))
    assert stream.getvalue().splitlines() == ["it 10/300 | loss 1.234 | content 0.5 | style 0.7 | tv 1000"]


def test_a_broken_stream_never_raises():
    class Closed(io.StringIO):
        def write(self, s):
            raise BrokenPipeError(32, "Broken pipe")

    printer = ProgressPrinter(Closed())
    printer(_progress())
    printer.message("hello")
    printer(_progress(phase="done"))
    printer.close()


def test_the_notebook_printer_updates_one_output_in_place():
    shown = []

    class Handle:
        def __init__(self, data):
            self.versions = [data["text/plain"]]

        def update(self, data, raw):
            self.versions.append(data["text/plain"])

    def display(data, raw, display_id):
        shown.append(Handle(data))
        return shown[-1]

    printer = NotebookPrinter(display=display, interval=0)
    for it in (1, 2, 3):
        printer(_progress(iteration=it))
    assert len(shown) == 1 and len(shown[0].versions) == 3
    assert "3/300" in shown[0].versions[-1] and "ETA" in shown[0].versions[-1]


def test_the_first_line_names_device_precision_size_and_programs():
    stream = io.StringIO()
    ProgressPrinter(stream, precision="bfloat16")(_progress(phase="compile", device="tpu (TPU v5 lite)"))
    assert stream.getvalue() == ("jaxstyle: compiling 2 programs for tubingen.jpg (tpu (TPU v5 lite), bfloat16, "
                                 "512x384)\n")


@pytest.mark.parametrize("width", [60, 70, 80])
def test_the_first_line_cuts_a_long_name_in_its_middle_at_narrow_widths(width):
    stream = _Tty()
    name = "a_rather_long_holiday_photo_of_the_old_town_at_dusk_2024.jpg"
    ProgressPrinter(stream, width=width)(_progress(phase="compile", names=(name,)))
    line = stream.getvalue().strip("\r\x1b[2K\n")
    assert len(line) <= width and line.startswith("jaxstyle: compiling 2 programs for a_rather")
    assert line.endswith("2024.jpg") and line.count("…") == 1 and "..." not in line


# --- the platform, picked before JAX starts -------------------------------------------------------

def test_the_platform_is_chosen_only_where_that_is_safe(monkeypatch):
    monkeypatch.setattr(devices, "_backends_started", lambda: False)
    monkeypatch.setattr(devices, "gpu_hardware", lambda: False)
    monkeypatch.setattr(devices.glob, "glob", lambda pattern: [])
    env: dict[str, str] = {}
    assert devices.choose_platform("cpu", env) == "cpu" and env == {"JAX_PLATFORMS": "cpu"}
    env = {"JAX_PLATFORMS": "cuda"}
    assert devices.choose_platform("cpu", env) is None and env == {"JAX_PLATFORMS": "cuda"}  # the user's wins
    monkeypatch.setattr(devices.importlib.util, "find_spec", lambda name: object())  # libtpu installed
    env = {}
    assert devices.choose_platform("auto", env) == "cpu"  # no TPU, no GPU: libtpu is not started
    env = {"TPU_ACCELERATOR_TYPE": "v5litepod-1"}
    assert devices.choose_platform("auto", env) is None  # maybe a TPU: jax decides
    monkeypatch.setattr(devices, "gpu_hardware", lambda: True)
    env = {}
    assert devices.choose_platform("auto", env) is None
    assert devices.choose_platform("gpu", env) is None


def test_a_device_that_is_not_here_is_one_line():
    with pytest.raises(ConfigError, match=r"--device tpu: jax sees no tpu here, only cpu; install jax for TPUs"):
        devices.select("tpu")
    with pytest.raises(ConfigError, match=r"--device cpu:3: there is 1 cpu device"):
        devices.select("cpu:3")
    assert devices.select("cpu:0")[0].platform == "cpu"
    with pytest.raises(ConfigError, match="--device must be"):
        from jaxstyle.config import Config
        Config(device="cuda")


_QUIET_START = """
import sys
sys.argv = ["jaxstyle", "transfer", *sys.argv[1:]]
from jaxstyle.faces.cli import main
main()
"""


def test_a_machine_with_libtpu_and_no_tpu_starts_quietly(tmp_path, image_dir):
    """What `bench --target` asks users to install: libtpu on a machine without a TPU. A fake
    libtpu package that prints start-up noise when imported stands in for it."""
    fake = tmp_path / "site" / "libtpu"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("import os\nos.write(2, b'E0000 libtpu_init_utils.cc:327 noise\\n')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "JAXSTYLE_NO_COMPILE_CACHE": "1"}
    env.pop("JAX_PLATFORMS", None)
    r = subprocess.run([sys.executable, "-c", _QUIET_START, str(image_dir / "content.png"),
                        str(image_dir / "style.png"), "-o", str(tmp_path / "x.png"), "--weights", "/nonexistent.h5",
                        "-s", "32", "-i", "1"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0
    assert r.stderr.splitlines() == ["jaxstyle: error: /nonexistent.h5: weights file not found"] or \
        (len(r.stderr.splitlines()) == 1 and "noise" not in r.stderr and "/nonexistent.h5" in r.stderr), r.stderr


def test_an_absent_platform_in_jax_platforms_is_one_line(tmp_path, image_dir):
    env = {**os.environ, "JAX_PLATFORMS": "cuda", "JAXSTYLE_NO_COMPILE_CACHE": "1"}
    r = subprocess.run([sys.executable, "-m", "jaxstyle", "transfer", str(image_dir / "content.png"),
                        str(image_dir / "style.png"), "-o", str(tmp_path / "x.png"), "-s", "32"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == ["jaxstyle: error: jax could not start its devices (JAX_PLATFORMS=cuda): "
                                     "none of the platforms asked for is here"]


def test_start_reports_backend_failures_in_one_line(monkeypatch):
    import jax

    def broken():
        raise RuntimeError("Unable to initialize backend 'tpu': NOT_FOUND\nmore lines")

    monkeypatch.setattr(jax, "devices", broken)
    with pytest.raises(JaxstyleError, match=r"^jax could not start its devices.*NOT_FOUND$"):
        devices.start("auto")


# --- the command line's conventions ---------------------------------------------------------------

def test_without_o_the_result_gets_the_next_free_name(capsys, tmp_path, image_dir, synthetic_h5, monkeypatch):
    monkeypatch.chdir(tmp_path)
    content, style = image_dir / "content.png", image_dir / "style.png"
    (tmp_path / "content_style.png").write_bytes(b"an earlier result")
    (tmp_path / "content_style-2.png.ckpt.npz").write_bytes(b"an earlier run's checkpoint")
    code, _, err = run_cli(capsys, "transfer", content, style, "--weights", synthetic_h5, "-s", 32, "-i", 2)
    assert code == 0, err
    assert (tmp_path / "content_style.png").read_bytes() == b"an earlier result"
    assert (tmp_path / "content_style-3.png").is_file() and f"wrote {tmp_path / 'content_style-3.png'}" in err
    assert job.default_output("content", content) == Path("content_content.png")
    assert job.default_output("style", style, directory=tmp_path) == tmp_path / "style_style.png"


def test_a_folder_needs_o(capsys, tmp_path, image_dir):
    code, _, err = run_cli(capsys, "transfer", image_dir, image_dir / "style.png")
    assert code != 0 and err.strip().endswith("a folder of images needs -o DIR, the folder its results go to")


def test_short_flags_quiet_and_print_every(capsys, tmp_path, image_dir, synthetic_h5, cache):
    args = ["transfer", image_dir / "content.png", image_dir / "style.png", "--weights", synthetic_h5,
            "-s", 32, "-i", 6]
    code, out, err = run_cli(capsys, *args, "-o", tmp_path / "q.png", "-q")
    assert code == 0 and out == "" and err == ""  # not even the note on a weights file not Keras' own
    with Image.open(tmp_path / "q.png") as im:
        assert max(im.size) == 32
    code, _, err = run_cli(capsys, *args, "-o", tmp_path / "p.png", "--print-every", 2)
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if ln.startswith("it ")]
    assert [ln.split(" | ")[0] for ln in lines] == ["it 2/6", "it 4/6", "it 6/6"]
    assert all("content" in ln and "style" in ln and "tv" in ln for ln in lines)
    code, _, err = run_cli(capsys, *args, "-o", tmp_path / "r.png", "-q", "--print-every", 2)
    assert code != 0 and "--quiet and --print-every contradict" in err and not (tmp_path / "r.png").exists()


def test_print_every_in_a_folder_names_each_image(capsys, tmp_path, image_dir, synthetic_h5):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b"):
        (folder / f"{name}.png").write_bytes((image_dir / "content.png").read_bytes())
    code, _, err = run_cli(capsys, "transfer", folder, image_dir / "style.png", "-o", tmp_path / "out",
                           "--weights", synthetic_h5, "-s", 32, "-i", 4, "--print-every", 4)
    assert code == 0, err
    assert sorted(ln.split(" | ")[0] for ln in err.splitlines() if " it 4/4" in ln) == ["a.png it 4/4",
                                                                                       "b.png it 4/4"]


def test_pooling_avg_gives_a_different_image(capsys, tmp_path, image_dir, synthetic_h5):
    images = {}
    for pooling in ("max", "avg"):
        out = tmp_path / f"{pooling}.png"
        code, _, err = run_cli(capsys, "transfer", image_dir / "content.png", image_dir / "style.png", "-o", out,
                               "--weights", synthetic_h5, "-s", 32, "-i", 8, "--pooling", pooling,
                               "--content-layers", "block2_conv2", "--style-layers", "block1_conv1,block2_conv1")
        assert code == 0, err
        images[pooling] = np.asarray(Image.open(out), np.float32)
    assert np.abs(images["max"] - images["avg"]).mean() > 0.5


def test_help_is_fast_and_lists_the_short_flags():
    r = subprocess.run([sys.executable, "-c", "import sys, time; t = time.perf_counter(); "
                        "from jaxstyle.faces.cli import main\n"
                        "try:\n main(['transfer', '--help'])\nexcept SystemExit: pass\n"
                        "print(time.perf_counter() - t, 'jax' in sys.modules, file=sys.stderr)"],
                       capture_output=True, text=True, timeout=60)
    seconds, jax_imported = r.stderr.split()
    assert jax_imported == "False" and float(seconds) < 1.0
    for flag in ("-s, --size", "-i, --iterations", "-o, --output", "-q, --quiet", "-v, --verbose",
                 "--device", "--print-every", "--pooling"):
        assert flag in r.stdout, flag


# --- the compilation cache ------------------------------------------------------------------------

def test_unreadable_compilation_cache_entries_are_dropped_once(tmp_path):
    good, cut = tmp_path / "jit_a-1-cache", tmp_path / "jit_b-2-cache"
    payload = zlib.compress(os.urandom(5000))
    good.write_bytes(payload)
    cut.write_bytes(payload[:1000])  # a killed run's entry
    (tmp_path / "jit_b-2-atime").write_bytes(b"\0" * 8)
    old = 1_000_000_000
    for p in (good, cut):
        os.utime(p, (old, old))
    assert runtime.repair_compilation_cache(tmp_path) == [cut]
    assert good.exists() and not cut.exists() and not (tmp_path / "jit_b-2-atime").exists()
    index = json.loads((tmp_path / "jaxstyle-checked.json").read_text())
    assert list(index) == [good.name]
    young = tmp_path / "jit_c-3-cache"
    young.write_bytes(b"being written by another run")
    assert runtime.repair_compilation_cache(tmp_path) == [] and young.exists()  # left to settle
    (tmp_path / "jaxstyle-checked.json").write_text("{not json")  # a damaged index is rebuilt
    assert runtime.repair_compilation_cache(tmp_path) == [] and good.exists()


def test_the_compilation_cache_is_per_jax_version_and_repaired(tmp_path, monkeypatch):
    import jax
    monkeypatch.setenv("JAXSTYLE_CACHE", str(tmp_path))
    directory = Path(tmp_path / "xla" / f"jax-{jax.__version__}")
    directory.mkdir(parents=True)
    bad = directory / "jit_x-0-cache"
    bad.write_bytes(b"\x78\x9c truncated")
    os.utime(bad, (1_000_000_000, 1_000_000_000))
    previous = jax.config.jax_compilation_cache_dir
    try:
        assert runtime.enable_compilation_cache() == str(directory)
        assert not bad.exists()
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)


def test_after_a_resume_seconds_per_iteration_counts_only_this_runs_iterations(tmp_path, image_dir, synthetic_h5):
    import jaxstyle
    out = tmp_path / "a.png"
    first = jaxstyle.transfer(image_dir / "content.png", image_dir / "style.png", output=out, weights=synthetic_h5,
                              size=32, iterations=4, checkpoint_every=2, keep_checkpoint=True)
    assert first.iterations_run == 4
    later = jaxstyle.resume(first.checkpoint, iterations=10)
    assert later.iterations == 10 and later.iterations_run == 6
    assert later.seconds_per_iteration == pytest.approx(later.seconds / 6)


_READ_DAMAGED = """
import sys
from jaxstyle.faces.cli import main
main(["transfer", sys.argv[1], sys.argv[1], "-o", sys.argv[2], "-s", "32"])
"""


def test_libtiffs_own_messages_do_not_break_the_one_line_error(tmp_path):
    """libtiff prints from C ("Using code not yet in table.") straight to file descriptor 2."""
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(tmp_path / "l.tif",
                                                                             compression="tiff_lzw")
    data = bytearray((tmp_path / "l.tif").read_bytes())
    data[8] ^= 0x5A  # the first bytes of the LZW strip
    data[9] ^= 0xA5
    (tmp_path / "bad.tif").write_bytes(bytes(data))
    r = subprocess.run([sys.executable, "-c", _READ_DAMAGED, str(tmp_path / "bad.tif"), str(tmp_path / "o.png")],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"jaxstyle: error: {tmp_path / 'bad.tif'}: corrupt or truncated image "
                                     f"({r.stderr.split('(', 1)[1].rsplit(')', 1)[0]})"], r.stderr
    assert "Using code" not in r.stderr


_WARNING_RUN = """
import sys, warnings
from jaxstyle.platform import runtime
def cache_with_a_warning():
    warnings.warn("Error reading persistent compilation cache entry for 'jit__chunk'", UserWarning)
runtime.enable_compilation_cache = cache_with_a_warning
from jaxstyle.faces.cli import main
main(["transfer", *sys.argv[1:]])
"""


def test_library_warnings_reach_the_terminal_only_with_verbose(tmp_path, image_dir, synthetic_h5):
    env = {k: v for k, v in os.environ.items() if k != "JAXSTYLE_NO_COMPILE_CACHE"}
    env["JAX_PLATFORMS"] = "cpu"
    args = [str(image_dir / "content.png"), str(image_dir / "style.png"), "--weights", str(synthetic_h5),
            "-s", "32", "-i", "2", "--content-layers", "block1_conv2", "--style-layers", "block1_conv1"]
    quiet = subprocess.run([sys.executable, "-c", _WARNING_RUN, *args, "-o", str(tmp_path / "a.png")],
                           capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0 and "persistent compilation cache" not in quiet.stderr, quiet.stderr
    loud = subprocess.run([sys.executable, "-c", _WARNING_RUN, *args, "-o", str(tmp_path / "b.png"), "-v"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert loud.returncode == 0 and "persistent compilation cache" in loud.stderr, loud.stderr


def test_stderr_capture_restores_fd2_and_never_nests_or_runs_off_the_main_thread():
    import threading

    from jaxstyle.errors import captured_stderr
    before = os.fstat(2)
    with captured_stderr() as outer:
        os.write(2, b"from C\n")
        with captured_stderr() as inner:  # nested: no second redirect
            os.write(2, b"inner\n")
        seen = []
        t = threading.Thread(target=lambda: seen.append(captured_stderr().__enter__()))
        t.start()
        t.join()
    assert outer == ["from C\ninner\n"] and inner == [] and seen == [[]]
    after = os.fstat(2)
    assert (before.st_dev, before.st_ino) == (after.st_dev, after.st_ino)


def test_format_names_a_single_images_default_output_and_never_contradicts_o(capsys, tmp_path, image_dir,
                                                                              synthetic_h5, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["transfer", image_dir / "content.png", image_dir / "style.png", "--weights", synthetic_h5, "-s", 32,
            "-i", 2]
    code, _, err = run_cli(capsys, *args, "--format", "jpg")
    assert code == 0 and (tmp_path / "content_style.jpg").is_file(), err
    code, _, err = run_cli(capsys, *args, "--format", "jpg", "-o", tmp_path / "x.png")
    assert code != 0 and "--format jpg contradicts the output's extension" in err
    assert not (tmp_path / "x.png").exists()

"""Write faults, injected: a full disk (ENOSPC), a file-size limit (RLIMIT_FSIZE / EFBIG), short and
lying writes, names near NAME_MAX, the output directory removed mid-run, a directory in place of
a snapshot or checkpoint, and temporary files left by killed runs.

Every case checks the same promises: one line naming the file and the problem (no traceback), a
non-zero exit from the CLI, the previous file untouched, and the finished work kept where the
message says.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from PIL import Image

from jaxstyle import files
from jaxstyle.observers import checkpoint
from jaxstyle.faces import cli
from jaxstyle.images import imageio
from jaxstyle.images import output
from jaxstyle.config import Config
from jaxstyle.observers.observer import Report
from jaxstyle.errors import EXIT_ERROR, InputError, OutputError
from jaxstyle.observers.writers import Checkpoints, Snapshots

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc/self/fd and rlimits")


# --- helpers -------------------------------------------------------------------------------------

def gradient(h: int = 64, w: int = 64) -> np.ndarray:
    """Smooth: tiny as PNG, over a kilobyte as JPEG, 12 KB as TIFF or BMP."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1).astype(np.float32)


def previous(path: Path) -> bytes:
    """A good earlier result at `path`; returns its bytes."""
    imageio.save_image(np.full((8, 8, 3), 200.0, np.float32), path)
    return path.read_bytes()


def kept_path(message: str, what: str = "finished image") -> Path:
    m = re.search(rf"the {what} is kept in (.+?)(?:;|$)", message)
    assert m, message
    return Path(m.group(1))


def one_line(text: str) -> str:
    assert "\n" not in text.strip() and "Traceback" not in text, text
    return text.strip()


def parts(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


def _target(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def inject_write_fault(monkeypatch, match, err: int | None = errno.ENOSPC, room: int = 0,
                       chunk: int | None = None, lie: bool = False) -> None:
    """os.write on files whose path satisfies `match` behaves like a device with `room` bytes
    free (all those files together): writes (at most `chunk` bytes at a time) land until the room
    is used, the one that crosses it is short, the next fails with `err`, as the kernel does.
    `err=None`: no limit. `lie`: report every write complete while only the first half of each
    lands (a broken file system)."""
    real = os.write
    written = {"bytes": 0}

    def fake(fd, data):
        target = _target(fd)
        if not match(target):
            return real(fd, data)
        data = bytes(data)
        if lie:
            real(fd, data[: len(data) // 2])
            return len(data)
        if chunk is not None:
            data = data[:chunk]
        done = written["bytes"]
        if err is not None and done >= room:
            raise OSError(err, os.strerror(err))
        if err is not None:
            data = data[: room - done]
        n = real(fd, data)
        written["bytes"] = done + n
        return n

    monkeypatch.setattr(os, "write", fake)


def in_dir(directory: Path):
    """Files directly in `directory` (not in its subdirectories)."""
    return lambda target: os.path.dirname(target) == str(directory)


@pytest.fixture(autouse=True)
def own_cwd(tmp_path_factory, monkeypatch) -> Path:
    """The last place kept files may go is the current directory: never the checkout's."""
    d = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(d)
    return d


@pytest.fixture
def keep_dir(tmp_path, monkeypatch) -> Path:
    """The system temporary directory, for these tests: where kept files land when the output's
    own directory refuses them."""
    d = tmp_path / "systemp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


def run_cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def cli_error(err: str) -> str:
    """The single error line of a failed CLI run, without its prefix."""
    lines = [ln for ln in err.splitlines() if ln.startswith("jaxstyle: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0][len("jaxstyle: error: "):]


def tiny(image_dir: Path, synthetic_h5: Path, *extra) -> list:
    return ["content", image_dir / "content.png", "--weights", synthetic_h5, "--size", 32,
            "--iterations", 4, *extra]


# --- atomic_write and write_image ----------------------------------------------------------------

RLIMIT_SCRIPT = r"""
import json, resource, sys
import numpy as np
from jaxstyle.images import output
from jaxstyle.errors import OutputError
path, limit = sys.argv[1], int(sys.argv[2])
yy, xx = np.mgrid[0:64, 0:64]
rgb = np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1).astype(np.float32)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
try:
    output.write_image(rgb, path)
except OutputError as e:
    print(json.dumps({"message": e.message, "kept": str(e.kept)}))
    sys.exit(e.exit_code)
print(json.dumps({"message": None}))
"""


@linux_only
@pytest.mark.parametrize("name", ["out.jpg", "out.tif", "out.bmp"])
def test_file_size_limit_short_write_is_an_error_and_keeps_the_old_file(tmp_path, name):
    """A real RLIMIT_FSIZE: the kernel writes up to the limit, then EFBIG. Pillow used to ignore
    that short write, and a 1000-byte stub replaced the good file with exit 0."""
    out = tmp_path / name
    before = previous(out)
    r = subprocess.run([sys.executable, "-c", RLIMIT_SCRIPT, str(out), "1000"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == EXIT_ERROR, r.stderr
    assert r.stderr == ""
    report = json.loads(r.stdout)
    message = one_line(report["message"])
    assert message.startswith(f"{out}: cannot be written (file too large")
    assert out.read_bytes() == before
    kept = kept_path(message)
    assert str(kept) == report["kept"] and kept.parent == tmp_path and kept.suffix == ".png"
    np.testing.assert_array_equal(imageio.load_image(kept), gradient())  # the whole image, lossless
    assert parts(tmp_path) == []


@linux_only
@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "no space left on the device"),
                                        (errno.EFBIG, "file too large"),
                                        (errno.EDQUOT, "disk quota exceeded")])
def test_full_disk_mid_write_keeps_old_file_and_the_image_elsewhere(tmp_path, keep_dir, monkeypatch, code, words):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "result.jpg"
    before = previous(out)
    # 500 bytes free on the output's disk, written 100 bytes at a time: short writes, then the error.
    inject_write_fault(monkeypatch, in_dir(out_dir), code, room=500, chunk=100)
    with pytest.raises(OutputError) as e:
        output.write_image(gradient(), out)
    message = one_line(e.value.message)
    assert message.startswith(f"{out}: cannot be written ({words}")
    assert out.read_bytes() == before
    kept = kept_path(message)
    assert kept == e.value.kept and kept.parent == keep_dir  # beside it failed too: same disk
    np.testing.assert_array_equal(imageio.load_image(kept), gradient())
    assert parts(out_dir) == [] and parts(keep_dir) == []


@linux_only
def test_short_writes_are_continued_not_dropped(tmp_path, monkeypatch):
    out = tmp_path / "o.tif"
    inject_write_fault(monkeypatch, in_dir(tmp_path), err=None, chunk=7)  # every write short
    output.write_image(gradient(), out)
    monkeypatch.undo()
    np.testing.assert_array_equal(imageio.load_image(out), gradient())


@linux_only
def test_a_write_that_lies_is_caught_by_the_size_check(tmp_path, keep_dir, monkeypatch):
    out = tmp_path / "o.png"
    before = previous(out)
    inject_write_fault(monkeypatch, in_dir(tmp_path), lie=True)
    with pytest.raises(OSError, match="short write"):
        with files.atomic_write(out) as fh:
            fh.write(b"x" * 100_000)
    assert out.read_bytes() == before and parts(tmp_path) == []
    with pytest.raises(OutputError, match="short write") as e:
        output.write_image(gradient(), out)
    assert out.read_bytes() == before
    kept = kept_path(e.value.message)
    assert kept.parent == keep_dir
    np.testing.assert_array_equal(imageio.load_image(kept), gradient())


def test_a_file_that_does_not_read_back_is_not_renamed(tmp_path):
    out = tmp_path / "o.json"
    out.write_text('{"good": 1}')

    def must_parse(p):
        json.loads(Path(p).read_text())

    with pytest.raises(OSError, match="does not read back"):
        with files.atomic_write(out, "w", verify=must_parse) as fh:
            fh.write('{"truncated": ')
    assert out.read_text() == '{"good": 1}' and parts(tmp_path) == []


def test_output_directory_removed_before_the_write(tmp_path, monkeypatch, own_cwd):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = output.check_output(out_dir / "o.webp")
    shutil.rmtree(out_dir)  # between the check and the write
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-tmp"))  # no temp dir either
    cwd = own_cwd
    with pytest.raises(OutputError) as e:
        output.write_image(gradient(), out)
    message = one_line(e.value.message)
    assert message.startswith(f"{out}: cannot be written (its directory {out_dir} no longer exists)")
    kept = kept_path(message)
    assert kept.resolve().parent == cwd.resolve() and kept.name == "o.recovered.png"
    np.testing.assert_array_equal(imageio.load_image(kept), gradient())


def test_nowhere_to_keep_it_says_so(tmp_path, monkeypatch):
    out = tmp_path / "gone" / "o.png"
    monkeypatch.setattr(files, "fallback_dirs", lambda path: [out.parent, tmp_path / "nope"])
    with pytest.raises(OutputError) as e:
        output.write_image(gradient(), out)
    message = one_line(e.value.message)
    assert "could not be kept anywhere else either" in message and str(tmp_path / "nope") in message
    assert e.value.kept is None


def test_a_directory_in_place_of_the_file(tmp_path):
    snap = tmp_path / "out_0005.png"
    snap.mkdir()
    (snap / "inside.txt").write_text("untouched")
    with pytest.raises(OutputError) as e:
        output.write_image(gradient(), snap, what="snapshot")
    message = one_line(e.value.message)
    assert message.startswith(f"{snap}: cannot be written (a directory is in its place)")
    kept = kept_path(message, "snapshot")
    assert kept == tmp_path / "out_0005.recovered.png"
    np.testing.assert_array_equal(imageio.load_image(kept), gradient())
    assert (snap / "inside.txt").read_text() == "untouched" and parts(tmp_path) == []


@linux_only
def test_name_too_long_at_rename_keeps_the_image_under_a_short_name(tmp_path, keep_dir, monkeypatch):
    out = tmp_path / ("n" * 200 + ".png")
    real = os.replace

    def refuse(src, dst):
        if Path(dst) == out:
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OutputError) as e:
        output.write_image(gradient(), out)
    message = one_line(e.value.message)
    assert "cannot be written (file name too long for the file system)" in message
    kept = kept_path(message)
    assert kept.exists() and len(os.fsencode(kept.name)) <= 255
    assert not out.exists() and parts(tmp_path) == []


@pytest.mark.parametrize("name", ["a" * 251 + ".png", "é" * 125 + ".png", "b" * 246 + ".tif"])
def test_names_near_name_max_get_short_temporary_names(tmp_path, name):
    out = tmp_path / name
    assert len(os.fsencode(name)) <= 255
    tmp = files.part_name(out)
    assert len(os.fsencode(tmp)) <= files.name_max(tmp_path) and tmp.endswith(".part")
    assert files.is_stale_part(tmp, 10**9) is False  # our own: never swept by this process
    output.write_image(gradient(), out)  # `.NAME.xxxx.part` used to be ENAMETOOLONG here
    np.testing.assert_array_equal(imageio.load_image(out), gradient())
    assert parts(tmp_path) == []


def test_output_names_whose_checkpoint_name_would_be_too_long_are_refused(tmp_path):
    output.check_output(tmp_path / ("c" * 242 + ".png"))  # its .ckpt.npz is 255 bytes: fine
    with pytest.raises(InputError) as e:
        output.check_output(tmp_path / ("c" * 243 + ".png"))
    assert "its checkpoint's name" in one_line(e.value.message) and "256 bytes long" in e.value.message
    with pytest.raises(InputError, match="file name is 260 bytes long, more than the 255"):
        output.check_output(tmp_path / ("d" * 256 + ".png"))
    assert list(tmp_path.iterdir()) == []


def test_trace_and_animation_are_kept_too(tmp_path):
    trace = tmp_path / "t.json"
    trace.mkdir()
    with pytest.raises(OutputError) as e:
        output.write_trace([{"iteration": 1}], trace, mode="content", config=Config(), status="done")
    assert json.loads(kept_path(e.value.message, "trace").read_text())["iterations"] == [{"iteration": 1}]
    gif = tmp_path / "a.gif"
    gif.mkdir()
    with pytest.raises(OutputError) as e:
        output.write_gif([(0, gradient()), (4, gradient() / 2)], gif)
    with Image.open(kept_path(e.value.message, "animation")) as g:
        assert g.n_frames == 2


# --- observers: a failing snapshot or checkpoint does not stop the run -----------------------------

def report(iteration: int, status: str = "running", final: bool = False, state=None) -> Report:
    rgb = gradient(6, 8) / 2 + iteration
    terms = {"total": 1.0, "content": 0.5, "style": 0.25, "tv": 3.0}
    return Report(0, "a.png", 0, iteration, iteration + 1, 1.0, terms, status, final, [],
                  lambda: rgb, lambda: state, {})


def test_snapshot_path_that_is_a_directory_is_reported_and_the_run_goes_on(tmp_path):
    out = tmp_path / "out.png"
    (tmp_path / "out_0005.png").mkdir()
    snaps = Snapshots(5, {0: out}, {0: 20}, {0: lambda rgb: rgb})
    snaps.observe(report(5))
    snaps.observe(report(10))
    assert snaps.written[0] == [tmp_path / "out_0010.png"]
    (error,) = snaps.errors[0]
    assert one_line(error.message).startswith(f"{tmp_path / 'out_0005.png'}: cannot be written (a directory")
    np.testing.assert_array_equal(imageio.load_image(kept_path(error.message, "snapshot")), imageio.to_uint8(
        gradient(6, 8) / 2 + 5).astype(np.float32))


class FakeState(NamedTuple):
    u: np.ndarray
    iteration: np.ndarray
    evaluations: np.ndarray


def state_at(iteration: int) -> FakeState:
    return FakeState(np.full((2, 3), iteration, np.float32), np.asarray(iteration, np.int32),
                     np.asarray(iteration, np.int32))


def test_checkpoint_path_that_is_a_directory_keeps_a_resumable_checkpoint(tmp_path):
    path = tmp_path / "out.png.ckpt.npz"
    path.mkdir()
    provenance = {"mode": "content", "config": Config(), "inputs": {"content": None, "styles": []},
                  "input_sha256": {}, "weights_sha256": None, "weights_path": None, "output": None}
    ck = Checkpoints(5, {0: path}, {0: 20}, {0: provenance})
    ck.observe(report(5, state=state_at(5)))
    ck.observe(report(10, state=state_at(10)))  # kept in the same place, now holding iteration 10
    error = ck.errors[0]
    message = one_line(error.message)
    assert message.startswith(f"{path}: cannot be written (a directory is in its place)")
    kept = kept_path(message, "checkpoint")
    assert f"continue with `jaxstyle resume {kept}`" in message
    assert kept == tmp_path / "out.png.ckpt.recovered.npz"
    assert checkpoint.load(kept).iteration == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png.ckpt.npz", "out.png.ckpt.recovered.npz"]
    path.rmdir()  # the next checkpoint is written where it belongs; the kept copy is then stale
    ck.observe(report(15, state=state_at(15)))
    assert 0 not in ck.errors and not kept.exists() and checkpoint.load(path).iteration == 15


# --- stale temporary files -----------------------------------------------------------------------

def _age(path: Path, seconds: float) -> Path:
    t = time.time() - seconds
    os.utime(path, (t, t))
    return path


def test_stale_temporary_files_of_killed_runs_are_removed_and_reported(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        def part(name, age, directory=False):
            p = tmp_path / name
            p.mkdir() if directory else p.write_bytes(b"half an image")
            return _age(p, age)

        removed = {
            part(f".out.png.jaxstyle-{dead.pid}-0123abcd.part", 20 * 60),  # its run is gone
            part(f".out.png.jaxstyle-{live.pid}-0123abce.part", 25 * 3600),  # a day old: pid reused
            part(".out.png.a1b2c3d4.part", 2 * 3600),  # an earlier jaxstyle's, two hours old
        }
        kept = {
            part(f".out.png.jaxstyle-{dead.pid}-0123abcf.part", 60),  # too recent to be sure
            part(f".out.png.jaxstyle-{live.pid}-0123abd0.part", 20 * 60),  # a live run's
            part(f".out.png.jaxstyle-{os.getpid()}-0123abd1.part", 30 * 3600),  # this process's
            part(".out.jpg.x9y8z7w6.part", 10 * 60),  # an earlier jaxstyle's, recent
            part(".notes.txt.abcdefgh.part", 9 * 3600),  # not a file jaxstyle writes
            part(".download.part", 9 * 3600),
            part("out.png.part", 9 * 3600),
            part(f".x.png.jaxstyle-{dead.pid}-0123abd2.part", 9 * 3600, directory=True),
            part("out.png", 9 * 3600),
        }
        with caplog.at_level(logging.WARNING, logger="jaxstyle"):
            files.check_output_path(tmp_path / "out.png")
        assert {p for p in removed | kept if p.exists()} == kept
        (record,) = [r for r in caplog.records if "temporary file" in r.getMessage()]
        line = one_line(record.getMessage())
        assert line.startswith(f"removed 3 temporary files left by killed runs in {tmp_path} (")
        assert files.sweep_stale(tmp_path) == []  # once per directory and process
        assert files.sweep_stale(tmp_path, force=True) == []  # and nothing else qualifies
    finally:
        live.kill()
        live.wait()


# --- end to end through the CLI -----------------------------------------------------------------

@linux_only
def test_cli_disk_full_exits_non_zero_keeps_old_result_and_the_new_image(
        capsys, tmp_path, keep_dir, monkeypatch, image_dir, synthetic_h5):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "result.jpg"
    before = previous(out)
    inject_write_fault(monkeypatch, in_dir(out_dir), errno.ENOSPC, room=300)
    code, _, err = run_cli(capsys, *tiny(image_dir, synthetic_h5, "-o", out))
    assert code == EXIT_ERROR
    message = cli_error(err)
    assert message.startswith(f"{out}: cannot be written (no space left on the device)")
    assert "wrote" not in err
    assert out.read_bytes() == before
    kept = kept_path(message)
    assert kept.parent == keep_dir
    with Image.open(kept) as img:
        assert max(img.size) == 32
    assert parts(out_dir) == []


@linux_only
def test_cli_real_file_size_limit_on_the_result(tmp_path, image_dir, synthetic_h5):
    """RLIMIT_FSIZE set by the kernel's rules, only while the TIFF result itself is written."""
    out = tmp_path / "result.tif"
    before = previous(out)
    script = r"""
import resource, sys
from jaxstyle.faces import cli
from jaxstyle.images import imageio
real = imageio.save_image
def limited(rgb, path, *a, **k):
    if str(path).endswith(".tif"):
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))
        try:
            return real(rgb, path, *a, **k)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    return real(rgb, path, *a, **k)
imageio.save_image = limited
cli.main(sys.argv[1:])
"""
    args = [str(a) for a in tiny(image_dir, synthetic_h5, "-o", out)]
    r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)
    assert r.returncode == EXIT_ERROR, r.stderr
    message = cli_error(r.stderr)
    assert message.startswith(f"{out}: cannot be written (file too large")
    assert out.read_bytes() == before
    kept = kept_path(message)
    assert kept == tmp_path / "result.recovered.png"
    with Image.open(kept) as img:
        assert max(img.size) == 32


def test_cli_output_directory_removed_mid_run(capsys, tmp_path, keep_dir, monkeypatch, image_dir, synthetic_h5):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "result.png"
    real = output.write_image

    def remove_then_write(rgb, path, *a, **k):
        shutil.rmtree(out_dir, ignore_errors=True)
        return real(rgb, path, *a, **k)

    monkeypatch.setattr(output, "write_image", remove_then_write)
    code, _, err = run_cli(capsys, *tiny(image_dir, synthetic_h5, "-o", out))
    assert code == EXIT_ERROR
    message = cli_error(err)
    assert message.startswith(f"{out}: cannot be written (its directory {out_dir} no longer exists)")
    kept = kept_path(message)
    assert kept.parent == keep_dir and imageio.load_image(kept).shape[:2] == (24, 32)


def test_cli_snapshot_and_checkpoint_paths_that_became_directories(
        capsys, tmp_path, monkeypatch, image_dir, synthetic_h5):
    out = tmp_path / "result.png"
    snap, ckpt = tmp_path / "result_0002.png", tmp_path / "result.png.ckpt.npz"
    from jaxstyle.run import batch
    real = batch.drive

    def once_running(*a, **kw):  # the job was checked and planned; now the paths become directories
        snap.mkdir()
        ckpt.mkdir()
        return real(*a, **kw)

    monkeypatch.setattr(batch, "drive", once_running)
    code, _, err = run_cli(capsys, *tiny(image_dir, synthetic_h5, "-o", out, "--save-every", 2,
                                         "--checkpoint-every", 2, "--keep-checkpoint"))  # the final one too
    assert code == EXIT_ERROR
    message = cli_error(err)
    assert f"{ckpt}: cannot be written (a directory is in its place)" in message
    assert f"{snap}: cannot be written (a directory is in its place)" in message
    assert message.endswith(f"the result {out} was written")
    kept_ckpt = kept_path(message, "checkpoint")
    assert f"continue with `jaxstyle resume {kept_ckpt}`" in message
    assert checkpoint.load(kept_ckpt).iteration + checkpoint.load(kept_ckpt).offset[0] == 4
    assert imageio.load_image(kept_path(message, "snapshot")).shape[:2] == (24, 32)
    assert imageio.load_image(out).shape[:2] == (24, 32)
    assert snap.is_dir() and ckpt.is_dir() and parts(tmp_path) == []


@linux_only
def test_cli_folder_one_image_fails_to_write_the_others_continue(
        capsys, tmp_path, monkeypatch, image_dir, synthetic_h5):
    src, out_dir = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(image_dir / "content.png", src / name)
    inject_write_fault(monkeypatch, lambda t: os.path.basename(t).startswith(".a_content.png.jaxstyle-"),
                       errno.ENOSPC, room=100)
    code, _, err = run_cli(capsys, "content", src, "-o", out_dir, "--weights", synthetic_h5,
                           "--size", 32, "--iterations", 3)
    assert code == EXIT_ERROR and "Traceback" not in err
    assert "1 written, 0 already done, 1 failed" in err
    (failed,) = [ln for ln in err.splitlines() if ln.startswith("jaxstyle: failed: ")]
    message = failed[len("jaxstyle: failed: "):]
    assert message.startswith(f"{out_dir / 'a_content.png'}: cannot be written (no space left on the device)")
    assert kept_path(message) == out_dir / "a_content.recovered.png"
    assert imageio.load_image(out_dir / "a_content.recovered.png").shape[:2] == (24, 32)
    assert imageio.load_image(out_dir / "b_content.png").shape[:2] == (24, 32)
    assert not (out_dir / "a_content.png").exists() and parts(out_dir) == []


def test_cli_long_names_and_stale_temporary_files(capsys, caplog, tmp_path, image_dir, synthetic_h5):
    stale = tmp_path / ".old.png.jaxstyle-999999999-0123abcd.part"  # no such process
    stale.write_bytes(b"from a killed run")
    _age(stale, 3600)
    out = tmp_path / ("n" * 242 + ".png")  # its checkpoint's name is exactly 255 bytes
    with caplog.at_level(logging.WARNING, logger="jaxstyle"):
        code, _, err = run_cli(capsys, *tiny(image_dir, synthetic_h5, "-o", out))
    assert code == 0, err
    assert imageio.load_image(out).shape[:2] == (24, 32) and parts(tmp_path) == []
    assert any(r.getMessage().startswith("removed 1 temporary file left by killed runs")
               for r in caplog.records)


def test_cli_output_name_whose_checkpoint_name_is_too_long_is_refused(capsys, tmp_path, image_dir, synthetic_h5):
    code, _, err = run_cli(capsys, *tiny(image_dir, synthetic_h5, "-o", tmp_path / ("n" * 243 + ".png")))
    assert code == EXIT_ERROR
    assert "checkpoint" in cli_error(err) and "more than the 255" in err and ".ckpt.npz" in err

"""Filesystem helpers shared by every stage that writes: atomic, verified writes, keeping what
could not be written somewhere else, cleaning up after killed runs, and output checks.

Every file jaxstyle writes goes to a temporary file beside it, `.NAME.jaxstyle-PID-XXXXXXXX.part`
(NAME shortened when needed, so the temporary name is never longer than the file system
allows). Every write to it is checked (a short write is continued, then fails with the
system's error), the file is flushed and synced, its size must equal the bytes written, and it
may be read back (`verify`) before it is renamed over the target: a full disk or a file-size
limit can never leave a truncated file in place of a good one.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import os
import re
import secrets
import stat
import tempfile
import time
from pathlib import Path
from typing import IO, Callable, Iterator

from jaxstyle.errors import InputError, OutputError

log = logging.getLogger("jaxstyle")

PART_SUFFIX = ".part"
CHECKPOINT_SUFFIX = ".ckpt.npz"  # a result's checkpoint: OUT.png -> OUT.png.ckpt.npz, beside it
# Temporary files this version writes: `.NAME.jaxstyle-PID-TOKEN.part` (NAME may be shortened).
_PART = re.compile(r"^\.(?P<base>.*)\.jaxstyle-(?P<pid>\d{1,10})-[0-9a-f]{8}\.part$", re.S)
# Those of earlier versions (tempfile.mkstemp): `.NAME.XXXXXXXX.part`, NAME a file jaxstyle writes.
_LEGACY_PART = re.compile(r"^\.(?P<base>.+\.(?:png|jpe?g|webp|tiff?|bmp|gif|npz|json|h5))"
                          r"\.[a-z0-9_]{8}\.part$", re.S | re.I)
STALE_DEAD_SECONDS = 600  # a temporary file of a process that is gone, untouched this long
STALE_SECONDS = 24 * 3600  # any of ours untouched this long (its pid may have been reused)
STALE_LEGACY_SECONDS = 3600  # an earlier version's (no pid in its name), untouched this long
DEFAULT_NAME_MAX = 255


def name_max(directory: str | os.PathLike) -> int:
    """The longest file name (in bytes) the file system of `directory` allows."""
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError, TypeError):
        return DEFAULT_NAME_MAX


def _nbytes(name: str) -> int:
    return len(os.fsencode(name))


def _shorten(name: str, room: int) -> str:
    """`name` cut to at most `room` bytes (whole characters)."""
    room = max(room, 0)
    while name and _nbytes(name) > room:
        name = name[:-max(1, (_nbytes(name) - room) // 4)]
    return name


def _dir_of(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def part_name(path: str | os.PathLike) -> str:
    """A fresh temporary name for writing `path`, in its directory, never too long."""
    path = Path(path)
    tail = f".jaxstyle-{os.getpid()}-{secrets.token_hex(4)}{PART_SUFFIX}"
    room = name_max(_dir_of(path)) - _nbytes("." + tail)
    return "." + _shorten(path.name, room) + tail


class _CheckedWriter(io.RawIOBase):
    """Writes to a file descriptor where every byte must land: a short write is continued, so a
    full disk or a file-size limit raises its OSError (ENOSPC, EFBIG) instead of being ignored.
    It has no `fileno()`, so libraries (Pillow) write through it rather than around it."""

    def __init__(self, fd: int, name: str) -> None:
        super().__init__()
        self._fd, self.name = fd, name
        self.end = 0  # the furthest byte written: the size the file must have

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        pos = os.lseek(self._fd, 0, os.SEEK_CUR)
        done = 0
        while done < len(view):
            n = os.write(self._fd, view[done:])
            if n <= 0:  # not expected from a regular file; never loop on it
                raise OSError(errno.EIO, f"write returned {n} after {done} of {len(view)} bytes")
            done += n
        self.end = max(self.end, pos + done)
        return done

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self._fd, offset, whence)

    def tell(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def fileno(self) -> int:
        raise io.UnsupportedOperation("writes go through the checked writer")

    def sync(self) -> None:
        os.fsync(self._fd)

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def close(self) -> None:
        if not self.closed:
            try:
                os.close(self._fd)
            finally:
                super().close()


def _create_part(path: Path) -> tuple[int, Path]:
    directory = _dir_of(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = directory / part_name(path)
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(directory))


def _sync_dir(directory: Path) -> None:
    """Make a rename durable (best effort: not every system can open a directory)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb",
                 verify: Callable[[Path], object] | None = None) -> Iterator[IO]:
    """Open a temporary file beside `path`; on success rename it onto `path`, on error delete it.

    Readers never see a partially written file, and a failed or interrupted write leaves `path`
    as it was. Before the rename the file is flushed and synced, its size must be the number of
    bytes written, and `verify(temporary_path)` (if given) must return without raising (e.g.
    decode the image); otherwise OSError (EIO for a short or unreadable file, or the system's
    own: ENOSPC, EFBIG, ENAMETOOLONG, ENOENT, EISDIR...). Stale temporary files of killed runs
    in the directory are removed first (`sweep_stale`).
    """
    path = Path(path)
    directory = _dir_of(path)
    sweep_stale(directory)
    fd, tmp = _create_part(path)
    raw = _CheckedWriter(fd, str(tmp))
    buffered = io.BufferedWriter(raw, buffer_size=1 << 16)
    fh: IO = buffered if "b" in mode else io.TextIOWrapper(buffered, encoding="utf-8")
    try:
        yield fh
        fh.flush()
        raw.sync()
        size = raw.size()
        if size != raw.end:
            raise OSError(errno.EIO, f"short write: {size} of {raw.end} bytes reached the file")
        fh.close()
        if verify is not None:
            try:
                verify(tmp)
            except Exception as e:
                reason = " ".join(str(e).split())[:160] or type(e).__name__
                raise OSError(errno.EIO, f"the written file does not read back ({reason})") from None
        _put_in_place(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            fh.close()  # may try to flush what the failure left in the buffer, into the doomed file
        raw.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def finish_part(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Put a file written elsewhere under `part_name(path)` (by a library that needs a path of
    its own) onto `path` as `atomic_write` does: synced to disk, renamed, the rename synced."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    _put_in_place(Path(tmp), Path(path))


def _put_in_place(tmp: Path, path: Path) -> None:
    """Rename a synced temporary file onto `path`, readable by all, and sync the rename."""
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    _sync_dir(_dir_of(path))


# --- stale temporary files ---------------------------------------------------------------------

_swept: set[str] = set()


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (True when that cannot be known)."""
    if os.name != "posix" or pid <= 0:
        return True  # os.kill(pid, 0) would terminate a process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: it exists, as another user
    return True


def is_stale_part(name: str, age: float) -> bool:
    """Whether a directory entry `name`, untouched for `age` seconds, is a temporary file of a
    jaxstyle run that is certainly no longer writing it: ours with a process that is gone
    (STALE_DEAD_SECONDS) or very old (STALE_SECONDS), or an earlier version's (STALE_LEGACY_SECONDS).
    A live run writes its temporary file continuously and renames it within seconds."""
    m = _PART.match(name)
    if m:
        pid = int(m.group("pid"))
        if pid == os.getpid():
            return False
        return age > STALE_SECONDS or (age > STALE_DEAD_SECONDS and not _pid_alive(pid))
    return bool(_LEGACY_PART.match(name)) and age > STALE_LEGACY_SECONDS


def sweep_stale(directory: str | os.PathLike, *, force: bool = False) -> list[Path]:
    """Remove the stale temporary files of killed jaxstyle runs in `directory` (see
    `is_stale_part`; only regular files), once per directory and process unless `force`, and
    report them on one line to the `jaxstyle` logger. Returns what was removed."""
    directory = Path(directory)
    key = os.path.abspath(directory)
    if key in _swept and not force:
        return []
    _swept.add(key)
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(PART_SUFFIX)):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or not is_stale_part(name, now - st.st_mtime):
                continue
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue  # gone meanwhile (its run renamed it), or not ours to remove
    if removed:
        names = ", ".join(p.name for p in removed[:3]) + (", ..." if len(removed) > 3 else "")
        with contextlib.suppress(Exception):  # a broken log handler must not stop a run
            log.warning("removed %d temporary file%s left by killed runs in %s (%s)",
                        len(removed), "" if len(removed) == 1 else "s", directory, names)
    return removed


# --- failed writes -----------------------------------------------------------------------------

def describe(e: OSError, path: Path) -> str:
    """The reason a write of `path` failed, in words (no temporary names)."""
    code = getattr(e, "errno", None)
    if code == errno.ENOSPC:
        return "no space left on the device"
    if code == getattr(errno, "EDQUOT", -1):
        return "disk quota exceeded"
    if code == errno.EFBIG:
        return "file too large: over the file-size limit `ulimit -f` or the file system's maximum"
    if code == errno.ENAMETOOLONG:
        return "file name too long for the file system"
    if code == errno.EROFS:
        return "read-only file system"
    if code in (errno.ENOENT, errno.ENOTDIR) and not _dir_of(path).is_dir():
        return f"its directory {_dir_of(path)} no longer exists"
    if code == errno.EISDIR or (code in (errno.EEXIST, errno.ENOTEMPTY) and path.is_dir()):
        return "a directory is in its place"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied"
    text = e.strerror or str(e) or type(e).__name__
    return " ".join(str(text).split())[:200]


def fallback_dirs(path: str | os.PathLike) -> list[Path]:
    """Where to keep what could not be written to `path`: beside it, the system's temporary
    directory, the current directory (each once)."""
    out, seen = [], set()
    candidates: list[Callable[[], Path]] = [lambda: _dir_of(Path(path)), lambda: Path(tempfile.gettempdir()),
                                            Path.cwd]
    for get in candidates:
        try:
            d = get()
            key = os.path.realpath(d)
        except OSError:
            continue
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def fallback_path(directory: Path, path: Path, suffix: str) -> Path:
    """A new name in `directory` for keeping `path`'s content: `STEM.recovered[-N]SUFFIX`."""
    limit = name_max(directory)
    for n in range(1, 1000):
        tag = ".recovered" + ("" if n == 1 else f"-{n}") + suffix
        candidate = directory / (_shorten(path.stem, limit - _nbytes(tag)) + tag)
        if not os.path.lexists(candidate):
            return candidate
    return directory / (f"{secrets.token_hex(4)}.recovered{suffix}")


def write_or_keep(path: str | os.PathLike, write: Callable[[Path], Path], *, what: str,
                  keep: Callable[[Path], Path] | None = None, keep_suffix: str | None = None,
                  keep_at: Path | None = None, advice: Callable[[Path], str] | None = None) -> Path:
    """`write(path)`; if it fails with an OSError, keep the content with `keep(other)` in the first
    place that takes it (`keep_at` if given, then beside `path`, the temporary directory, the
    current directory) and raise OutputError naming `path`, the problem and where the `what` is.
    The previous file at `path` is left as it was (`write` is atomic)."""
    path = Path(path)
    try:
        return write(path)
    except OSError as e:
        reason = describe(e, path)
    keep = keep or write
    suffix = keep_suffix or path.suffix
    kept, failures = None, []
    places: list[Path] = [keep_at] if keep_at is not None else []
    places += fallback_dirs(path)
    for place in places:
        target = place if place is keep_at else fallback_path(place, path, suffix)
        try:
            kept = keep(target)
            break
        except OSError as e2:
            failures.append(f"{_dir_of(target)}: {describe(e2, target)}")
    if kept is not None:
        tail = f"the {what} is kept in {kept}" + (f"; {advice(kept)}" if advice else "")
    else:
        tail = f"the {what} could not be kept anywhere else either ({'; '.join(failures)})"
    raise OutputError(f"{path}: cannot be written ({reason}); {tail}", path=path, kept=kept)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read now."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


# --- checks before a run -----------------------------------------------------------------------

def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when both paths name the same file (existing or not)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_name_length(path: str | os.PathLike, name: str | None = None, what: str = "") -> None:
    """Refuse a file name (`name`, or `path`'s own) longer than its file system allows."""
    path = Path(path)
    name = path.name if name is None else name
    limit = name_max(_dir_of(path))
    if _nbytes(name) > limit:
        whose = f"{what} name {name[:40]}... is" if what else "file name is"
        raise InputError(f"{path}: {whose} {_nbytes(name)} bytes long, more than the {limit} the file "
                         f"system allows; use a shorter name")


def check_output_path(path: str | os.PathLike, inputs: tuple = ()) -> Path:
    """Refuse an output whose directory is missing or not writable, whose name is too long, or
    which names an input. Stale temporary files of killed runs in its directory are removed."""
    path = Path(path)
    parent = _dir_of(path)
    try:
        is_dir = path.is_dir()
    except OSError:
        is_dir = False
    if is_dir:
        raise InputError(f"{path}: is a directory; give a file name for the output")
    if not parent.exists():
        raise InputError(f"{path}: output directory {parent} does not exist")
    if not parent.is_dir():
        raise InputError(f"{path}: {parent} is not a directory")
    check_name_length(path)
    try:  # the only reliable test (root ignores permission bits; read-only mounts don't)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise InputError(f"{path}: output directory {parent} is not writable ({e.strerror})") from None
    for inp in inputs:
        if inp is not None and isinstance(inp, (str, os.PathLike)) and same_file(path, inp):
            raise InputError(f"{path}: output path is also an input; refusing to overwrite it")
    sweep_stale(parent)
    return path


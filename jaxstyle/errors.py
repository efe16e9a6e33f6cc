"""User-facing errors: each carries a one-line message and a process exit code; and a way to
keep C libraries' stray output off the terminal so that what the user sees stays one line."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from typing import IO, Iterator

EXIT_ERROR = 1  # bad input, bad configuration, unusable weights
EXIT_USAGE = 2  # click's own code for malformed command lines
EXIT_NUMERICAL = 3  # the optimization hit a non-finite loss or gradient
EXIT_INTERRUPTED = 130  # stopped by SIGINT/SIGTERM after saving the current image


def first_line(e: BaseException, limit: int = 160, default: str | None = None) -> str:
    """The first line of an exception's message, cut to `limit` characters (`default`, else the
    exception type's name, when it has none)."""
    lines = str(e).strip().splitlines()
    return lines[0][:limit] if lines else (default or type(e).__name__)


class JaxstyleError(Exception):
    """An error the user can act on; the CLI prints its message on one line, no traceback."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # one line, always

    @property
    def message(self) -> str:
        return str(self)


class InputError(JaxstyleError):
    """A file the user gave cannot be used (missing, unreadable, undecodable, wrong shape)."""


class ConfigError(JaxstyleError):
    """An option value is out of range or inconsistent with another."""


class WeightsError(JaxstyleError):
    """VGG16 weights cannot be found, downloaded, verified or converted."""


class OutputError(JaxstyleError):
    """A file could not be written: the disk is full, the file is over the size limit, its name is
    too long, its directory is gone, a directory stands in its place... The message names the file,
    the problem, and where its content was kept instead (`kept`; None when nowhere would take it).
    The previous file at `path`, if any, is left as it was."""

    def __init__(self, message: str, path=None, kept=None) -> None:
        super().__init__(message)
        self.path, self.kept = path, kept


class NumericalError(JaxstyleError):
    """The loss or its gradient became non-finite."""

    exit_code = EXIT_NUMERICAL


_CAPTURING = threading.Lock()


def _sink() -> IO[bytes]:
    """An anonymous file: in memory where the system has memfd (no temporary folder needed)."""
    if hasattr(os, "memfd_create"):
        return os.fdopen(os.memfd_create("jaxstyle-stderr"), "w+b")
    return tempfile.TemporaryFile()


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Send file descriptor 2 (C libraries' logging included) to an anonymous file; the list it
    yields receives the text on exit. Where fd 2 cannot be redirected nothing is captured."""
    out: list[str] = []
    # fd 2 belongs to the whole process: only the main thread redirects it, never nested
    if threading.current_thread() is not threading.main_thread() or not _CAPTURING.acquire(blocking=False):
        yield out
        return
    try:
        try:
            with contextlib.suppress(AttributeError, OSError, ValueError):
                sys.stderr.flush()
            saved = os.dup(2)
        except OSError:
            yield out
            return
        try:
            sink = _sink()
            os.dup2(sink.fileno(), 2)
        except OSError:
            os.close(saved)
            yield out
            return
        with sink:
            try:
                yield out
            finally:
                with contextlib.suppress(AttributeError, OSError, ValueError):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                out.append(sink.read().decode("utf-8", "replace"))
    finally:
        _CAPTURING.release()

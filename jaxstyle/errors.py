"""User-facing errors: each carries a one-line message and a process exit code."""
from __future__ import annotations

EXIT_ERROR = 1  # bad input, bad configuration, unusable weights
EXIT_USAGE = 2  # click's own code for malformed command lines
EXIT_NUMERICAL = 3  # the optimization hit a non-finite loss or gradient
EXIT_INTERRUPTED = 130  # stopped by SIGINT/SIGTERM after saving the current image


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


class NumericalError(JaxstyleError):
    """The loss or its gradient became non-finite."""

    exit_code = EXIT_NUMERICAL

"""Video (`jaxstyle video`, `jaxstyle.video(...)`): frames in and out (`frames`), optical flow,
reliability and warping (`flow`), and a video through the run path frame by frame (`stylize`).

The package is `clips`, not `video`: a subpackage `jaxstyle.video` would replace the API
function `jaxstyle.video` as the package's attribute as soon as it was imported. These modules
need the video extra (`pip install 'jaxstyle[video]'`: PyAV, which ships its own ffmpeg, and
OpenCV); nothing outside `jaxstyle.clips` imports them, so the rest of jaxstyle runs without it.
"""
from __future__ import annotations

VIDEO_EXTRA = "`jaxstyle video` needs the video extra: pip install 'jaxstyle[video]'"


def require() -> None:
    """Raise ConfigError saying what to install when PyAV or OpenCV is missing."""
    from jaxstyle.errors import ConfigError
    try:
        import av  # noqa: F401
        import cv2  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"{VIDEO_EXTRA} ({e.name} is missing)") from None

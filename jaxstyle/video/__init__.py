"""Video: frames in and out (`frames`), optical flow, reliability and warping (`flow`).

These modules need the video extra (`pip install 'jaxstyle[video]'`: PyAV, which ships its own
ffmpeg, and OpenCV); nothing outside `jaxstyle.video` imports them, so the rest of jaxstyle runs
without it.
"""
from __future__ import annotations

VIDEO_EXTRA = "video needs the video extra: pip install 'jaxstyle[video]'"


def require() -> None:
    """Raise ConfigError saying what to install when PyAV or OpenCV is missing."""
    from ..errors import ConfigError
    try:
        import av  # noqa: F401
        import cv2  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"`jaxstyle {VIDEO_EXTRA}` ({e.name} is missing)") from None

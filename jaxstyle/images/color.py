"""Colour preservation for style transfer (`--preserve-colors`).

Gatys, Bethge, Hertzmann & Shechtman, "Preserving Color in Neural Artistic Style
Transfer" (2016, arXiv:1606.05897) keep the photo's colours in two ways:
  1. luminance-only transfer: run the transfer on luminance images (`luminance_images`),
     then put the content's chrominance back (`recombine`);
  2. colour matching: make the style image's colour statistics match the content's
     before the run (`match_colors`, by mean/covariance or per-channel histograms).

Images are float arrays (H, W, 3), RGB on a 0..255 scale. The functions compute in
float64 and return float32; images they return are clipped to 0..255 (the colour-space
conversions are not, so that they stay exact inverses).
"""
from __future__ import annotations

import numpy as np

# NTSC (FCC) RGB -> YIQ; the I and Q rows sum to zero, so grays have no chrominance.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                        [0.596, -0.274, -0.322],
                        [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)
_EPS = 1e-6  # smallest variance (0..255 units squared) treated as non-flat


def _pixels(image: np.ndarray, name: str = "image") -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3), got {image.shape}")
    return image


def _out(image: np.ndarray) -> np.ndarray:
    return np.clip(image, 0.0, 255.0).astype(np.float32)


def rgb_to_yiq(rgb: np.ndarray) -> np.ndarray:
    """The image in NTSC YIQ (Y on the RGB scale; I and Q signed)."""
    return (_pixels(rgb) @ _RGB_TO_YIQ.T).astype(np.float32)


def yiq_to_rgb(yiq: np.ndarray) -> np.ndarray:
    """The RGB image of a YIQ image (the exact inverse of `rgb_to_yiq`, unclipped)."""
    return (_pixels(yiq) @ _YIQ_TO_RGB.T).astype(np.float32)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """The luminance (Y) channel, shape (H, W)."""
    return (_pixels(rgb) @ _RGB_TO_YIQ[0]).astype(np.float32)


def luminance_images(content_rgb: np.ndarray, style_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gray 3-channel images (Y repeated) of content and style for a luminance-only run;
    the style's luminance is shifted and scaled to the content's mean and std."""
    y_c = _pixels(content_rgb, "content") @ _RGB_TO_YIQ[0]
    y_s = _pixels(style_rgb, "style") @ _RGB_TO_YIQ[0]
    sd_s = y_s.std()
    scale = y_c.std() / sd_s if sd_s > np.sqrt(_EPS) else 0.0
    y_s = scale * (y_s - y_s.mean()) + y_c.mean()
    gray = lambda y: _out(np.repeat(y[..., None], 3, axis=-1))  # noqa: E731
    return gray(y_c), gray(y_s)


def recombine(result_rgb: np.ndarray, content_rgb: np.ndarray) -> np.ndarray:
    """The result's luminance combined with the content's chrominance (I, Q)."""
    result, content = _pixels(result_rgb, "result"), _pixels(content_rgb, "content")
    if result.shape != content.shape:
        raise ValueError(f"result {result.shape} and content {content.shape} shapes differ")
    yiq = content @ _RGB_TO_YIQ.T
    yiq[..., 0] = result @ _RGB_TO_YIQ[0]
    return _out(yiq @ _YIQ_TO_RGB.T)


def _sym_power(cov: np.ndarray, power: float) -> np.ndarray:
    vals, vecs = np.linalg.eigh(cov)
    return (vecs * np.maximum(vals, _EPS) ** power) @ vecs.T


def _match_covariance(style: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Unclipped float64 style pixels with the content's mean and covariance."""
    s, c = style.reshape(-1, 3), content.reshape(-1, 3)
    mu_s, mu_c = s.mean(0), c.mean(0)
    a = _sym_power(np.cov(c, rowvar=False, bias=True), 0.5) @ _sym_power(np.cov(s, rowvar=False, bias=True), -0.5)
    return ((s - mu_s) @ a.T + mu_c).reshape(style.shape)


def _match_histograms(style: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Style pixels mapped, channel by channel and by rank, onto the content's quantiles."""
    s, c = style.reshape(-1, 3), content.reshape(-1, 3)
    out = np.empty_like(s)
    q_s = (np.arange(len(s)) + 0.5) / len(s)
    q_c = (np.arange(len(c)) + 0.5) / len(c)
    for ch in range(3):
        order = np.argsort(s[:, ch], kind="stable")
        out[order, ch] = np.interp(q_s, q_c, np.sort(c[:, ch]))
    return out.reshape(style.shape)


def match_colors(style_rgb: np.ndarray, content_rgb: np.ndarray, method: str = "covariance") -> np.ndarray:
    """The style image recoloured so its colour statistics match the content's:
    mean and covariance (`"covariance"`) or each channel's histogram (`"histogram"`).
    The images may differ in size."""
    methods = {"covariance": _match_covariance, "histogram": _match_histograms}
    if method not in methods:
        raise ValueError(f"unknown colour matching method {method!r}; expected one of {sorted(methods)}")
    return _out(methods[method](_pixels(style_rgb, "style"), _pixels(content_rgb, "content")))

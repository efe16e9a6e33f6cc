"""Colour preservation (jaxstyle.images.color): YIQ conversions, luminance-only transfer, colour matching."""
import numpy as np
import pytest

from jaxstyle.images import color


def _correlated(seed: int, shape=(24, 32), mean=(120.0, 110.0, 100.0), scale=12.0, mix=None) -> np.ndarray:
    """A random image whose channels are correlated, comfortably inside 0..255."""
    rng = np.random.default_rng(seed)
    mix = np.array([[1.0, 0.6, 0.3], [0.2, 1.0, 0.5], [0.4, 0.1, 1.0]]) if mix is None else np.asarray(mix)
    x = rng.normal(size=shape + (3,)) @ mix.T * scale + np.asarray(mean)
    assert x.min() > 0 and x.max() < 255
    return x.astype(np.float32)


def _stats(img):
    px = np.asarray(img, np.float64).reshape(-1, 3)
    return px.mean(0), np.cov(px, rowvar=False, bias=True)


def test_yiq_round_trip_is_exact():
    rgb = np.random.default_rng(0).uniform(0, 255, (16, 20, 3)).astype(np.float32)
    yiq = color.rgb_to_yiq(rgb)
    assert yiq.dtype == np.float32 and yiq.shape == rgb.shape
    np.testing.assert_allclose(color.yiq_to_rgb(yiq), rgb, atol=1e-4)
    np.testing.assert_allclose(color.rgb_to_yiq(color.yiq_to_rgb(yiq)), yiq, atol=1e-4)


def test_luminance_of_white_and_grays():
    assert color.luminance(np.full((2, 3, 3), 255.0)) == pytest.approx(np.full((2, 3), 255.0), abs=1e-4)
    grays = np.repeat(np.linspace(0, 255, 12).reshape(3, 4, 1), 3, axis=-1)
    y = color.luminance(grays)
    assert y.shape == (3, 4)
    np.testing.assert_allclose(y, grays[..., 0], atol=1e-4)
    # grays carry no chrominance
    np.testing.assert_allclose(color.rgb_to_yiq(grays)[..., 1:], 0.0, atol=1e-4)


def test_recombine_content_with_itself_is_identity():
    content = np.random.default_rng(1).uniform(0, 255, (10, 12, 3)).astype(np.float32)
    np.testing.assert_allclose(color.recombine(content, content), content, atol=1e-3)


def test_recombine_keeps_result_luminance_and_content_chrominance():
    rng = np.random.default_rng(2)
    content = rng.uniform(80, 170, (10, 12, 3)).astype(np.float32)
    result = (content + rng.uniform(-40, 40, content.shape)).astype(np.float32)
    out = color.recombine(result, content)
    assert out.dtype == np.float32 and out.min() > 0 and out.max() < 255  # nothing was clipped
    yiq = color.rgb_to_yiq(out)
    np.testing.assert_allclose(yiq[..., 0], color.luminance(result), atol=1e-3)
    np.testing.assert_allclose(yiq[..., 1:], color.rgb_to_yiq(content)[..., 1:], atol=1e-3)
    # differs from the result itself: the result's own chrominance is gone
    assert np.abs(out - result).max() > 1.0


def test_recombine_shape_mismatch_raises():
    with pytest.raises(ValueError):
        color.recombine(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))


def test_luminance_images_are_gray_with_matched_statistics():
    content = _correlated(3)
    style = _correlated(4, shape=(30, 18), mean=(150, 90, 60), scale=5.0)
    c_gray, s_gray = color.luminance_images(content, style)
    assert c_gray.shape == content.shape and s_gray.shape == style.shape
    assert c_gray.dtype == s_gray.dtype == np.float32
    for g in (c_gray, s_gray):
        np.testing.assert_array_equal(g[..., 0], g[..., 1])
        np.testing.assert_array_equal(g[..., 0], g[..., 2])
    y_c = color.luminance(content).astype(np.float64)
    np.testing.assert_allclose(c_gray[..., 0], y_c, atol=1e-3)
    y_s = s_gray[..., 0].astype(np.float64)
    assert y_s.mean() == pytest.approx(y_c.mean(), abs=1e-3)
    assert y_s.std() == pytest.approx(y_c.std(), abs=1e-3)
    # the style's spatial structure is kept (an affine map of its luminance)
    assert np.corrcoef(y_s.ravel(), color.luminance(style).ravel())[0, 1] > 0.9999


def test_luminance_images_constant_style_gives_no_nan():
    content = _correlated(5)
    _, s_gray = color.luminance_images(content, np.full((8, 8, 3), 77.0))
    assert np.isfinite(s_gray).all()
    np.testing.assert_allclose(s_gray, color.luminance(content).mean(), atol=1e-3)


def test_covariance_matching_matches_mean_and_covariance():
    content = _correlated(6, shape=(40, 50))
    style = _correlated(7, shape=(30, 20), mean=(90, 140, 160), scale=8.0,
                        mix=[[1.0, -0.5, 0.0], [0.3, 0.8, 0.2], [0.0, 0.7, 1.0]])
    out = color.match_colors(style, content, method="covariance")
    assert out.shape == style.shape and out.dtype == np.float32
    assert out.min() > 0 and out.max() < 255  # nothing was clipped
    mu_c, cov_c = _stats(content)
    mu_o, cov_o = _stats(out)
    mu_s, cov_s = _stats(style)
    assert np.abs(cov_s - cov_c).max() > 0.2 * np.abs(cov_c).max()  # the test is not trivial
    np.testing.assert_allclose(mu_o, mu_c, rtol=1e-3)
    np.testing.assert_allclose(cov_o, cov_c, atol=0.01 * np.abs(cov_c).max())
    # the default method is covariance matching
    np.testing.assert_array_equal(color.match_colors(style, content), out)


def test_covariance_matching_is_symmetric_form():
    # A = Σc^½ Σs^-½ (symmetric roots): matching an image onto itself changes nothing
    img = _correlated(8)
    np.testing.assert_allclose(color.match_colors(img, img), img, atol=1e-3)


def test_covariance_matching_flat_style_gives_no_nan():
    content = _correlated(9)
    for flat in (np.full((6, 7, 3), 40.0), np.repeat(np.linspace(0, 255, 42).reshape(6, 7, 1), 3, -1)):
        out = color.match_colors(flat, content, method="covariance")
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 255
    np.testing.assert_allclose(color.match_colors(np.full((6, 7, 3), 40.0), content),
                               np.broadcast_to(_stats(content)[0], (6, 7, 3)), atol=1e-3)


def test_histogram_matching_equal_sizes_reproduces_content_quantiles():
    rng = np.random.default_rng(10)
    content = _correlated(11)
    style = rng.uniform(0, 255, content.shape).astype(np.float32)
    out = color.match_colors(style, content, method="histogram")
    assert out.shape == style.shape and out.dtype == np.float32
    for ch in range(3):
        np.testing.assert_allclose(np.sort(out[..., ch].ravel()), np.sort(content[..., ch].ravel()), atol=1.0)
        # ranks are preserved: the mapping is monotone in the style's values
        order = np.argsort(style[..., ch].ravel(), kind="stable")
        assert np.all(np.diff(out[..., ch].ravel()[order]) >= 0)


def test_histogram_matching_different_sizes():
    content = _correlated(12, shape=(40, 30))
    style = np.random.default_rng(13).uniform(0, 255, (17, 23, 3)).astype(np.float32)
    out = color.match_colors(style, content, method="histogram")
    assert out.shape == style.shape and np.isfinite(out).all()
    for ch in range(3):
        probs = np.linspace(0.05, 0.95, 19)
        np.testing.assert_allclose(np.quantile(out[..., ch], probs), np.quantile(content[..., ch], probs),
                                   atol=0.05 * np.ptp(content[..., ch]))


def test_invalid_method_raises():
    img = _correlated(14)
    with pytest.raises(ValueError, match="method"):
        color.match_colors(img, img, method="bogus")
    with pytest.raises(ValueError):
        color.match_colors(np.zeros((4, 4)), img)

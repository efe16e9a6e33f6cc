"""Losses, features and gradients against the independent float64 NumPy reference."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference as ref
from jaxstyle.objective import losses
from jaxstyle.model import vgg
from jaxstyle.config import Config


def terms_at(x, variables, targets, objective):
    return jax.jit(losses.terms, static_argnums=3)(jnp.asarray(x), variables, targets, objective)


def value_and_grad(x, variables, targets, objective):
    fn = jax.jit(jax.value_and_grad(losses.total), static_argnums=3)
    return fn(jnp.asarray(x), variables, targets, objective)

H, W = 36, 28  # odd sizes after pooling exercise the 'VALID' floor


def _ref_params(params):
    return {n: (p["kernel"].astype(np.float64), p["bias"].astype(np.float64)) for n, p in params.items()}


def _images(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-120, 130, (H, W, 3)).astype(np.float32) for _ in range(3)]


@pytest.fixture(scope="module")
def variables(synthetic_params):
    return vgg.prepare_variables(synthetic_params)


def test_features_match_reference(synthetic_params, variables):
    x = _images()[0]
    got = vgg.features(variables, jnp.asarray(x), vgg.LAYER_NAMES)
    want = ref.forward(_ref_params(synthetic_params), x.astype(np.float64))
    for name in vgg.LAYER_NAMES:
        err = np.linalg.norm(np.asarray(got[name], np.float64) - want[name]) / np.linalg.norm(want[name])
        assert err < 1e-5, (name, err)
    assert got["block5_conv3"].shape == want["block5_conv3"].shape == (2, 1, 512)


def test_gram_matches_reference():
    f = np.random.default_rng(1).standard_normal((5, 7, 6)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(losses.gram(jnp.asarray(f))), ref.gram(f.astype(np.float64)),
                               rtol=1e-5, atol=1e-7)


def test_network_stops_at_deepest_requested_layer(variables):
    jaxpr = jax.make_jaxpr(lambda x: vgg.features(variables, x, ("block1_conv2",)))(jnp.zeros((H, W, 3)))
    assert str(jaxpr).count("conv_general_dilated") == 2
    jaxpr = jax.make_jaxpr(lambda x: vgg.features(variables, x, ("block3_conv1", "block1_conv1")))(
        jnp.zeros((H, W, 3)))
    assert str(jaxpr).count("conv_general_dilated") == 5


@pytest.mark.parametrize("normalize", [True, False])
def test_loss_terms_and_gradient_match_float64_reference(synthetic_params, variables, normalize):
    content, style, x = _images()
    config = Config(content_layers=("block2_conv2", "block4_conv2"), content_layer_weights=(0.3, 0.7),
                    content_weight=2.0, style_weight=50.0, tv_weight=0.01, normalize=normalize)
    objective, targets = losses.targets_for(variables, config, content, [style])

    # The reference builds its own targets and coefficients in float64.
    rp = _ref_params(synthetic_params)
    cf = ref.forward(rp, content.astype(np.float64))
    sf = ref.forward(rp, style.astype(np.float64))
    c_targets = [cf[n] for n in config.content_layers]
    s_targets = [ref.gram(sf[n]) for n in config.style_layers]

    def coeffs(weights, tensors):
        return [w / np.mean(t ** 2) if normalize else w for w, t in zip(weights, tensors)]

    spec = dict(content_layers=list(config.content_layers),
                content_coeffs=coeffs(config.content_layer_weights, c_targets),
                content_targets=c_targets,
                style_layers=list(config.style_layers),
                style_coeffs=coeffs(config.style_layer_weights, s_targets),
                style_targets=s_targets,
                content_weight=config.content_weight, style_weight=config.style_weight,
                tv_weight=config.tv_weight)
    want_total, want_terms, want_grad = ref.loss_and_grad(x.astype(np.float64), rp, spec)

    got_terms = terms_at(x, variables, targets, objective)
    for k in ("content", "style", "tv", "total"):
        np.testing.assert_allclose(float(getattr(got_terms, k)), want_terms[k], rtol=2e-4, err_msg=k)
    value, grad = value_and_grad(x, variables, targets, objective)
    np.testing.assert_allclose(float(value), want_total, rtol=2e-4)
    grad = np.asarray(grad, np.float64)
    rel = np.linalg.norm(grad - want_grad) / np.linalg.norm(want_grad)
    assert rel < 1e-4, rel
    # Direction and per-pixel agreement, not just the norm.
    cos = float(np.sum(grad * want_grad) / (np.linalg.norm(grad) * np.linalg.norm(want_grad)))
    assert cos > 0.99999, cos


def test_temporal_term_and_gradient_match_float64_reference(synthetic_params, variables):
    """A video frame's loss: the transfer's terms plus temporal_weight times the weighted squared
    difference to the warped earlier results, value and gradient against float64."""
    content, style, x = _images(5)
    rng = np.random.default_rng(7)
    target = (x + rng.normal(0, 20, x.shape)).astype(np.float32)
    weights = (rng.uniform(0, 1, (H, W)) * (rng.uniform(0, 1, (H, W)) > 0.3)).astype(np.float32)
    config = Config(content_layers=("block2_conv2",), style_layers=("block1_conv2", "block3_conv1"),
                    style_layer_weights=(0.4, 0.6), content_weight=2.0, style_weight=5.0, tv_weight=0.01,
                    temporal_weight=0.3, normalize=False)
    objective, targets = losses.targets_for(variables, config, content, [style], temporal=(target, weights))
    assert objective.temporal
    rp = _ref_params(synthetic_params)
    cf, sf = ref.forward(rp, content.astype(np.float64)), ref.forward(rp, style.astype(np.float64))
    spec = dict(content_layers=list(config.content_layers), content_coeffs=list(config.content_layer_weights),
                content_targets=[cf[n] for n in config.content_layers], style_layers=list(config.style_layers),
                style_coeffs=list(config.style_layer_weights),
                style_targets=[ref.gram(sf[n]) for n in config.style_layers],
                content_weight=2.0, style_weight=5.0, tv_weight=0.01)
    x64, t64, w64 = x.astype(np.float64), target.astype(np.float64), weights.astype(np.float64)
    want_total, _, want_grad = ref.loss_and_grad(x64, rp, spec)
    want_total += 0.3 * ref.temporal_loss(x64, t64, w64)
    want_grad = want_grad + 0.3 * ref.temporal_grad(x64, t64, w64)
    value, grad = value_and_grad(x, variables, targets, objective)
    np.testing.assert_allclose(float(value), want_total, rtol=2e-4)
    grad = np.asarray(grad, np.float64)
    assert np.linalg.norm(grad - want_grad) / np.linalg.norm(want_grad) < 1e-4
    alone = np.asarray(jax.grad(losses.temporal_loss)(jnp.asarray(x), jnp.asarray(target), jnp.asarray(weights)))
    np.testing.assert_allclose(alone, ref.temporal_grad(x64, t64, w64), rtol=1e-4, atol=1e-7)


def test_total_variation_gradient_matches_reference():
    x = _images(3)[0]
    g = jax.grad(losses.total_variation)(jnp.asarray(x))
    np.testing.assert_allclose(float(losses.total_variation(jnp.asarray(x))),
                               ref.tv_loss(x.astype(np.float64)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(g), ref.tv_grad(x.astype(np.float64)), rtol=1e-4, atol=1e-6)


def test_custom_conv_vjp_equals_plain_convolution_gradients():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((1, 9, 7, 5)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((3, 3, 5, 4)), jnp.float32)

    def plain(x, k):
        return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def f_custom(x, k):
        return jnp.sum(jnp.sin(vgg.conv3x3(x, k, k, vgg.backward_kernel(k))))

    def f_plain(x, k):
        return jnp.sum(jnp.sin(plain(x, k)))

    gx1, gk1 = jax.grad(f_custom, argnums=(0, 1))(x, k)
    gx2, gk2 = jax.grad(f_plain, argnums=(0, 1))(x, k)
    np.testing.assert_allclose(np.asarray(gx1), np.asarray(gx2), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(gk1), np.asarray(gk2), rtol=1e-4, atol=1e-5)


def test_max_pool_drops_odd_row_and_column():
    x = jnp.arange(5 * 7, dtype=jnp.float32).reshape(1, 5, 7, 1)
    y = vgg.max_pool(x)
    assert y.shape == (1, 2, 3, 1)
    np.testing.assert_array_equal(np.asarray(y[0, :, :, 0]), [[8, 10, 12], [22, 24, 26]])


def test_style_blend_mixes_gram_targets(variables):
    a, b, _ = _images(5)
    config = Config(content_layers=(), content_layer_weights=(), content_weight=0.0,
                    style_weight=1.0, normalize=False)
    _, ta = losses.targets_for(variables, config, None, [a], shape=(H, W))
    _, tb = losses.targets_for(variables, config, None, [b], shape=(H, W))
    _, tab = losses.targets_for(variables, config, None, [a, b], style_blend=[3.0, 1.0], shape=(H, W))
    for ga, gb, gab in zip(ta.style, tb.style, tab.style):
        np.testing.assert_allclose(np.asarray(gab), 0.75 * np.asarray(ga) + 0.25 * np.asarray(gb),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 13, 10, 8, 6), (2, 7, 9, 5, 4), (1, 4, 4, 3, 2), (1, 1, 1, 3, 2)])
def test_winograd_convolution_equals_direct(shape):
    n, h, w, c, k = shape
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.standard_normal((n, h, w, c)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((3, 3, c, k)), jnp.float32)
    want = np.asarray(vgg._conv(x, kernel), np.float64)
    got = np.asarray(vgg.winograd_conv(x, vgg.winograd_kernel(kernel)), np.float64)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5


def test_winograd_plan_follows_the_policy():
    layers = ("block1_conv2", "block5_conv3")
    auto = vgg.winograd_plan(layers, (256, 256, 3), "auto", platform="cpu")
    # At 256x256: block3 (64x64) uses Winograd where its input has 256 channels (not the
    # forward pass of block3_conv1, whose input has 128), blocks 4 and 5 everywhere.
    assert auto["block3_conv1"] == (False, True)
    assert all(auto[n] == (True, True) for n in vgg.LAYER_NAMES[5:] if n != "block3_conv1")
    assert not any(n.startswith(("block1", "block2")) for n in auto)
    assert vgg.winograd_plan(layers, (256, 256, 3), "auto", platform="gpu") == {}
    assert vgg.winograd_plan(layers, (256, 256, 3), "auto", platform="cpu", dtype="bfloat16") == {}
    assert vgg.winograd_plan(layers, (256, 256, 3), "direct", platform="cpu") == {}
    forced = vgg.winograd_plan(layers, (32, 32, 3), "winograd", platform="cpu")
    assert len(forced) == 13 and forced["block1_conv1"] == (True, False)
    # At 512x512 block 3 is a 128x128 grid: direct there.
    assert not any(n.startswith("block3") for n in vgg.winograd_plan(layers, (512, 512, 3), "auto", "cpu"))


def test_winograd_network_matches_float64_reference(synthetic_params, variables):
    content, style, x = _images(11)
    config = Config(content_layers=("block4_conv2",), style_weight=10.0, tv_weight=0.0, conv="winograd")
    objective, targets = losses.targets_for(variables, config, content, [style])
    wino = vgg.add_winograd(variables, vgg.winograd_plan(objective.layers, x.shape, "winograd", "cpu"))
    assert len(wino["winograd"]) == 13
    rp = _ref_params(synthetic_params)
    cf, sf = ref.forward(rp, content.astype(np.float64)), ref.forward(rp, style.astype(np.float64))
    c_t = [cf["block4_conv2"]]
    s_t = [ref.gram(sf[n]) for n in config.style_layers]
    spec = dict(content_layers=["block4_conv2"], content_coeffs=[1 / np.mean(c_t[0] ** 2)],
                content_targets=c_t, style_layers=list(config.style_layers),
                style_coeffs=[w / np.mean(t ** 2) for w, t in zip(config.style_layer_weights, s_t)],
                style_targets=s_t, content_weight=1.0, style_weight=10.0, tv_weight=0.0)
    want_total, _, want_grad = ref.loss_and_grad(x.astype(np.float64), rp, spec)
    value, grad = value_and_grad(x, wino, targets, objective)
    np.testing.assert_allclose(float(value), want_total, rtol=1e-4)
    grad = np.asarray(grad, np.float64)
    assert np.linalg.norm(grad - want_grad) / np.linalg.norm(want_grad) < 1e-4


def test_gram_traces_for_activations_past_two_to_the_31():
    # 8192 x 8192 x 64 = 2**32 values: the normalizer must not be passed as an int32.
    out = jax.eval_shape(losses.gram, jax.ShapeDtypeStruct((8192, 8192, 64), jnp.float32))
    assert out.shape == (64, 64) and out.dtype == jnp.float32


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_a_padded_image_has_the_unpadded_losses_and_gradient(synthetic_params, variables, pooling):
    """Images padded to a shape bucket are masked after every layer: their losses and gradient
    are the float64 reference's on the unpadded image, and nothing flows into the padding."""
    content, style, x = _images(21)
    config = Config(content_layers=("block2_conv2", "block4_conv2"), content_layer_weights=(0.3, 0.7),
                    style_weight=50.0, tv_weight=0.01, pooling=pooling)
    objective = losses.Objective.from_config(config)
    weights = losses.LossWeights.from_config(config, objective)
    shape = (H + 13, W + 7)  # odd pads: every pool floors differently inside and outside

    def pad(a, value=0.0):
        out = np.full((*shape, 3), value, np.float32)
        out[:H, :W] = a
        return out

    hw = jnp.asarray([H, W], jnp.int32)
    s_hw = jnp.asarray([[H, W]], jnp.int32)
    grams = jax.jit(losses.style_grams, static_argnums=4)(variables, jnp.asarray(pad(style, 77.0))[None], s_hw,
                                                           jnp.ones((1,)), objective)
    targets = jax.jit(losses.make_targets, static_argnums=5)(variables, jnp.asarray(pad(content, -50.0)), hw,
                                                             grams, weights, objective)
    rp = _ref_params(synthetic_params)
    cf = ref.forward(rp, content.astype(np.float64), pooling=pooling)
    sf = ref.forward(rp, style.astype(np.float64), pooling=pooling)
    c_t = [cf[n] for n in config.content_layers]
    s_t = [ref.gram(sf[n]) for n in config.style_layers]
    spec = dict(content_layers=list(config.content_layers), content_targets=c_t,
                content_coeffs=[w / np.mean(t ** 2) for w, t in zip(config.content_layer_weights, c_t)],
                style_layers=list(config.style_layers), style_targets=s_t,
                style_coeffs=[w / np.mean(t ** 2) for w, t in zip(config.style_layer_weights, s_t)],
                content_weight=1.0, style_weight=50.0, tv_weight=0.01, pooling=pooling)
    want_total, want_terms, want_grad = ref.loss_and_grad(x.astype(np.float64), rp, spec)
    padded = pad(x, 200.0)  # whatever the padding holds, the network never sees it
    got = terms_at(padded, variables, targets, objective)
    for k in ("content", "style", "tv", "total"):
        np.testing.assert_allclose(float(getattr(got, k)), want_terms[k], rtol=2e-4, err_msg=k)
    _, grad = value_and_grad(padded, variables, targets, objective)
    grad = np.asarray(grad, np.float64)
    inside = grad[:H, :W]
    assert np.linalg.norm(inside - want_grad) / np.linalg.norm(want_grad) < 1e-4
    assert np.abs(grad[H:]).max() == 0 and np.abs(grad[:, W:]).max() == 0


def test_average_pooling_features_match_reference_and_differ_from_max(synthetic_params, variables):
    x = _images(8)[0]
    got = vgg.features(variables, jnp.asarray(x), ("block3_conv1",), pooling="avg")["block3_conv1"]
    want = ref.forward(_ref_params(synthetic_params), x.astype(np.float64), pooling="avg")["block3_conv1"]
    assert np.linalg.norm(np.asarray(got, np.float64) - want) / np.linalg.norm(want) < 1e-5
    other = vgg.features(variables, jnp.asarray(x), ("block3_conv1",))["block3_conv1"]
    assert np.linalg.norm(np.asarray(other) - np.asarray(got)) > 0.05 * np.linalg.norm(np.asarray(got))


def _pool_mask(m, pools):
    """A pixel mask (H, W, ...) averaged over 2**pools windows, the odd remainder dropped."""
    k = 2 ** pools
    h, w = m.shape[0] // k, m.shape[1] // k
    return m[: h * k, : w * k].reshape(h, k, w, k, *m.shape[2:]).mean(axis=(1, 3))


def test_guided_loss_and_gradient_match_float64_reference(synthetic_params, variables):
    """Guided style transfer (a content mask with two soft regions, each painted by its own
    style image weighted by its own style mask) against the float64 reference."""
    content, style, x = _images(5)
    style2 = _images(6)[1]
    config = Config(content_layers=("block4_conv2",), style_weight=30.0, tv_weight=0.01)
    cols = np.clip((np.arange(W) - 10) / 8.0, 0.0, 1.0)  # a soft border between the regions
    right = np.broadcast_to(cols, (H, W))
    guide = np.stack([1 - right, right], axis=-1).astype(np.float32)
    rows = np.arange(H)[:, None] < 20
    smask1 = np.where(rows, 1.0, 0.25) * np.ones((H, W))
    smask2 = np.ones((H, W)) * (np.arange(W) >= 5)
    objective, targets = losses.targets_for(variables, config, content, [style, style2], guide=guide,
                                            style_masks=[smask1.astype(np.float32), smask2.astype(np.float32)])
    assert objective.regions == 2 and targets.style[0].shape == (2, 64, 64)

    rp = _ref_params(synthetic_params)
    cf = ref.forward(rp, content.astype(np.float64))
    feats = [ref.forward(rp, s.astype(np.float64)) for s in (style, style2)]
    pools = {n: int(n[5]) - 1 for n in config.style_layers}
    s_t = [np.stack([ref.guided_gram(f[n], _pool_mask(m, pools[n])) for f, m in zip(feats, (smask1, smask2))])
           for n in config.style_layers]
    c_t = [cf["block4_conv2"]]
    area = guide.sum(axis=(0, 1))
    spec = dict(content_layers=["block4_conv2"], content_coeffs=[1 / np.mean(c_t[0] ** 2)], content_targets=c_t,
                style_layers=list(config.style_layers), style_targets=s_t,
                style_coeffs=[w / np.mean(t ** 2, axis=(1, 2)) for w, t in zip(config.style_layer_weights, s_t)],
                style_guides=[_pool_mask(guide.astype(np.float64), pools[n]) for n in config.style_layers],
                region_weights=area / area.sum(), content_weight=1.0, style_weight=30.0, tv_weight=0.01)
    want_total, want_terms, want_grad = ref.loss_and_grad(x.astype(np.float64), rp, spec)
    got = terms_at(x, variables, targets, objective)
    for k in ("content", "style", "tv", "total"):
        np.testing.assert_allclose(float(getattr(got, k)), want_terms[k], rtol=2e-4, err_msg=k)
    _, grad = value_and_grad(x, variables, targets, objective)
    grad = np.asarray(grad, np.float64)
    assert np.linalg.norm(grad - want_grad) / np.linalg.norm(want_grad) < 1e-4
    # One region covering everything equals the unguided loss.
    _, plain = losses.targets_for(variables, config, content, [style])
    objective1, whole = losses.targets_for(variables, config, content, [style], guide=np.ones((H, W, 1), np.float32))
    np.testing.assert_allclose(float(terms_at(x, variables, whole, objective1).total),
                               float(terms_at(x, variables, plain, losses.Objective.from_config(config)).total),
                               rtol=1e-5)

"""Style statistics beyond the Gram matrix (`--style-loss`) and the averaged image (`--average`).

Each statistic's distance is 0 when the image's statistics are the style's (also at another
pixel count), its value and gradient match an independent float64 NumPy computation
(tests/reference.py: eigendecompositions where jaxstyle runs Newton–Schulz, np.interp and
argsort where it gathers), blends mix the right moments, and short runs drive both its own
statistic and the Gram statistic down without NaN or stall at 10x and 100x the style weight.
"""
from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp
import pytest

import jaxstyle
import reference as ref
from jaxstyle.objective import losses
from jaxstyle.images import preprocess
from jaxstyle.config import Config

OTHERS = ("meanstd", "w2", "sliced", "histogram")  # gram+histogram: its own tests below
LAYER = "block1_conv2"  # only names the sliced loss's directions here
statistics = jax.jit(losses.style_statistics, static_argnums=(2, 3, 4))
distance = jax.jit(losses.style_distance, static_argnums=(3, 4))


def _features(seed: int, h: int = 8, w: int = 6, c: int = 6) -> np.ndarray:
    """ReLU-like activations with correlated channels."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(c, c)) + 2 * np.eye(c)
    x = rng.normal(size=(h * w, c)) @ mix + 0.5
    return np.logaddexp(0, 2 * x).reshape(h, w, c).astype(np.float32) / 2  # a softplus: no ties


def _target(f: np.ndarray, loss: str, wts: np.ndarray | None = None, quantiles: int = 0) -> tuple:
    """A style target from activations f, at as many quantile levels as pixels (as a run keeps
    up to `losses.QUANTILES`)."""
    quantiles = quantiles or f.shape[0] * f.shape[1]
    if wts is None:
        wts = losses.pixel_weights(f.shape, None)
    stats = statistics(jnp.asarray(f), jnp.asarray(wts), loss, LAYER, quantiles)
    return losses.finish_statistics(stats, loss)


@pytest.mark.parametrize("loss", OTHERS)
def test_each_loss_is_zero_when_the_images_statistics_are_the_styles(loss):
    f = _features(0)
    style = np.concatenate([f, f[::-1]], axis=0)  # the same distribution at twice the pixels
    target = _target(style, loss)
    power = float(losses.style_power(target, loss)[0])
    padded = np.pad(f, ((0, 3), (0, 2), (0, 0)))  # a bucket's padding, masked by the real size
    for image, hw in ((f, None), (padded, jnp.asarray(f.shape[:2]))):
        wts = losses.pixel_weights(image.shape, hw)
        d = float(distance(jnp.asarray(image), wts, target, loss, LAYER)[0])
        assert abs(d) < 1e-4 * power, (d, power)
    other = float(distance(jnp.asarray(_features(1)), losses.pixel_weights(f.shape, None), target, loss,
                           LAYER)[0])
    assert other > 1e-2 * power  # and it is not zero for another image


@pytest.mark.parametrize("loss", OTHERS)
def test_value_and_gradient_match_a_float64_reference_in_each_region(loss):
    f, fs = _features(2), _features(3)
    n = f.shape[0] * f.shape[1]
    rng = np.random.default_rng(4)
    if loss in ("sliced", "histogram"):  # masks select the pixels sorted
        m = (rng.uniform(size=n) < 0.6).astype(np.float32)
    else:  # mean and covariance take soft masks
        m = rng.uniform(size=n).astype(np.float32)
    wts = np.stack([m, 1 - m], axis=1)
    target = _target(fs, loss, np.stack([np.ones(n, np.float32), m], axis=1))

    def regions(x):
        d = losses.style_distance(x, jnp.asarray(wts), target, loss, LAYER)
        return d, d

    grads, values = jax.jit(jax.jacrev(regions, has_aux=True))(jnp.asarray(f))  # (2, H, W, C), (2,)
    flat = f.reshape(n, -1).astype(np.float64)
    t = [np.asarray(a, np.float64) for a in target]
    for r in range(2):
        value, grad = values[r], np.asarray(grads[r]).reshape(n, -1)
        if loss == "meanstd":
            want, want_grad = ref.meanstd_loss_and_grad(flat, wts[:, r], t[0][r], t[1][r], losses.STD_EPS)
        elif loss == "w2":
            want, want_grad = ref.w2_loss_and_grad(flat, wts[:, r], t[0][r], t[1][r], t[3][r])
        else:
            dirs = np.eye(f.shape[-1]) if loss == "histogram" else losses.directions(LAYER, f.shape[-1])
            want, want_grad = ref.sorted_transport_loss_and_grad(flat, wts[:, r] >= 0.5, dirs, t[0][r])
        np.testing.assert_allclose(float(value), want, rtol=2e-4)
        np.testing.assert_allclose(grad, want_grad, rtol=2e-3, atol=2e-3 * np.abs(want_grad).max())


def test_gram_beside_histogram_is_both_terms_and_matches_a_float64_reference():
    """gram+histogram at one layer: mean((G − A)²) + ρ · the histogram distance, each region's value
    and gradient against tests/reference.py's Gram and sorted-transport computations; 0 at the style."""
    f, fs = _features(8), _features(9)
    n = f.shape[0] * f.shape[1]
    wts = losses.pixel_weights(fs.shape, None)
    ratio = jnp.asarray([0.7], jnp.float32)
    target = (losses.gram(jnp.asarray(fs))[None],
              statistics(jnp.asarray(fs), wts, "histogram", LAYER, n)[0], ratio)
    objective = losses.Objective((), (LAYER,), False, style_loss="gram+histogram")
    targets = losses.Targets((), (target,), jnp.zeros((0,)), jnp.ones((1, 1)), jnp.ones((3,)), None, (),
                             jnp.ones((1,)))
    layer = jax.jit(jax.value_and_grad(lambda x: losses._style_layer(x, targets, 0, LAYER, objective)))
    value, grad = layer(jnp.asarray(f))
    flat = f.reshape(n, -1).astype(np.float64)
    d = ref.gram(f.astype(np.float64)) - np.asarray(target[0][0], np.float64)
    want = float(np.mean(d ** 2))
    want_grad = ref.gram_grad(f.astype(np.float64), 2 * d / d.size)
    hist, hist_grad = ref.sorted_transport_loss_and_grad(flat, np.ones(n, bool), np.eye(f.shape[-1]),
                                                         np.asarray(target[1][0], np.float64))
    want, want_grad = want + 0.7 * hist, want_grad + 0.7 * hist_grad.reshape(f.shape)
    np.testing.assert_allclose(float(value), want, rtol=2e-4)
    np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=2e-3, atol=2e-3 * np.abs(want_grad).max())
    assert abs(float(layer(jnp.asarray(fs))[0])) < 1e-5 * want  # zero at the style's own statistics


def test_a_styles_quantile_function_and_the_square_root_match_numpy():
    fs = _features(5)
    flat = fs.reshape(-1, fs.shape[-1]).astype(np.float64)
    m = np.random.default_rng(6).uniform(size=flat.shape[0]) < 0.5
    q = statistics(jnp.asarray(fs), jnp.asarray(m[:, None].astype(np.float32)), "sliced", LAYER, 25)[0]
    want = ref.quantile_function(flat[m] @ losses.directions(LAYER, fs.shape[-1]), (np.arange(25) + 0.5) / 25)
    np.testing.assert_allclose(np.asarray(q[0]), want, rtol=1e-5, atol=1e-4)
    # Newton–Schulz against the eigendecomposition, at an eigenvalue ratio of 1e4
    rng = np.random.default_rng(7)
    basis = np.linalg.qr(rng.normal(size=(16, 16)))[0]
    a = (basis * np.logspace(-2, 2, 16)) @ basis.T
    np.testing.assert_allclose(np.asarray(jax.jit(losses.sqrtm)(jnp.asarray(a, jnp.float32))), ref._spd_power(a, 0.5),
                               atol=2e-4 * np.sqrt(100))


@pytest.mark.parametrize("loss", ["meanstd", "w2"])
def test_a_blend_mixes_means_and_second_moments_not_covariances(loss):
    """Half of each of two styles of one size is the statistics of both images' pixels together."""
    a, b = _features(8), _features(9) * 2.0
    objective = losses.Objective((), (LAYER,), False, style_loss=loss)
    feats = jnp.asarray(np.stack([a, b]))
    hw = jnp.asarray([a.shape[:2]] * 2, jnp.int32)
    blended = jax.jit(losses._style_statistics, static_argnums=(4, 5))(feats, hw, jnp.asarray([0.5, 0.5]), None,
                                                                       LAYER, objective)
    union = _target(np.concatenate([a, b], axis=0), loss)
    for x, y in zip(blended, union):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)


def _small(loss: str, **changes) -> Config:
    settings = dict(size=32, iterations=20, style_loss=loss, content_layers=("block2_conv1",),
                    style_layers=("block1_conv2", "block2_conv1"), conv="direct")
    return Config().replace(**{**settings, **changes})


def _gram_scorer(content: np.ndarray, style: np.ndarray, params):
    """The Gram style term of an image (RGB at the content's size), as a function."""
    from jaxstyle.model import vgg
    variables = vgg.prepare_variables(params)
    objective, targets = losses.targets_for(variables, _small("gram"), preprocess.to_vgg(content),
                                            [preprocess.to_vgg(style)])
    fn = jax.jit(lambda x: losses.terms(x, variables, targets, objective).style)
    return lambda image: float(fn(jnp.asarray(preprocess.to_vgg(image))))


@pytest.mark.parametrize("loss", (*OTHERS, "gram+histogram"))
def test_a_short_run_lowers_its_own_and_the_gram_statistic_even_at_100x_the_style_weight(
        loss, image_dir, synthetic_params):
    from PIL import Image
    content = np.asarray(Image.open(image_dir / "content.png").resize((32, 24)), np.float32)
    style = np.asarray(Image.open(image_dir / "style.png").resize((24, 32)), np.float32)
    gram = _gram_scorer(content, style, synthetic_params)
    gram_start = gram(content)
    for factor in (1, 10, 100):
        r = jaxstyle.transfer(content, style, weights=synthetic_params, **_small(loss).replace(
            style_weight=10.0 * factor).to_dict())
        assert r.status == "done" and r.iterations == 20, (factor, r.status, r.iterations)
        assert np.isfinite(r.image).all()
        assert r.final["style"] < 0.7 * r.initial["style"], (factor, r.initial, r.final)
        assert gram(r.image) < gram_start, factor


def test_the_average_is_the_bias_corrected_moving_average_of_the_iterates(synthetic_params):
    """One compiled loop: its plain iterates (state.u) after each iteration against what it gives
    out (the summary's image, which snapshots, previews and the written file show)."""
    from jaxstyle.run import problem
    from jaxstyle.model import vgg
    from jaxstyle.config import resolve
    beta = 0.9
    config = resolve(_small("sliced", average=beta), "cpu")  # the next test's program (kept)
    rng = np.random.default_rng(0)
    c = preprocess.to_vgg(rng.uniform(0, 255, (24, 32, 3)))
    s = preprocess.to_vgg(rng.uniform(0, 255, (32, 24, 3)))
    builder = problem.Builder(config, vgg.prepare_variables(synthetic_params))
    layout = problem.Layout(1, (32, 32), (32, 32), 1, True, tuple(jax.devices()[:1]))
    p = builder.problem(layout, [c], [c], [[s]], [np.ones(1, np.float32)])
    state, iterates, given = p.state, [], []
    for until in range(1, 7):
        state, summary = p.chunk(state, np.array([until]))
        iterates.append(np.asarray(p.method.to_image(state.u[0])))
        given.append(np.asarray(summary.image[0]))
    assert int(summary.iteration[0]) == 6
    ema = np.zeros_like(iterates[0])
    for t, x in enumerate(iterates, 1):
        ema = beta * ema + (1 - beta) * x
        np.testing.assert_allclose(given[t - 1], ema / (1 - beta ** t), rtol=1e-4, atol=1e-2)
    assert np.abs(given[-1] - iterates[-1]).max() > 1.0  # it lags the iterate


def test_an_averaged_run_resumes_bit_identically_and_refuses_another_style_loss(capsys, tmp_path, image_dir,
                                                                                synthetic_h5):
    from conftest import run_one
    from jaxstyle.observers import checkpoint
    from test_cli import run_cli
    config = _small("sliced", average=0.9, iterations=12, save_every=4)
    args = ("transfer", config, image_dir / "content.png", [image_dir / "style.png"])
    whole = run_one(*args, output_path=tmp_path / "whole.png", weights=synthetic_h5)
    assert whole.status == "done" and whole.iterations == 12
    seen = {"it": 0}
    part = run_one(*args, output_path=tmp_path / "part.png", weights=synthetic_h5,
                   progress=lambda p: seen.update(it=p.iteration), should_stop=lambda: seen["it"] >= 4)
    assert part.status == "interrupted" and 4 <= part.iterations < 12
    ck = checkpoint.load(part.checkpoint)
    assert ck.config.style_loss == "sliced" and ck.config.average == 0.9
    code, _, err = run_cli(capsys, "transfer", image_dir / "content.png", image_dir / "style.png", "-o",
                           tmp_path / "part.png", "--weights", synthetic_h5, "--size", 32, "--iterations", 12,
                           "--content-layers", "block2_conv1", "--style-layers", "block1_conv2,block2_conv1",
                           "--conv", "direct", "--average", 0.9, "--style-loss", "gram", "--resume",
                           part.checkpoint)
    assert code == 1 and "made with --style-loss sliced, not gram" in err, err
    resumed = jaxstyle.resume(part.checkpoint, weights=synthetic_h5)
    assert resumed.status == "done" and resumed.iterations == 12
    np.testing.assert_array_equal(resumed.image, whole.image)


_DEVICES_SCRIPT = r"""
import json, sys
import jax, numpy as np
import jaxstyle
from jaxstyle.objective import losses
from jaxstyle.run import problem
from jaxstyle.model import vgg
from jaxstyle.config import Config

content, style, weights = sys.argv[1:4]
params = jaxstyle.load_weights(weights)
small = dict(content_layers="block2_conv1", style_layers="block1_conv2,block2_conv1", conv="direct")
out = {"devices": jax.device_count()}
# a guided batch (a `keep` region: per-image targets) of Gram beside a sorted statistic, over 2 devices
mask = np.zeros((48, 64, 3), np.uint8)
mask[:, 32:] = 255
rs = jaxstyle.transfer([content, content], ["keep", style], content_mask=mask, weights=params, size=32,
                       iterations=4, batch_size=2, devices=2, style_loss="gram+histogram", **small)
out["guided"] = [[r.status, r.initial["total"], r.final["total"], bool(np.isfinite(r.image).all())] for r in rs]
# one image split by rows over 2 devices (its sorts partitioned): loss and gradient against one device's
rng = np.random.default_rng(0)
c, s, x = (rng.uniform(-100, 100, (32, 48, 3)).astype(np.float32) for _ in range(3))
variables = vgg.prepare_variables(params)
objective, targets = losses.targets_for(variables, Config().replace(style_loss="sliced", **small), c, [s])
grad_fn = jax.jit(jax.value_and_grad(lambda x, v, t: losses.total(x, v, t, objective)))
for n in (1, 2):
    layout = problem.Layout(1, (32, 48), (32, 48), 1, True, tuple(jax.devices()[:n]), spatial=n > 1)
    put = lambda a: jax.device_put(a[None], layout.per_image((1, *np.shape(a))))[0]
    value, grad = grad_fn(put(x), jax.device_put(variables, layout.sharding(jax.sharding.PartitionSpec())),
                          jax.tree.map(put, targets))
    out[f"split{n}"] = [float(value), np.asarray(grad).tolist()]
print(json.dumps(out))
"""


def test_guided_batches_over_two_devices_and_images_split_over_two_equal_to_one(image_dir, synthetic_h5):
    import json
    import os
    import subprocess
    import sys
    env = {**os.environ, "JAXSTYLE_NO_COMPILE_CACHE": "1", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    r = subprocess.run([sys.executable, "-c", _DEVICES_SCRIPT, str(image_dir / "content.png"),
                        str(image_dir / "style.png"), str(synthetic_h5)], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["devices"] == 2
    for status, first, last, finite in out["guided"]:
        assert status == "done" and finite and last < first
    (v1, g1), (v2, g2) = out["split1"], out["split2"]
    assert abs(v2 - v1) <= 1e-5 * abs(v1), (v1, v2)
    assert np.linalg.norm(np.subtract(g2, g1)) <= 1e-4 * np.linalg.norm(g1)

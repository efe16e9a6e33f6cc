"""What accelerators run differently from a CPU, run here: pooling as `reduce_window`, the
L-BFGS direction from matrix products, the Gram matrix's one-product gradient, a checkpoint's
state copied on the device, and full-effort programs taking over from fast ones. Each gives the
CPU's results (to float32 rounding), so the CPU tests vouch for the accelerators' loop."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxstyle.run import driver
from jaxstyle.objective import losses
from jaxstyle.images import preprocess
from jaxstyle.run import problem as pb
from jaxstyle.solver import lbfgs as solver
from jaxstyle.model import vgg
from jaxstyle.config import Config

SIZE = (24, 32)
CONFIG = Config(size=32, content_layers=("block3_conv1",), style_layers=("block1_conv2", "block2_conv2"),
                style_layer_weights=(0.5, 0.5), tv_weight=1e-4, conv="direct")


def two_loop(g: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]], gamma: float) -> np.ndarray:
    """The L-BFGS direction H·g by Nocedal and Wright's two-loop recursion, float64 NumPy."""
    q, alphas = g.copy(), []
    for s, y in reversed(pairs):
        a = (s @ q) / (s @ y)
        alphas.append(a)
        q -= a * y
    r = gamma * q
    for (s, y), a in zip(pairs, reversed(alphas)):
        r += (a - (y @ r) / (s @ y)) * s
    return r


@pytest.mark.parametrize("steps, memory, restart", [(3, 5, None), (12, 4, None), (12, 4, 7), (2, 1, None)])
def test_the_compact_lbfgs_direction_equals_the_two_loop_recursion(steps, memory, restart):
    rng = np.random.default_rng(steps)
    shape = (4, 5, 3)
    n = int(np.prod(shape))
    q = rng.normal(size=(n, n))
    hessian = q @ q.T / n + np.eye(n)
    u = rng.normal(size=n)
    tx = optax.scale_by_lbfgs(memory_size=memory)
    state = tx.init(jnp.zeros(shape, jnp.float32))
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    previous = None
    for k in range(steps):
        g = hessian @ u
        if k == restart:  # as the solver restarts L-BFGS: forget the history
            state = state._replace(count=jnp.zeros_like(state.count),
                                   weights_memory=jnp.zeros_like(state.weights_memory))
            pairs, previous = [], None
        d, state = solver.lbfgs_update(jnp.asarray(g.reshape(shape), jnp.float32), state,
                                       jnp.asarray(u.reshape(shape), jnp.float32))
        if previous is not None:
            pairs = (pairs + [(u - previous[0], g - previous[1])])[-memory:]
        s, y = pairs[-1] if pairs else (None, None)
        gamma = (s @ y) / (y @ y) if pairs else min(1.0, 1.0 / np.linalg.norm(g))
        want = two_loop(g, pairs, gamma)
        np.testing.assert_allclose(np.asarray(d, np.float64).ravel(), want, rtol=2e-3,
                                   atol=2e-4 * np.abs(want).max())
        previous = (u.copy(), g.copy())
        u = u - 0.3 * want


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_reduce_window_pooling_equals_the_reshape_pooling(kind):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 7, 9, 5)), jnp.float32)
    np.testing.assert_array_equal(vgg.pool(x, kind, "window"), vgg.pool(x, kind, "reshape"))
    grads = [jax.grad(lambda x, impl=impl: jnp.sum(jnp.sin(vgg.pool(x, kind, impl))))(x)
             for impl in ("window", "reshape")]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-6)


def test_the_gram_gradient_is_one_product_and_exact():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(6, 5, 4)).astype(np.float32)
    w = rng.normal(size=(4, 4)).astype(np.float32)
    got = jax.grad(lambda f: jnp.sum(losses.gram(f) * w))(jnp.asarray(f))
    m = f.reshape(30, 4).astype(np.float64)
    want = (m @ (w + w.T).astype(np.float64) / (30 * 4)).reshape(f.shape)  # d/dM of Σ W∘MᵀM/n
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda f: jnp.sum(losses.gram(f) * w)))(jnp.asarray(f)))
    assert jaxpr.count("dot_general") == 2  # the forward product and one for the gradient


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    content = preprocess.to_vgg(rng.uniform(0, 255, (*SIZE, 3)).astype(np.float32))
    style = preprocess.to_vgg(rng.uniform(0, 255, (*SIZE, 3)).astype(np.float32))
    return content, style


def make(params, images, config=CONFIG):
    content, style = images
    builder = pb.Builder(config, vgg.prepare_variables(params))
    layout = pb.Layout(1, SIZE, SIZE, 1, True, tuple(jax.devices()[:1]))
    return builder.problem(layout, [content], [content], [[style]], [np.ones(1, np.float32)])


def run(problem, iterations):
    state, summary = problem.chunk(problem.state, np.full(1, iterations))
    return state, jax.device_get(summary)


def test_the_accelerators_loop_reaches_the_cpus_loss(synthetic_params, images, monkeypatch):
    """Pooling by reduce_window and the compact L-BFGS direction, in the real loop on this CPU:
    the loss after 40 iterations within 1% of the CPU's own loop."""
    pb.forget_programs()
    _, cpu = run(make(synthetic_params, images), 40)
    tpu_method, tpu_objective = pb.for_layout, losses.Objective.for_platform
    monkeypatch.setattr(pb, "for_layout", lambda method, layout: dataclasses.replace(
        tpu_method(method, layout), compact=True))
    monkeypatch.setattr(losses.Objective, "for_platform", lambda self, platform: tpu_objective(self, "tpu"))
    tpu = losses.Objective.from_config(CONFIG).for_platform("cpu")  # patched: as a TPU runs it
    assert tpu.pool_impl == "window" and tpu.gram_precision == "high"
    pb.forget_programs()
    _, accel = run(make(synthetic_params, images), 40)
    pb.forget_programs()
    assert int(accel.iteration[0]) == 40
    assert float(accel.value[0]) == pytest.approx(float(cpu.value[0]), rel=0.01)
    assert float(accel.value[0]) < 0.5 * float(cpu.first[0][0])


def test_a_state_copied_on_the_device_outlives_the_next_chunk(synthetic_params, images):
    p = make(synthetic_params, images)
    state, _ = run(p, 3)
    want = jax.device_get(state)
    copy = driver.snapshot(state, p.layout.devices, force=True)
    assert driver.snapshot(state, p.layout.devices) is None  # a CPU reads the state directly
    state, summary = p.chunk(state, np.full(1, 6))  # takes the state over (donated)
    jax.block_until_ready(summary)
    got = jax.device_get(copy)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        np.testing.assert_array_equal(a, b)


def test_full_effort_programs_take_over_and_are_found_again(synthetic_params, images, tmp_path):
    """Effort "both": the fast loop runs first, the full one takes over at a chunk boundary and
    continues the same state; it leaves a mark, so the next compile of that shape is full at once."""
    before = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(tmp_path))
    try:
        pb.forget_programs()
        p = make(synthetic_params, images, CONFIG.replace(compile="both"))
        assert p.programs.effort == "fast" and p.programs.upgrade is not None and p.programs.count == 3
        state, _ = p.chunk(p.state, np.full(1, 5))
        assert pb.finish_upgrades(timeout=300) and pb.upgrades_pending() == 0  # the full loop compiled
        assert p.programs.upgrade.done()
        state, summary = p.chunk(state, np.full(1, 20))
        summary = jax.device_get(summary)
        assert p.programs.effort == "full" and p.programs.upgrade is None
        assert int(summary.iteration[0]) == 20
        _, full = run(make(synthetic_params, images, CONFIG.replace(compile="full")), 20)
        assert float(summary.value[0]) == pytest.approx(float(full.value[0]), rel=0.01)
        assert list((tmp_path / "jaxstyle-full-effort").iterdir())
        pb.forget_programs()
        again = make(synthetic_params, images, CONFIG.replace(compile="both"))
        assert again.programs.effort == "full" and again.programs.upgrade is None and again.programs.count == 2
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
        pb.forget_programs()


def test_an_image_that_fills_its_bucket_needs_no_padding_masks(synthetic_params, images):
    """`Layout.full`: the loss and its gradient without the network's padding masks equal those
    with them, for an image of exactly the padded shape."""
    p = make(synthetic_params, images)
    targets = jax.tree.map(lambda a: a[0], p.targets)
    x = jnp.asarray(images[0])

    def value_and_grad(objective):
        return jax.jit(jax.value_and_grad(lambda x: losses.total(x, p.loop_variables, targets, objective)))(x)

    masked = value_and_grad(p.objective)
    plain = value_and_grad(dataclasses.replace(p.objective, masked=False))
    np.testing.assert_allclose(plain[0], masked[0], rtol=1e-6)
    np.testing.assert_allclose(plain[1], masked[1], rtol=1e-5, atol=1e-7 * float(jnp.abs(masked[1]).max()))
    text = jax.jit(lambda x: losses.total(x, p.loop_variables, targets, dataclasses.replace(
        p.objective, masked=False))).lower(x).as_text()
    assert text.count("select") < jax.jit(lambda x: losses.total(x, p.loop_variables, targets, p.objective)
                                          ).lower(x).as_text().count("select")


def test_a_tpu_folder_runs_one_image_per_core():
    """The stopwatch's finding: two images side by side on a TPU cost more than twice one."""
    from types import SimpleNamespace

    from jaxstyle.run import execute as run_mod
    cores = tuple(SimpleNamespace(platform="tpu", device_kind="TPU v2") for _ in range(8))
    assert run_mod._batch_size(Config(size=64), None, 20, cores) == 8  # a v2-8: one per core
    assert run_mod._batch_size(Config(size=64), None, 5, cores[:1]) == 1  # a v5e-1
    assert run_mod._batch_size(Config(size=64, batch_size=4), None, 5, cores[:1]) == 4  # asked for

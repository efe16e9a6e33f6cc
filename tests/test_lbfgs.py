"""The L-BFGS direction computed from inner products equals optax's two-loop recursion."""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxstyle import lbfgs


@pytest.mark.parametrize("memory", [1, 4])
def test_direction_equals_optax_scale_by_lbfgs_through_restarts(memory):
    rng = np.random.default_rng(0)
    shape = (6, 7, 3)
    a = rng.normal(size=(126, 126))
    hessian = a @ a.T / 126 + np.eye(126)

    def grad(u):  # a convex quadratic: L-BFGS's pairs all have positive curvature
        return jnp.asarray((hessian @ np.asarray(u, np.float64).ravel()).reshape(shape), jnp.float32)

    u = jnp.asarray(rng.normal(size=shape), jnp.float32)
    reference = optax.scale_by_lbfgs(memory_size=memory)
    ours_state, ref_state = lbfgs.init(u, memory), reference.init(u)
    update, ref_update = jax.jit(lbfgs.update), jax.jit(reference.update)
    for k in range(3 * memory + 6):
        g = grad(u)
        if k == 2 * memory + 1:  # the solver's restart: forget the pairs, start from steepest descent
            ours_state = ours_state._replace(count=jnp.zeros_like(ours_state.count),
                                             weights_memory=jnp.zeros_like(ours_state.weights_memory))
            ref_state = ref_state._replace(count=jnp.zeros_like(ref_state.count),
                                           weights_memory=jnp.zeros_like(ref_state.weights_memory))
        ours, ours_state = update(g, ours_state, u)
        ref, ref_state = ref_update(g, ref_state, u)
        np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=0, atol=2e-6 * float(jnp.abs(ref).max()))
        u = u - 0.5 * ref


def test_a_pair_without_curvature_gets_no_weight_and_batches_under_vmap():
    u = jnp.ones((2, 4, 4, 3), jnp.float32)
    state = jax.vmap(lambda x: lbfgs.init(x, 3))(u)
    g = jnp.stack([jnp.ones((4, 4, 3)), jnp.zeros((4, 4, 3))]).astype(jnp.float32)
    update = jax.jit(jax.vmap(lbfgs.update))
    d, state = update(g, state, u)
    d, state = update(g, state, u)  # s = 0: s·y = 0, so the pair has no weight
    assert np.all(np.isfinite(np.asarray(d)))
    assert float(jnp.abs(state.weights_memory).max()) == 0.0


def test_the_compiled_update_never_copies_the_history():
    """The history is read in place by the two matrix products: a layout that made XLA copy it
    (the image-shaped one did, 8 copies per update) costs more than optax's recursion."""
    u = jnp.zeros((24, 32, 3), jnp.float32)
    state = jax.tree.map(jnp.copy, lbfgs.init(u, 7))
    text = jax.jit(lbfgs.update, donate_argnums=(1,)).lower(u, state, u).compile().as_text()
    copies = re.findall(r"= f32\[7,[\d,]+\]\{[^}]*\} copy\(", text)  # a copy of a (7, ...) array
    assert not copies, copies

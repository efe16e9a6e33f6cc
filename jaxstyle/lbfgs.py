"""The L-BFGS direction, computed from inner products ("vector-free" L-BFGS).

The same direction as `optax.scale_by_lbfgs` (the two-loop recursion of Nocedal & Wright,
algorithm 7.4, with optax's choices: the identity scale s·y/y·y of the newest pair, a first step
of at most unit length, a pair with s·y = 0 given no weight), and the same state semantics, so
the solver restarts it the same way (`count` and `weights_memory` set to 0).

What differs is how it touches memory. optax's recursion walks the history twice, one pair at
a time, and each step reads two history images and reads and writes the running vector: about
eight image-sized passes per pair per iteration. Here the recursion runs on coefficients
(Chen, Wang & Zhang, "Large-scale L-BFGS using MapReduce", NeurIPS 2014): every vector it
forms is a combination of the gradient and the stored pairs, so it needs only their inner
products. The products with the new gradient and the newest pair come from one matrix
product over the history, and the direction from one more: two passes over the history per
iteration instead of about eight, as matrix products (measured in bench/README.md).

The history's inner products (s_i·y_j and y_i·y_j) are kept in the state and updated a row and
a column per iteration. All products are computed at full float32 precision (on a TPU the
default would round their operands to bfloat16).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


class LbfgsState(NamedTuple):
    """The history of one image: the last `memory` pairs (s, y) of steps and gradient changes."""

    count: jax.Array  # int32: updates since the start (or the last restart)
    params: jax.Array  # the point of the last update
    updates: jax.Array  # the gradient there
    diff_params_memory: jax.Array  # (memory, size): s, flattened, a ring buffer
    diff_updates_memory: jax.Array  # (memory, size): y
    weights_memory: jax.Array  # (memory,): 1 / (s·y), 0 for an empty or forgotten pair
    sy: jax.Array  # (memory, memory): s_i · y_j
    yy: jax.Array  # (memory, memory): y_i · y_j


def init(params: jax.Array, memory: int) -> LbfgsState:
    """An empty history for a variable shaped like `params`."""
    def zeros():  # a buffer each: a donated state must not hold one array twice
        return jnp.zeros((memory, params.size), params.dtype)

    f32 = jnp.float32
    return LbfgsState(jnp.zeros((), jnp.int32), jnp.zeros_like(params), jnp.zeros_like(params), zeros(), zeros(),
                      jnp.zeros((memory,), f32), jnp.zeros((memory, memory), f32),
                      jnp.zeros((memory, memory), f32))


def _dots(stack: jax.Array, vectors: jax.Array) -> jax.Array:
    """(memory, k): every stored vector against every one of `vectors` (k, size)."""
    return jnp.matmul(stack, vectors.T, precision=_HIGHEST, preferred_element_type=jnp.float32)


def _combine(coefficients: jax.Array, stack: jax.Array) -> jax.Array:
    """Σ_i coefficients[i] · stack[i]."""
    return jnp.matmul(coefficients.astype(stack.dtype), stack, precision=_HIGHEST)


def update(grad: jax.Array, state: LbfgsState, params: jax.Array) -> tuple[jax.Array, LbfgsState]:
    """Record the pair from the last update to (`params`, `grad`) and return the L-BFGS
    approximation of the inverse Hessian times `grad` (negate it for a descent direction)."""
    m = state.weights_memory.shape[0]
    first = state.count == 0
    idx = (state.count - 1) % m  # the slot of the newest pair (optax's prev_memory_idx)
    # The history is kept flat, (memory, size): stored the image's way, XLA:CPU copied all of
    # it several times per update to feed the matrix products (measured 4x optax's time).
    g = grad.reshape(-1).astype(params.dtype)
    s = jnp.where(first, 0.0, params - state.params).reshape(-1).astype(params.dtype)
    y = jnp.where(first, 0.0, grad - state.updates).reshape(-1).astype(params.dtype)
    S = state.diff_params_memory.at[idx].set(s)
    Y = state.diff_updates_memory.at[idx].set(y)

    # One pass over the history: S and Y against the gradient and the new pair.
    probe = jnp.stack([g, s, y])
    zs, zy = _dots(S, probe), _dots(Y, probe)  # (m, 3) each
    sg, yg = zs[:, 0], zy[:, 0]
    sy_new = zs[idx, 2]  # s · y of the new pair
    yy_new = zy[idx, 2]
    weight = jnp.where(first | (sy_new == 0.0), 0.0, 1.0 / sy_new)
    rho = state.weights_memory.at[idx].set(weight)
    # Row idx of S·Y is s_new·y_j; column idx is s_i·y_new; Y·Y is symmetric.
    sy = state.sy.at[idx, :].set(zy[:, 1]).at[:, idx].set(zs[:, 2])
    yy = state.yy.at[idx, :].set(zy[:, 2]).at[:, idx].set(zy[:, 2])
    gnorm = jnp.sqrt(jnp.vdot(grad, grad, precision=_HIGHEST))
    gamma = jnp.where(first, jnp.minimum(1.0, 1.0 / gnorm),
                      jnp.where(yy_new > 0.0, sy_new / yy_new, 1.0))

    # The two-loop recursion on coefficients: q = cg·g + Σ b_j y_j, then r = rg·g + Σ rb_j y_j + Σ ra_j s_j.
    order = (state.count + jnp.arange(m)) % m  # oldest first; the newest is order[-1] == idx

    def right(carry, i):
        cg, b = carry
        alpha = rho[i] * (cg * sg[i] + jnp.dot(b, sy[i], precision=_HIGHEST))
        return (cg, b.at[i].add(-alpha)), alpha

    (cg, b), alphas = jax.lax.scan(right, (jnp.float32(1.0), jnp.zeros((m,), jnp.float32)), order,
                                   reverse=True)

    def left(carry, item):
        rg, rb, ra = carry
        i, alpha = item
        beta = rho[i] * (rg * yg[i] + jnp.dot(rb, yy[i], precision=_HIGHEST)
                         + jnp.dot(ra, sy[:, i], precision=_HIGHEST))
        return (rg, rb, ra.at[i].add(alpha - beta)), None

    (rg, rb, ra), _ = jax.lax.scan(left, (gamma * cg, gamma * b, jnp.zeros((m,), jnp.float32)),
                                   (order, alphas))

    # The second pass: the direction from its coefficients.
    direction = (rg * g + _combine(rb, Y) + _combine(ra, S)).reshape(params.shape).astype(params.dtype)
    state = LbfgsState(state.count + 1, params, grad.astype(params.dtype), S, Y, rho, sy, yy)
    return direction, state

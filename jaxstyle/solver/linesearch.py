"""A strong-Wolfe line search that asks for one evaluation at a time.

The solver's loop evaluates the loss and gradient once per step, at the point this search
names (`Search.step` along the direction), and hands the result back to `advance`. Nothing
here evaluates the network, so the compiled loop holds a single copy of it, and a batch of
images can run the search in lockstep under `vmap` (optax's zoom search evaluates inside both
branches of a `lax.cond`, which puts two copies of the network in the loop, and both run
under `vmap`).

The search is Nocedal & Wright's (Numerical Optimization, 2nd ed., algorithms 3.5 and 3.6):
grow the step until the minimum along the line is bracketed, then shrink the bracket by
safeguarded cubic interpolation, accepting the first step with sufficient decrease
(f(t) ≤ f(0) + c1·t·f'(0), or Hager & Zhang's approximate form near a minimizer) and small
curvature (|f'(t)| ≤ c2·|f'(0)|). A trial whose value or
gradient is not finite counts as a step too far. When the evaluation budget runs out, the best
step with sufficient decrease found so far is evaluated once more and taken if it lowers the
loss; otherwise the search fails, and the solver restarts L-BFGS from the steepest descent.
All state is scalars and all logic is `jnp.where`, so it batches with `vmap` unchanged.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

C1 = 1e-4  # sufficient decrease
C2 = 0.9  # curvature (0.9 is the usual choice for quasi-Newton directions)
# Near a minimizer float32 rounding can hide a real decrease from the Armijo test; as optax
# does, Hager & Zhang's approximate Wolfe condition (2006, eq. 23) is accepted in its place
# when the value is within this fraction of the current one.
APPROX = 1e-6
GROW = 2.0  # step growth while bracketing
SAFEGUARD = 0.1  # interpolated steps stay this fraction of the bracket away from its ends


class Search(NamedTuple):
    """The state of one line search along the current direction (scalars)."""

    step: jax.Array  # the next step length to evaluate
    slope: jax.Array  # f'(0): the directional derivative at the current point (< 0)
    lo_step: jax.Array  # the best step so far with sufficient decrease (0 at first)
    lo_value: jax.Array
    lo_slope: jax.Array
    hi_step: jax.Array  # the other end of the bracket (meaningful once `bracketed`)
    hi_value: jax.Array
    hi_slope: jax.Array
    bracketed: jax.Array  # bool: the minimum along the line lies between lo and hi
    count: jax.Array  # int32: evaluations made by this search
    last: jax.Array  # bool: the budget is spent and `step` is the fallback (lo) step


def begin(value: jax.Array, slope: jax.Array, step: float | jax.Array = 1.0) -> Search:
    """A new search from a point with loss `value` and directional derivative `slope`."""
    f32 = jnp.float32
    value, slope = jnp.asarray(value, f32), jnp.asarray(slope, f32)
    zero = jnp.zeros((), f32)
    return Search(jnp.asarray(step, f32), slope, zero, value, slope, zero, value, slope,
                  jnp.zeros((), bool), jnp.zeros((), jnp.int32), jnp.zeros((), bool))


def _cubic_min(a, fa, sa, b, fb, sb):
    """The minimizer of the cubic through (a, fa, f'(a)=sa) and (b, fb, sb) (N&W eq. 3.59)."""
    d1 = sa + sb - 3 * (fa - fb) / (a - b)
    disc = d1 * d1 - sa * sb
    d2 = jnp.sign(b - a) * jnp.sqrt(jnp.maximum(disc, 0.0))
    t = b - (b - a) * (sb + d2 - d1) / (sb - sa + 2 * d2)
    return jnp.where(disc >= 0, t, jnp.nan)


def advance(search: Search, value0: jax.Array, value: jax.Array, slope: jax.Array,
            finite: jax.Array, max_steps: int) -> tuple[jax.Array, jax.Array, Search]:
    """Take the evaluation at `search.step` (loss `value`, directional derivative `slope`,
    `finite` when both are) and return (accept, fail, next search).

    `value0` is the loss at the current point. On accept the solver moves to the step; on fail
    it keeps its point; otherwise it evaluates at the returned search's `step`.
    """
    t, s0 = search.step, search.slope
    armijo = (value <= value0 + C1 * t * s0) | (
        (slope <= (2 * C1 - 1) * s0) & (value <= value0 + APPROX * jnp.abs(value0)))
    curvature = jnp.abs(slope) <= -C2 * s0
    accept = jnp.where(search.last, finite & (value < value0), finite & armijo & curvature)
    fail = search.last & ~accept

    # Update the bracket (Nocedal & Wright 3.5 while bracketing, 3.6 once bracketed).
    too_far = ~finite | ~armijo | (value >= search.lo_value)
    swap = jnp.where(search.bracketed, slope * (search.hi_step - search.lo_step) >= 0, slope >= 0)
    move_lo = ~too_far
    new_hi = jnp.where(too_far, 1, jnp.where(swap, 2, 0))  # 1: hi = trial, 2: hi = old lo
    hi_step = jnp.select([new_hi == 1, new_hi == 2], [t, search.lo_step], search.hi_step)
    hi_value = jnp.select([new_hi == 1, new_hi == 2], [value, search.lo_value], search.hi_value)
    hi_slope = jnp.select([new_hi == 1, new_hi == 2], [slope, search.lo_slope], search.hi_slope)
    lo_step = jnp.where(move_lo, t, search.lo_step)
    lo_value = jnp.where(move_lo, value, search.lo_value)
    lo_slope = jnp.where(move_lo, slope, search.lo_slope)
    bracketed = search.bracketed | too_far | swap

    # The next trial: grow, or interpolate inside the bracket.
    a, b = jnp.minimum(lo_step, hi_step), jnp.maximum(lo_step, hi_step)
    width = b - a
    cubic = _cubic_min(lo_step, lo_value, lo_slope, hi_step, hi_value, hi_slope)
    usable = jnp.isfinite(cubic) & jnp.isfinite(hi_value) & jnp.isfinite(hi_slope)
    inside = jnp.clip(jnp.where(usable, cubic, 0.5 * (a + b)), a + SAFEGUARD * width, b - SAFEGUARD * width)
    # A trial that blew up says little about the function: shrink hard towards lo.
    blown = ~(jnp.isfinite(hi_value) & jnp.isfinite(hi_slope))
    inside = jnp.where(blown, lo_step + SAFEGUARD * (hi_step - lo_step), inside)
    step = jnp.where(bracketed, inside, t * GROW)

    count = search.count + 1
    spent = (count >= max_steps) & ~search.last & ~accept
    # Out of evaluations: fall back to the best step with sufficient decrease, if there is one.
    fail = fail | (spent & (lo_step <= 0))
    step = jnp.where(spent, lo_step, step)
    nxt = Search(step.astype(t.dtype), s0, lo_step, lo_value, lo_slope, hi_step, hi_value, hi_slope,
                 bracketed, count, spent)
    return accept, fail, nxt

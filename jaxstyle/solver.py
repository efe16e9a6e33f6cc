"""The optimizer loop: optax L-BFGS (or Adam) on the image, jitted, run in chunks.

One call of `run_chunk` performs up to `n` iterations inside a `lax.while_loop` and returns
to the host, which saves snapshots and reports progress between chunks. The loop stops
early, with a status, when the loss or gradient becomes non-finite (the last image with a
finite loss is kept) or when L-BFGS stops making progress.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from . import losses
from .config import Config
from .losses import Objective, Targets

RUNNING, NONFINITE, STALLED = 0, 1, 2
STATUS_NAMES = {RUNNING: "running", NONFINITE: "non-finite", STALLED: "stalled"}


@dataclass(frozen=True)
class Method:
    """The static optimizer settings (they shape the compiled loop)."""

    optimizer: str = "lbfgs"
    lbfgs_memory: int = 20
    linesearch_steps: int = 20
    stall_patience: int = 5  # L-BFGS iterations without a decrease before we call it stalled
    # optax caps L-BFGS's first step at unit length; the solver works on u = x / scale so that
    # this step changes pixels by at most `first_step` (RMS, 0..255 units). Without it the line
    # search spends ~13 evaluations growing a step of ~0.002 per pixel.
    first_step: float = 1.0

    @classmethod
    def from_config(cls, config: Config) -> "Method":
        return cls(config.optimizer, config.lbfgs_memory, config.linesearch_steps)

    def scale(self, shape: tuple[int, ...]) -> float:
        """x = scale · u between the image x and the optimized variable u (1 for Adam)."""
        return 1.0 if self.optimizer == "adam" else self.first_step * math.sqrt(math.prod(shape))

    def transform(self, learning_rate: jax.Array | float) -> optax.GradientTransformationExtraArgs:
        """The optax transformation; Adam's learning rate is a traced value, not a constant."""
        if self.optimizer == "adam":
            return optax.adam(learning_rate)
        return optax.lbfgs(
            memory_size=self.lbfgs_memory,
            linesearch=optax.scale_by_zoom_linesearch(
                max_linesearch_steps=self.linesearch_steps, initial_guess_strategy="one"),
        )


class LoopState(NamedTuple):
    """Everything the loop carries; a pytree, so it can be checkpointed and resumed."""

    u: jax.Array  # current image divided by `Method.scale` (see `image`)
    opt_state: Any
    iteration: jax.Array  # int32, iterations done
    evaluations: jax.Array  # int32, loss+gradient evaluations done
    value: jax.Array  # float32, loss at `x` (L-BFGS) or before the last Adam step
    last_good: jax.Array  # the last image known to have a finite loss and gradient
    stall: jax.Array  # int32, consecutive L-BFGS iterations without a decrease
    status: jax.Array  # int32, RUNNING / NONFINITE / STALLED


def init_state(x0: jax.Array, method: Method, learning_rate: float = 1.0) -> LoopState:
    """The loop state before the first iteration, from an image in network input space."""
    x0 = jnp.asarray(x0, jnp.float32) / method.scale(x0.shape)
    # Strong dtypes throughout, so the state returned by `run_chunk` has the same types as this
    # one and the second chunk does not recompile (optax's initial info scalars are weakly typed).
    opt_state = jax.tree.map(lambda a: jnp.asarray(a, dtype=jnp.result_type(a)),
                             method.transform(learning_rate).init(x0))
    zero = jnp.zeros((), jnp.int32)
    return LoopState(x0, opt_state, zero, zero, jnp.asarray(jnp.inf, jnp.float32), x0, zero, zero)


def image(state: LoopState, method: Method) -> jax.Array:
    """The current image (network input space) of a loop state."""
    return state.u * method.scale(state.u.shape)


def _finite(value: jax.Array, grad: jax.Array) -> jax.Array:
    # The sum of the gradient is non-finite iff some element is (or it overflows, equally bad).
    return jnp.isfinite(value) & jnp.isfinite(jnp.sum(grad))


def _lbfgs_step(state: LoopState, fn, fn_kwargs, method: Method, learning_rate):
    opt = method.transform(learning_rate)
    stored = optax.tree.get(state.opt_state, "value")
    # value_and_grad_from_state re-evaluates only when the stored value is not finite
    # (the first iteration); afterwards the line search's last evaluation is reused.
    evals_here = jnp.where(jnp.isfinite(stored), 0, 1).astype(jnp.int32)
    value, grad = optax.value_and_grad_from_state(fn)(state.u, state=state.opt_state, **fn_kwargs)
    updates, opt_state = opt.update(grad, state.opt_state, state.u, value=value, grad=grad,
                                    value_fn=fn, **fn_kwargs)
    new_value = optax.tree.get(opt_state, "value").astype(jnp.float32)
    ok = _finite(value, grad) & _finite(new_value, optax.tree.get(opt_state, "grad"))
    steps = optax.tree.get(opt_state, "num_linesearch_steps").astype(jnp.int32)
    stall = jnp.where(new_value < value, 0, state.stall + 1).astype(jnp.int32)
    status = jnp.where(~ok, NONFINITE, jnp.where(stall >= method.stall_patience, STALLED, RUNNING))
    # Every accepted point has a finite loss and gradient, so on failure it simply stays.
    u = jnp.where(ok, optax.apply_updates(state.u, updates), state.u)
    return LoopState(u, opt_state, state.iteration + ok.astype(jnp.int32),
                     state.evaluations + evals_here + steps, jnp.where(ok, new_value, value),
                     u, stall, status.astype(jnp.int32))


def _adam_step(state: LoopState, fn, fn_kwargs, method: Method, learning_rate):
    opt = method.transform(learning_rate)
    value, grad = jax.value_and_grad(fn)(state.u, **fn_kwargs)
    ok = _finite(value, grad)
    updates, opt_state = opt.update(grad, state.opt_state, state.u)
    status = jnp.where(ok, RUNNING, NONFINITE).astype(jnp.int32)
    # Adam evaluates this point only now: when it is not finite, go back to the last one that was.
    u = jnp.where(ok, optax.apply_updates(state.u, updates), state.last_good)
    last_good = jnp.where(ok, state.u, state.last_good)
    return LoopState(u, opt_state, state.iteration + ok.astype(jnp.int32), state.evaluations + 1,
                     value.astype(jnp.float32), last_good, state.stall, status)


@partial(jax.jit, static_argnames=("objective", "method"))
def run_chunk(state: LoopState, n: jax.Array, variables: Any, targets: Targets,
              learning_rate: jax.Array, *, objective: Objective, method: Method) -> LoopState:
    """Up to `n` more iterations, stopping early when the status leaves RUNNING.

    A state that has already stopped comes back unchanged, so the host may queue the next
    chunk before it has looked at this one's result.
    """

    scale = method.scale(state.u.shape)

    def fn(u, variables, targets):
        return losses.total(u * scale, variables, targets, objective)

    fn_kwargs = {"variables": variables, "targets": targets}
    step = _adam_step if method.optimizer == "adam" else _lbfgs_step
    stop_at = state.iteration + n

    def cond(s: LoopState):
        return (s.iteration < stop_at) & (s.status == RUNNING)

    def body(s: LoopState):
        return step(s, fn, fn_kwargs, method, learning_rate)

    return jax.lax.while_loop(cond, body, state)


@partial(jax.jit, static_argnames=("objective",))
def loss_terms(x: jax.Array, variables: Any, targets: Targets, *, objective: Objective) -> losses.Terms:
    """Every loss term at x (a forward pass only), for progress reports."""
    return losses.terms(x, variables, targets, objective)


@partial(jax.jit, static_argnames=("objective",))
def value_and_grad(x: jax.Array, variables: Any, targets: Targets, *, objective: Objective):
    """Loss and its gradient with respect to the image (used by tests and the benchmark)."""
    return jax.value_and_grad(losses.total)(x, variables, targets, objective)

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
import numpy as np
import optax

from . import losses
from .config import Config
from .losses import Objective, Targets

RUNNING, NONFINITE, STALLED = 0, 1, 2
STATUS_NAMES = {RUNNING: "running", NONFINITE: "non-finite", STALLED: "stalled"}


@dataclass(frozen=True)
class Method:
    """The static optimizer settings (they shape the compiled loop)."""

    # Defaults come from Config, the one source of truth for settings.
    optimizer: str = Config.optimizer
    lbfgs_memory: int = Config.lbfgs_memory
    linesearch_steps: int = Config.linesearch_steps
    stall_patience: int = 5  # L-BFGS iterations without a decrease before we call it stalled
    # optax caps L-BFGS's first step at unit length; the solver works on u = x / scale so that
    # this step changes pixels by at most `first_step` (RMS, 0..255 units). Without it the line
    # search spends ~13 evaluations growing a step of ~0.002 per pixel; 10 measured best.
    first_step: float = 10.0
    # L-BFGS on u with x = scale · L(u), where L damps spatial frequency f (cycles per pixel)
    # by (1 + (f / precondition)²)^(-1/2) via an FFT: preconditioned L-BFGS. 0 turns it off.
    precondition: float = Config.precondition

    @classmethod
    def from_config(cls, config: Config) -> "Method":
        return cls(config.optimizer, config.lbfgs_memory, config.linesearch_steps,
                   precondition=config.precondition)

    def scale(self, shape: tuple[int, ...]) -> float:
        """x = scale · L(u) between the image x and the optimized variable u (1 for Adam); for a
        batch (leading axes) the scale is the one of each image."""
        return 1.0 if self.optimizer == "adam" else self.first_step * math.sqrt(math.prod(shape[-3:]))

    def _filter(self, shape: tuple[int, ...]) -> np.ndarray | None:
        if self.optimizer == "adam" or not self.precondition:
            return None
        h, w = shape[-3], shape[-2]
        fy = np.fft.fftfreq(h)[:, None]  # cycles per pixel
        fx = np.fft.rfftfreq(w)[None, :]
        return ((1 + (fx ** 2 + fy ** 2) / self.precondition ** 2) ** -0.5)[:, :, None].astype(np.float32)

    def to_image(self, u: jax.Array) -> jax.Array:
        """The image x (network input space) for the optimized variable u."""
        d = self._filter(u.shape)
        if d is not None:
            u = jnp.fft.irfft2(jnp.fft.rfft2(u, axes=(-3, -2)) * d, s=u.shape[-3:-1], axes=(-3, -2))
        return u * self.scale(u.shape)

    def from_image(self, x: jax.Array) -> jax.Array:
        """Inverse of `to_image`."""
        u = x / self.scale(x.shape)
        d = self._filter(x.shape)
        if d is not None:
            u = jnp.fft.irfft2(jnp.fft.rfft2(u, axes=(-3, -2)) / d, s=x.shape[-3:-1], axes=(-3, -2))
        return u

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
    """The loop state before any evaluation, from an image in network input space.

    L-BFGS also needs the loss and gradient at x0 in its state: use `start`, which adds them.
    """
    x0 = method.from_image(jnp.asarray(x0, jnp.float32))
    # Strong dtypes throughout, so the state returned by `run_chunk` has the same types as this
    # one and the second chunk does not recompile (optax's initial info scalars are weakly typed).
    opt_state = jax.tree.map(lambda a: jnp.asarray(a, dtype=jnp.result_type(a)),
                             method.transform(learning_rate).init(x0))
    zero = jnp.zeros((), jnp.int32)
    return LoopState(x0, opt_state, zero, zero, jnp.asarray(jnp.inf, jnp.float32), x0, zero, zero)


def _objective_fn(objective: Objective, method: Method, shape: tuple[int, ...]):
    def fn(u, variables, targets):
        return losses.total(method.to_image(u), variables, targets, objective)

    return fn


def _start(x0: jax.Array, variables: Any, targets: Targets, learning_rate: jax.Array,
           objective: Objective, method: Method) -> LoopState:
    state = init_state(x0, method, learning_rate)
    if method.optimizer == "adam":
        return state
    value, grad = jax.value_and_grad(_objective_fn(objective, method, x0.shape))(
        state.u, variables, targets)
    ok = _finite(value, grad)
    opt_state = optax.tree.set(state.opt_state, value=value.astype(jnp.float32), grad=grad)
    return state._replace(opt_state=opt_state, evaluations=jnp.ones((), jnp.int32),
                          value=value.astype(jnp.float32),
                          status=jnp.where(ok, RUNNING, NONFINITE).astype(jnp.int32))


@partial(jax.jit, static_argnames=("objective", "method"))
def start(x0: jax.Array, variables: Any, targets: Targets, learning_rate: jax.Array, *,
          objective: Objective, method: Method) -> LoopState:
    """The initial loop state, with L-BFGS's first loss and gradient evaluated and stored.

    Evaluating here, once, keeps a second copy of the network (optax's `cond` around the
    first evaluation) out of the compiled loop, which halves its compile time.
    """
    return _start(x0, variables, targets, learning_rate, objective, method)


# In batched targets the content activations and their coefficients are per image (leading
# axis); the style Gram targets and the term weights are shared by the whole batch.
def _per_image(targets: Targets) -> tuple:
    return targets.content, targets.content_coeffs


def _with_image(targets: Targets, part: tuple) -> Targets:
    return targets._replace(content=part[0], content_coeffs=part[1])


def _over_images(fn, mesh, batched, variables, targets, *rest):
    """Apply fn(image_part..., variables, image_targets) to each image of a batch.

    Images run one after another inside the compiled program (`lax.map`), so each one's loop
    is exactly the single-image loop: vmapping it instead would turn optax's line-search `cond`
    into running both branches (two network evaluations per step) and batch the weights into
    slow grouped convolutions. With a `mesh`, `shard_map` gives each device its share of the
    batch along the "batch" axis.
    """
    def local(batched, variables, targets, *rest):
        def one(item):
            part, image_targets = item
            return fn(part, variables, _with_image(targets, image_targets), *rest)
        return jax.lax.map(one, (batched, _per_image(targets)))

    if mesh is None:
        return local(batched, variables, targets, *rest)
    from jax.sharding import PartitionSpec as P
    target_specs = Targets(P("batch"), P(), P("batch"), P(), P())
    return jax.shard_map(local, mesh=mesh,
                         in_specs=(P("batch"), P(), target_specs) + (P(),) * len(rest),
                         out_specs=P("batch"), check_vma=False)(batched, variables, targets, *rest)


@partial(jax.jit, static_argnames=("objective", "method", "mesh"))
def start_batch(x0: jax.Array, variables: Any, targets: Targets, learning_rate: jax.Array, *,
                objective: Objective, method: Method, mesh: Any = None) -> LoopState:
    """`start` for a batch of images (leading axis), each with its own state."""
    return _over_images(lambda x, v, t, lr: _start(x, v, t, lr, objective, method),
                        mesh, x0, variables, targets, learning_rate)


def image(state: LoopState, method: Method) -> jax.Array:
    """The current image (network input space) of a loop state."""
    return method.to_image(state.u)


def _finite(value: jax.Array, grad: jax.Array) -> jax.Array:
    # The sum of the gradient is non-finite iff some element is (or it overflows, equally bad).
    return jnp.isfinite(value) & jnp.isfinite(jnp.sum(grad))


def _lbfgs_step(state: LoopState, fn, fn_kwargs, method: Method, learning_rate):
    opt = method.transform(learning_rate)
    # The loss and gradient at the current point are in the state: from `start`, then from
    # the line search's last evaluation (optax.value_and_grad_from_state without its `cond`).
    value = optax.tree.get(state.opt_state, "value")
    grad = optax.tree.get(state.opt_state, "grad")
    updates, opt_state = opt.update(grad, state.opt_state, state.u, value=value, grad=grad,
                                    value_fn=fn, **fn_kwargs)
    new_value = optax.tree.get(opt_state, "value").astype(jnp.float32)
    ok = _finite(new_value, optax.tree.get(opt_state, "grad"))
    steps = optax.tree.get(opt_state, "num_linesearch_steps").astype(jnp.int32)
    stall = jnp.where(new_value < value, 0, state.stall + 1).astype(jnp.int32)
    status = jnp.where(~ok, NONFINITE, jnp.where(stall >= method.stall_patience, STALLED, RUNNING))
    # Every accepted point has a finite loss and gradient, so on failure it simply stays.
    u = jnp.where(ok, optax.apply_updates(state.u, updates), state.u)
    return LoopState(u, opt_state, state.iteration + ok.astype(jnp.int32),
                     state.evaluations + steps, jnp.where(ok, new_value, value),
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


def _chunk(state: LoopState, n: jax.Array, variables: Any, targets: Targets,
           learning_rate: jax.Array, objective: Objective, method: Method) -> LoopState:
    fn = _objective_fn(objective, method, state.u.shape)
    fn_kwargs = {"variables": variables, "targets": targets}
    step = _adam_step if method.optimizer == "adam" else _lbfgs_step
    stop_at = state.iteration + n

    def cond(s: LoopState):
        return (s.iteration < stop_at) & (s.status == RUNNING)

    def body(s: LoopState):
        return step(s, fn, fn_kwargs, method, learning_rate)

    return jax.lax.while_loop(cond, body, state)


@partial(jax.jit, static_argnames=("objective", "method"))
def run_chunk(state: LoopState, n: jax.Array, variables: Any, targets: Targets,
              learning_rate: jax.Array, *, objective: Objective, method: Method) -> LoopState:
    """Up to `n` more iterations, stopping early when the status leaves RUNNING.

    A state that has already stopped comes back unchanged, so the host may queue the next
    chunk before it has looked at this one's result.
    """
    return _chunk(state, n, variables, targets, learning_rate, objective, method)


@partial(jax.jit, static_argnames=("objective", "method", "mesh"))
def run_chunk_batch(state: LoopState, n: jax.Array, variables: Any, targets: Targets,
                    learning_rate: jax.Array, *, objective: Objective, method: Method,
                    mesh: Any = None) -> LoopState:
    """`run_chunk` for a batch: every image has its own L-BFGS state, line search and stop."""
    return _over_images(lambda s, v, t, n, lr: _chunk(s, n, v, t, lr, objective, method),
                        mesh, state, variables, targets, n, learning_rate)


def compile_loop(x0: jax.Array, variables: Any, loop_variables: Any, targets: Targets,
                 learning_rate: jax.Array, objective: Objective, method: Method,
                 batched: bool = False, mesh: Any = None):
    """Compiled `start` (with `variables`) and `run_chunk` (with `loop_variables`), ready to call
    as start(x0, variables, targets, lr) and chunk(state, n, loop_variables, targets, lr);
    `batched` compiles the batch versions (x0 and per-image targets with a leading axis),
    split over `mesh`'s "batch" axis when given."""
    if batched:
        start_fn = partial(start_batch, objective=objective, method=method, mesh=mesh)
        chunk_fn = partial(run_chunk_batch, objective=objective, method=method, mesh=mesh)
    else:
        start_fn = partial(start, objective=objective, method=method)
        chunk_fn = partial(run_chunk, objective=objective, method=method)
    begin = start_fn.func.lower(x0, variables, targets, learning_rate, **start_fn.keywords).compile()
    state = jax.eval_shape(start_fn, x0, variables, targets, learning_rate)
    if mesh is not None:
        from jax.sharding import NamedSharding, PartitionSpec
        sharding = NamedSharding(mesh, PartitionSpec("batch"))
        state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), state)
    chunk = chunk_fn.func.lower(state, jnp.int32(1), loop_variables, targets, learning_rate,
                                **chunk_fn.keywords).compile()
    return begin, chunk


@partial(jax.jit, static_argnames=("objective",))
def loss_terms(x: jax.Array, variables: Any, targets: Targets, *, objective: Objective) -> losses.Terms:
    """Every loss term at x (a forward pass only), for progress reports."""
    return losses.terms(x, variables, targets, objective)


@partial(jax.jit, static_argnames=("objective",))
def value_and_grad(x: jax.Array, variables: Any, targets: Targets, *, objective: Objective):
    """Loss and its gradient with respect to the image (used by tests and the benchmark)."""
    return jax.value_and_grad(losses.total)(x, variables, targets, objective)

"""The optimizer loop: L-BFGS (optax's direction, our line search) or Adam, one evaluation per step.

One program serves one image and a batch. Each step of the loop evaluates the loss and its
gradient once, at the point the method names (the L-BFGS line search's trial step, or Adam's
current point), then updates the method's state; so the compiled loop holds one copy of the
network, and the loss terms come out of that same evaluation for free (`value_and_grad` with
the terms as auxiliary output). The very first evaluation (at the initial image) happens
inside the loop too: a new problem needs no separate start program.

A batch maps the one-image loop over its images (`lax.map`, in groups of `width` images that
run side by side under `vmap`), each image with its own L-BFGS history, line search and
stopping point; `shard_map` splits a batch over a device `Mesh` (axis "batch"). The loop runs
in chunks: each call continues every image up to its own iteration `until`, so the host
decides where chunks end (snapshots, checkpoints) and queues the next before reading this one.
The loop stops an image early when its loss or gradient becomes non-finite (the last image
with a finite loss is kept) or when L-BFGS stops making progress.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxstyle.config import LBFGS_MEMORY, Config
from jaxstyle.objective import losses
from jaxstyle.objective.losses import Objective, Targets
from jaxstyle.solver import linesearch

RUNNING, NONFINITE, STALLED, IDLE = 0, 1, 2, 3
STATUS_NAMES = {RUNNING: "running", NONFINITE: "non-finite", STALLED: "stalled", IDLE: "idle"}
HISTORY = 64  # iterations a chunk records (loss and terms of each): the longest chunk


@dataclass(frozen=True)
class Method:
    """The static optimizer settings (they shape the compiled loop)."""

    # Defaults come from Config, the one source of truth for settings.
    optimizer: str = Config.optimizer
    lbfgs_memory: int = LBFGS_MEMORY
    linesearch_steps: int = Config.linesearch_steps
    stall_patience: int = 5  # L-BFGS iterations without a decrease before we call it stalled
    # The first L-BFGS direction (optax's rule) has at most unit length; the solver works on
    # u = x / scale so that this step changes pixels by at most `first_step` (RMS, 0..255
    # units). Without it the line search spends ~13 evaluations growing a step of ~0.002 per
    # pixel; 10 measured best.
    first_step: float = 10.0
    # L-BFGS on u with x = scale · L(u), where L damps spatial frequency f (cycles per pixel)
    # by (1 + (f / precondition)²)^(-1/2) via an FFT: preconditioned L-BFGS. 0 turns it off.
    precondition: float = Config.precondition
    # The preconditioner's Fourier transforms as matrix products instead of FFTs: for an image
    # split over devices (a spatial layout: `problem.for_layout`), whose partitioned programs
    # XLA:CPU cannot FFT.
    products: bool = False
    # The L-BFGS direction from the history's inner products (a few matrix products: accelerators,
    # `problem.for_layout`) instead of optax's two-loop recursion (2 x memory dependent steps).
    compact: bool = False
    # The image given out is the bias-corrected exponential moving average of the iterates with
    # this decay (`Config.average`; 0: the last iterate). It rides in the loop state.
    average: float = Config.average
    # L-BFGS stops (STALLED) after `stall_patience` iterations that each lower the loss by less
    # than this fraction (`Config.tolerance`, video frames); 0: only when it stops decreasing.
    tolerance: float = Config.tolerance

    @classmethod
    def from_config(cls, config: Config) -> "Method":
        return cls(config.optimizer, config.lbfgs_memory or LBFGS_MEMORY, config.linesearch_steps,
                   precondition=config.precondition, average=config.average, tolerance=config.tolerance)

    def scale(self, shape: tuple[int, ...]) -> float:
        """x = scale · L(u) between the image x (H, W, 3) and the optimized variable u (1 for Adam)."""
        return 1.0 if self.optimizer == "adam" else self.first_step * math.sqrt(math.prod(shape[-3:]))

    def _filter(self, shape: tuple[int, ...]) -> np.ndarray | None:
        if self.optimizer == "adam" or not self.precondition:
            return None
        h, w = shape[-3], shape[-2]
        fy = np.fft.fftfreq(h)[:, None]  # cycles per pixel
        fx = np.fft.rfftfreq(w)[None, :]
        return ((1 + (fx ** 2 + fy ** 2) / self.precondition ** 2) ** -0.5)[:, :, None].astype(np.float32)

    def lbfgs(self) -> optax.GradientTransformation:
        return optax.scale_by_lbfgs(memory_size=self.lbfgs_memory)

    def to_image(self, u: jax.Array) -> jax.Array:
        """The image x (network input space) for the optimized variable u."""
        d = self._filter(u.shape)
        if d is not None:
            u = (_filtered_by_products if self.products else _filtered)(u, d, multiply=True)
        return u * self.scale(u.shape)

    def from_image(self, x: jax.Array) -> jax.Array:
        """Inverse of `to_image`."""
        u = x / self.scale(x.shape)
        d = self._filter(x.shape)
        if d is not None:
            u = (_filtered_by_products if self.products else _filtered)(u, d, multiply=False)
        return u


def _filtered_by_products(u: jax.Array, d: np.ndarray, multiply: bool) -> jax.Array:
    """`_filtered` with the discrete Fourier transforms as matrix products (float32, highest
    precision): what an image split over devices by rows uses, since XLA:CPU's FFT fails in
    programs partitioned over several devices. Equal to the FFT's result to float32 rounding."""
    h, w = u.shape[-3], u.shape[-2]
    k = w // 2 + 1
    ang_w = 2 * np.pi * np.outer(np.arange(w), np.arange(k)) / w
    ang_h = 2 * np.pi * np.outer(np.arange(h), np.arange(h)) / h
    cw, sw = jnp.asarray(np.cos(ang_w), jnp.float32), jnp.asarray(np.sin(ang_w), jnp.float32)
    ch, sh = jnp.asarray(np.cos(ang_h), jnp.float32), jnp.asarray(np.sin(ang_h), jnp.float32)
    hi = jax.lax.Precision.HIGHEST

    def mm(spec, a, b):
        with jax.named_scope("precondition"):
            return jnp.einsum(spec, a, b, precision=hi)

    # forward: X = Σ_h Σ_w u e^{-2πi(hy/H + wx/W)}, as real and imaginary parts
    a_re, a_im = mm("...hwc,wk->...hkc", u, cw), -mm("...hwc,wk->...hkc", u, sw)
    x_re = mm("yh,...hkc->...ykc", ch, a_re) + mm("yh,...hkc->...ykc", sh, a_im)
    x_im = mm("yh,...hkc->...ykc", ch, a_im) - mm("yh,...hkc->...ykc", sh, a_re)
    f = jnp.asarray(d if multiply else 1.0 / d, jnp.float32)
    x_re, x_im = x_re * f, x_im * f
    # inverse along H (complex), then the real inverse along W (half spectrum, doubled terms)
    b_re = (mm("yh,...ykc->...hkc", ch, x_re) - mm("yh,...ykc->...hkc", sh, x_im)) / h
    b_im = (mm("yh,...ykc->...hkc", ch, x_im) + mm("yh,...ykc->...hkc", sh, x_re)) / h
    twice = np.full((k,), 2.0)
    twice[0] = 1.0
    if w % 2 == 0:
        twice[-1] = 1.0
    cw2 = jnp.asarray(np.cos(ang_w).T * twice[:, None] / w, jnp.float32)  # (k, w)
    sw2 = jnp.asarray(np.sin(ang_w).T * twice[:, None] / w, jnp.float32)
    return mm("...hkc,kw->...hwc", b_re, cw2) - mm("...hkc,kw->...hwc", b_im, sw2)


def _filtered(u: jax.Array, d: np.ndarray, multiply: bool) -> jax.Array:
    """u (..., H, W, C) with its spatial spectrum multiplied (or divided) by d (H, W//2+1, 1). The
    FFT runs over the two minor axes of a (..., C, H, W) copy: XLA:CPU's FFT needs them minor,
    and an image split over devices by rows otherwise reaches it in a layout it refuses."""
    v = jnp.moveaxis(u, -1, -3)
    f = jnp.fft.rfft2(v, axes=(-2, -1))
    k = jnp.moveaxis(jnp.asarray(d), -1, -3)
    v = jnp.fft.irfft2(f * k if multiply else f / k, s=v.shape[-2:], axes=(-2, -1))
    return jnp.moveaxis(v, -3, -1)



class LoopState(NamedTuple):
    """Everything one image's loop carries; a pytree, so it can be checkpointed and resumed."""

    u: jax.Array  # the current point, the image divided by `Method.scale` (see `image`)
    value: jax.Array  # float32 loss at u (Adam: at the point before its last step)
    grad: jax.Array  # the gradient there
    terms: jax.Array  # (3,) unweighted content, style and tv terms there
    first: jax.Array  # (4,) total, content, style, tv at the initial image
    direction: jax.Array  # L-BFGS: the search direction; Adam: the last point with a finite loss
    opt: Any  # optax state: scale_by_lbfgs's history, or Adam's moments
    search: linesearch.Search
    iteration: jax.Array  # int32, iterations done
    evaluations: jax.Array  # int32, loss+gradient evaluations done
    stall: jax.Array  # int32, consecutive L-BFGS iterations without a decrease
    status: jax.Array  # int32, RUNNING / NONFINITE / STALLED / IDLE (a batch's empty slot)
    failures: jax.Array  # int32, line searches that found no decrease (each restarted L-BFGS)
    # Method.average > 0: Σ_k (1−β)β^(t−k) u_k over the iterations k = 1..t done (the moving
    # average before its bias correction); None (no arrays) otherwise.
    average: Any = None


class Summary(NamedTuple):
    """What a chunk reports per image besides its new state (which the next chunk takes over)."""

    iteration: jax.Array
    evaluations: jax.Array
    value: jax.Array
    terms: jax.Array  # (3,)
    first: jax.Array  # (4,)
    status: jax.Array
    image: jax.Array  # the current image, network input space (H, W, 3)
    history: jax.Array  # (HISTORY, 6): iteration, evaluations, total, content, style, tv per iteration


def init_state(x0: jax.Array, method: Method, active: jax.Array | bool = True) -> LoopState:
    """The loop state at the initial image x0 (network input space) before any evaluation;
    an inactive one (a batch's empty slot) is IDLE and never runs."""
    u = method.from_image(jnp.asarray(x0, jnp.float32))
    f32, i32 = jnp.float32, jnp.int32
    zero = jnp.zeros((), i32)
    if method.optimizer == "adam":
        opt = optax.adam(1.0).init(u)
        direction = u
    else:
        opt = method.lbfgs().init(u)
        direction = jnp.zeros_like(u)
    # Strong dtypes throughout, so every chunk returns exactly the types it was given.
    opt = jax.tree.map(lambda a: jnp.asarray(a, dtype=jnp.result_type(a)), opt)
    status = jnp.where(active, RUNNING, IDLE).astype(i32)
    inf = jnp.asarray(jnp.inf, f32)
    return LoopState(u, inf, jnp.zeros_like(u), jnp.zeros((3,), f32), jnp.full((4,), jnp.nan, f32),
                     direction, opt, linesearch.begin(inf, 0.0), zero, zero, zero, status, zero,
                     jnp.zeros_like(u) if method.average else None)


def image(state: LoopState, method: Method) -> jax.Array:
    """The image a loop state gives out (network input space): the current one, or with
    `method.average` the bias-corrected moving average of the iterates (the current image
    before the first iteration)."""
    if not method.average:
        return method.to_image(state.u)
    done = state.iteration.astype(jnp.float32)
    mean = state.average / jnp.maximum(1.0 - jnp.float32(method.average) ** done, 1e-30)
    return method.to_image(jnp.where(state.iteration > 0, mean, state.u))


def _averaged(s: LoopState, n: LoopState, method: Method) -> LoopState:
    """n (the state after s's step, which does not carry the average) with the average updated
    by its point when the step completed an iteration."""
    if not method.average:
        return n
    beta = jnp.float32(method.average)
    return n._replace(average=jnp.where(n.iteration > s.iteration, beta * s.average + (1 - beta) * n.u,
                                        s.average))


def _evaluate(u: jax.Array, variables: Any, targets: Targets, objective: Objective, method: Method):
    def fn(v):
        t = losses.terms(method.to_image(v), variables, targets, objective)
        return t.total, jnp.stack([t.content, t.style, t.tv])

    (value, terms), grad = jax.value_and_grad(fn, has_aux=True)(u)
    value = value.astype(jnp.float32)
    # The sum of the gradient is non-finite iff some element is (or it overflows, equally bad).
    finite = jnp.isfinite(value) & jnp.isfinite(jnp.sum(grad))
    return value, terms.astype(jnp.float32), grad, finite


class _Trial(NamedTuple):
    """A line search in progress: its state and the last point it evaluated."""

    search: linesearch.Search
    point: jax.Array
    value: jax.Array
    terms: jax.Array
    grad: jax.Array
    accept: jax.Array
    fail: jax.Array
    fallback: jax.Array  # the accepted step was the search's fallback (no curvature condition)
    evaluations: jax.Array


def _lbfgs_step(s: LoopState, variables, targets, objective, method) -> LoopState:
    """One L-BFGS iteration (or, for a fresh state, the start): line-search evaluations until a
    step is accepted or the search fails, then the next direction.

    The direction is updated once per iteration, outside the search's loop and unconditionally,
    so XLA updates the history in place (under a `cond` it copied all 2·memory images of it).
    """
    fresh = s.evaluations == 0

    def searching(t: _Trial):
        return ~(t.accept | t.fail) & ~(fresh & (t.evaluations > 0))

    def evaluate(t: _Trial) -> _Trial:
        point = jnp.where(fresh, s.u, s.u + t.search.step * s.direction)
        value, terms, grad, finite = _evaluate(point, variables, targets, objective, method)
        slope = jnp.vdot(grad, s.direction).astype(jnp.float32)
        with jax.named_scope("linesearch"):
            accept, fail, search = linesearch.advance(t.search, s.value, value, slope, finite,
                                                      method.linesearch_steps)
        return _Trial(search, point, value, terms, grad, jnp.where(fresh, finite, accept), ~fresh & fail,
                      t.search.last, t.evaluations + 1)

    no = jnp.zeros((), bool)
    t = jax.lax.while_loop(searching, evaluate, _Trial(s.search, s.u, s.value, s.terms, s.grad, no, no, no,
                                                       jnp.zeros((), jnp.int32)))
    accept, fail = t.accept, t.fail
    bad_start = fresh & ~accept
    # From the steepest descent again after a failed search or a fallback step (taken without the
    # curvature condition, its pair could spoil the history): a restart forgets the history by
    # zeroing its weights.
    restart = fail | (accept & t.fallback)
    u = jnp.where(accept, t.point, s.u)
    g = jnp.where(accept, t.grad, s.grad)
    opt = s.opt._replace(count=jnp.where(restart, 0, s.opt.count).astype(s.opt.count.dtype),
                         weights_memory=jnp.where(restart, 0.0, s.opt.weights_memory))
    with jax.named_scope("lbfgs"):
        if method.compact:
            precond, opt = lbfgs_update(g, opt, u)
        else:
            precond, opt = method.lbfgs().update(g, opt, u)
    direction = -precond
    value = jnp.where(accept, t.value, s.value)
    stepped = (accept & ~fresh) | fail
    lower = t.value < s.value
    if method.tolerance:  # a later video frame: a decrease under this fraction counts as none
        lower = t.value < s.value - method.tolerance * jnp.abs(s.value)
    stall = jnp.where(stepped, jnp.where(accept & lower, 0, s.stall + 1), s.stall)
    status = jnp.where(bad_start, NONFINITE, jnp.where(stall >= method.stall_patience, STALLED, RUNNING))
    first = jnp.where(fresh, jnp.concatenate([t.value[None], t.terms]), s.first)
    return LoopState(u, value, g, jnp.where(accept, t.terms, s.terms), first, direction, opt,
                     linesearch.begin(value, jnp.vdot(g, direction)),
                     s.iteration + stepped.astype(jnp.int32), s.evaluations + t.evaluations,
                     stall.astype(jnp.int32), status.astype(jnp.int32), s.failures + fail.astype(jnp.int32))


def lbfgs_update(g: jax.Array, opt: Any, u: jax.Array) -> tuple[jax.Array, Any]:
    """optax's `scale_by_lbfgs` update (same state, same history, same initial scaling), with the
    direction computed by the compact representation of Byrd, Nocedal and Schnabel (1994)
    instead of the two-loop recursion: equal in exact arithmetic, a handful of matrix products
    over the history instead of 2 x memory small dependent steps."""
    m = opt.weights_memory.shape[0]
    idx, prev = opt.count % m, (opt.count - 1) % m
    started = opt.count > 0
    ds, dy = u - opt.params, g - opt.updates
    sy = jnp.vdot(dy, ds).real
    weight = jnp.where(sy == 0.0, 0.0, 1.0 / sy)
    ds, dy, weight = (jnp.where(started, a, jnp.zeros_like(a)) for a in (ds, dy, weight))
    s_mem = opt.diff_params_memory.at[prev].set(ds)
    y_mem = opt.diff_updates_memory.at[prev].set(dy)
    rho = opt.weights_memory.at[prev].set(weight)
    yy = jnp.sum(dy * dy)
    gamma = jnp.where(started, jnp.where(yy > 0.0, jnp.vdot(dy, ds).real / yy, 1.0),
                      jnp.minimum(1.0, 1.0 / jnp.sqrt(jnp.sum(g * g))))
    direction = compact_direction(g, s_mem, y_mem, rho, gamma, idx)
    state = opt._replace(count=optax.safe_increment(opt.count), params=u, updates=g,
                         diff_params_memory=s_mem, diff_updates_memory=y_mem, weights_memory=rho)
    return direction.astype(g.dtype), state


def compact_direction(g: jax.Array, s_mem: jax.Array, y_mem: jax.Array, rho: jax.Array, gamma: jax.Array,
                      oldest: jax.Array) -> jax.Array:
    """H·g for the L-BFGS inverse Hessian approximation H of the pairs (s_i, y_i) with weights
    rho_i = 1/(s_iᵀy_i) (0: the pair is unused), held in a ring whose oldest slot is `oldest`,
    and initial scaling gamma:

        H·g = γg + S·p − γY·r,   r = R⁻¹Sᵀg,   p = R⁻ᵀ((D + γYᵀY)·r − γYᵀg),

    R the upper triangle of SᵀY in the pairs' chronological order, D its diagonal (1/rho).
    Unused pairs are cut out of R, D and YᵀY (an identity row and column), so they contribute
    nothing, as in the two-loop recursion."""
    m = rho.shape[0]
    hi = jax.lax.Precision.HIGHEST
    axes = tuple(range(1, s_mem.ndim))
    # Matrix-vector products as multiply-and-sum (memory-bound either way; as dots they would
    # go to the matrix units padded to their tiles), the history in its own shape (a flat view
    # would need a copy of it in another layout).
    order = (oldest + jnp.arange(m)) % m  # chronological: position k holds slot order[k]
    sy = jnp.tensordot(s_mem, y_mem, axes=(axes, axes), precision=hi)[order][:, order]
    yy = jnp.tensordot(y_mem, y_mem, axes=(axes, axes), precision=hi)[order][:, order]
    sg = jnp.sum(s_mem * g[None], axis=axes)[order]
    yg = jnp.sum(y_mem * g[None], axis=axes)[order]
    used = (rho != 0.0)[order]
    both = used[:, None] & used[None, :]
    d = jnp.where(used, 1.0 / jnp.where(used, rho[order], 1.0), 0.0)
    r_mat = jnp.where(both, jnp.triu(sy, 1), 0.0) + jnp.diag(jnp.where(used, d, 1.0))
    sg, yg = jnp.where(used, sg, 0.0), jnp.where(used, yg, 0.0)
    yy = jnp.where(both, yy, 0.0)
    r = jax.scipy.linalg.solve_triangular(r_mat, sg, lower=False)
    c = (jnp.diag(d) + gamma * yy) @ r - gamma * yg
    p = jax.scipy.linalg.solve_triangular(r_mat, c, trans="T", lower=False)
    inverse = jnp.argsort(order)  # back from chronological positions to ring slots
    p_slot, r_slot = p[inverse], r[inverse]
    shape = (m,) + (1,) * g.ndim
    return gamma * g + jnp.sum(p_slot.reshape(shape) * s_mem - (gamma * r_slot).reshape(shape) * y_mem, axis=0)


def _adam_step(s: LoopState, variables, targets, objective, method, learning_rate) -> LoopState:
    value, terms, grad, finite = _evaluate(s.u, variables, targets, objective, method)
    updates, opt = optax.adam(learning_rate).update(grad, s.opt, s.u)
    # Adam evaluates this point only now: when it is not finite, go back to the last one that was.
    u = jnp.where(finite, optax.apply_updates(s.u, updates), s.direction)
    last_good = jnp.where(finite, s.u, s.direction)
    first = jnp.where(s.evaluations == 0, jnp.concatenate([value[None], terms]), s.first)
    return LoopState(u, value, grad, terms, first, last_good, opt, s.search,
                     s.iteration + finite.astype(jnp.int32), s.evaluations + 1, s.stall,
                     jnp.where(finite, RUNNING, NONFINITE).astype(jnp.int32), s.failures)


def run_one(state: LoopState, until: jax.Array, variables: Any, targets: Targets,
            learning_rate: jax.Array, objective: Objective, method: Method) -> tuple[LoopState, Summary]:
    """One image: iterate until `until` iterations are done or the status leaves RUNNING.

    A state that has already stopped comes back unchanged, so the host may queue the next
    chunk before it has looked at this one's result.
    """
    def step(s):
        if method.optimizer == "adam":
            return _averaged(s, _adam_step(s, variables, targets, objective, method, learning_rate), method)
        return _averaged(s, _lbfgs_step(s, variables, targets, objective, method), method)

    def cond(carry):
        s, _ = carry
        return (s.iteration < until) & (s.status == RUNNING)

    def body(carry):
        s, history = carry
        n = step(s)
        row = jnp.concatenate([jnp.stack([n.iteration, n.evaluations]).astype(jnp.float32),
                               n.value[None], n.terms])
        at = jnp.where(n.iteration > s.iteration, n.iteration - state.iteration - 1, HISTORY)
        return n, history.at[at].set(row, mode="drop")

    history = jnp.full((HISTORY, 6), jnp.nan, jnp.float32)
    s, history = jax.lax.while_loop(cond, body, (state, history))
    return s, Summary(s.iteration, s.evaluations, s.value, s.terms, s.first, s.status,
                      image(s, method), history)


def run_batch(state: LoopState, until: jax.Array, variables: Any, targets: Targets,
              learning_rate: jax.Array, objective: Objective, method: Method,
              width: int = 1) -> tuple[LoopState, Summary]:
    """`run_one` for every image of a batch (leading axis), `width` at a time side by side."""
    def one(item):
        s, n, t = item
        return run_one(s, n, variables, t, learning_rate, objective, method)

    return each(one, (state, until, targets), width)


def each(fn, items: Any, width: int = 1) -> Any:
    """fn applied to every image of `items` (pytrees with a leading batch axis), `width` images
    at a time side by side (`vmap`), or one after another.

    One after another runs in a loop whose trip count XLA cannot see: a batch of one then
    compiles to the same per-image code as a batch of many, so an image's result does not depend
    on the batch it ran in (with a static count XLA removes a one-trip loop and fuses the lone
    image differently, which changes float32 rounding).
    """
    if width > 1:
        return jax.lax.map(fn, items, batch_size=width)
    first = jax.tree.leaves(items)[0]
    b = first.shape[0]
    probe = first.reshape(-1)[0].astype(jnp.int32)
    count = jnp.minimum(b, jnp.maximum(probe, b))  # always b, but not a constant
    out = jax.eval_shape(lambda: fn(jax.tree.map(lambda a: a[0], items)))
    buffers = jax.tree.map(lambda a: jnp.zeros((b, *a.shape), a.dtype), out)

    def body(i, acc):
        result = fn(jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False), items))
        return jax.tree.map(lambda buf, r: jax.lax.dynamic_update_index_in_dim(buf, r, i, 0), acc, result)

    return jax.lax.fori_loop(0, count, body, buffers)

"""A batch of images at one coarse-to-fine stage, ready to optimize: its layout, its two compiled
programs, and the device arrays they take.

Every run goes through here, one image or a thousand, and so does `jaxstyle bench`: a single
image is a batch of one. Images are padded to a shape bucket (`preprocess.bucket`) and the
network masks the padding, so one layout (batch size, padded shape, devices) serves every
image that falls into it. A layout compiles two programs:
  - `prepare`: the content activations and blended style Gram matrices (the targets), the
    per-layer coefficients, and each image's initial loop state (a forward pass only);
  - `chunk`: the optimizer loop (`solver.run_batch`), continuing every image up to its own
    iteration; its state argument is donated, so the loop state is never held twice.
Both are `shard_map`s over a device `Mesh` with a "batch" axis, compiled ahead of time from
shapes alone, so the same code compiles for a device that is not here (a TPU topology).

With effort "both" (`Config.compile`; the default on TPUs) a layout's loop is compiled twice:
fast first, so the run starts, then with XLA's full effort on a thread beside it; the full
program takes over at the next chunk boundary (`Programs.current`), continuing the same state.
A full-effort loop compiled once leaves a mark beside the persistent compilation cache, so
the next run of that shape compiles it first, from the cache, and never runs the fast one.

Compiled programs are kept for the life of the process (the latest `KEPT_PROGRAMS` layouts), so a
second run of the same shape in one process (a notebook calling `jaxstyle.transfer` again with
other weights or images, the web page's next job) starts at once instead of compiling again:
the programs are functions of shapes, and everything else is an argument.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxstyle.images.preprocess import pad_image
from jaxstyle.model import vgg
from jaxstyle.objective import losses
from jaxstyle.objective.losses import LossWeights, Objective, Targets
from jaxstyle.solver import lbfgs as solver
from jaxstyle.solver.lbfgs import LoopState, Method, Summary


@dataclass(frozen=True)
class Layout:
    """The static shape of a batch: what its programs are compiled for."""

    batch: int  # images per call, over all devices (a multiple of the device count)
    shape: tuple[int, int]  # padded (height, width) of every image
    style_shape: tuple[int, int]  # padded (height, width) of every style image
    styles: int  # style images per image
    shared_styles: bool  # one set of style images for the whole batch (else one per image)
    devices: tuple[Any, ...]  # the devices the batch is split over
    width: int = 1  # images of a device's share that run side by side (vmap); 1: one by one
    regions: int = 0  # guided style transfer: regions of each content mask, one style each (0: none)
    spatial: bool = False  # one image split over the devices by rows (else images over devices)
    # Every image fills `shape` (none is padded): the network skips the padding masks, a third
    # of an iteration's memory traffic on a TPU by XLA's cost model.
    full: bool = False
    # The platform whose program choices to make (pooling, the L-BFGS direction), when it is not
    # the devices' own: a GPU's programs, planned on this CPU (`targets.plan`).
    program_platform: str | None = None

    @property
    def platform(self) -> str:
        return self.devices[0].platform

    @property
    def programs_for(self) -> str:
        return self.program_platform or self.platform

    @property
    def mesh(self) -> Mesh:
        return Mesh(np.array(self.devices), ("space",) if self.spatial else ("batch",))

    def sharding(self, spec: P) -> NamedSharding:
        return NamedSharding(self.mesh, spec)

    def per_image(self, shape: tuple[int, ...]) -> NamedSharding:
        """Where an array with one entry per image (leading axis) lives: split over the devices by
        image, or in a spatial layout by the rows of its first image-shaped (H, W) axes (an image,
        an activation, the L-BFGS history), everything else replicated."""
        if not self.spatial:
            return self.sharding(P("batch"))
        h, w = self.shape
        for axis in range(1, len(shape) - 2):  # (..., H, W, channels): not a Gram matrix (C, C)
            for k in range(5):  # an activation's grid after k pools
                if shape[axis] == h >> k and shape[axis + 1] == w >> k:
                    if shape[axis] % len(self.devices):  # a deep layer's few rows: whole on each
                        return self.sharding(P())
                    return self.sharding(P(*([None] * axis), "space"))
        return self.sharding(P())

    def place(self, tree: Any) -> Any:
        """`per_image` shardings for every leaf of a pytree of arrays or shapes."""
        return jax.tree.map(lambda a: self.per_image(np.shape(a)), tree)


def default_width(platform: str, local_batch: int) -> int:
    """Images of a device's share run side by side on accelerators (they fill the device); on a
    CPU, one after another (side by side they only wait for each other's extra line-search
    evaluations, and an image that has stopped would still be computed)."""
    return 1 if platform == "cpu" else local_batch


@dataclass
class Programs:
    """A layout's compiled programs."""

    prepare: Any
    chunk: Any
    compile_seconds: float
    count: int = 2  # programs compiled for them (0: kept from an earlier run of this process)
    upgrade: concurrent.futures.Future | None = None  # the full-effort loop compiling beside the run
    effort: str = "full"  # of `chunk`: "fast" until an upgrade takes over

    def current(self) -> Any:
        """The loop to run now: the full-effort one as soon as it has compiled."""
        up = self.upgrade
        if up is not None and up.done():
            self.upgrade = None
            try:
                self.chunk, self.effort = up.result(), "full"
            except Exception as e:  # the fast loop goes on
                logging.getLogger("jaxstyle").warning("full-effort loop failed to compile: %s", e)
        return self.chunk

    def loop_bytes(self) -> int:
        """Device bytes the compiled loop needs: temporaries, arguments and outputs (XLA's analysis)."""
        m = self.chunk.memory_analysis()
        # The loop state is donated: its output reuses its input's buffers (the aliased bytes).
        return int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
                   - m.alias_size_in_bytes)


def _spec_tree(tree: Any, spec: P) -> Any:
    return jax.tree.map(lambda _: spec, tree)


def _prepare(variables, content, content_hw, guide, x0, active, styles, style_hw, style_masks, blend,
             weights, temporal=(), *, objective: Objective, method: Method, shared: bool, width: int):
    """(per device) Targets and initial loop states for a device's share of a batch; `temporal`:
    a video frame's (targets, per-pixel weights), one per image, or ()."""
    b = content.shape[0]
    guided = bool(objective.regions)

    def grams_of(s, h, bl, m):
        return losses.style_grams(variables, s, h, bl, objective, m if guided else None)

    if shared:
        grams = grams_of(styles[0], style_hw[0], blend[0], style_masks[0])
        grams = jax.tree.map(lambda g: jnp.broadcast_to(g, (b, *g.shape)), grams)
    else:
        grams = solver.each(lambda a: grams_of(*a), (styles, style_hw, blend, style_masks), width)

    def one(item):
        c, hw, g, gd, tm = item
        return losses.make_targets(variables, c, hw, g, weights, objective, gd if guided else None, tm)

    targets = solver.each(one, (content, content_hw, grams, guide, temporal), width)
    # The initial states of the whole share at once: the FFT of the preconditioner batches.
    return targets, jax.vmap(lambda x, a: solver.init_state(x, method, a))(x0, active)


def _chunk(state, until, variables, targets, learning_rate, *, objective, method, width):
    return solver.run_batch(state, until, variables, targets, learning_rate, objective, method, width)


def abstract_inputs(objective: Objective, layout: Layout, weights: LossWeights) -> tuple:
    """Shapes and shardings of `prepare`'s data arguments (all but the variables); the last, a
    video frame's temporal targets, is () without the temporal term (no argument at all)."""
    b, (h, w), (hs, ws) = layout.batch, layout.shape, layout.style_shape
    rep = layout.sharding(P())
    bs = 1 if layout.shared_styles else b
    f32, i32 = jnp.float32, jnp.int32

    def per(shape, dtype):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=layout.per_image(shape))

    def sty(shape, dtype):  # a spatial layout's styles are whole on every device
        shared = layout.shared_styles or layout.spatial
        return jax.ShapeDtypeStruct(shape, dtype, sharding=rep if shared else layout.per_image(shape))

    mh, mw = (hs, ws) if layout.regions else (0, 0)  # style masks only in guided runs
    temporal = (per((b, h, w, 3), f32), per((b, h, w), f32)) if objective.temporal else ()
    return (per((b, h, w, 3), f32), per((b, 2), i32), per((b, h, w, layout.regions), f32),
            per((b, h, w, 3), f32), per((b,), bool),
            sty((bs, layout.styles, hs, ws, 3), f32), sty((bs, layout.styles, 2), i32),
            sty((bs, layout.styles, mh, mw), f32), sty((bs, layout.styles), f32),
            jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), f32, sharding=rep), weights), temporal)


def for_layout(method: Method, layout: Layout) -> Method:
    """`method` as `layout` runs it: an image split over devices takes the preconditioner's
    Fourier transforms as matrix products (XLA:CPU cannot FFT inside partitioned programs); a
    TPU takes the L-BFGS direction as matrix products (`solver.lbfgs_update`: 0.11 ms against
    0.4 ms at 128 px by XLA:TPU's cost model), other platforms optax's two-loop recursion (the
    same direction; on this CPU's programs it moves fewer bytes)."""
    return replace(method, products=layout.spatial, compact=layout.programs_for == "tpu")


def _abstract(tree: Any, sharding: NamedSharding) -> Any:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype, sharding=sharding), tree)


def jitted(objective: Objective, method: Method, layout: Layout, variables: Any, loop_variables: Any,
           weights: LossWeights) -> tuple[tuple[Any, tuple], tuple[Any, tuple]]:
    """The two jitted programs of `layout`, each with its abstract arguments (shapes and
    shardings): ((prepare, args), (chunk, args)). `variables` and `loop_variables` may be arrays
    or ShapeDtypeStructs."""
    method = for_layout(method, layout)
    objective = objective.for_platform(layout.programs_for)
    if layout.full:
        objective = replace(objective, masked=False)
    if layout.spatial:
        return _spatial_jitted(objective, method, layout, variables, loop_variables, weights)
    mesh = layout.mesh
    per, rep = P("batch"), P()
    sty = rep if layout.shared_styles else per
    prep = jax.shard_map(
        partial(_prepare, objective=objective, method=method, shared=layout.shared_styles,
                width=layout.width),
        mesh=mesh, in_specs=(_spec_tree(variables, rep), per, per, per, per, per, sty, sty, sty, sty,
                             _spec_tree(weights, rep), (per, per) if objective.temporal else ()),
        out_specs=per, check_vma=False)
    data = abstract_inputs(objective, layout, weights)
    prep_args = (_abstract(variables, layout.sharding(rep)), *data)
    targets_abs, state_abs = jax.eval_shape(prep, *prep_args)
    chunk_fn = jax.shard_map(
        partial(_chunk, objective=objective, method=method, width=layout.width), mesh=mesh,
        in_specs=(per, per, _spec_tree(loop_variables, rep), per, rep), out_specs=per,
        check_vma=False)
    chunk_args = (_abstract(state_abs, layout.sharding(per)),
                  jax.ShapeDtypeStruct((layout.batch,), jnp.int32, sharding=layout.sharding(per)),
                  _abstract(loop_variables, layout.sharding(rep)),
                  _abstract(targets_abs, layout.sharding(per)),
                  jax.ShapeDtypeStruct((), jnp.float32, sharding=layout.sharding(rep)))
    return (jax.jit(prep), prep_args), (jax.jit(chunk_fn, donate_argnums=(0,)), chunk_args)


def _spatial_jitted(objective: Objective, method: Method, layout: Layout, variables: Any, loop_variables: Any,
                    weights: LossWeights) -> tuple[tuple[Any, tuple], tuple[Any, tuple]]:
    """`jitted` for one image split over the devices by rows: the same per-image functions
    under XLA's SPMD partitioner, which exchanges the convolutions' border rows between devices
    and sums the Gram matrices' partial products across them."""
    rep = layout.sharding(P())
    prep_fn = partial(_prepare, objective=objective, method=method, shared=layout.shared_styles, width=1)
    prep_args = (_abstract(variables, rep), *abstract_inputs(objective, layout, weights))
    targets_abs, state_abs = jax.eval_shape(prep_fn, *prep_args)
    prep = jax.jit(prep_fn, out_shardings=(layout.place(targets_abs), layout.place(state_abs)))
    chunk_fn = partial(_chunk, objective=objective, method=method, width=1)
    chunk_args = (jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=layout.per_image(a.shape)),
                               state_abs),
                  jax.ShapeDtypeStruct((layout.batch,), jnp.int32, sharding=rep),
                  _abstract(loop_variables, rep),
                  jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=layout.per_image(a.shape)),
                               targets_abs),
                  jax.ShapeDtypeStruct((), jnp.float32, sharding=rep))
    summary_abs = jax.eval_shape(chunk_fn, *chunk_args)[1]
    chunk = jax.jit(chunk_fn, donate_argnums=(0,),
                    out_shardings=(layout.place(state_abs), jax.tree.map(lambda _: rep, summary_abs)))
    return (prep, prep_args), (chunk, chunk_args)


# XLA's options for `Config.compile`: "fast" lowers the effort spent on run time.
COMPILE_OPTIONS = {"fast": {"exec_time_optimization_effort": -1.0}, "full": {}, "auto": {}, "both": {}}
_upgrading: list[concurrent.futures.Future] = []  # full-effort compiles started by this process
_upgrade_lock = threading.Lock()  # one at a time: each takes a host core or more for minutes


def _in_background(fn: Any, *args: Any) -> concurrent.futures.Future:
    """fn(*args) on a daemon thread (an executor's thread would hold the process open at exit
    until a compile of minutes is done: `finish_upgrades` decides instead)."""
    future: concurrent.futures.Future = concurrent.futures.Future()

    def work() -> None:
        with _upgrade_lock:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args))
            except BaseException as e:  # noqa: B902 - handed to whoever reads the future
                future.set_exception(e)

    threading.Thread(target=work, name="jaxstyle-full-effort", daemon=True).start()
    _upgrading.append(future)
    return future


def _at_exit() -> None:
    # A script that ends while a full-effort loop compiles waits for it rather than tearing XLA
    # down under the compiling thread (the CLI decides earlier, `cli._finish_upgrades`).
    if upgrades_pending():
        logging.getLogger("jaxstyle").warning("waiting for the full-effort compile still running "
                                              "(--compile both) before exiting")
        finish_upgrades()


atexit.register(_at_exit)


def upgrades_pending() -> int:
    """Full-effort compiles still running or queued (`--compile both`)."""
    return sum(not f.done() for f in _upgrading)


def finish_upgrades(timeout: float | None = None) -> bool:
    """Wait for the full-effort compiles still running, so that the compilation cache holds
    them for the next run of their shapes; True when none is left."""
    for future in list(_upgrading):
        try:
            future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            return False
        except Exception:
            pass  # a failed upgrade: the fast loop ran, nothing to keep
    _upgrading.clear()
    return True


def build_programs(objective: Objective, method: Method, layout: Layout, variables: Any,
                   loop_variables: Any, weights: LossWeights, effort: str = "full") -> Programs:
    """Compile `prepare` and `chunk` for `layout` from shapes alone (`variables` and
    `loop_variables` may be arrays or ShapeDtypeStructs), with `effort` "full", "fast" or
    "both" (fast now, the loop again with full effort on a thread: `Programs.upgrade`)."""
    t = time.perf_counter()
    (prep, prep_args), (chunk, chunk_args) = jitted(objective, method, layout, variables, loop_variables,
                                                    weights)
    lowered = chunk.lower(*chunk_args)
    mark = _full_mark(lowered, layout) if effort == "both" else None
    if mark is not None and os.path.exists(mark):
        effort = "full"  # compiled before: the persistent cache holds it
    first = "fast" if effort == "both" else effort
    options = COMPILE_OPTIONS[first]
    prepare = prep.lower(*prep_args).compile(options or None)
    chunk_compiled = lowered.compile(options or None)
    programs = Programs(prepare, chunk_compiled, time.perf_counter() - t, effort=first)
    if effort == "both":
        programs.upgrade = _in_background(_compile_full, lowered, mark)
        programs.count = 3
    return programs


def _compile_full(lowered: Any, mark: str | None) -> Any:
    compiled = lowered.compile()
    if mark is not None:
        try:
            os.makedirs(os.path.dirname(mark), exist_ok=True)
            with open(mark, "w") as fh:
                fh.write("compiled with full effort\n")
        except OSError:
            pass  # the next run compiles fast first again
    return compiled


def _full_mark(lowered: Any, layout: Layout) -> str | None:
    """Where a full-effort loop of this program leaves its mark: beside JAX's persistent
    compilation cache, when one is on (None otherwise: a later run could not load it)."""
    folder = jax.config.jax_compilation_cache_dir
    if not folder:
        return None
    device = layout.devices[0]
    key = hashlib.sha256("\0".join((jax.__version__, device.platform, getattr(device, "device_kind", ""),
                                    str(len(layout.devices)), lowered.as_text())).encode()).hexdigest()
    return os.path.join(folder, "jaxstyle-full-effort", key[:32])


KEPT_PROGRAMS = 16
_kept: OrderedDict[tuple, Programs] = OrderedDict()
_kept_lock = threading.Lock()  # runs on several threads of one process share the kept programs


def _signature(tree: Any) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((tuple(np.shape(a)), str(a.dtype)) for a in leaves)


def _program_key(objective: Objective, method: Method, layout: Layout, variables: Any, loop_variables: Any,
                 weights: LossWeights, effort: str) -> tuple:
    return (objective, method, layout, effort, _signature(variables), _signature(loop_variables),
            _signature(weights))


def kept_programs(objective: Objective, method: Method, layout: Layout, variables: Any, loop_variables: Any,
                  weights: LossWeights, effort: str = "full") -> Programs:
    """`build_programs`, or the programs an earlier run of this process compiled for the same
    shapes and settings (then with `compile_seconds` and `count` 0)."""
    key = _program_key(objective, method, layout, variables, loop_variables, weights, effort)
    with _kept_lock:
        kept = _kept.get(key)
        if kept is not None:
            _kept.move_to_end(key)
            return replace(kept, compile_seconds=0.0, count=0)
    programs = build_programs(objective, method, layout, variables, loop_variables, weights, effort)
    with _kept_lock:
        _kept[key] = programs
        while len(_kept) > KEPT_PROGRAMS:
            _kept.popitem(last=False)
    return programs


def forget_programs() -> None:
    """Drop the programs kept from earlier runs (the next run compiles from cold)."""
    with _kept_lock:
        _kept.clear()


def loop_variables(variables: Any, objective: Objective, layout: Layout) -> Any:
    """The variables the loop takes: `variables` plus the Winograd kernels `objective.conv` calls
    for on this layout's platform and shape (transformed on the host, once per run)."""
    plan = vgg.winograd_plan(objective.layers, (layout.width, *layout.shape, 3), objective.conv,
                             layout.platform, objective.dtype)
    return vgg.add_winograd(variables, plan)


@dataclass
class Problem:
    """One batch at one stage: its programs, its device arrays, and its initial loop state."""

    layout: Layout
    objective: Objective
    method: Method
    programs: Programs
    loop_variables: Any  # on the devices
    targets: Targets  # on the devices, per image
    state: LoopState  # the initial state, per image
    learning_rate: jax.Array
    hw: list[tuple[int, int]] = field(default_factory=list)  # each slot's real size

    def chunk(self, state: LoopState, until: np.ndarray) -> tuple[LoopState, Summary]:
        """Queue one chunk: every image continues to its `until` iteration (the state is donated)."""
        until = np.asarray(until, np.int32)
        until = jax.device_put(until, self.layout.per_image(until.shape))
        return self.programs.current()(state, until, self.loop_variables, self.targets, self.learning_rate)


class Builder:
    """Builds one run's problems: the objective, method and weights from its `Config`, each
    layout's programs compiled once, the network's variables put on the devices once."""

    def __init__(self, config: Any, variables: Any, regions: int = 0) -> None:
        self.objective = Objective.from_config(config, regions)
        self.method = Method.from_config(config)
        self.weights = LossWeights.from_config(config, self.objective)
        self.learning_rate = config.learning_rate
        self.effort = config.compile
        self.variables = variables  # on the host
        self.programs: dict[Layout, Programs] = {}
        self._device: dict[Any, Any] = {}
        self.compile_seconds = 0.0

    def pending(self, layout: Layout) -> int:
        """Programs `problem(layout, ...)` would have to compile before the run can start (with
        effort "both" the full-effort loop compiles later, beside the run)."""
        if layout in self.programs:
            return 0
        plain, loop = self._variables(layout)
        key = _program_key(self.objective, self.method, layout, plain, loop, self.weights, self.effort)
        return 0 if key in _kept else 2

    def _variables(self, layout: Layout) -> tuple[Any, Any]:
        plain_key = layout.devices
        if plain_key not in self._device:
            self._device[plain_key] = jax.device_put(self.variables, layout.sharding(P()))
        plain = self._device[plain_key]
        key = (layout.devices, layout.shape, layout.width)
        if key not in self._device:  # the Winograd kernels, transformed on the host once per run
            loop = loop_variables(self.variables, self.objective, layout)
            extra = {k: v for k, v in loop.items() if k not in plain}
            self._device[key] = jax.device_put(extra, layout.sharding(P())) if extra else {}
        return plain, {**plain, **self._device[key]}

    def compile(self, layout: Layout) -> Programs:
        """The layout's programs (compiled now unless they were already)."""
        if layout not in self.programs:
            plain, loop = self._variables(layout)
            self.programs[layout] = kept_programs(self.objective, self.method, layout, plain, loop,
                                                  self.weights, self.effort)
            self.compile_seconds += self.programs[layout].compile_seconds
        return self.programs[layout]

    def problem(self, layout: Layout, contents: Sequence[np.ndarray], x0s: Sequence[np.ndarray],
                styles: Sequence[Sequence[np.ndarray]], blends: Sequence[np.ndarray],
                guides: Sequence[np.ndarray] = (), style_masks: Sequence[Sequence[np.ndarray]] = (),
                temporals: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> Problem:
        """A batch ready to run: `prepare` run on contents and initial images (network input
        space, real size), one list of style images per image (or one shared list) with its
        blend weights. Guided runs (`layout.regions`) also give each image's region masks
        (h, w, R) and each style image's mask (at its size); video frames (the objective's
        temporal term) each image's temporal target (network space) and per-pixel weights
        (h, w). Slots past the given images are padding: they start IDLE and cost no iterations."""
        if layout.regions != self.objective.regions:
            raise ValueError(f"layout has {layout.regions} regions, the objective {self.objective.regions}")
        programs = self.compile(layout)
        variables, loop = self._variables(layout)
        b, n = layout.batch, len(contents)
        rep = layout.sharding(P())
        empty = np.zeros((*layout.shape, 3), np.float32)
        hw = [tuple(c.shape[:2]) for c in contents]
        content = np.stack([pad_image(c, layout.shape) for c in contents] + [empty] * (b - n))
        x0 = np.stack([pad_image(x, layout.shape) for x in x0s] + [empty] * (b - n))
        content_hw = np.asarray(hw + [layout.shape] * (b - n), np.int32)
        count = 1 if layout.shared_styles else b
        style_sets = list(styles) + [styles[-1]] * (count - len(styles))
        blend_sets = list(blends) + [blends[-1]] * (count - len(blends))
        style_arr = np.zeros((count, layout.styles, *layout.style_shape, 3), np.float32)
        style_hw = np.zeros((count, layout.styles, 2), np.int32)
        blend = np.zeros((count, layout.styles), np.float32)
        for g, (group, bl) in enumerate(zip(style_sets, blend_sets)):
            for k, s in enumerate(group):
                style_arr[g, k] = pad_image(s, layout.style_shape)
                style_hw[g, k] = s.shape[:2]
            blend[g, : len(group)] = np.asarray(bl, np.float32)[: len(group)]
        r = layout.regions
        guide = np.zeros((b, *layout.shape, r), np.float32)
        masks = np.zeros((count, layout.styles, *(layout.style_shape if r else (0, 0))), np.float32)
        if r:
            for i, g in enumerate(guides):
                guide[i, : g.shape[0], : g.shape[1]] = g
            mask_sets = list(style_masks) + [style_masks[-1]] * (count - len(style_masks))
            for g, group in enumerate(mask_sets):
                for k, m in enumerate(group):
                    masks[g, k, : m.shape[0], : m.shape[1]] = m
        data = (content, content_hw, guide, x0, np.arange(b) < n, style_arr, style_hw, masks, blend)
        specs = abstract_inputs(self.objective, layout, self.weights)
        args = tuple(jax.device_put(a, spec.sharding) for a, spec in zip(data, specs))
        args += (jax.device_put(self.weights, rep),)
        temporal: tuple = ()
        if self.objective.temporal:
            target = np.stack([pad_image(t, layout.shape) for t, _ in temporals] + [empty] * (b - n))
            weight = np.zeros((b, *layout.shape), np.float32)
            for i, (_, w) in enumerate(temporals):
                weight[i, : w.shape[0], : w.shape[1]] = w
            temporal = tuple(jax.device_put(a, spec.sharding) for a, spec in zip((target, weight), specs[-1]))
        args += (temporal,)
        targets, state = programs.prepare(variables, *args)
        return Problem(layout, self.objective, for_layout(self.method, layout), programs, loop, targets, state,
                       jax.device_put(np.float32(self.learning_rate), rep), hw)


def with_states(problem: Problem, states: dict[int, Any]) -> Problem:
    """`problem` with the loop states of some slots replaced (resumed from checkpoints)."""
    if not states:
        return problem
    host = jax.device_get(problem.state)
    leaves, treedef = jax.tree.flatten(host)
    leaves = [np.array(a) for a in leaves]
    for slot, state in states.items():
        for a, b in zip(leaves, jax.tree.leaves(state)):
            a[slot] = b
    state = jax.tree.unflatten(treedef, leaves)
    state = jax.device_put(state, problem.layout.place(state))
    return Problem(problem.layout, problem.objective, problem.method, problem.programs,
                   problem.loop_variables, problem.targets, state, problem.learning_rate, problem.hw)


def memory_need(config: Any, shape: tuple[int, int], batch: int, width: int, platform: str, split: int = 1):
    """The memory estimate (`memory.estimate`) for a device holding `batch` images of a padded
    `shape` under `config`, `width` of them side by side, on `platform`; `split`: one image
    split over that many devices (a device holds its share of the image-sized parts)."""
    from jaxstyle.config import resolved_dtype
    from jaxstyle.platform import memory
    config = config.replace(dtype=resolved_dtype(config.dtype, platform))
    objective = Objective.from_config(config)
    plan = vgg.winograd_plan(objective.layers, (width, *shape, 3), objective.conv, platform, objective.dtype)
    from jaxstyle.config import auto_lbfgs_memory
    history = config.lbfgs_memory or auto_lbfgs_memory(config.size, platform)
    extra = memory.style_loss_bytes(shape, objective.style_layers, objective.style_loss,
                                    regions=objective.region_count, width=width,
                                    newton_schulz=losses.NEWTON_SCHULZ)
    need = memory.estimate(shape, objective.layers, lbfgs_memory=history,
                           optimizer=config.optimizer, dtype=config.dtype, winograd=bool(plan),
                           batch=batch, remat=config.remat, width=width, platform=platform,
                           style_extra=extra, average=config.average > 0)
    if split > 1:
        need = memory.Estimate(-(-need.activations // split), -(-need.optimizer // split), need.weights,
                               need.runtime)
    return need

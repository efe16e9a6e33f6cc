"""The loop driver: runs a problem's compiled loop in chunks and tells observers what happened.

The device never waits for the host: each chunk is queued before the previous one's results
are read (a running image always reaches the iteration it was sent to, so the host knows where
the next chunk starts without asking). Chunks end where an observer wants to see an image
(`Observer.next_stop`), at the end of the stage, or after about `CHUNK_SECONDS` of work. Where
an observer needs an image's whole loop state (a checkpoint), the next chunk takes the state
over (it is donated): on an accelerator the state is first copied on the device, the copy sent
to the host while the next chunk runs (`snapshot`); on a CPU, or where the device has no room
for a second state, the host copies it before queuing the next chunk.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxstyle.observers.observer import Observer, Report
from jaxstyle.platform import memory
from jaxstyle.run.problem import Problem
from jaxstyle.solver import lbfgs as solver

# Aim for chunks about this long, and at least this many iterations. Each call of the loop
# costs about a fifth of an iteration whatever the size (XLA:CPU copies the loop state into the
# while loop and takes fresh temporaries: measured 0.17-0.22 s per call at 512 px with 100
# L-BFGS pairs, where an iteration takes 0.82 s), so one-iteration chunks made runs at 512 px
# 30% slower than the loop; four iterations keep it to about 5%, and progress still moves.
CHUNK_SECONDS = 4.0
CHUNK_MIN_ITERATIONS = 4


@dataclass(frozen=True)
class Slot:
    """One image of a batch at one stage: who it is and where its iterations stand."""

    item: int  # the image's position in the job
    name: str
    offset: tuple[int, int] = (0, 0)  # iterations and evaluations of the stages before this one
    end: int = 0  # the stage ends when the loop's own iteration count reaches this


TERMS = ("content", "style", "tv")


def terms_dict(total: float, terms: Sequence[float]) -> dict[str, float]:
    return {"total": float(total), **{k: float(v) for k, v in zip(TERMS, terms)}}


@dataclass
class Outcome:
    """How a batch ended at one stage, per slot."""

    images: list[np.ndarray]  # float RGB 0..255 at each image's real size (network output)
    status: list[str]
    iterations: list[int]  # global
    evaluations: list[int]  # global
    first: list[dict[str, float]]
    final: list[dict[str, float]]
    seconds: float
    interrupted: bool


def rgb(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A network-space image (padded) as float RGB 0..255 at its real size."""
    from jaxstyle.images.preprocess import from_vgg
    return np.clip(from_vgg(np.asarray(x)[: hw[0], : hw[1]]), 0.0, 255.0)


@jax.jit
def _device_copy(tree: Any) -> Any:
    return jax.tree.map(jnp.copy, tree)


def snapshot(state: Any, devices: Sequence[Any], force: bool | None = None) -> Any | None:
    """A copy of the loop state on its devices, already on its way to the host, which the next
    chunk may take the state over from; None on a CPU (where reading it is a memory copy
    anyway) or where the device has no room for it (`force`: decide for the tests)."""
    if force is None:
        if devices[0].platform == "cpu":
            return None
        free = memory.available(devices[0])
        size = sum(leaf.nbytes for leaf in jax.tree.leaves(state)) / max(len(devices), 1)
        if free is None or size > 0.25 * free:
            return None
    elif not force:
        return None
    copy = _device_copy(state)
    for leaf in jax.tree.leaves(copy):
        leaf.copy_to_host_async()
    return copy


def drive(problem: Problem, slots: Sequence[Slot], observers: Sequence[Observer], *,
          stage: int = 0, should_stop: Callable[[], bool] | None = None,
          on_chunk: Callable[[dict], None] | None = None, copy_on_device: bool | None = None) -> Outcome:
    """Run `problem` until every slot has reached its `end` or stopped, reporting to observers.

    After a stop request the chunk already queued finishes, then every image still running gets
    a final report with status "interrupted" (its state readable). `on_chunk` gets a small
    dict after each chunk (iterations, evaluations, losses, speed) for the progress line.
    `copy_on_device`: how a checkpoint's state leaves the device (`snapshot`; None: by platform).
    """
    n = len(slots)
    state = problem.state
    its, evals, status = (np.asarray(a, np.int64)[:n].copy() for a in
                          jax.device_get((state.iteration, state.evaluations, state.status)))
    ends = np.asarray([s.end for s in slots], np.int64)
    running = (status == solver.RUNNING) & (its < ends)
    t_start = time.perf_counter()
    timing: dict[str, Any] = {"per_iteration": None, "read": t_start}

    def plan(at: np.ndarray, live: np.ndarray) -> tuple[np.ndarray, bool]:
        """Each image's next `until` (a batch's padding slots stay where they are), and whether
        an observer needs the loop state there."""
        per = timing["per_iteration"]
        length = 1 if per is None else max(CHUNK_MIN_ITERATIONS, int(CHUNK_SECONDS / max(per, 1e-6)))
        length = min(length, solver.HISTORY)
        until = np.zeros(problem.layout.batch, np.int64)
        until[:n] = at
        need = False
        for i in np.flatnonzero(live):
            g = slots[i].offset[0]
            stop = min(ends[i], at[i] + length)
            for ob in observers:
                nxt = ob.next_stop(slots[i].item, g + int(at[i]))
                if nxt is not None and g + at[i] < nxt < g + stop:
                    stop = nxt - g
            until[i] = stop
            need |= any(ob.needs_state(slots[i].item, g + int(stop)) for ob in observers)
        return until, need

    def dispatch(at: np.ndarray, live: np.ndarray):
        nonlocal state
        until, need = plan(at, live)
        state, summary = problem.chunk(state, until)
        return until[:n], need, summary

    def fetch(tree: Any = None) -> list[Any]:
        leaves = jax.device_get(state if tree is None else tree)
        return [jax.tree.map(lambda a, i=i: np.asarray(a[i]), leaves) for i in range(n)]

    inflight = dispatch(its, running) if running.any() else None
    stop_requested = False
    summary = None
    while inflight is not None:
        until, need, summary = inflight
        predicted = np.where(running, until, its)
        live = running & (predicted < ends)
        copy = snapshot(state, problem.layout.devices, copy_on_device) if need else None
        fetched = fetch() if need and copy is None else None  # before the next chunk takes the state over
        stop_requested = stop_requested or bool(should_stop and should_stop())
        inflight = dispatch(predicted, live) if live.any() and not stop_requested else None
        if copy is not None:
            fetched = fetch(copy)  # arrived while the next chunk runs
            del copy
        current = jax.device_get(summary)  # blocks until this chunk is done
        now = time.perf_counter()
        new_its = np.asarray(current.iteration, np.int64)[:n]
        if (new_its - its).max(initial=0) > 0:  # the device was busy since the last read
            timing["per_iteration"] = (now - timing["read"]) / (new_its - its).max()
        timing["read"] = now
        its, evals = new_its, np.asarray(current.evaluations, np.int64)[:n]
        status = np.asarray(current.status)[:n]
        last = inflight is None
        if last and fetched is None:
            fetched = fetch()  # nothing takes this state over: it stays readable
        ended = running & ((status != solver.RUNNING) | (its >= ends) | last)
        for i in np.flatnonzero(running):
            name = _status_name(int(status[i]), its[i], ends[i], stopping=last)
            _report(observers, problem, slots[i], stage, i, current, fetched, bool(ended[i]),
                    name if ended[i] else "running")
        running &= ~ended
        if on_chunk is not None:
            on_chunk({"iterations": its + np.asarray([s.offset[0] for s in slots]),
                      "evaluations": evals + np.asarray([s.offset[1] for s in slots]),
                      "values": np.asarray(current.value)[:n], "terms": np.asarray(current.terms)[:n],
                      "seconds_per_iteration": timing["per_iteration"], "elapsed": now - t_start,
                      "image": lambda current=current: rgb(current.image[0], problem.hw[0])})
    seconds = time.perf_counter() - t_start
    current = jax.device_get(summary) if summary is not None else None
    images, first, final, names = [], [], [], []
    for i in range(len(slots)):
        if current is None:  # nothing ran: already at the end (a resumed, finished image)
            x = jax.device_get(solver.image(jax.tree.map(lambda a, i=i: a[i], problem.state), problem.method))
            loop = jax.device_get(jax.tree.map(lambda a, i=i: a[i], problem.state))
            images.append(rgb(x, problem.hw[i]))
            first.append(terms_dict(loop.first[0], loop.first[1:]))
            final.append(terms_dict(loop.value, loop.terms))
        else:
            images.append(rgb(current.image[i], problem.hw[i]))
            first.append(terms_dict(current.first[i][0], current.first[i][1:]))
            final.append(terms_dict(current.value[i], current.terms[i]))
        names.append(_status_name(int(status[i]), its[i], ends[i], stopping=True))
    return Outcome(images, names, [int(its[i]) + s.offset[0] for i, s in enumerate(slots)],
                   [int(evals[i]) + s.offset[1] for i, s in enumerate(slots)], first, final, seconds,
                   stop_requested and any(s == "interrupted" for s in names))


def _status_name(code: int, it: int, end: int, stopping: bool) -> str:
    if code == solver.NONFINITE:
        return "non-finite"
    if code == solver.STALLED:
        return "stalled"
    if it >= end:
        return "done"
    return "interrupted" if stopping else "running"


def _report(observers: Sequence[Observer], problem: Problem, slot: Slot, stage: int, i: int,
            current, fetched: list | None, final: bool, status: str) -> None:
    hw = problem.hw[i]
    history = [{"iteration": int(row[0]) + slot.offset[0], "evaluations": int(row[1]) + slot.offset[1],
                **terms_dict(row[2], row[3:])}
               for row in np.asarray(current.history[i]) if np.isfinite(row[0])]

    def state():
        if fetched is None:
            raise RuntimeError("the loop state was not kept at this iteration (see Observer.needs_state)")
        return fetched[i]

    report = Report(slot.item, slot.name, stage, slot.offset[0] + int(current.iteration[i]),
                    slot.offset[1] + int(current.evaluations[i]), float(current.value[i]),
                    terms_dict(current.value[i], current.terms[i]), status, final, history,
                    lambda: rgb(current.image[i], hw), state,
                    terms_dict(current.first[i][0], current.first[i][1:]))
    for ob in observers:
        ob.observe(report)

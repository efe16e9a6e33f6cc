"""Observers on hand-made reports: their stops, what they write, and when (nothing compiles)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from PIL import Image

from jaxstyle.observers import checkpoint
from jaxstyle.config import Config
from jaxstyle.observers.observer import Report
from jaxstyle.observers.writers import Checkpoints, Frames, Snapshots, Trace


class FakeState(NamedTuple):
    u: np.ndarray
    iteration: np.ndarray
    evaluations: np.ndarray


def report(item=0, iteration=5, status="running", final=False, history=(), stage=0, state=None) -> Report:
    rgb = np.full((6, 8, 3), 10.0 * iteration, np.float32)
    terms = {"total": 1.0, "content": 0.5, "style": 0.25, "tv": 3.0}
    return Report(item, "a.png", stage, iteration, iteration + 1, 1.0, terms, status, final,
                  list(history), lambda: rgb, lambda: state, {"total": 9.0, "content": 1.0, "style": 2.0, "tv": 4.0})


def test_snapshots_stop_at_their_multiples_and_write_only_there(tmp_path):
    out = tmp_path / "out.png"
    snaps = Snapshots(5, {0: out}, {0: 12}, {0: lambda rgb: rgb + 1}, quality=90)
    assert [snaps.next_stop(0, i) for i in (0, 3, 5, 9, 10)] == [5, 5, 10, 10, None]
    assert snaps.next_stop(1, 0) is None  # an image without an output
    snaps.observe(report(iteration=4))
    snaps.observe(report(iteration=5))
    snaps.observe(report(iteration=12, final=True, status="done"))  # the result, not a snapshot
    assert [p.name for p in tmp_path.iterdir()] == ["out_0005.png"]
    assert np.asarray(Image.open(tmp_path / "out_0005.png"))[0, 0, 0] == 51  # finished: 50 + 1


def test_frames_collect_every_interval_and_the_end(tmp_path):
    frames = Frames(4, {0: tmp_path / "a.gif"}, {0: 10}, {0: lambda rgb: rgb})
    frames.add(0, 0, np.zeros((6, 8, 3), np.float32))
    for it in (1, 4, 6, 8):
        frames.observe(report(iteration=it))
    frames.observe(report(iteration=10, final=True, status="done"))
    assert [i for i, _ in frames.frames[0]] == [0, 4, 8, 10]
    path = frames.write(0)
    with Image.open(path) as g:
        assert g.is_animated and g.n_frames == 4


def test_trace_records_every_iteration_with_the_start():
    trace = Trace({0: None}, sizes=[32, 64])
    rows = [{"iteration": k, "evaluations": k + 1, "total": 1.0 / k, "content": 0.0, "style": 0.0, "tv": 0.0}
            for k in (1, 2, 3)]
    trace.observe(report(iteration=3, history=rows))
    rows2 = [dict(r, iteration=r["iteration"] + 3) for r in rows]
    trace.observe(report(iteration=6, history=rows2, stage=1))
    entries = trace.entries[0]
    assert [e["iteration"] for e in entries] == list(range(7))
    assert entries[0]["total"] == 9.0 and entries[0]["size"] == 32 and entries[-1]["size"] == 64
    seconds = [e["seconds"] for e in entries]
    assert seconds == sorted(seconds)


def test_checkpoints_want_the_state_at_their_stops_and_write_on_interrupt(tmp_path):
    path = tmp_path / "out.png.ckpt.npz"
    provenance = {"mode": "transfer", "config": Config(), "inputs": {"content": None, "styles": []},
                  "input_sha256": {}, "weights_sha256": None, "weights_path": None, "output": None}
    ck = Checkpoints(0, {0: path}, {0: 20}, {0: provenance})
    assert ck.next_stop(0, 3) is None and not ck.needs_state(0, 20)
    state = FakeState(np.ones((2, 3), np.float32), np.asarray(7, np.int32), np.asarray(9, np.int32))
    ck.observe(report(iteration=12, status="interrupted", final=True, stage=1, state=state))
    loaded = checkpoint.load(path)
    assert loaded.iteration == 7 and loaded.stage == 1 and loaded.offset == (5, 4)
    periodic = Checkpoints(5, {0: path}, {0: 20}, {0: provenance})
    assert periodic.next_stop(0, 3) == 5 and periodic.needs_state(0, 5) and periodic.needs_state(0, 20)
    assert not periodic.needs_state(0, 6)
    resumed = Checkpoints(0, {0: path}, {0: 20}, {0: provenance})
    resumed.keep.add(0)  # --keep-checkpoint: the final state is written
    assert resumed.needs_state(0, 20)

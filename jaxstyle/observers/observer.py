"""The observer protocol: what an observer of a run learns after each chunk (`Report`), and how it
asks the loop driver to stop where it wants to see an image (`Observer`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np


@dataclass
class Report:
    """What an observer learns about one image after a chunk (the same record for progress,
    snapshots, GIF frames, the trace and checkpoints).

    Iterations and evaluations count across stages. `image()` is the current image as float
    RGB 0..255 at the image's real size (fetched from the device only when asked); `state()`
    the image's loop state on the host, where an observer asked for it (`needs_state`).
    """

    item: int
    name: str
    stage: int  # from 0
    iteration: int
    evaluations: int
    loss: float
    terms: Mapping[str, float]
    status: str  # "running", "done", "stalled", "non-finite" or "interrupted"
    final: bool  # the image's last report of this stage
    history: list[dict]  # one entry per iteration done in this chunk
    image: Callable[[], np.ndarray] = field(repr=False)
    state: Callable[[], Any] = field(repr=False)
    first: Mapping[str, float] = field(default_factory=dict)  # the loss terms at the stage's start


class Observer:
    """Something that watches images as the loop goes (progress, snapshots, checkpoints...).

    `next_stop(item, iteration)` names the next global iteration after `iteration` at which it
    must see image `item` (None: no such wish); the driver ends a chunk there. `needs_state`
    says whether it will want the loop state at that iteration. `observe` gets every report.
    """

    def next_stop(self, item: int, iteration: int) -> int | None:
        return None

    def needs_state(self, item: int, iteration: int) -> bool:
        return False

    def observe(self, report: Report) -> None:
        pass

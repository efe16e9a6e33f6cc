"""What a run gives back: a `Result` per image, and `Progress` reports while it goes."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from jaxstyle.config import Config
from jaxstyle.images import imageio


class Note(str):
    """A run's message that is information, not a warning: `--quiet` leaves it out."""


@dataclass(frozen=True)
class Progress:
    """A progress report (one type for one image and many), passed to the `progress` callback."""

    phase: str  # "compile", "optimize", "iteration" (a --print-every line) or "done"
    images_done: int
    images_total: int
    names: tuple[str, ...]  # the images of the current batch
    stage: int  # coarse-to-fine stage, from 1
    stages: int
    size: int  # longest side at this stage
    shape: tuple[int, int]  # the (padded) shape the batch is optimized at
    iteration: int  # iterations done by the batch's least advanced image, across stages
    iterations: int  # iterations per image over all stages
    evaluations: int  # of the batch's first image
    loss: float  # of the batch's first image
    terms: Mapping[str, float] | None  # total, and the weighted content, style and tv terms summing to it
    elapsed: float  # seconds of optimization so far (compiling excluded)
    seconds_per_iteration: float | None  # per iteration of the batch, this run's chunks only
    eta: float | None = None  # seconds left for the whole run
    device: str = ""
    programs: int = 0  # programs compiled for this batch ("compile" phase)
    batch: int = 1
    image: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)
    tile: str = ""  # in a tiled stage, the tiles being optimized ("tile 3/6")
    dtype: str = ""  # the network's precision in this run (its --dtype, resolved for the device)
    unit: str = "img"  # what `images_done` counts: "frame" for a video
    seconds_per_image: float | None = None  # a video's seconds per frame so far
    """For a live preview: in the "optimize" phase the batch's first image now, in the "done"
    phase the finished image (float RGB 0..255, colours recombined as the written file's);
    None otherwise."""


@dataclass
class Result:
    """The outcome for one image: the image (float RGB 0..255) and how it was reached."""

    name: str
    image: np.ndarray | None
    mode: str
    config: Config
    status: str  # "done", "stalled", "non-finite", "interrupted", "skipped" or "failed"
    iterations: int = 0
    evaluations: int = 0
    initial: dict[str, float] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    compile_seconds: float = 0.0  # compiling its batch's programs (shared by the batch)
    seconds: float = 0.0  # optimizing its batch in this run, compiling excluded
    iterations_run: int = 0  # iterations done in this run (less than `iterations` after a resume)
    trace: list[dict] = field(default_factory=list)
    output: Path | None = None
    snapshots: list[Path] = field(default_factory=list)
    checkpoint: Path | None = None
    gif: Path | None = None
    trace_file: Path | None = None
    message: str | None = None
    raw: np.ndarray | None = field(default=None, repr=False)  # before colour recombination

    @property
    def seconds_per_iteration(self) -> float:
        return self.seconds / max(self.iterations_run, 1)

    @property
    def evaluations_per_iteration(self) -> float:
        return self.evaluations / max(self.iterations, 1)

    def to_pil(self):
        """The image as a PIL RGB image."""
        from PIL import Image
        return Image.fromarray(imageio.to_uint8(self.image), "RGB")


class Results(list):
    """The Results of a run, in the job's order, with the run's totals."""

    compile_seconds: float = 0.0  # compiling every program
    seconds: float = 0.0  # optimizing, compiling excluded
    programs: int = 0  # programs compiled

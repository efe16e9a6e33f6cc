"""Watching a run live: the notebook's image and loss curve updated in place, stopping by
interrupting the cell (the image so far kept), and the pieces both live views share."""
from __future__ import annotations

import base64
import io
import os
import re
import signal

import numpy as np
import pytest
from PIL import Image

import jaxstyle
from jaxstyle.observers import preview
from jaxstyle.observers import progress


class FakeDisplay:
    """IPython.display.display's shape: display(data, raw=True, display_id=True) -> handle."""

    def __init__(self) -> None:
        self.outputs: list[list[dict]] = []

    def __call__(self, data, raw=False, display_id=False):
        self.outputs.append([data])
        out = self.outputs[-1]

        class Handle:
            def update(self, data, raw=False):
                out.append(data)
        return Handle()


def _jpeg(html: str) -> Image.Image:
    data = re.search(r'src="data:image/jpeg;base64,([^"]+)"', html).group(1)
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_the_notebook_view_updates_in_place_and_interrupting_the_cell_keeps_the_image(
        image_dir, synthetic_params, tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    before = signal.getsignal(signal.SIGINT)
    shown = FakeDisplay()
    printer = progress.LiveNotebookPrinter(display=shown, image_interval=0.0)
    reports = []

    def watch_then_interrupt(p):  # what the notebook's stop button does: SIGINT to the kernel
        printer(p)
        reports.append(p.phase)
        if reports.count("optimize") == 3:
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "out.png"
    result = jaxstyle.transfer(image_dir / "content.png", image_dir / "style.png", weights=synthetic_params,
                               size=32, iterations=2000, progress=watch_then_interrupt, output=out)
    assert result.status == "interrupted"
    assert 0 < result.iterations < 2000
    assert result.image is not None and result.output == out
    assert Image.open(out).size == (result.image.shape[1], result.image.shape[0])
    assert signal.getsignal(signal.SIGINT) is before  # the kernel's handler is back

    views = [o for o in shown.outputs if "text/html" in o[0]]
    assert len(views) == 1, "one live view, updated in place"
    updates = views[0]
    assert len(updates) >= 3
    last = updates[-1]["text/html"]
    assert "<svg" in last and "<polyline" in last and "total" in last and "style" in last
    # the last update shows the image kept
    got = np.asarray(_jpeg(last), np.float32)
    assert got.shape == result.image.shape
    assert np.abs(got - result.image).mean() < 8  # JPEG-close


def test_outside_a_notebook_should_stop_stops_and_keyboardinterrupt_is_untouched(monkeypatch):
    monkeypatch.setattr(progress, "in_notebook", lambda: False)
    from jaxstyle.faces import api
    with api._interrupt_stops(None) as stop:
        assert stop is None
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_a_second_interrupt_aborts(monkeypatch):
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    from jaxstyle.faces import api
    with api._interrupt_stops(lambda: False) as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGINT)
        assert stop()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def _report(phase, iteration, total, image=None, names=("a",)):
    terms = {"total": total, "content": total / 2, "style": total / 4, "tv": 100.0}
    return jaxstyle.Progress(phase, 0, 1, names, 1, 1, 32, (32, 32), iteration, 10, iteration, total, terms,
                             0.0, None, image=image)


def test_the_watcher_fetches_images_at_most_every_interval_and_always_the_finished_one():
    now = [0.0]
    fetched = []

    def image():
        fetched.append(now[0])
        return np.full((4, 4, 3), len(fetched), np.float32)

    w = preview.Watcher(interval=1.0, clock=lambda: now[0])
    for t, it in ((0.0, 1), (0.4, 2), (0.9, 3), (1.2, 4)):
        now[0] = t
        w(_report("optimize", it, 10.0 - it, image))
    assert fetched == [0.0, 1.2]
    now[0] = 1.3
    w(_report("done", 5, 4.0, image))
    view = w.view()
    assert fetched[-1] == 1.3 and view.image_version == 3 and view.image[0, 0, 0] == 3
    assert [r["iteration"] for r in view.rows] == [1, 2, 3, 4, 5]
    w(_report("optimize", 1, 9.0, image, names=("b",)))  # the next image of a folder starts its own curve
    assert [r["iteration"] for r in w.view().rows] == [1]


def test_the_loss_curve_is_an_svg_of_every_positive_finite_term():
    rows = [{"iteration": i, "total": 10.0 / i, "content": 1.0, "style": 0.0, "tv": float("nan")}
            for i in range(1, 6)]
    svg = preview.loss_svg(rows, iterations=10)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<polyline") == 2  # total and content; style is 0 and tv NaN on a log scale
    assert "10 iterations" in svg
    assert preview.loss_svg([]).count("<polyline") == 0  # before the first report


def test_encode_scales_down_and_decodes():
    img = np.random.default_rng(0).uniform(0, 255, (40, 80, 3))
    for fmt in ("PNG", "JPEG"):
        out = Image.open(io.BytesIO(preview.encode(img, fmt, max_side=20)))
        assert out.format == fmt and out.size == (20, 10)

"""`jaxstyle serve`: a local web page to paint a photo in a painting's style and watch it
happen. A thin layer over `jaxstyle.transfer`; the core never imports it.

A person picks or uploads a photo and a painting, sets the size, iterations, style weight,
colours and layers preset, starts a run, watches the image and the loss terms evolve (the page
polls a small JSON status and reloads the preview and the loss curve when they change), stops
it (the image so far is kept) and downloads the result. Runs wait in a queue and go one at a
time, on one worker thread, on the server's device.

Why Flask with waitress (`pip install 'jaxstyle[web]'`): both are long-maintained (Pallets,
Pylons), pure Python, with no compiled parts. A run is a long, blocking JAX computation in a
thread of its own, which suits a threaded WSGI server: JAX releases the GIL while it computes,
so the page's requests are answered during a run; an asyncio framework (Starlette, aiohttp)
would still need that thread and adds an event loop, an ASGI server and, for uploads,
python-multipart. Flask brings what the page needs and would otherwise be hand-written:
multipart parsing, a request-size limit answered with 413 before the body is read
(MAX_CONTENT_LENGTH), files sent with a download name, and a test client. waitress is a
production WSGI server (Werkzeug's own is for development only) whose limits are settings:
bodies above the upload limit are refused, and kept in memory rather than spooled to the
system's temporary folder.

Files: everything the server writes is under its folder: `uploads/` (each upload decoded with
the hardened decoder, `imageio.load_image`, and written again as a PNG under a random name: the
user's file name and bytes are never used), `results/` (each run's PNG, random names), `tmp/`
(an upload while it is checked) and `xla/` (compiled programs). Requests name images and runs
only by those random ids or by demo names looked up in a table, so no request can name a path.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import queue
import re
import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

from flask import Flask, Request, Response, jsonify, request, send_file
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import imageio, preview
from .config import COLOR_MODES, PRESETS, STYLE_PRESETS, Config
from .errors import ConfigError, JaxstyleError, first_line

log = logging.getLogger("jaxstyle")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
_ID = re.compile(r"[0-9a-f]{32}")
_TERMS = ("content", "style", "tv")


@dataclass(frozen=True)
class Settings:
    """What a server allows and where it keeps its files."""

    folder: Path
    max_upload_bytes: int = 20 * 2**20
    max_size: int = 1024  # the largest --size a page may ask for (uploads are stored this large)
    max_iterations: int = 2000
    demo: Path | None = None  # a folder of photos and paintings offered on the page
    preview_interval: float = 1.0  # seconds between preview images
    device: str = "auto"


@dataclass
class Run:
    """One queued, running or finished run."""

    id: str
    content: str  # image refs: an upload's id or "demo-<name>"
    style: str
    config: Config
    preset: str
    watcher: preview.Watcher
    stop: threading.Event = field(default_factory=threading.Event)
    status: str = "queued"  # queued, running, done, stalled, interrupted, non-finite, failed, cancelled
    message: str | None = None
    result: Path | None = None
    iterations: int = 0
    order: int = 0  # its place in the worker's queue, set when submitted
    _png: tuple[int, bytes] = (0, b"")  # the preview's version and PNG, encoded once

    def preview_png(self) -> bytes | None:
        view = self.watcher.view()
        if view.image is None:
            return None
        if self._png[0] != view.image_version:
            self._png = (view.image_version, preview.encode(view.image, "PNG"))
        return self._png[1]


def folders(root: Path) -> dict[str, Path]:
    """The server's subfolders, created; leftovers of a killed server's checks are removed."""
    out = {name: root / name for name in ("uploads", "results", "tmp")}
    for path in out.values():
        path.mkdir(parents=True, exist_ok=True)
    for stale in out["tmp"].iterdir():
        if stale.is_file():
            stale.unlink()
    return out


def demo_images(folder: Path | None) -> dict[str, Path]:
    """{"demo-<stem>": path} for the images directly in `folder` (none without one)."""
    if folder is None or not folder.is_dir():
        return {}
    return {f"demo-{p.stem}": p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and re.fullmatch(r"[\w.-]+", p.stem)}


class Worker:
    """Runs queued runs one at a time, on a thread of its own, with `transfer` (the API's)."""

    def __init__(self, settings: Settings, weights: Any, paths: Callable[[str], Path],
                 transfer: Callable[..., Any] | None = None) -> None:
        if transfer is None:
            from .api import transfer
        self.settings, self.weights, self.paths, self.transfer = settings, weights, paths, transfer
        self.runs: dict[str, Run] = {}
        self.lock = threading.Lock()
        self._submitted = itertools.count(1)
        self.queue: queue.Queue[Run | None] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="jaxstyle-worker", daemon=True)
        self.thread.start()

    def submit(self, run: Run) -> None:
        with self.lock:
            run.order = next(self._submitted)
            self.runs[run.id] = run
        self.queue.put(run)

    def position(self, run: Run) -> int:
        """How many runs go before this one (0: it is running or finished)."""
        if run.status != "queued":
            return 0
        with self.lock:
            ahead = [r for r in self.runs.values() if r.order < run.order and r.status in ("queued", "running")]
        return len(ahead)

    def stop(self, run: Run) -> None:
        """Stop a running run after its current chunk (the image so far is kept), or drop a
        queued one."""
        run.stop.set()
        with self.lock:
            if run.status == "queued":
                run.status, run.message = "cancelled", "stopped before it started"

    def close(self) -> None:
        """Stop the current run and end the thread once it has finished."""
        with self.lock:
            for run in self.runs.values():
                run.stop.set()
        self.queue.put(None)

    def _loop(self) -> None:
        while (run := self.queue.get()) is not None:
            with self.lock:
                if run.status != "queued":
                    continue
                run.status = "running"
            self._execute(run)

    def _execute(self, run: Run) -> None:
        try:
            result = self.transfer(self.paths(run.content), self.paths(run.style), weights=self.weights,
                                   config=run.config, progress=run.watcher, should_stop=run.stop.is_set)
            run.iterations = result.iterations
            if result.image is not None:
                out = self.settings.folder / "results" / f"{run.id}.png"
                imageio.save_image(result.image, out)
                run.result = out
            run.message = result.message
            status = result.status
        except JaxstyleError as e:
            status, run.message = "failed", e.message
        except OSError as e:
            status, run.message = "failed", f"cannot write the result ({first_line(e)})"
        except Exception as e:  # the server stays up for the next run
            log.exception("run %s failed", run.id)
            status, run.message = "failed", f"{type(e).__name__}: {first_line(e)}"
        with self.lock:
            run.status = status


def _error(message: str, code: int) -> tuple[Response, int]:
    return jsonify(error=message), code


def _number(body: Mapping[str, Any], name: str, kind: type, low: float, high: float, default: Any) -> Any:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{name} must be a number")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be {'an integer' if kind is int else 'a number'}, not {value!r}") from None
    if not low <= number <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g}")
    return number


def run_config(body: Mapping[str, Any], settings: Settings) -> tuple[Config, str]:
    """The Config (and preset name) a page's run request asks for; ConfigError if it is wrong."""
    defaults = PRESETS["transfer"]
    preset = body.get("preset") or "writeup-tuned"
    if preset not in STYLE_PRESETS:
        raise ConfigError(f"unknown layers preset {preset!r}; use one of {', '.join(sorted(STYLE_PRESETS))}")
    colors = body.get("preserve_colors", defaults.preserve_colors)
    if colors not in COLOR_MODES:
        raise ConfigError(f"unknown colour mode {colors!r}; use one of {', '.join(COLOR_MODES)}")
    options = {
        "size": _number(body, "size", int, 16, settings.max_size, min(defaults.size, settings.max_size)),
        "iterations": _number(body, "iterations", int, 1, settings.max_iterations,
                              min(defaults.iterations, settings.max_iterations)),
        "style_weight": _number(body, "style_weight", float, 0, 1e12,
                                STYLE_PRESETS[preset].get("style_weight", defaults.style_weight)),
        "preserve_colors": colors,
        "device": settings.device,
    }
    return defaults.replace(**STYLE_PRESETS[preset]).replace(**options), preset


def _status(run: Run, worker: Worker) -> dict[str, Any]:
    view = run.watcher.view()
    p = view.latest
    status = run.status
    if status == "running" and p is not None and p.phase == "compile":
        status = "compiling"
    out: dict[str, Any] = {
        "id": run.id, "status": status, "message": run.message, "position": worker.position(run),
        "iteration": p.iteration if p is not None else 0, "iterations": run.config.iterations,
        "loss": None, "terms": None, "seconds_per_iteration": p.seconds_per_iteration if p else None,
        "eta": p.eta if p is not None else None, "preview": view.image_version, "curve": len(view.rows),
        "result": f"/api/runs/{run.id}/result.png" if run.result is not None else None,
        "size": run.config.size, "preset": run.preset,
    }
    if view.rows:
        last = view.rows[-1]
        out["loss"] = last.get("total")
        out["terms"] = {k: last[k] for k in _TERMS if k in last}
    if run.result is not None:
        out["iteration"] = run.iterations
    return out


def create_app(settings: Settings, weights: Any, transfer: Callable[..., Any] | None = None) -> Flask:
    """The Flask app of `jaxstyle serve` with its worker (`app.extensions["jaxstyle"]`).
    `weights` are VGG16 parameters (or a path) for every run; `transfer` replaces the API's
    (tests)."""
    root = settings.folder.resolve()
    dirs = folders(root)
    settings = dataclasses.replace(settings, folder=root)
    demos = demo_images(settings.demo)
    page = resources.files("jaxstyle").joinpath("serve.html").read_text(encoding="utf-8")

    def path_of(ref: str) -> Path:
        if ref in demos:
            return demos[ref]
        if _ID.fullmatch(ref) and (dirs["uploads"] / f"{ref}.png").is_file():
            return dirs["uploads"] / f"{ref}.png"
        raise ConfigError(f"no image {ref!r}: upload it again or pick another")

    worker = Worker(settings, weights, path_of, transfer)

    class _Request(Request):
        """Uploads larger than 1 MiB are spooled under the server's folder, not the system's
        temporary folder."""

        def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
            return tempfile.SpooledTemporaryFile(max_size=2**20, dir=dirs["tmp"], mode="rb+")

    app = Flask("jaxstyle.serve")
    app.request_class = _Request
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.extensions["jaxstyle"] = worker

    def find(run_id: str) -> Run | None:
        with worker.lock:
            return worker.runs.get(run_id) if _ID.fullmatch(run_id) else None

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(e: HTTPException):
        return _error(f"upload larger than {settings.max_upload_bytes / 2**20:g} MB; use a smaller image", 413)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        return _error(f"{e.code} {e.name}", e.code or 500)

    @app.get("/")
    def index():
        return Response(page, mimetype="text/html")

    @app.get("/api/config")
    def config():
        d = PRESETS["transfer"]
        return jsonify(demos=[{"id": k, "name": v.name} for k, v in demos.items()],
                       presets=sorted(STYLE_PRESETS), colors=list(COLOR_MODES),
                       defaults={"size": min(d.size, settings.max_size), "iterations": min(d.iterations,
                                 settings.max_iterations), "style_weight": d.style_weight,
                                 "preserve_colors": d.preserve_colors, "preset": "writeup-tuned"},
                       max_upload_mb=settings.max_upload_bytes / 2**20, max_size=settings.max_size,
                       max_iterations=settings.max_iterations)

    @app.post("/api/images")
    def upload():
        file = request.files.get("file")
        if file is None:
            return _error("no file in the upload (send it as the form field 'file')", 400)
        name = re.sub(r"[^\w. -]", "_", Path(file.filename or "upload").name)[:80] or "upload"
        token = secrets.token_hex(16)
        checking = dirs["tmp"] / f"{token}.upload"
        try:
            with open(checking, "wb") as fh:
                shutil.copyfileobj(file.stream, fh)
            image = imageio.load_image(checking)
        except JaxstyleError as e:
            return _error(e.message.replace(str(checking), name), 400)
        finally:
            checking.unlink(missing_ok=True)
        h, w = image.shape[:2]
        if max(h, w) > settings.max_size:  # stored as large as a run may use it, no larger
            from PIL import Image
            img = Image.fromarray(imageio.to_uint8(image), "RGB")
            img.thumbnail((settings.max_size, settings.max_size), Image.LANCZOS)
            image = imageio.to_rgb_array(img)
        imageio.save_image(image, dirs["uploads"] / f"{token}.png")
        return jsonify(id=token, name=name, width=image.shape[1], height=image.shape[0]), 201

    @app.get("/api/images/<ref>")
    def thumbnail(ref: str):
        try:
            image = imageio.load_image(path_of(ref))
        except JaxstyleError as e:
            return _error(e.message, 404)
        return Response(preview.encode(image, "PNG", 256), mimetype="image/png")

    @app.post("/api/runs")
    def start():
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _error("send the run's settings as a JSON object", 400)
        try:
            cfg, preset = run_config(body, settings)
            for key in ("content", "style"):
                path_of(str(body.get(key, "")))
        except JaxstyleError as e:
            return _error(e.message, 400)
        run = Run(secrets.token_hex(16), str(body["content"]), str(body["style"]), cfg, preset,
                  preview.Watcher(settings.preview_interval))
        worker.submit(run)
        return jsonify(_status(run, worker)), 202

    @app.get("/api/runs/<run_id>")
    def status(run_id: str):
        run = find(run_id)
        return jsonify(_status(run, worker)) if run else _error("no such run", 404)

    @app.post("/api/runs/<run_id>/stop")
    def stop(run_id: str):
        run = find(run_id)
        if run is None:
            return _error("no such run", 404)
        worker.stop(run)
        return jsonify(_status(run, worker))

    @app.get("/api/runs/<run_id>/preview.png")
    def preview_png(run_id: str):
        run = find(run_id)
        data = run.preview_png() if run else None
        if data is None:
            return _error("no image yet", 404)
        return Response(data, mimetype="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/api/runs/<run_id>/curve.svg")
    def curve(run_id: str):
        run = find(run_id)
        if run is None:
            return _error("no such run", 404)
        svg = preview.loss_svg(run.watcher.view().rows, run.config.iterations, width=420, height=220)
        return Response(svg, mimetype="image/svg+xml", headers={"Cache-Control": "no-store"})

    @app.get("/api/runs/<run_id>/result.png")
    def result(run_id: str):
        run = find(run_id)
        if run is None or run.result is None:
            return _error("no result yet", 404)
        return send_file(run.result, mimetype="image/png", as_attachment=True,
                         download_name=f"jaxstyle-{run.id[:8]}.png")

    return app


def make_server(settings: Settings, weights: Any, host: str = "127.0.0.1", port: int = 8000,
                transfer: Callable[..., Any] | None = None) -> tuple[Any, Worker]:
    """A waitress server of the page, listening but not yet serving (`.run()` serves until
    `.close()`), and its Worker. Bodies above the upload limit are refused, and bodies are kept
    in memory (never in the system's temporary folder)."""
    from waitress import create_server

    app = create_app(settings, weights, transfer)
    body_limit = settings.max_upload_bytes + 2**16  # the multipart envelope around the file
    server = create_server(app, host=host, port=port, threads=4, max_request_body_size=body_limit,
                           inbuf_overflow=body_limit, outbuf_overflow=2**26, ident="jaxstyle")
    return server, app.extensions["jaxstyle"]


def urls(server: Any) -> list[str]:
    """The URLs a server from `make_server` listens on."""
    listening = getattr(server, "effective_listen", None) or [(server.effective_host, server.effective_port)]
    return [f"http://{f'[{h}]' if ':' in str(h) else h}:{p}/" for h, p in listening]


def serve(settings: Settings, weights: Any, host: str = "127.0.0.1", port: int = 8000,
          ready: Callable[[str], None] | None = None) -> None:
    """Serve the page until interrupted; `ready` gets each URL it listens on."""
    server, worker = make_server(settings, weights, host, port)
    for url in urls(server):
        if ready is not None:
            ready(url)
    try:
        server.run()  # returns on Ctrl-C
    finally:
        worker.close()
        server.close()

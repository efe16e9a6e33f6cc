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
the hardened, bounded decoder, `imageio.load_image_within`, and written again as a PNG under a
random name, beside a small JSON of its display name and kind: the user's file name and bytes
are never used as a path), `results/` (each run's PNG, random names), `tmp/` (an upload while it
is checked, `<32 hex digits>.upload`: at start-up only files of that name are removed) and
`xla/` (compiled programs). Requests name images and runs only by those random ids or by demo
names looked up in a table, so no request can name a path.

Who may drive it: every request must carry a Host header naming the address the server is bound
to (or `localhost`), so a web page on another site that rebinds its DNS name to 127.0.0.1 is
refused; every API request carries the server's token, which only the page it serves holds
(embedded in it); every POST must come from the page itself (Origin, Sec-Fetch-Site). Bounds:
uploads are refused above `max_upload_bytes` (413) and `max_upload_pixels` (413, from the header,
before decoding), at most `max_queued` runs wait (429), and only the latest `max_kept_runs`
finished runs and `max_uploads` uploads are kept (the oldest dropped with their files).
"""
from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import itertools
import json
import logging
import math
import queue
import re
import secrets
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

from flask import Flask, Request, Response, jsonify, request, send_file
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from jaxstyle.config import COLOR_MODES, PRESETS, STYLE_LOSSES, STYLE_PRESETS, Config
from jaxstyle.errors import ConfigError, InputError, JaxstyleError, first_line
from jaxstyle.files import atomic_write
from jaxstyle.images import imageio
from jaxstyle.observers import preview

log = logging.getLogger("jaxstyle")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
_ID = re.compile(r"[0-9a-f]{32}")
_CHECKING = re.compile(r"[0-9a-f]{32}\.upload")  # the only names this server writes in tmp/
_TERMS = ("content", "style", "tv")
KINDS = ("photo", "painting")
ACTIVE = ("queued", "running")
TOKEN_HEADER = "X-Jaxstyle-Token"
_JSON_LIMIT = 16384  # bytes of a run's settings


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
    max_upload_pixels: int = 50_000_000  # by the header, before decoding (a 48 MP camera's photo)
    max_queued: int = 8  # runs waiting behind the one going; more are refused (429)
    max_kept_runs: int = 20  # finished runs kept with their results; the oldest are dropped
    max_uploads: int = 100  # uploads kept; the oldest not used by a waiting run are dropped


@dataclass
class Run:
    """One queued, running or finished run."""

    id: str
    content: str  # image refs: an upload's id or "demo-<name>"
    style: str
    config: Config
    preset: str
    watcher: preview.Watcher
    names: tuple[str, str] = ("photo", "painting")  # what the page shows for content and style
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

    def download_name(self) -> str:
        """`photo_painting-256px.png`, as `jaxstyle transfer` would name it, with the size."""
        stems = [re.sub(r"[^\w.-]+", "_", Path(n).stem)[:60] or "image" for n in self.names]
        return f"{stems[0]}_{stems[1]}-{self.config.size}px.png"


@dataclass(frozen=True)
class Upload:
    """An uploaded image: its display name, what it was uploaded as, its size."""

    id: str
    name: str
    kind: str  # "photo" or "painting"
    width: int
    height: int
    order: int


def folders(root: Path) -> tuple[dict[str, Path], int, int]:
    """The server's subfolders, created; in tmp/ only the files this server names
    (`<32 hex digits>.upload`, left by a killed server) are removed. Returns the folders, how
    many files were removed and how many other files were left alone."""
    out = {name: root / name for name in ("uploads", "results", "tmp")}
    for path in out.values():
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"{path}: cannot create the server's folder ({e.strerror or type(e).__name__})"
                             ) from None
    removed = kept = 0
    for stale in out["tmp"].iterdir():
        if _CHECKING.fullmatch(stale.name) and stale.is_file() and not stale.is_symlink():
            stale.unlink(missing_ok=True)
            removed += 1
        else:
            kept += 1
    return out, removed, kept


def demo_images(folder: Path | None) -> dict[str, tuple[Path, str | None]]:
    """{"demo-<stem>": (path, kind)} for the images in `folder` (none without one): those in its
    `photos/` and `paintings/` subfolders are of that kind, those directly in it of either."""
    if folder is None or not folder.is_dir():
        return {}
    out: dict[str, tuple[Path, str | None]] = {}
    for sub, kind in (("photos", "photo"), ("paintings", "painting"), (".", None)):
        d = folder / sub
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and re.fullmatch(r"[\w.-]+", p.stem):
                out.setdefault(f"demo-{p.stem}", (p, kind))
    return out


def host_rule(host: str) -> Callable[[str], bool]:
    """Which Host header names a server bound to `host` answers: that address, `localhost`
    and the loopback addresses for a loopback server; for a wildcard address (0.0.0.0, ::),
    any IP address and this machine's names. Never another name: a page whose DNS name is
    rebound to this address still sends its own name, and is refused."""
    names = {host.lower().strip("[]")}
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    wildcard = address is not None and address.is_unspecified
    if host.lower() == "localhost" or (address is not None and (address.is_loopback or wildcard)):
        names |= {"localhost", "127.0.0.1", "::1"}
    if wildcard:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}

    def allowed(name: str) -> bool:
        name = name.lower()
        if name in names:
            return True
        if wildcard:
            try:
                ipaddress.ip_address(name)
                return True
            except ValueError:
                return False
        return False

    return allowed


def _host_name(header: str) -> str:
    """The name in a Host header, without its port ("[::1]:8000" -> "::1")."""
    header = header.strip()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Worker:
    """Runs queued runs one at a time, on a thread of its own, with `transfer` (the API's).
    `say` gets one line per run as it starts and ends (the server's terminal)."""

    def __init__(self, settings: Settings, weights: Any, paths: Callable[[str], Path],
                 transfer: Callable[..., Any] | None = None, say: Callable[[str], None] | None = None,
                 public: Callable[[str], str] = str) -> None:
        if transfer is None:
            from jaxstyle.faces.api import transfer
        self.settings, self.weights, self.paths, self.transfer = settings, weights, paths, transfer
        self.say = say or log.info
        self.public = public  # a message with the server's paths replaced by names
        self.runs: dict[str, Run] = {}
        self.lock = threading.Lock()
        self._submitted = itertools.count(1)
        self.queue: queue.Queue[Run | None] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="jaxstyle-worker", daemon=True)
        self.thread.start()

    def submit(self, run: Run) -> bool:
        """Queue a run; False (and not queued) when `max_queued` runs already wait."""
        self._prune()  # runs stopped before they started count too
        with self.lock:
            if sum(r.status == "queued" for r in self.runs.values()) >= self.settings.max_queued:
                return False
            run.order = next(self._submitted)
            self.runs[run.id] = run
        self.queue.put(run)
        return True

    def position(self, run: Run) -> int:
        """How many runs go before this one (0: it is running or finished)."""
        if run.status != "queued":
            return 0
        with self.lock:
            ahead = [r for r in self.runs.values() if r.order < run.order and r.status in ACTIVE]
        return len(ahead)

    def in_use(self) -> set[str]:
        """The image refs of runs that wait or go."""
        with self.lock:
            return {ref for r in self.runs.values() if r.status in ACTIVE for ref in (r.content, r.style)}

    def stop(self, run: Run) -> None:
        """Stop a running run after its current chunk (the image so far is kept), or drop a
        queued one."""
        run.stop.set()
        with self.lock:
            if run.status == "queued":
                run.status, run.message = "cancelled", "stopped before it started"

    def close(self, wait: float | None = None) -> None:
        """Drop the queued runs, stop the current one after its chunk (its image is kept) and
        end the thread; with `wait`, wait that long (None: until it has ended)."""
        with self.lock:
            for run in self.runs.values():
                run.stop.set()
                if run.status == "queued":
                    run.status, run.message = "cancelled", "the server stopped before it started"
        self.queue.put(None)
        if wait != 0:
            self.thread.join(wait)

    def _loop(self) -> None:
        while (run := self.queue.get()) is not None:
            with self.lock:
                if run.status != "queued":
                    continue
                run.status = "running"
            self._execute(run)
            self._prune()

    def _execute(self, run: Run) -> None:
        c = run.config
        self.say(f"jaxstyle: run {run.id[:8]} started: {run.names[0]} in the style of {run.names[1]}, "
                 f"{c.size} px, {c.iterations} iterations, {run.preset}")
        started = time.monotonic()
        try:
            result = self.transfer(self.paths(run.content), self.paths(run.style), weights=self.weights,
                                   config=run.config, progress=run.watcher, should_stop=run.stop.is_set)
            run.iterations = result.iterations
            if result.image is not None:
                out = self.settings.folder / "results" / f"{run.id}.png"
                out.parent.mkdir(parents=True, exist_ok=True)
                imageio.save_image(result.image, out)
                run.result = out
            run.message = self.public(result.message) if result.message else None
            status = result.status
        except JaxstyleError as e:
            status, run.message = "failed", self.public(e.message)
        except OSError as e:
            status, run.message = "failed", f"cannot write the result ({e.strerror or type(e).__name__})"
        except Exception as e:  # the server stays up for the next run
            log.exception("run %s failed", run.id)
            status, run.message = "failed", self.public(f"{type(e).__name__}: {first_line(e)}")
        with self.lock:
            run.status = status
        kept = f"; image in results/{run.result.name}" if run.result is not None else ""
        self.say(f"jaxstyle: run {run.id[:8]} {status} after {run.iterations} iterations in "
                 f"{time.monotonic() - started:.0f} s{kept}" + (f" ({run.message})" if run.message else ""))

    def _prune(self) -> None:
        """Keep the latest `max_kept_runs` finished runs; drop the others with their files."""
        with self.lock:
            finished = sorted((r for r in self.runs.values() if r.status not in ACTIVE), key=lambda r: r.order)
            dropped = finished[:max(0, len(finished) - self.settings.max_kept_runs)]
            for r in dropped:
                del self.runs[r.id]
        for r in dropped:
            if r.result is not None:
                with contextlib.suppress(OSError):  # the worker goes on whatever the folder became
                    r.result.unlink(missing_ok=True)


def _error(message: str, code: int) -> tuple[Response, int]:
    return jsonify(error=message), code


# A run's settings: name -> (label on the page, type, low, high). The page's labels are these.
LABELS = {"content": "Photo", "style": "Painting", "size": "Size", "iterations": "Iterations",
          "style_weight": "Style weight", "style_loss": "Style loss", "preserve_colors": "Colours",
          "preset": "Layers preset"}


def _number(body: Mapping[str, Any], name: str, kind: type, low: float, high: float, default: Any,
            unit: str = "") -> Any:
    value = body.get(name, default)
    label = LABELS.get(name, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{label} must be {'an integer' if kind is int else 'a number'}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{label} must be a finite number")
    if not low <= value <= high:
        raise ConfigError(f"{label} must be between {low:g} and {high:g}{unit}")
    if kind is int and value != int(value):
        raise ConfigError(f"{label} must be an integer")
    return kind(value)


def _choice(body: Mapping[str, Any], name: str, choices: Any, default: str) -> str:
    value = body.get(name, default)
    if value is None or value == "":
        value = default
    if not isinstance(value, str) or value not in choices:
        shown = repr(value)[:40] if isinstance(value, str) else f"a JSON {_json_kind(value)}"
        raise ConfigError(f"{LABELS[name]}: unknown {shown}; use one of {', '.join(sorted(choices))}")
    return value


def _json_kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def run_config(body: Mapping[str, Any], settings: Settings) -> tuple[Config, str]:
    """The Config (and preset name) a page's run request asks for; ConfigError if it is wrong.
    Only the fields in LABELS are allowed, each of its JSON type."""
    unknown = sorted(set(body) - set(LABELS))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0][:40]!r}; the settings are {', '.join(LABELS)}")
    defaults = PRESETS["transfer"]
    preset = _choice(body, "preset", STYLE_PRESETS, "writeup-tuned")
    colors = _choice(body, "preserve_colors", COLOR_MODES, defaults.preserve_colors)
    style_loss = _choice(body, "style_loss", STYLE_LOSSES, defaults.style_loss)
    options = {
        "size": _number(body, "size", int, 16, settings.max_size, min(defaults.size, settings.max_size),
                        " px (longest side)"),
        "iterations": _number(body, "iterations", int, 1, settings.max_iterations,
                              min(defaults.iterations, settings.max_iterations)),
        "style_weight": _number(body, "style_weight", float, 0, 1e12,
                                STYLE_PRESETS[preset].get("style_weight", defaults.style_weight)),
        "preserve_colors": colors,
        "style_loss": style_loss,
        "device": settings.device,
    }
    return defaults.replace(**STYLE_PRESETS[preset]).replace(**options), preset


def _json_body(req: Request) -> dict:
    """The request's JSON object; ConfigError in one line for anything else (not JSON, too
    large, too deep, NaN, numbers with thousands of digits)."""
    if not (req.mimetype or "").endswith("json"):
        raise ConfigError("send the run's settings as JSON (Content-Type: application/json)")
    if (req.content_length or 0) > _JSON_LIMIT:
        raise ConfigError(f"the run's settings are larger than {_JSON_LIMIT} bytes")
    raw = req.get_data(cache=False)[:_JSON_LIMIT + 1]
    if len(raw) > _JSON_LIMIT:
        raise ConfigError(f"the run's settings are larger than {_JSON_LIMIT} bytes")

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a number")

    try:
        body = json.loads(raw, parse_constant=constant)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise ConfigError("the run's settings are not valid JSON") from None
    if not isinstance(body, dict):
        raise ConfigError(f"send the run's settings as a JSON object, not a JSON {_json_kind(body)}")
    return body


def _status(run: Run, worker: Worker, token: str = "") -> dict[str, Any]:
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
        "download_name": run.download_name(), "content": run.content, "style": run.style,
        "names": list(run.names), "size": run.config.size, "preset": run.preset,
        "style_weight": run.config.style_weight, "preserve_colors": run.config.preserve_colors,
        "style_loss": run.config.style_loss,
    }
    if view.rows:
        last = view.rows[-1]
        out["loss"] = last.get("total")
        out["terms"] = {k: last[k] for k in _TERMS if k in last}
    if run.result is not None:
        out["iteration"] = run.iterations
    return out


def create_app(settings: Settings, weights: Any, transfer: Callable[..., Any] | None = None, *,
               host: str = "127.0.0.1", say: Callable[[str], None] | None = None,
               token: str | None = None) -> Flask:
    """The Flask app of `jaxstyle serve` with its worker (`app.extensions["jaxstyle"]`) and its
    API token (`app.config["JAXSTYLE_TOKEN"]`). `weights` are VGG16 parameters (or a path) for
    every run; `host` the address it is bound to (which Host headers it answers); `say` gets
    the server's log lines; `transfer` replaces the API's (tests)."""
    root = settings.folder.resolve()
    say = say or log.info
    dirs, removed, others = folders(root)
    if removed or others:
        say(f"jaxstyle: {root / 'tmp'}: removed {removed} unfinished upload(s) of an earlier server"
            + (f"; left {others} file(s) it did not make" if others else ""))
    settings = dataclasses.replace(settings, folder=root)
    demos = demo_images(settings.demo)
    token = token or secrets.token_urlsafe(24)
    page = resources.files("jaxstyle.faces").joinpath("serve.html").read_text(encoding="utf-8")
    page = page.replace("__JAXSTYLE_TOKEN__", token)
    allowed_host = host_rule(host)
    uploads: dict[str, Upload] = {}
    uploads_lock = threading.Lock()
    decoding = threading.Semaphore(1)  # one upload decoded at a time: memory stays one budget
    order = itertools.count(1)
    for meta in sorted(dirs["uploads"].glob("*.json"), key=lambda p: p.stat().st_mtime):
        try:  # an earlier server's uploads, with their names
            d = json.loads(meta.read_text(encoding="utf-8"))
            if _ID.fullmatch(meta.stem) and (dirs["uploads"] / f"{meta.stem}.png").is_file():
                uploads[meta.stem] = Upload(meta.stem, str(d["name"])[:80], d["kind"] if d["kind"] in KINDS
                                            else "photo", int(d["width"]), int(d["height"]), next(order))
        except (OSError, ValueError, KeyError, TypeError):
            continue

    def path_of(ref: str) -> Path:
        if ref in demos:
            return demos[ref][0]
        if _ID.fullmatch(ref) and ref in uploads and (dirs["uploads"] / f"{ref}.png").is_file():
            return dirs["uploads"] / f"{ref}.png"
        raise InputError(f"no image {ref[:40]!r}: upload it again or pick another")

    def name_of(ref: str) -> str:
        if ref in demos:
            return demos[ref][0].name
        return uploads[ref].name if ref in uploads else ref

    def public(message: str) -> str:
        """A message for the page: the server's paths become the images' names."""
        for ref in list(uploads) + list(demos):
            try:
                message = message.replace(str(path_of(ref)), name_of(ref))
            except JaxstyleError:
                continue
        for folder, label in ((root, "the server's folder"), (settings.demo, "the demo folder")):
            if folder is not None:
                message = message.replace(str(folder.resolve()), label).replace(str(folder), label)
        return first_line(message) if "\n" in message else message

    worker = Worker(settings, weights, path_of, transfer, say=say, public=public)

    class _Request(Request):
        """Uploads larger than 1 MiB are spooled under the server's folder, not the system's
        temporary folder (unnamed: the file is gone when closed)."""

        def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
            return tempfile.SpooledTemporaryFile(max_size=2**20, dir=dirs["tmp"], mode="rb+")

    app = Flask("jaxstyle.faces.serve")
    app.request_class = _Request
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.config["JAXSTYLE_TOKEN"] = token
    app.extensions["jaxstyle"] = worker

    def find(run_id: str) -> Run | None:
        with worker.lock:
            return worker.runs.get(run_id) if _ID.fullmatch(run_id) else None

    @app.before_request
    def guard():
        name = _host_name(request.headers.get("Host", ""))
        if not allowed_host(name):
            return _error(f"this server does not answer for the host {name[:60]!r}; open it by its address", 403)
        if not request.path.startswith("/api/"):
            return None
        given = request.headers.get(TOKEN_HEADER) or request.args.get("token") or ""
        if not secrets.compare_digest(given.encode(), token.encode()):
            return _error("missing or wrong token: reload the page", 403)
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("Origin")
            if origin is not None and origin != f"{request.scheme}://{request.host}":
                return _error("requests from another web page are refused", 403)
            if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
                return _error("requests from another web page are refused", 403)
        return None

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(e: HTTPException):
        return _error(f"upload larger than {settings.max_upload_bytes / 2**20:g} MB; use a smaller image", 413)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        return _error(f"{e.code} {e.name}", e.code or 500)

    @app.errorhandler(Exception)
    def internal_error(e: Exception):  # one line for the page; the traceback for the terminal
        log.exception("request %s %s failed", request.method, request.path)
        return _error(f"the server failed ({type(e).__name__}); see its terminal", 500)

    @app.get("/")
    def index():
        return Response(page, mimetype="text/html", headers={"Cache-Control": "no-store",
                                                             "X-Frame-Options": "DENY",
                                                             "Referrer-Policy": "no-referrer",
                                                             "Content-Security-Policy": "frame-ancestors 'none'"})

    @app.get("/api/config")
    def config():
        d = PRESETS["transfer"]
        return jsonify(demos=[{"id": k, "name": v[0].name, "kind": v[1]} for k, v in demos.items()],
                       presets=sorted(STYLE_PRESETS), colors=list(COLOR_MODES), style_losses=list(STYLE_LOSSES),
                       defaults={"size": min(d.size, settings.max_size), "iterations": min(d.iterations,
                                 settings.max_iterations), "style_weight": d.style_weight,
                                 "preserve_colors": d.preserve_colors, "style_loss": d.style_loss,
                                 "preset": "writeup-tuned"},
                       max_upload_mb=settings.max_upload_bytes / 2**20, max_size=settings.max_size,
                       max_iterations=settings.max_iterations,
                       max_upload_megapixels=settings.max_upload_pixels / 1e6, labels=LABELS)

    def _forget_oldest_uploads() -> None:
        busy = worker.in_use()
        with uploads_lock:
            spare = sorted((u for u in uploads.values() if u.id not in busy), key=lambda u: u.order)
            drop = spare[:max(0, len(uploads) - settings.max_uploads + 1)]
            for u in drop:
                del uploads[u.id]
        for u in drop:
            for suffix in (".png", ".json"):
                with contextlib.suppress(OSError):
                    (dirs["uploads"] / f"{u.id}{suffix}").unlink(missing_ok=True)

    @app.post("/api/images")
    def upload():
        file = request.files.get("file")
        if file is None:
            return _error("no file in the upload (send it as the form field 'file')", 400)
        kind = request.form.get("kind", "photo")
        if kind not in KINDS:
            return _error(f"an upload is a photo or a painting, not {kind[:40]!r}", 400)
        name = re.sub(r"[^\w. -]", "_", Path(file.filename or "upload").name)[:80] or "upload"
        upload_id = secrets.token_hex(16)
        checking = dirs["tmp"] / f"{upload_id}.upload"
        try:
            with open(checking, "xb") as fh:
                shutil.copyfileobj(file.stream, fh)
            with decoding:
                image = imageio.load_image_within(checking, settings.max_size, settings.max_upload_pixels)
        except JaxstyleError as e:
            code = 413 if "megapixels" in e.message or "too large" in e.message else 400
            return _error(e.message.replace(str(checking), name), code)
        finally:
            checking.unlink(missing_ok=True)
        _forget_oldest_uploads()
        h, w = image.shape[:2]
        try:
            dirs["uploads"].mkdir(parents=True, exist_ok=True)  # removed while the server runs: made again
            imageio.save_image(image, dirs["uploads"] / f"{upload_id}.png")
            with atomic_write(dirs["uploads"] / f"{upload_id}.json") as fh:
                fh.write(json.dumps({"name": name, "kind": kind, "width": w, "height": h}).encode())
        except OSError as e:
            with contextlib.suppress(OSError):
                (dirs["uploads"] / f"{upload_id}.png").unlink(missing_ok=True)
            return _error(f"cannot store the upload ({e.strerror or type(e).__name__})", 507)
        with uploads_lock:
            uploads[upload_id] = Upload(upload_id, name, kind, w, h, next(order))
        return jsonify(id=upload_id, name=name, kind=kind, width=w, height=h), 201

    @app.get("/api/images")
    def list_uploads():
        with uploads_lock:
            listed = sorted(uploads.values(), key=lambda u: u.order)
        return jsonify(uploads=[dataclasses.asdict(u) for u in listed])

    @app.get("/api/images/<ref>")
    def thumbnail(ref: str):
        try:
            with decoding:  # a demo image may be large: one decode at a time, as uploads
                image = imageio.load_image_within(path_of(ref), 256, settings.max_upload_pixels)
        except JaxstyleError as e:
            return _error(public(e.message), 404)
        return Response(preview.encode(image, "PNG", 256), mimetype="image/png")

    @app.get("/api/runs")
    def list_runs():
        with worker.lock:
            runs = sorted(worker.runs.values(), key=lambda r: r.order)
        return jsonify(runs=[_status(r, worker) for r in runs])

    @app.post("/api/runs")
    def start():
        try:
            body = _json_body(request)
            cfg, preset = run_config(body, settings)
            refs = []
            for key in ("content", "style"):
                ref = body.get(key)
                if not isinstance(ref, str) or not ref:
                    raise ConfigError(f"{LABELS[key]}: pick or upload one")
                path_of(ref)
                refs.append(ref)
        except JaxstyleError as e:
            return _error(e.message, 400)
        run = Run(secrets.token_hex(16), refs[0], refs[1], cfg, preset,
                  preview.Watcher(settings.preview_interval), names=(name_of(refs[0]), name_of(refs[1])))
        if not worker.submit(run):
            return _error(f"{settings.max_queued} runs are already waiting; stop one or wait for one to "
                          "finish", 429)
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
        try:
            fh = open(run.result, "rb")
        except OSError:
            return _error("the result's file is gone from the server's folder", 404)
        return send_file(fh, mimetype="image/png", as_attachment=True, download_name=run.download_name())

    return app


def make_server(settings: Settings, weights: Any, host: str = "127.0.0.1", port: int = 8000,
                transfer: Callable[..., Any] | None = None,
                say: Callable[[str], None] | None = None) -> tuple[Any, Worker]:
    """A waitress server of the page, listening but not yet serving (`.run()` serves until
    `.close()`), and its Worker. Bodies above the upload limit are refused, and bodies are kept
    in memory (never in the system's temporary folder)."""
    from waitress import create_server

    app = create_app(settings, weights, transfer, host=host, say=say)
    body_limit = settings.max_upload_bytes + 2**16  # the multipart envelope around the file
    server = create_server(app, host=host, port=port, threads=4, max_request_body_size=body_limit,
                           inbuf_overflow=body_limit, outbuf_overflow=2**26, ident="jaxstyle")
    return server, app.extensions["jaxstyle"]


def urls(server: Any) -> list[str]:
    """The URLs a server from `make_server` listens on."""
    listening = getattr(server, "effective_listen", None) or [(server.effective_host, server.effective_port)]
    return [f"http://{f'[{h}]' if ':' in str(h) else h}:{p}/" for h, p in listening]


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def serve(settings: Settings, weights: Any, host: str = "127.0.0.1", port: int = 8000,
          ready: Callable[[str], None] | None = None, say: Callable[[str], None] | None = None) -> None:
    """Serve the page until interrupted (SIGINT, or SIGTERM/SIGHUP on the main thread); `ready`
    gets each URL it listens on. On the way out the running run stops after its current chunk
    and its image is written to results/ before this returns (a second interrupt aborts it)."""
    say = say or log.info
    server, worker = make_server(settings, weights, host, port, say=say)
    for url in urls(server):
        if ready is not None:
            ready(url)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGTERM", "SIGHUP"):
            if hasattr(signal, name):
                previous[name] = signal.signal(getattr(signal, name), _interrupt)
    try:
        try:
            server.run()  # returns on Ctrl-C (waitress catches KeyboardInterrupt)
        except KeyboardInterrupt:
            pass
        finally:
            server.close()
            if any(r.status == "running" for r in list(worker.runs.values())):
                say("jaxstyle: stopping the run after its current chunk; its image is kept in results/")
            worker.close()
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)

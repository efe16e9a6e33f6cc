"""`jaxstyle serve`: the app through Flask's test client (uploads, limits, bad images, path
safety, queueing, stopping) and end to end in a real headless Chromium driven by Selenium
(upload, start, preview updates, stop, download), on 32 px images with synthetic weights.
Runs are real in the browser test (a stopped one: the image so far is what downloads) and
stand-ins elsewhere; tests/test_live.py stops real runs through the API."""
from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import jaxstyle
from jaxstyle.faces import cli
from jaxstyle.images import imageio
from jaxstyle.errors import InputError
from jaxstyle.observers.results import Result

flask = pytest.importorskip("flask", reason="the web extra is not installed: pip install '.[web]'")
pytest.importorskip("waitress", reason="the web extra is not installed: pip install '.[web]'")

from jaxstyle.faces import serve  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _png(h: int = 24, w: int = 32, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _settings(tmp_path: Path, image_dir: Path | None = None, **kw) -> serve.Settings:
    return serve.Settings(tmp_path / "srv", max_upload_bytes=kw.pop("max_upload_bytes", 100_000), max_size=64,
                          max_iterations=3000, demo=image_dir, preview_interval=kw.pop("preview_interval", 0.2),
                          device="cpu", **kw)


def _client(app):
    """A test client that carries the server's token, as the page does."""
    c = app.test_client()
    c.environ_base["HTTP_X_JAXSTYLE_TOKEN"] = app.config["JAXSTYLE_TOKEN"]
    return c


def _wait(client, run_id: str, until, timeout: float = 120.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        s = client.get(f"/api/runs/{run_id}").json
        if until(s):
            return s
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} never got there: {s}")


class FakeTransfer:
    """jaxstyle.transfer's shape: each run blocks until released (or stopped), and the most
    runs ever going at once is counted."""

    def __init__(self) -> None:
        self.going = 0
        self.most = 0
        self.started: list[Path] = []
        self.release = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, content, style, *, weights, config, progress, should_stop):
        with self.lock:
            self.going += 1
            self.most = max(self.most, self.going)
            self.started.append(Path(content))
        while not (self.release.is_set() or should_stop()):
            time.sleep(0.01)
        with self.lock:
            self.going -= 1
        status = "interrupted" if should_stop() else "done"
        return Result("x", np.full((8, 8, 3), 100.0), "transfer", config, status, iterations=config.iterations)


def test_uploads_are_decoded_limited_and_stored_under_generated_names(tmp_path):
    app = serve.create_app(_settings(tmp_path), weights={}, transfer=FakeTransfer())
    c = _client(app)
    folder = tmp_path / "srv"
    r = c.post("/api/images", data={"file": (io.BytesIO(_png(200, 100)), "../../../etc/passwd.png")})
    assert r.status_code == 201, r.json
    token = r.json["id"]
    assert r.json["name"] == "passwd.png" and (r.json["width"], r.json["height"]) == (32, 64)  # stored <= max_size
    assert _files(folder) == [f"uploads/{token}.json", f"uploads/{token}.png"]
    assert imageio.load_image(folder / "uploads" / f"{token}.png").shape == (64, 32, 3)
    assert not (tmp_path / "etc").exists()
    assert c.get(f"/api/images/{token}").mimetype == "image/png"

    for data, name, code, words in ((b"GIF89a not really", "x.gif", 400, "x.gif: "),
                                    (_png()[:60], "cut.png", 400, "cut.png: corrupt or truncated"),
                                    (b"", "empty.png", 400, "empty.png: empty file"),
                                    (b"x" * 200_000, "big.jpg", 413, "larger than")):
        r = c.post("/api/images", data={"file": (io.BytesIO(data), name)})
        assert r.status_code == code and words in r.json["error"], r.json
        assert "\n" not in r.json["error"] and str(folder) not in r.json["error"]
    assert c.post("/api/images", data={}).status_code == 400
    assert _files(folder) == [f"uploads/{token}.json", f"uploads/{token}.png"]  # nothing else was written


def test_requests_cannot_name_a_path(tmp_path, image_dir):
    app = serve.create_app(_settings(tmp_path, image_dir), weights={}, transfer=FakeTransfer())
    c = _client(app)
    assert [d["id"] for d in c.get("/api/config").json["demos"]] == ["demo-content", "demo-style", "demo-style2"]
    for ref in ("..%2F..%2Fetc%2Fpasswd", "demo-..", "0" * 32, "demo-content.png", "%2Fetc%2Fpasswd"):
        assert c.get(f"/api/images/{ref}").status_code == 404, ref
    for ref in ("../content.png", str(image_dir / "content.png"), "0" * 32):
        r = c.post("/api/runs", json={"content": ref, "style": "demo-style", "size": 32})
        assert r.status_code == 400 and "no image" in r.json["error"], ref
    for path in ("/api/runs/..%2F..%2Fx", "/api/runs/" + "0" * 32, "/api/runs/zz/result.png"):
        assert c.get(path).status_code == 404
    assert _files(tmp_path / "srv") == []


def test_bad_settings_are_refused_in_one_line(tmp_path, image_dir):
    app = serve.create_app(_settings(tmp_path, image_dir), weights={}, transfer=FakeTransfer())
    c = _client(app)
    good = {"content": "demo-content", "style": "demo-style", "size": 32, "iterations": 5}
    for change, words in (({"size": 65}, "Size must be between 16 and 64 px"), ({"size": "big"}, "Size must be"),
                          ({"iterations": 0}, "Iterations must be"), ({"style_weight": -1}, "Style weight"),
                          ({"preset": "monet"}, "Layers preset: unknown 'monet'"),
                          ({"preserve_colors": "sepia"}, "Colours: unknown 'sepia'"),
                          ({"style_loss": "fft"}, "Style loss: unknown 'fft'")):
        r = c.post("/api/runs", json={**good, **change})
        assert r.status_code == 400 and words in r.json["error"], (change, r.json)
    assert c.post("/api/runs", data="not json").status_code == 400


def test_runs_go_one_at_a_time_and_a_queued_run_can_be_dropped(tmp_path, image_dir):
    fake = FakeTransfer()
    app = serve.create_app(_settings(tmp_path, image_dir), weights={}, transfer=fake)
    c = _client(app)
    ids = [c.post("/api/runs", json={"content": "demo-content", "style": "demo-style", "size": 32,
                                     "iterations": 7, "preset": preset}).json["id"]
           for preset in ("gatys", "writeup", "writeup-tuned")]
    first = _wait(c, ids[0], lambda s: s["status"] == "running")
    assert first["position"] == 0 and first["preset"] == "gatys"
    queued = [c.get(f"/api/runs/{i}").json for i in ids[1:]]
    assert [(s["status"], s["position"]) for s in queued] == [("queued", 1), ("queued", 2)]
    assert c.post(f"/api/runs/{ids[2]}/stop").json["status"] == "cancelled"
    fake.release.set()
    _wait(c, ids[1], lambda s: s["status"] == "done")
    assert c.get(f"/api/runs/{ids[0]}").json["status"] == "done"
    assert fake.most == 1 and len(fake.started) == 2
    assert c.get(f"/api/runs/{ids[2]}").json["result"] is None
    r = c.get(f"/api/runs/{ids[1]}/result.png")
    assert r.status_code == 200 and "attachment" in r.headers["Content-Disposition"]
    assert Image.open(io.BytesIO(r.data)).size == (8, 8)


def test_start_up_removes_only_its_own_unfinished_uploads_and_says_so(tmp_path):
    tmp = tmp_path / "srv" / "tmp"
    tmp.mkdir(parents=True)
    ours, others = tmp / ("ab" * 16 + ".upload"), [tmp / "notes.txt", tmp / "x.upload", tmp / ("AB" * 16 + ".upload")]
    for f in [ours, *others]:
        f.write_bytes(b"x")
    said: list[str] = []
    serve.create_app(_settings(tmp_path), weights={}, transfer=FakeTransfer(), say=said.append)
    assert not ours.exists() and all(f.exists() for f in others)
    assert said == [f"jaxstyle: {tmp}: removed 1 unfinished upload(s) of an earlier server; "
                    "left 3 file(s) it did not make"]


def test_other_pages_foreign_hosts_and_requests_without_the_token_are_refused(tmp_path, image_dir):
    fake = FakeTransfer()
    app = serve.create_app(_settings(tmp_path, image_dir), weights={}, transfer=fake)
    token = app.config["JAXSTYLE_TOKEN"]
    bare, c = app.test_client(), _client(app)
    page = bare.get("/").data.decode()
    assert f'content="{token}"' in page and len(token) >= 32
    run = {"content": "demo-content", "style": "demo-style", "size": 32}
    # DNS rebinding: the browser sends the attacker's name as Host
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example"):
        for r in (bare.get("/", headers={"Host": host}), c.get("/api/config", headers={"Host": host}),
                  c.post("/api/runs", json=run, headers={"Host": host})):
            assert r.status_code == 403 and "does not answer for the host" in r.json["error"], host
    for host in ("localhost:5000", "127.0.0.1:8000", "[::1]:8000"):
        assert c.get("/api/config", headers={"Host": host}).status_code == 200, host
    # no token, a wrong one: an API request from anything but the page
    for r in (bare.get("/api/config"), bare.post("/api/runs", json=run),
              bare.post("/api/images", data={"file": (io.BytesIO(_png()), "a.png")}),
              bare.get("/api/config", headers={"X-Jaxstyle-Token": token[:-1] + "x"}),
              bare.get(f"/api/config?token={token}x")):
        assert r.status_code == 403 and r.json["error"] == "missing or wrong token: reload the page"
    assert bare.get(f"/api/config?token={token}").status_code == 200  # an <img> or a download link
    # another site's POST (multipart needs no preflight), even with the token
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"}):
        for r in (c.post("/api/runs", json=run, headers=headers),
                  c.post("/api/images", data={"file": (io.BytesIO(_png()), "a.png")}, headers=headers)):
            assert r.status_code == 403 and "another web page" in r.json["error"], headers
    assert c.post("/api/runs", json=run, headers={"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
                  ).status_code == 202
    assert not fake.started or len(fake.started) == 1
    fake.release.set()
    # a wildcard bind answers any address and this machine's names, never another name
    wild = serve.host_rule("0.0.0.0")
    assert wild("192.168.1.7") and wild("::1") and wild("localhost") and not wild("evil.example")
    one = serve.host_rule("192.168.1.7")
    assert one("192.168.1.7") and not one("10.0.0.1") and not one("localhost")


def test_uploads_runs_and_the_queue_are_bounded(tmp_path, image_dir, monkeypatch):
    fake = FakeTransfer()
    app = serve.create_app(_settings(tmp_path, image_dir, max_upload_bytes=2_000_000, max_queued=2,
                                     max_kept_runs=1, max_uploads=2), weights={}, transfer=fake)
    c = _client(app)
    folder = tmp_path / "srv"
    # ~88 MP in a 12 KB PNG: refused from its header, never decoded
    buf = io.BytesIO()
    Image.new("1", (10_000, 8_800)).save(buf, "PNG")
    assert len(buf.getvalue()) < 100_000
    decoded = []
    monkeypatch.setattr(imageio, "to_rgb_array", lambda img, f=imageio.to_rgb_array: decoded.append(img.size) or f(img))
    r = c.post("/api/images", data={"file": (io.BytesIO(buf.getvalue()), "bomb.png")})
    assert r.status_code == 413 and r.json["error"] == ("bomb.png: 10000×8800 is 88 megapixels; the most an upload "
                                                        "may have is 50"), r.json
    assert decoded == []
    # a large JPEG is decoded at a reduced scale, a large PNG reduced on its 8-bit pixels: float32 only at 64 px
    ids = []
    for fmt, name in (("JPEG", "big.jpg"), ("PNG", "big.png"), ("PNG", "third.png")):
        buf = io.BytesIO()
        Image.new("RGB", (1200, 900), (200, 30, 30)).save(buf, fmt)
        r = c.post("/api/images", data={"file": (io.BytesIO(buf.getvalue()), name), "kind": "painting"})
        assert r.status_code == 201 and (r.json["width"], r.json["height"]) == (64, 48), r.json
        ids.append(r.json["id"])
    assert all(max(size) <= 64 for size in decoded), decoded
    # only the latest max_uploads uploads are kept, files included
    assert [u["id"] for u in c.get("/api/images").json["uploads"]] == ids[1:]
    assert not list(folder.glob(f"uploads/{ids[0]}.*")) and c.get(f"/api/images/{ids[0]}").status_code == 404
    # the queue: one running and max_queued waiting; more are refused with 429
    run = {"content": "demo-content", "style": ids[2], "size": 32}
    first = c.post("/api/runs", json=run).json["id"]
    _wait(c, first, lambda s: s["status"] == "running")
    assert [c.post("/api/runs", json=run).status_code for _ in range(3)] == [202, 202, 429]
    r = c.post("/api/runs", json=run)
    assert r.status_code == 429 and r.json["error"] == "2 runs are already waiting; stop one or wait for one to finish"
    # an upload a waiting run uses is not dropped for a new one
    c.post("/api/images", data={"file": (io.BytesIO(_png()), "new.png")})
    assert ids[2] in [u["id"] for u in c.get("/api/images").json["uploads"]]
    fake.release.set()
    runs = [r["id"] for r in c.get("/api/runs").json["runs"]]
    _wait(c, runs[-1], lambda s: s["status"] == "done")
    time.sleep(0.2)  # the worker drops the older runs after the last one
    assert [r["id"] for r in c.get("/api/runs").json["runs"]] == runs[-1:]  # max_kept_runs
    assert _files(folder / "results") == [f"{runs[-1]}.png"]
    assert c.get(f"/api/runs/{first}").status_code == 404
    for _ in range(6):  # runs stopped at once are dropped as the kept ones are
        c.post(f"/api/runs/{c.post('/api/runs', json=run).json['id']}/stop")
    assert len(c.get("/api/runs").json["runs"]) <= 3


def test_wrong_json_types_missing_files_and_server_paths_give_one_line_4xx(tmp_path, image_dir):
    class Failing(FakeTransfer):
        def __call__(self, content, style, **kw):
            raise InputError(f"{content}: corrupt or truncated image (in {Path(content).parent})")

    said: list[str] = []
    app = serve.create_app(_settings(tmp_path, image_dir), weights={}, transfer=Failing(), say=said.append)
    c = _client(app)
    good = {"content": "demo-content", "style": "demo-style", "size": 32, "iterations": 2}
    bodies = [json.dumps({**good, "size": v}) for v in ([32], {"a": 1}, "1" * 5000, 1e308, True, None, "32")]
    bodies += [json.dumps({**good, k: v}) for k, v in (("content", ["demo-content"]), ("style", {"$ne": 1}),
                                                       ("preset", ["gatys"]), ("preserve_colors", 1), ("style_loss", 2),
                                                       ("iterations", 2.5), ("style_weight", "NaN"),
                                                       ("extra", 1), ("content", None))]
    bodies += ["[" * 100_000 + "]" * 100_000, '{"size": NaN}', '{"size": Infinity}', "[]", '"x"', "1" * 5000,
               "{" * 50, json.dumps(good)[:-1], "\xff\xfe", json.dumps({**good, "pad": "x" * 20_000})]
    for body in bodies:
        r = c.post("/api/runs", data=body, content_type="application/json")
        assert r.status_code == 400, (body[:60], r.status_code, r.data[:200])
        error = r.json["error"]
        assert "\n" not in error and "Traceback" not in error and len(error) < 200, error
    assert c.post("/api/runs", data=json.dumps(good), content_type="text/plain").status_code == 400
    # a run's message names images, not the server's paths
    run = c.post("/api/runs", json=good).json["id"]
    s = _wait(c, run, lambda s: s["status"] == "failed")
    assert s["message"] == "content.png: corrupt or truncated image (in the demo folder)", s
    assert str(tmp_path) not in json.dumps(s) and not any(str(image_dir) in line for line in said)
    assert said[-1].startswith(f"jaxstyle: run {run[:8]} failed after 0 iterations in ")
    # a result file removed from disk: 404, one line
    worker = app.extensions["jaxstyle"]
    gone = worker.runs[run]
    gone.result = tmp_path / "srv" / "results" / f"{run}.png"
    r = c.get(f"/api/runs/{run}/result.png")
    assert r.status_code == 404 and r.json["error"] == "the result's file is gone from the server's folder"
    # its folders removed under it: made again, or one line
    import shutil
    shutil.rmtree(tmp_path / "srv" / "uploads")
    assert c.post("/api/images", data={"file": (io.BytesIO(_png()), "a.png")}).status_code == 201
    shutil.rmtree(tmp_path / "srv" / "uploads")
    (tmp_path / "srv" / "uploads").write_bytes(b"a file where the folder was")
    r = c.post("/api/images", data={"file": (io.BytesIO(_png()), "a.png")})
    assert r.status_code == 507 and r.json["error"] == "cannot store the upload (File exists)", r.json


def test_stopping_the_server_stops_its_run_at_a_chunk_and_keeps_the_image(tmp_path, image_dir, monkeypatch):
    import _thread
    import signal
    fake = FakeTransfer()
    said: list[str] = []
    apps: list = []
    sent: list[bool] = []
    original = serve.create_app

    def create_app(*a, **kw):
        apps.append(original(a[0], a[1], fake, **kw))
        return apps[-1]

    monkeypatch.setattr(serve, "create_app", create_app)

    def drive() -> None:
        try:
            end = time.monotonic() + 20
            while not apps and time.monotonic() < end:
                time.sleep(0.01)
            c = _client(apps[0])
            runs = [c.post("/api/runs", json={"content": "demo-content", "style": "demo-style",
                                              "size": 32}).json["id"] for _ in range(2)]
            _wait(c, runs[0], lambda s: s["status"] == "running", timeout=20)
        finally:
            # SIGTERM as a service manager sends it, to the main thread serving, once serve() has put its
            # handler in place (on a loaded machine this thread can get here first, and SIGTERM's default
            # action would kill the test process); never installed, the main thread is interrupted instead
            end = time.monotonic() + 30
            while signal.getsignal(signal.SIGTERM) is not serve._interrupt and time.monotonic() < end:
                time.sleep(0.01)
            if signal.getsignal(signal.SIGTERM) is serve._interrupt:
                sent.append(True)
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                _thread.interrupt_main()

    thread = threading.Thread(target=drive)
    thread.start()
    serve.serve(_settings(tmp_path, image_dir), {}, "127.0.0.1", 0, say=said.append)
    thread.join(10)
    assert sent, "serve() never put its SIGTERM handler in place"
    worker = apps[0].extensions["jaxstyle"]
    first, second = sorted(worker.runs.values(), key=lambda r: r.order)
    assert (first.status, second.status) == ("interrupted", "cancelled")
    assert first.result is not None and first.result.is_file() and not worker.thread.is_alive()
    assert said[-2:] == ["jaxstyle: stopping the run after its current chunk; its image is kept in results/",
                         f"jaxstyle: run {first.id[:8]} interrupted after 300 iterations in 0 s; "
                         f"image in results/{first.id}.png"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_serve_without_the_web_extra_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "flask", None)  # import flask -> ImportError
    monkeypatch.delitem(sys.modules, "jaxstyle.faces.serve")
    monkeypatch.delattr(jaxstyle.faces, "serve")
    with pytest.raises(SystemExit) as e:
        cli.main(["serve", "--help"])
    assert e.value.code == 0 and "--max-upload-mb" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["serve", "--folder", "unused"])
    err = capsys.readouterr().err
    assert e.value.code != 0
    assert err.strip().splitlines() == ["jaxstyle: error: `jaxstyle serve` needs the web extra: "
                                        "pip install 'jaxstyle[web]'"]


def test_the_command_serves_on_localhost_until_interrupted_and_the_core_never_imports_it(tmp_path, synthetic_h5):
    import json
    import signal
    import subprocess
    import urllib.request
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    code = ("import sys, jaxstyle.faces.api, jaxstyle.faces.cli, jaxstyle.run.execute, jaxstyle.observers.progress; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'waitress', 'werkzeug') "
            "or m == 'jaxstyle.faces.serve'))")
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout == "[]\n"
    folder = tmp_path / "srv"
    proc = subprocess.Popen([sys.executable, "-m", "jaxstyle", "serve", "--port", "0", "--folder", str(folder),
                             "--weights", str(synthetic_h5), "--device", "cpu"], env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        while line and "serving" not in line:
            line = proc.stderr.readline()
        assert line.startswith("jaxstyle: serving http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split()[2]
        with urllib.request.urlopen(url, timeout=10) as r:
            page = r.read().decode()
        assert "<title>jaxstyle</title>" in page
        token = page.split('name="jaxstyle-token" content="')[1].split('"')[0]
        ask = urllib.request.Request(url + "api/config", headers={"X-Jaxstyle-Token": token})
        with urllib.request.urlopen(ask, timeout=10) as r:
            assert json.load(r)["max_upload_mb"] == 20
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=30)[1]
    assert proc.returncode == 0 and rest.strip().splitlines()[-1] == "jaxstyle: stopped serving", rest
    assert {p.name for p in folder.iterdir()} <= {"uploads", "results", "tmp", "xla"}


# --- in a real browser --------------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium driven by Selenium, downloading into tmp_path/downloads, or skip."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the [test] extra)")
    from selenium.webdriver.chrome.service import Service
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(f"no {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(arg)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def test_in_a_browser_upload_start_watch_stop_and_download(tmp_path, image_dir, synthetic_params, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    server, worker = serve.make_server(_settings(tmp_path, image_dir, preview_interval=0.3), synthetic_params,
                                       "127.0.0.1", 0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        browser.get(serve.urls(server)[0])
        page = lambda: browser.execute_script("return window.jaxstyle")  # noqa: E731
        wait = WebDriverWait(browser, 60, poll_frequency=0.1)
        wait.until(lambda d: len(Select(d.find_element(By.ID, "style")).options) > 1)
        browser.find_element(By.ID, "content-file").send_keys(str(image_dir / "content.png"))
        wait.until(lambda d: d.find_element(By.ID, "content").get_attribute("value") not in ("", None))
        shown = lambda i: browser.find_element(By.ID, i).is_displayed()  # noqa: E731
        assert not any(shown(i) for i in ("preview", "curve", "style-thumb"))  # no broken images before a run
        assert shown("content-thumb")
        Select(browser.find_element(By.ID, "style")).select_by_value("demo-style")
        for name, value in (("size", "32"), ("iterations", "3000")):
            field = browser.find_element(By.ID, name)
            field.clear()
            field.send_keys(value)
        Select(browser.find_element(By.ID, "preserve_colors")).select_by_value("histogram")
        Select(browser.find_element(By.ID, "style_loss")).select_by_value("meanstd")
        browser.find_element(By.ID, "start").click()
        wait.until(lambda d: page()["previews"] >= 1 or page()["status"] in ("done", "failed"))
        run = page()["run"]
        browser.refresh()  # the page forgets nothing: it reconnects to the run it started
        wait.until(lambda d: page()["run"] == run and page()["previews"] >= 2 or page()["status"] in ("done", "failed"))
        assert page()["run"] == run and page()["previews"] >= 2, page()
        photos = Select(browser.find_element(By.ID, "content")).options
        assert [o.text for o in photos if o.get_attribute("value") not in ("", "demo-content", "demo-style",
                                                                           "demo-style2")] == ["content.png (64×48)"]
        assert [r["id"] for r in page()["runs"]] == [run]
        form = {k: browser.find_element(By.ID, k).get_attribute("value") for k in ("style", "size", "iterations",
                                                                                  "preserve_colors", "style_loss")}
        assert form == {"style": "demo-style", "size": "32", "iterations": "3000", "preserve_colors": "histogram",
                        "style_loss": "meanstd"}
        assert worker.runs[run].config.style_loss == "meanstd"
        assert browser.find_element(By.ID, "content-thumb").is_displayed()
        assert browser.find_element(By.ID, "start").get_attribute("disabled") is not None
        shot = os.environ.get("JAXSTYLE_SCREENSHOT")
        if shot:
            browser.save_screenshot(shot)
        assert page()["status"] == "running"
        assert browser.find_element(By.ID, "curve").get_attribute("naturalWidth") != "0"
        browser.find_element(By.ID, "stop").click()  # the image so far is kept
        wait.until(lambda d: page()["status"] not in ("running", "compiling"))
        assert page()["status"] == "interrupted", browser.find_element(By.ID, "status").text
        assert "stopped (the image so far is kept)" in browser.find_element(By.ID, "status").text
        assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None
        browser.find_element(By.ID, "download").click()
        WebDriverWait(browser, 20).until(lambda d: [p for p in browser.downloads.glob("*.png")])
        got = next(browser.downloads.glob("*.png"))
        assert got.name == "content_style-32px.png"
        assert imageio.load_image(got).shape == (24, 32, 3)
        assert "iteration" in browser.find_element(By.ID, "status").text
        assert all(f.startswith(("results/", "uploads/")) for f in _files(tmp_path / "srv"))
    finally:
        browser.get("about:blank")  # no request in flight when the server closes
        worker.close()
        server.task_dispatcher.shutdown()
        server.close()
        thread.join(10)


def test_the_package_ships_the_page_and_the_extras_agree():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    assert set(extras["web"]) <= set(extras["test"])  # the server's tests run wherever the tests do
    assert "serve.html" in project["tool"]["setuptools"]["package-data"]["jaxstyle.faces"]

"""`jaxstyle serve`: the app through Flask's test client (uploads, limits, bad images, path
safety, queueing, stopping) and end to end in a real headless Chromium driven by Selenium
(upload, start, preview updates, stop, download), on 32 px images with synthetic weights.
Runs are real in the browser test (a stopped one: the image so far is what downloads) and
stand-ins elsewhere; tests/test_live.py stops real runs through the API."""
from __future__ import annotations

import io
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import jaxstyle
from jaxstyle import cli, imageio
from jaxstyle.results import Result

flask = pytest.importorskip("flask", reason="the web extra is not installed: pip install '.[web]'")
pytest.importorskip("waitress", reason="the web extra is not installed: pip install '.[web]'")

from jaxstyle import serve  # noqa: E402

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
                          ({"preserve_colors": "sepia"}, "Colours: unknown 'sepia'")):
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


def test_serve_without_the_web_extra_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "flask", None)  # import flask -> ImportError
    monkeypatch.delitem(sys.modules, "jaxstyle.serve")
    monkeypatch.delattr(jaxstyle, "serve")
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
    code = ("import sys, jaxstyle.api, jaxstyle.cli, jaxstyle.run, jaxstyle.progress; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'waitress', 'werkzeug') "
            "or m == 'jaxstyle.serve'))")
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
        Select(browser.find_element(By.ID, "style")).select_by_value("demo-style")
        for name, value in (("size", "32"), ("iterations", "3000")):
            field = browser.find_element(By.ID, name)
            field.clear()
            field.send_keys(value)
        Select(browser.find_element(By.ID, "preserve_colors")).select_by_value("histogram")
        browser.find_element(By.ID, "start").click()
        wait.until(lambda d: page()["previews"] >= 2 or page()["status"] in ("done", "failed"))
        assert page()["previews"] >= 2, page()
        shot = os.environ.get("JAXSTYLE_SCREENSHOT")
        if shot:
            browser.save_screenshot(shot)
        assert page()["status"] == "running"
        assert browser.find_element(By.ID, "curve").get_attribute("naturalWidth") != "0"
        browser.find_element(By.ID, "stop").click()  # the image so far is kept
        wait.until(lambda d: page()["status"] not in ("running", "compiling"))
        assert page()["status"] == "interrupted", browser.find_element(By.ID, "status").text
        assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None
        browser.find_element(By.ID, "download").click()
        WebDriverWait(browser, 20).until(lambda d: [p for p in browser.downloads.glob("*.png")])
        got = next(browser.downloads.glob("*.png"))
        assert imageio.load_image(got).shape == (24, 32, 3)
        assert "iteration" in browser.find_element(By.ID, "status").text
        assert all(f.startswith(("results/", "uploads/")) for f in _files(tmp_path / "srv"))
    finally:
        worker.close()
        server.close()
        thread.join(10)


def test_the_package_ships_the_page_and_the_extras_agree():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    assert set(extras["web"]) <= set(extras["test"])  # the server's tests run wherever the tests do
    assert "serve.html" in project["tool"]["setuptools"]["package-data"]["jaxstyle"]

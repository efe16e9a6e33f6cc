"""Takes docs/serve.png, the README's picture of `jaxstyle serve`: starts the real command with
the ImageNet weights and the shared images, drives headless Chromium through a run, and
captures the page mid-run. Run from the repository root, with the [test] extra installed and
Debian's chromium and chromium-driver:

    python docs/serve_screenshot.py [SIZE] [ITERATIONS]
"""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
size, iterations = (sys.argv[1:] + ["192", "300"])[:2]

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
folder = tempfile.mkdtemp(prefix="jaxstyle-serve-")
server = subprocess.Popen([sys.executable, "-m", "jaxstyle", "serve", "--port", str(port), "--folder", folder,
                           "--demo", str(SHARED / "images"), "--weights",
                           str(SHARED / "weights" / "vgg16_imagenet_notop.h5")],
                          stderr=subprocess.PIPE, text=True)
line = server.stderr.readline()
while "serving" not in line:
    if not line:
        sys.exit(f"the server did not start: {server.stderr.read()}")
    line = server.stderr.readline()
url = re.search(r"http://\S+/", line).group(0)
print(line.strip())

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,860"):
    options.add_argument(arg)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
try:
    driver.get(url)
    wait = WebDriverWait(driver, 300, poll_frequency=0.2)
    wait.until(lambda d: len(Select(d.find_element(By.ID, "style")).options) > 1)
    Select(driver.find_element(By.ID, "content")).select_by_value("demo-tubingen")
    Select(driver.find_element(By.ID, "style")).select_by_value("demo-starry_night")
    for name, value in (("size", size), ("iterations", iterations)):
        driver.find_element(By.ID, name).clear()
        driver.find_element(By.ID, name).send_keys(value)
    driver.find_element(By.ID, "start").click()
    page = lambda: driver.execute_script("return window.jaxstyle")  # noqa: E731
    status = lambda: driver.execute_script(  # noqa: E731
        "return fetch('/api/runs/' + window.jaxstyle.run.execute, {headers: {'X-Jaxstyle-Token': "
        "document.querySelector('meta[name=\"jaxstyle-token\"]').content}}).then(r => r.json())")
    wait.until(lambda d: page()["previews"] >= 3 and status().get("iteration", 0) >= int(iterations) // 3)
    time.sleep(0.5)  # the last preview drawn
    driver.save_screenshot(str(REPO / "docs" / "serve.png"))
    print("wrote docs/serve.png at", status()["iteration"], "iterations")
    driver.find_element(By.ID, "stop").click()
    wait.until(lambda d: page()["status"] == "interrupted")
finally:
    driver.quit()
    server.send_signal(signal.SIGINT)
    print(server.communicate(timeout=30)[1].strip())
    os.system(f"rm -r {folder}")

"""The report in a real browser: headless Chromium over the DevTools protocol.

Runs only where Chromium is installed (Debian: `apt-get install chromium`).
Opens the report built from the synthetic workdir of test_report.py and checks
that the page logs no console error, that every image decodes, and that the
summary table has one row per variant; saves a full-page screenshot into the
test's tmp dir and, when REPORT_SCREENSHOT_DIR is set, there too.
"""
import base64
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request

import pytest

from pie.report import build, sections
from test_report import VARIANTS, make_workdir

CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--remote-debugging-port=0", "--window-size=1400,1000",
]
TIMEOUT = 20.0
SCREENSHOT_WIDTH = 1400
MAX_SCREENSHOT_HEIGHT = 16000

pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="chromium is not installed (apt-get install chromium)")


class DevTools:
    """A minimal Chrome DevTools protocol client on one page target."""

    def __init__(self, url):
        import websocket  # websocket-client, a test extra

        self.socket = websocket.create_connection(url, timeout=TIMEOUT, suppress_origin=True)
        self.next_id = 0
        self.events = []

    def call(self, method, **params):
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)
        raise TimeoutError(f"no answer to {method} in {TIMEOUT} s")

    def wait_for(self, event):
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            if any(e.get("method") == event for e in self.events):
                return
            self.events.append(json.loads(self.socket.recv()))
        raise TimeoutError(f"no {event} in {TIMEOUT} s")

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"]["value"]

    def errors(self):
        """Console errors, uncaught exceptions and browser log errors seen so far."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(" ".join(str(a.get("value")) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                found.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(params["entry"].get("text", ""))
        return found


def _page_socket(process):
    """The DevTools websocket of a new page, from the port Chromium announces.

    Chromium prints `DevTools listening on ws://127.0.0.1:<port>/...` on stderr
    once it accepts connections: reading that line waits exactly as long as needed.
    """
    announced = None
    for line in process.stderr:
        if line.startswith("DevTools listening on "):
            announced = line.split()[-1]
            break
    if announced is None:
        raise RuntimeError(f"chromium exited ({process.wait()}) without opening DevTools")
    # Keep reading stderr so Chromium never blocks on a full pipe.
    threading.Thread(target=process.stderr.read, daemon=True).start()
    port = announced.split(":")[2].split("/")[0]
    request = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank",
                                     method="PUT")
    with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
        return json.load(answer)["webSocketDebuggerUrl"]


@pytest.fixture
def browser(tmp_path):
    profile = str(tmp_path / "profile")
    process = subprocess.Popen(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    tools = None
    try:
        tools = DevTools(_page_socket(process))
        yield tools
    finally:
        if tools is not None:
            tools.socket.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_report_opens_in_chromium_without_errors(browser, tmp_path):
    workdir = make_workdir(str(tmp_path / "w"))
    page = build.build_report(workdir, log=lambda line: None)
    with open(page) as handle:
        n_images = handle.read().count("<img ")
    browser.call("Runtime.enable")
    browser.call("Log.enable")
    browser.call("Page.enable")
    browser.call("Page.navigate", url="file://" + os.path.abspath(page))
    browser.wait_for("Page.loadEventFired")

    assert browser.errors() == []
    images = browser.evaluate(
        "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
    assert len(images) == n_images > 0
    assert [alt for alt, complete, width in images if not (complete and width > 0)] == []
    rows = browser.evaluate("Array.from(document.querySelectorAll("
                            "'#summary-table tbody tr.variant-row')).map(r => r.dataset.variant)")
    assert rows == [sections.records.variant_key(m, s) for m, s in VARIANTS]
    # Every registered section made it onto the rendered page, filled.
    shown = browser.evaluate("Array.from(document.querySelectorAll('main section'))"
                             ".map(s => [s.id, s.classList.contains('not-measured')])")
    assert shown == [[name, False] for name in sections.SECTIONS]

    height = browser.call("Page.getLayoutMetrics")["cssContentSize"]["height"]
    browser.call("Emulation.setDeviceMetricsOverride", width=SCREENSHOT_WIDTH,
                 height=int(min(height, MAX_SCREENSHOT_HEIGHT)), deviceScaleFactor=1,
                 mobile=False)
    shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
    assert shot.startswith(b"\x89PNG")
    (tmp_path / "report.png").write_bytes(shot)
    target = os.environ.get("REPORT_SCREENSHOT_DIR")
    if target:
        os.makedirs(target, exist_ok=True)
        with open(os.path.join(target, "report.png"), "wb") as handle:
            handle.write(shot)
    assert browser.errors() == []

"""The report in a real browser: headless Chromium loads it with no script, no error and no broken image."""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from pipeline.report.run import ReportConfig, run_report

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe): no websockets."""

    def __init__(self, profile: Path, width: int = 1200, height: int = 900) -> None:
        r3, w3 = os.pipe()
        r4, w4 = os.pipe()
        self.proc = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}", "--remote-debugging-pipe",
             f"--window-size={width},{height}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=lambda: (os.dup2(r3, 3), os.dup2(w4, 4)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(r3)
        os.close(w4)
        self.w, self.r, self.buf, self.next_id, self.events = w3, r4, b"", 0, []
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Page"):
                self.call(f"{domain}.enable", session=True)
            self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                             "deviceScaleFactor": 1, "mobile": False}, session=True)
        except BaseException:
            self.close()
            raise

    def _recv(self, deadline: float) -> dict:
        while b"\0" not in self.buf:
            ready, _, _ = select.select([self.r], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self.r, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed the pipe")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, session: bool = False, timeout: float = 30) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._recv(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def load(self, url: str, timeout: float = 30) -> None:
        self.events.clear()
        self.call("Page.navigate", {"url": url}, session=True)
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._recv(deadline))

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                         session=True)["result"].get("value")

    def errors(self) -> list[str]:
        """Uncaught exceptions, console errors/warnings and failed loads (Log entries at level error)."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(json.dumps(p["exceptionDetails"])[:300])
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
                out.append(json.dumps(p.get("args"))[:300])
            elif m == "Log.entryAdded" and p["entry"].get("level") in ("error", "warning"):
                out.append(f"{p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", {"format": "png"}, session=True)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (OSError, EOFError, TimeoutError, RuntimeError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.w)
        os.close(self.r)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install chromium)")
def test_report_loads_in_headless_chromium(folder_run, tmp_path):
    run_report(ReportConfig(out=str(folder_run), report=str(tmp_path / "r")))
    browser = Browser(tmp_path / "profile")
    try:
        browser.load((tmp_path / "r" / "index.html").as_uri())
        assert browser.evaluate("document.querySelectorAll('div.group').length") == 3
        assert browser.evaluate("document.querySelectorAll('div.group figure.keeper').length") == 3
        assert browser.evaluate("document.scripts.length") == 0
        assert browser.evaluate("document.body.innerText.includes('evil<script>alert(1)</script>.jpg')")
        browser.evaluate("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
        deadline = time.monotonic() + 20
        while not browser.evaluate("[...document.images].every(i => i.complete)") and time.monotonic() < deadline:
            time.sleep(0.1)
        broken = browser.evaluate("[...document.images].filter(i => !i.naturalWidth).map(i => i.src)")
        plots = len(list((tmp_path / "r").glob("*.png")))  # the throughput plot only when shards finished apart
        assert broken == [] and browser.evaluate("document.images.length") == 7 + plots
        artifacts = REPO / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        browser.screenshot(artifacts / "report.png")
        assert browser.errors() == []
    finally:
        browser.close()
    assert Image.open(artifacts / "report.png").size == (1200, 900)

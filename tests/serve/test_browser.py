"""The pages in a real browser: headless Chromium uploads a photo, sees k results, follows one, changes a keeper."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

from pipeline.dedup.decisions import read_decisions
from pipeline.serve.run import BackgroundServer
from tests.report.test_browser import CHROMIUM, Browser
from tests.serve.conftest import serve_config

REPO = Path(__file__).resolve().parents[2]


def act(browser: Browser, expression: str, timeout: float = 30) -> None:
    """Run `expression` (a click or a submit) and wait until the page it leads to has loaded."""
    browser.events.clear()
    browser.evaluate(expression)
    deadline = time.monotonic() + timeout
    while not any(e.get("method") == "Page.loadEventFired" for e in browser.events):
        browser.events.append(browser._recv(deadline))


def images_loaded(browser: Browser) -> list[str]:
    """Waits for every image of the page; returns the sources of those that did not load."""
    deadline = time.monotonic() + 20
    while not browser.evaluate("[...document.images].every(i => i.complete)") and time.monotonic() < deadline:
        time.sleep(0.1)
    return browser.evaluate("[...document.images].filter(i => !i.naturalWidth).map(i => i.src)")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install chromium)")
def test_upload_search_follow_and_change_a_keeper_in_chromium(folder_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(folder_root, root)
    photo = folder_root.parent / "photos" / "img05.jpg"
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with BackgroundServer(serve_config(folder_root, root=str(root), reviewer="chromium")) as url:
        browser = Browser(tmp_path / "profile")
        errors: list[str] = []
        try:
            browser.load(f"{url}/")
            browser.call("DOM.enable", session=True)
            document = browser.call("DOM.getDocument", {"depth": 0}, session=True)["root"]["nodeId"]
            node = browser.call("DOM.querySelector", {"nodeId": document, "selector": "input[type=file]"},
                                session=True)["nodeId"]
            browser.call("DOM.setFileInputFiles", {"files": [str(photo)], "nodeId": node}, session=True)
            browser.evaluate("document.querySelector('input[name=k]').value = '4'")
            act(browser, "document.getElementById('upload').submit()")
            assert browser.evaluate("document.querySelectorAll('figure.result').length") == 4
            assert browser.evaluate("document.querySelector('figure.result .key').textContent") == "img05.jpg"
            assert browser.evaluate("document.scripts.length") == 0
            assert images_loaded(browser) == []  # the 4 thumbnails and the uploaded query's own
            assert browser.evaluate("document.images.length") == 5
            browser.screenshot(artifacts / "serve-search.png")
            errors += browser.errors()

            act(browser, "document.querySelectorAll('figure.result a')[1].click()")  # search from a result
            assert "/search?id=" in browser.evaluate("location.href")
            assert browser.evaluate("document.querySelectorAll('figure.result').length") == 4
            errors += browser.errors()

            browser.load(f"{url}/groups")
            first = "document.querySelector('section.group')"
            # byte-identical copies: the shortest path is kept
            assert browser.evaluate(f"{first}.querySelector('figure.keeper .key').textContent") == "img00.jpg"
            act(browser, f"{first}.querySelectorAll('button.make-keeper')[0].click()")  # copies/img00_a.jpg's
            assert browser.evaluate(f"{first}.querySelector('figure.keeper .key').textContent") == "copies/img00_a.jpg"
            assert "keeper by chromium" in browser.evaluate(f"{first}.textContent")
            assert images_loaded(browser) == []
            browser.screenshot(artifacts / "serve-groups.png")
            errors += browser.errors()
        finally:
            browser.close()
    log = read_decisions(root).to_pylist()
    assert [(d["action"], d["key"], d["who"]) for d in log] == [("keeper", "copies/img00_a.jpg", "chromium")]
    assert errors == []
    assert Image.open(artifacts / "serve-search.png").size == (1200, 900)

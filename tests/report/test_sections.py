"""The HTML report (structure, escaping, a real browser), the search page, and the PCA picture."""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image
from webdataset import TarWriter

from pipeline.dedup.config import DedupConfig
from pipeline.dedup.run import run_dedup
from pipeline.extract.runner import run_extract
from tests.conftest import TINY_KWARGS, TINY_MODEL, jpeg_bytes, make_image, tiny_config

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
EVIL = "evil<script>alert(1)</script>.jpg"  # a key (folder `evil<script>alert(1)<` + file `script>.jpg`)
BROKEN = "broken & <b>bad.jpg"


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> Path:
    """An extract + dedup of a folder with planted exact copies (one under a hostile name) and a corrupt file."""
    root = tmp_path_factory.mktemp("report")
    photos = root / "photos"
    (photos / "copies").mkdir(parents=True)
    for i in range(10):
        make_image(i, (96, 72)).save(photos / f"img{i:02d}.jpg", quality=90)
    for name in ("a", "b"):
        shutil.copy(photos / "img00.jpg", photos / "copies" / f"img00_{name}.jpg")  # a group of three
    shutil.copy(photos / "img01.jpg", photos / "copies" / "img01_copy.jpg")
    (photos / EVIL).parent.mkdir()
    shutil.copy(photos / "img02.jpg", photos / EVIL)
    (photos / BROKEN).write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    run_extract(tiny_config(root / "out", images=str(photos), folder_shard_size=5))  # 4 shards
    run_dedup(DedupConfig(features=str(root / "out"), progress=False))
    return root / "out"


class Collect(HTMLParser):
    """Groups (with their tiles and keeper), every link and image source of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: dict[int, dict] = {}
        self.links: list[str] = []
        self.current: int | None = None
        self.depth = 0  # open divs inside the current group

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "div" and self.current is not None:
            self.depth += 1
        if tag == "div" and "group" in classes:
            self.current, self.depth = int(a["data-component"]), 1
            self.groups[self.current] = {"keys": [], "keepers": []}
        if tag == "figure" and self.current is not None:
            self.groups[self.current]["keys"].append(a["data-key"])
            if "keeper" in classes:
                self.groups[self.current]["keepers"].append(a["data-key"])
        if tag == "img":
            self.links.append(a["src"])
        if tag == "a" and "href" in a:
            self.links.append(a["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self.current is not None:
            self.depth -= 1
            if self.depth == 0:
                self.current = None


def parse_pages(folder: Path) -> dict[str, Collect]:
    pages = {}
    for path in sorted(folder.glob("*.html")):
        c = Collect()
        c.feed(path.read_text(encoding="utf-8"))
        pages[path.name] = c
    return pages


def test_report_shows_every_group_with_its_keeper_and_every_link_resolves(folder_run, tmp_path):
    from pipeline.report.run import ReportConfig, run_report

    info = run_report(ReportConfig(out=str(folder_run), report=str(tmp_path / "r"), groups_per_page=2))
    groups = pd.read_parquet(folder_run / "dedup" / "groups.parquet")
    multi = groups[groups.component_size > 1]
    assert multi.component.nunique() == 3 and info["dedup"] == {"groups": 3, "groups_shown": 3}
    assert info["sections"] == ["dedup", "extract"] and info["pages"] == 2 and not info["unavailable"]
    pages = parse_pages(tmp_path / "r")
    assert set(pages) == {"index.html", "dedup-2.html"}
    shown = {c: g for p in pages.values() for c, g in p.groups.items()}
    assert set(shown) == set(multi.component)
    sizes = [len(g["keys"]) for g in pages["index.html"].groups.values()] + \
            [len(g["keys"]) for g in pages["dedup-2.html"].groups.values()]
    assert sizes == sorted(sizes, reverse=True) == [3, 2, 2]  # largest first, across pages
    for component, g in shown.items():
        rows = multi[multi.component == component]
        assert sorted(g["keys"]) == sorted(rows.key)
        assert g["keepers"] == list(rows[rows.keep].key)
    assert any(EVIL in g["keys"] for g in shown.values())
    links = [link for p in pages.values() for link in p.links]
    assert "dedup-2.html" in links and any(link.startswith("thumbs/") for link in links)
    for link in links:
        assert "://" not in link and not link.startswith("/"), link
        target = link.split("#")[0]
        assert target and (tmp_path / "r" / target).is_file(), link
    for png in ("nearest_similarity.png", "component_sizes.png"):
        assert Image.open(tmp_path / "r" / png).format == "PNG"
    thumbs = list((tmp_path / "r" / "thumbs").glob("*.jpg"))
    assert len(thumbs) == len(multi) and all(max(Image.open(t).size) <= 128 for t in thumbs)
    text = (tmp_path / "r" / "index.html").read_text()
    assert "broken &amp; &lt;b&gt;bad.jpg" in text and "Truncated File Read" in text  # the corrupt file, listed


def test_keys_and_paths_are_escaped(folder_run, tmp_path):
    from pipeline.report.run import ReportConfig, run_report

    run_report(ReportConfig(out=str(folder_run), report=str(tmp_path / "r")))
    text = "".join(p.read_text() for p in (tmp_path / "r").glob("*.html"))
    assert "<script" not in text and "<b>bad" not in text
    assert "evil&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in text
    assert "broken &amp; &lt;b&gt;bad.jpg" in text


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
    from pipeline.report.run import ReportConfig, run_report

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


@pytest.fixture(scope="module")
def shard_run(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """An extract + dedup of one tar shard with two exact copies; keys map to the colour index of the image."""
    root = tmp_path_factory.mktemp("report_tar")
    colour = {}
    with TarWriter(str(root / "train-000000.tar"), encoder=False) as sink:
        for n, i in enumerate([0, 1, 2, 3, 1, 4, 5, 1]):
            key = f"k{n:02d}"
            sink.write({"__key__": key, "jpg": jpeg_bytes(make_image(i * 3, (80, 60)), quality=95),
                        "cls": b"0"})
            colour[key] = i * 3
    run_extract(tiny_config(root / "out", shards=(str(root / "train-000000.tar"),)))
    run_dedup(DedupConfig(features=str(root / "out"), progress=False))
    return root / "out", colour


def mean_colour(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), np.float64).reshape(-1, 3).mean(0)


def test_report_of_shards_with_search_and_curate_reads_the_right_images(shard_run, tmp_path):
    from pipeline.curate.retrieval import CurateConfig, run_curate
    from pipeline.index.build import IndexConfig, build_index
    from pipeline.report.run import ReportConfig, run_report, write_search_page
    from pipeline.index.search import run_search

    out, colour = shard_run
    build_index(IndexConfig(features=str(out), progress=False))
    table = run_search(str(out / "index"), str(out), k=3)  # the features as queries: no re-extraction
    table.to_pandas().to_csv(tmp_path / "search.csv", index=False)
    run_curate(CurateConfig(pool=str(out), queries=(("self", str(out)),), mode="sample", k=2, progress=False))
    info = run_report(ReportConfig(out=str(out), report=str(tmp_path / "r"), search=str(tmp_path / "search.csv"),
                                   search_queries=str(out), curate_samples=3))
    assert info["sections"] == ["dedup", "search", "curate", "extract"] and not info["unavailable"]
    assert info["dedup"]["groups"] == 1 and info["search"]["queries"] == 8 and info["curate"]["samples_shown"] == 3
    page = parse_pages(tmp_path / "r")["index.html"]
    assert [sorted(g["keys"]) for g in page.groups.values()] == [["k01", "k04", "k07"]]
    text = (tmp_path / "r" / "index.html").read_text()
    # every thumbnail is the image of its key: compare mean colours with the source image
    shown = {}

    class Tiles(HTMLParser):
        key = None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "figure":
                self.key = a.get("data-key")
            if tag == "img" and self.key and a["src"].startswith("thumbs/"):
                shown.setdefault(self.key, set()).add(a["src"])

    Tiles().feed(text)
    assert set(shown) == set(colour)
    for key, srcs in shown.items():
        expected = mean_colour(make_image(colour[key], (80, 60)))
        for src in srcs:
            assert np.abs(mean_colour(Image.open(tmp_path / "r" / src)) - expected).max() < 6, key
    single = write_search_page(table, tmp_path / "s" / "k03.html", out, query="k03", query_source=str(out))
    c = Collect()
    c.feed(single.read_text())
    assert len(c.links) == 1 + 3 and all((single.parent / link).is_file() for link in c.links)
    assert "query: k03" in single.read_text() and "query: k02" not in single.read_text()
    lost = write_search_page(table, tmp_path / "lost" / "k03.html", tmp_path / "nowhere", query="k03")
    assert "<img" not in lost.read_text() and lost.read_text().count("image unavailable") == 3


def test_report_cli_and_an_empty_root(folder_run, tmp_path, capsys):
    from jobs.report import main

    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(folder_run), "--report", str(tmp_path / "r"), "--max-members", "2", "--log-level",
              "WARNING"])
    assert exit_.value.code == 0 and "dedup, extract; 1 pages, 6 thumbnails" in capsys.readouterr().out
    groups = parse_pages(tmp_path / "r")["index.html"].groups
    assert [len(g["keys"]) for g in groups.values()] == [2, 2, 2] and all(len(g["keepers"]) == 1
                                                                          for g in groups.values())
    assert "… and 1 more (component" in (tmp_path / "r" / "index.html").read_text()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(tmp_path / "empty"), "--log-level", "WARNING"])
    assert exit_.value.code == 0 and "nothing to report" in capsys.readouterr().out
    assert "Nothing to report" in (tmp_path / "empty" / "report" / "index.html").read_text()


def test_extract_section_throughput_and_failing_keys(tmp_path):
    """Markers finished at known times, failures with hostile keys; no config.json: no thumbnails needed."""
    from pipeline.report.run import ReportConfig, run_report
    from pipeline.io.schema import FAILURE_SCHEMA
    from pipeline.layout import OutputRoot

    store = OutputRoot(tmp_path / "out")
    for s in range(4):
        failures = [{"key": f"<i>{s}-{n}</i>", "shard": f"s{s}", "index": n, "stage": "decode",
                     "reason": "UnidentifiedImageError", "detail": "cannot identify"} for n in range(s)]
        marker = {"shard": f"s{s}", "samples": 100, "rows": 100 - s, "failures": s,
                  "failures_by_reason": {"UnidentifiedImageError": s} if s else {},
                  "finished": f"2026-01-01T10:00:{10 * s:02d}+0000"}
        store.write_shard(f"s{s}", pa.table({"key": ["x"]}), pa.Table.from_pylist(failures, schema=FAILURE_SCHEMA),
                          marker)
    info = run_report(ReportConfig(out=str(store.root), max_failures=4))
    text = (store.root / "report" / "index.html").read_text()
    assert info["sections"] == ["extract"] and info["extract"] == {"shards": 4, "failures": 6}
    assert Image.open(store.root / "report" / "throughput.png").format == "PNG"
    assert "4 shards finished over 30 s" in text and "2 more in failures/*.parquet" in text
    assert "&lt;i&gt;1-0&lt;/i&gt;" in text and "<i>" not in text


def object_on_flat_background(i: int, size: int = 112) -> Image.Image:
    rng = np.random.default_rng(i)
    arr = np.full((size, size, 3), 128, np.uint8)
    a, b = size // 4, 3 * size // 4
    arr[a:b, a:b] = rng.integers(0, 256, (b - a, b - a, 3))
    return Image.fromarray(arr)


def test_pca_picture_shape_determinism_and_mask(tmp_path):
    from pipeline.report.pca import PcaConfig, run_pca

    (tmp_path / "in" / "sub").mkdir(parents=True)
    for i in range(3):
        object_on_flat_background(i).save(tmp_path / "in" / ("sub" if i == 2 else "") / f"obj{i}.png")
    (tmp_path / "in" / "bad.jpg").write_bytes(b"not an image at all")
    cfg = dict(images=str(tmp_path / "in"), weights="random", model=TINY_MODEL, model_kwargs=TINY_KWARGS,
               resolution=112, device="cpu")
    record = run_pca(PcaConfig(out=str(tmp_path / "a"), **cfg))
    assert record["grid"] == [8, 8] and list(record["failures"]) == ["bad.jpg"]
    assert record["images"] == ["obj0.png", "obj1.png", "sub/obj2.png"]
    again = run_pca(PcaConfig(out=str(tmp_path / "b"), **cfg))
    for rel in record["images"]:
        a = np.asarray(Image.open(tmp_path / "a" / f"{rel}.png"))
        assert a.shape == (112, 3 * 112, 3)  # input | PCA RGB | mask, each at the model's input size
        np.testing.assert_array_equal(a, np.asarray(Image.open(tmp_path / "b" / f"{rel}.png")))
        mask = a[7::14, 2 * 112 + 7::14, 0] > 127  # one pixel per patch
        # even random weights split flat patches from textured ones here (their inputs differ that much);
        # a pretrained DINOv2 separates objects from cluttered backgrounds, which random weights cannot
        inside = np.zeros((8, 8), bool)
        inside[2:6, 2:6] = True
        assert (mask == inside).mean() >= 0.9
    assert again["explained_variance_ratio"] == record["explained_variance_ratio"]
    fg = run_pca(PcaConfig(out=str(tmp_path / "c"), colours="foreground", **cfg))
    picture = np.asarray(Image.open(tmp_path / "c" / "obj0.png.png"))
    assert not picture[:14, 112:2 * 112].any() and fg["foreground_fraction"] == record["foreground_fraction"]


def test_pca_cli(tmp_path, capsys):
    from jobs.pca import main

    (tmp_path / "in").mkdir()
    object_on_flat_background(0, 56).save(tmp_path / "in" / "a.png")
    with pytest.raises(SystemExit) as exit_:
        main(["--images", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--weights", "random",
              "--model", TINY_MODEL, "--model-kwargs", ",".join(f"{k}={v}" for k, v in TINY_KWARGS),
              "--resolution", "56", "--device", "cpu", "--log-level", "WARNING"])
    assert exit_.value.code == 0 and "pca: 1 images, 4×4 patches each" in capsys.readouterr().out
    assert Image.open(tmp_path / "out" / "a.png.png").size == (3 * 56, 56)
    assert json.loads((tmp_path / "out" / "pca.json").read_text())["weights"]["source"] == "random"

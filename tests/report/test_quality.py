"""The report's quality section: per signal the lowest and highest images, in brute-force sort order."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from pipeline.extract.runner import run_extract
from pipeline.index.build import IndexConfig, build_index
from pipeline.index.knn import KnnConfig, run_knn
from pipeline.index.outlier import read_outlier
from pipeline.io.stats import STATS_COLUMNS
from pipeline.report.run import ReportConfig, run_report
from pipeline.roots.features import open_features
from tests.conftest import make_image, tiny_config
from tests.report.pages import EVIL

PER_ROW = 3


class Rows(HTMLParser):
    """signal → {"lowest"/"highest": [(key, caption)]} from the quality section's tiles."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, list[list[str]]]] = {}
        self.signal = self.end = None
        self.caption: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and "data-signal" in a:
            self.signal = a["data-signal"]
            self.rows[self.signal] = {}
        if tag == "div" and "data-end" in a and self.signal:
            self.end = a["data-end"]
            self.rows[self.signal][self.end] = []
        if tag == "figure" and self.end:
            self.rows[self.signal][self.end].append([a["data-key"], ""])
        if tag == "figcaption" and self.end:
            self.caption = self.rows[self.signal][self.end][-1]

    def handle_data(self, data):
        if self.caption is not None:
            self.caption[1] += data + "|"

    def handle_endtag(self, tag):
        if tag == "figcaption":
            self.caption = None
        if tag == "section":
            self.signal = self.end = None


def parse(path: Path) -> dict:
    rows = Rows()
    rows.feed(path.read_text(encoding="utf-8"))
    return rows.rows


@pytest.fixture(scope="module")
def stats_root(tmp_path_factory) -> Path:
    """Photos of varied blur, brightness and size (one under a hostile name), extracted with --extras stats."""
    root = tmp_path_factory.mktemp("quality")
    photos = root / "photos"
    photos.mkdir()
    for i in range(9):
        img = make_image(i, (96 + 8 * i, 72)).filter(ImageFilter.GaussianBlur(i % 3))
        img.point(lambda v, i=i: int(v * (0.3 + i / 10))).save(photos / f"img{i}.jpg", quality=92)
    Image.new("RGB", (80, 80)).save(photos / "black.png")
    (photos / EVIL).parent.mkdir()
    make_image(20, (120, 60)).save(photos / EVIL)
    run_extract(tiny_config(root / "out", images=str(photos), extras=("stats",), folder_shard_size=4))
    return root / "out"


def expected(values: np.ndarray, keys: list[str]) -> tuple[list[str], list[str]]:
    """Brute force: sort (value, id) up and (-value, id) up, finite values only."""
    finite = [i for i in range(len(values)) if np.isfinite(values[i])]
    low = sorted(finite, key=lambda i: (values[i], i))[:PER_ROW]
    high = sorted(finite, key=lambda i: (-values[i], i))[:PER_ROW]
    return [keys[i] for i in low], [keys[i] for i in high]


def test_each_signal_shows_its_lowest_and_highest_images_in_order(stats_root, tmp_path):
    info = run_report(ReportConfig(out=str(stats_root), report=str(tmp_path / "r"), quality_per_row=PER_ROW)).record
    assert info["sections"] == ["quality", "extract"]
    assert info["quality"] == {"signals": list(STATS_COLUMNS), "per_row": PER_ROW, "images": 11}
    feats = pd.concat(pd.read_parquet(p) for p in sorted((stats_root / "features").glob("*.parquet")))  # id order
    keys = feats.key.tolist()
    rows = parse(tmp_path / "r" / "index.html")
    assert list(rows) == list(STATS_COLUMNS)
    for signal in STATS_COLUMNS:
        low, high = expected(feats[signal].to_numpy(np.float64), keys)
        assert [k for k, _ in rows[signal]["lowest"]] == low, signal
        assert [k for k, _ in rows[signal]["highest"]] == high, signal
        for key, caption in rows[signal]["lowest"] + rows[signal]["highest"]:
            value = float(feats.set_index("key").loc[key, signal])
            assert caption.split("|")[0] == f"{value:.4g}" and caption.split("|")[1] == key
    assert rows["brightness"]["lowest"][0][0] == "black.png" and rows["flat_share"]["highest"][0][0] == "black.png"
    assert not info["unavailable"] and info["thumbnails"] == len({k for r in rows.values() for e in r.values()
                                                                  for k, _ in e})
    text = (tmp_path / "r" / "index.html").read_text()
    assert "<script" not in text and "evil&lt;script&gt;" in text


def test_the_outlier_score_joins_when_a_knn_graph_exists(stats_root, tmp_path):
    build_index(IndexConfig(features=str(stats_root), progress=False))
    run_knn(KnnConfig(features=str(stats_root), k=4, progress=False))
    info = run_report(ReportConfig(out=str(stats_root), report=str(tmp_path / "r"), quality_per_row=PER_ROW)).record
    assert info["quality"]["signals"] == [*STATS_COLUMNS, "outlier"]
    keys = pd.concat(pd.read_parquet(p, columns=["key"]) for p in sorted((stats_root / "features").glob("*.parquet")))
    low, high = expected(read_outlier(open_features(stats_root)).astype(np.float64), keys.key.tolist())
    rows = parse(tmp_path / "r" / "index.html")["outlier"]
    assert [k for k, _ in rows["lowest"]] == low and [k for k, _ in rows["highest"]] == high


def test_no_quality_section_without_stats_columns(folder_run, tmp_path):
    info = run_report(ReportConfig(out=str(folder_run), report=str(tmp_path / "r"))).record
    assert "quality" not in info["sections"] and "quality" not in info
    assert 'id="quality"' not in (tmp_path / "r" / "index.html").read_text()

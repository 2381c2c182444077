"""The report's sections: dedup groups and pages, the k-NN outline, curate, extract health, escaping, the CLI."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image

from pipeline.layout import OutputRoot, read_graph_record, write_graph_record
from pipeline.report.run import ReportConfig, run_report
from tests.conftest import clustered_vectors, make_image, write_feature_root
from tests.report.pages import EVIL, mean_colour, parse_pages, thumbnails_by_key

OUTLINE = "the outline is every image's nearest neighbour from the k-NN graph."


def test_report_shows_every_group_with_its_keeper_and_every_link_resolves(folder_run, tmp_path):
    info = run_report(ReportConfig(out=str(folder_run), report=str(tmp_path / "r"), groups_per_page=2)).record
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
    assert OUTLINE not in text and "no k-NN graph in knn/ or dedup/knn" in text  # random weights: no graph


def test_keys_and_paths_are_escaped(folder_run, tmp_path):
    run_report(ReportConfig(out=str(folder_run), report=str(tmp_path / "r")))
    text = "".join(p.read_text() for p in (tmp_path / "r").glob("*.html"))
    assert "<script" not in text and "<b>bad" not in text
    assert "evil&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in text
    assert "broken &amp; &lt;b&gt;bad.jpg" in text


def test_a_rerun_replaces_the_previous_report(folder_run, tmp_path):
    run_report(ReportConfig(out=str(folder_run), report=str(tmp_path / "r"), groups_per_page=1))
    assert (tmp_path / "r" / "dedup-3.html").is_file()
    (tmp_path / "r" / "notes.txt").write_text("mine")
    info = run_report(ReportConfig(out=str(folder_run), report=str(tmp_path / "r"))).record
    assert info["pages"] == 1 and sorted(p.name for p in (tmp_path / "r").glob("*.html")) == ["index.html"]
    assert len(list((tmp_path / "r" / "thumbs").glob("*.jpg"))) == info["thumbnails"] == 7
    assert (tmp_path / "r" / "notes.txt").read_text() == "mine"  # only what a report wrote is removed


def test_report_of_shards_with_search_and_curate_reads_the_right_images(searched, tmp_path):
    out, colour, _, csv = searched
    info = run_report(ReportConfig(out=str(out), report=str(tmp_path / "r"), search=str(csv),
                                   search_queries=str(out), curate_samples=3)).record
    assert info["sections"] == ["dedup", "search", "curate", "extract"] and not info["unavailable"]
    assert info["dedup"]["groups"] == 1 and info["search"]["queries"] == 8 and info["curate"]["samples_shown"] == 3
    page = parse_pages(tmp_path / "r")["index.html"]
    assert [sorted(g["keys"]) for g in page.groups.values()] == [["k01", "k04", "k07"]]
    # every thumbnail is the image of its key: compare mean colours with the source image
    shown = thumbnails_by_key((tmp_path / "r" / "index.html").read_text())
    assert set(shown) == set(colour)
    for key, srcs in shown.items():
        expected = mean_colour(make_image(colour[key], (80, 60)))
        for src in srcs:
            assert np.abs(mean_colour(Image.open(tmp_path / "r" / src)) - expected).max() < 6, key


@pytest.fixture
def knn_root(tmp_path):
    """Features with planted near-copies, an index and `make knn`'s graph in FEATURES/knn (3 parts), then a
    dedup that reuses that graph."""
    from pipeline.dedup.config import DedupConfig
    from pipeline.dedup.run import run_dedup
    from pipeline.index.build import IndexConfig, build_index
    from pipeline.index.knn import KnnConfig, run_knn

    write_feature_root(tmp_path, clustered_vectors(120, 16, 12, spread=0.05, seed=3), per_shard=60)
    build_index(IndexConfig(features=str(tmp_path), progress=False))
    run_knn(KnnConfig(features=str(tmp_path), k=8, part_rows=50, progress=False))
    run_dedup(DedupConfig(features=str(tmp_path), k=8, threshold=0.95, progress=False))
    root = OutputRoot(tmp_path)
    assert root.knn_dir.is_dir() and not (root.dedup_dir / "knn").exists()  # dedup built no graph of its own
    return root


def test_the_similarity_outline_comes_from_a_make_knn_graph_in_the_root(knn_root, tmp_path):
    info = run_report(ReportConfig(out=str(knn_root.root), report=str(tmp_path / "r"))).record
    text = (tmp_path / "r" / "index.html").read_text()
    assert info["sections"] == ["dedup"] and OUTLINE in text and "no k-NN graph" not in text


def test_find_knn_graph_takes_the_graph_dedup_used(knn_root):
    from pipeline.report.dedup import find_knn_graph

    assert find_knn_graph(knn_root, "cls", 120) == knn_root.knn_dir
    assert find_knn_graph(knn_root, None, 120) == knn_root.knn_dir  # a summary without its feature
    assert find_knn_graph(knn_root, "patch_mean", 120) is None  # a graph of another feature
    assert find_knn_graph(knn_root, "cls", 121) is None  # of other features
    own = knn_root.dedup_dir / "knn"
    shutil.copytree(knn_root.knn_dir, own)
    record = read_graph_record(knn_root.knn_dir)
    write_graph_record(knn_root.knn_dir, {**record, "feature": "patch_mean"})
    assert find_knn_graph(knn_root, "cls", 120) == own  # the root's graph does not fit: dedup's own
    write_graph_record(knn_root.knn_dir, record)
    assert find_knn_graph(knn_root, "cls", 120) == knn_root.knn_dir  # both fit: the root's first
    next(knn_root.knn_dir.glob("_done/part-*.json")).unlink()  # an unfinished `make knn`
    assert find_knn_graph(knn_root, "cls", 120) == own


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
    from pipeline.io.schema import FAILURE_SCHEMA

    store = OutputRoot(tmp_path / "out")
    for s in range(4):
        failures = [{"key": f"<i>{s}-{n}</i>", "shard": f"s{s}", "index": n, "stage": "decode",
                     "reason": "UnidentifiedImageError", "detail": "cannot identify"} for n in range(s)]
        marker = {"shard": f"s{s}", "samples": 100, "rows": 100 - s, "failures": s,
                  "failures_by_reason": {"UnidentifiedImageError": s} if s else {},
                  "finished": f"2026-01-01T10:00:{10 * s:02d}+0000"}
        store.write_shard(f"s{s}", pa.table({"key": ["x"]}), pa.Table.from_pylist(failures, schema=FAILURE_SCHEMA),
                          marker)
    store.write_stats({"failed": ["s9"], "images_per_second": 12.345})
    info = run_report(ReportConfig(out=str(store.root), max_failures=4)).record
    text = (store.root / "report" / "index.html").read_text()
    assert info["sections"] == ["extract"] and info["extract"] == {"shards": 4, "failures": 6}
    assert Image.open(store.root / "report" / "throughput.png").format == "PNG"
    assert "4 shards finished over 30 s" in text and "2 more in failures/*.parquet" in text
    assert "&lt;i&gt;1-0&lt;/i&gt;" in text and "<i>" not in text
    assert "<b>shards left undone (last run)</b> s9" in text and "<b>images/s (last run)</b> 12.35" in text
    listed = [k for k in ("1-0", "2-0", "2-1", "3-0", "3-1") if f"&lt;i&gt;{k}&lt;/i&gt;" in text]
    assert listed == ["1-0", "2-0", "2-1", "3-0"]  # the first --max-failures keys, in shard order

"""The index → search → dedup path as a user runs it from the command line (real processes, tiny model)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from tests.conftest import TINY_CLI_ARGS, folder_with_copies, make_image
from tests.conftest import run_module as run

EXTRACT_ARGS = TINY_CLI_ARGS



def test_dedup_images_one_command_writes_duplicates_csv_and_touches_no_file(tmp_path):
    photos = tmp_path / "photos"
    folder_with_copies(photos, 4)  # a.png, trip/a_copy.png (byte-identical), trip/a_mirror.png
    before = {p: p.stat().st_mtime_ns for p in photos.rglob("*")}
    out = tmp_path / "out"
    proc = run("jobs.dedup", "--images", str(photos), "--out", str(out), *EXTRACT_ARGS)
    assert "2 duplicates" in proc.stdout and "embedding 0 edges" in proc.stdout
    with open(out / "duplicates.csv") as f:
        assert f.readline().startswith("# dinocurate: ")
        rows = list(csv.DictReader(f))
    assert [(Path(r["duplicate"]).name, Path(r["kept"]).name) for r in rows] == [("a_copy.png", "a.png"),
                                                                                 ("a_mirror.png", "a.png")]
    assert {r["reason"] for r in rows} == {"exact", "phash"}
    assert {p: p.stat().st_mtime_ns for p in photos.rglob("*")} == before  # nothing moved, deleted or touched
    assert "shards: 1 written, 0 already done" in proc.stdout

    extracted = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.parts[-2] in ("features", "failures", "_done")}
    assert len(extracted) >= 2
    csv_before = (out / "duplicates.csv").read_bytes()
    groups_before = pd.read_parquet(out / "dedup" / "groups.parquet")
    again = run("jobs.dedup", "--images", str(photos), "--out", str(out), *EXTRACT_ARGS)
    assert "shards: 0 written, 1 already done" in again.stdout  # the extraction is reused, not redone
    assert {p: p.stat().st_mtime_ns for p in extracted} == extracted  # its files untouched
    assert (out / "duplicates.csv").read_bytes() == csv_before
    pd.testing.assert_frame_equal(pd.read_parquet(out / "dedup" / "groups.parquet"), groups_before)
    assert again.stdout.splitlines()[1:] == proc.stdout.splitlines()[1:]  # all but the extract line


def test_index_then_search_with_an_image_query(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(12):
        make_image(i, (96, 72)).save(photos / f"p{i:02d}.png")
    out = tmp_path / "out"
    run("jobs.extract", "--images", str(photos), "--out", str(out), *EXTRACT_ARGS)
    run("jobs.index", "--features", str(out), "--no-progress")
    proc = run("jobs.cli", "search", "--index", str(out / "index"), "--query", str(photos / "p05.png"), "--k", "3",
               "--out", str(tmp_path / "nn.csv"), "--html", str(tmp_path / "nn.html"))
    page = (tmp_path / "nn.html").read_text()
    assert "p05.png" in page and page.count("<img") >= 3
    res = pd.read_csv(tmp_path / "nn.csv")
    assert list(res.columns) == ["query", "rank", "key", "shard", "index", "similarity"]
    assert list(res["rank"]) == [1, 2, 3] and res["key"][0] == "p05.png"
    assert abs(res["similarity"][0] - 1.0) < 1e-3  # the same image, extracted the same way
    assert "p05.png" in proc.stdout
    feats = pd.read_parquet(out / "features").set_index("key")
    x = np.stack(feats.cls.to_numpy()).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[list(feats.index).index("p05.png")]
    order = [feats.index[i] for i in np.argsort(-(x @ q))[:3]]
    assert list(res["key"]) == order

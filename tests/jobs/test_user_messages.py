"""What the user is told by `search` and the jobs' logging (issue 12, items 6, 9, 15)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import search as search_job
from pipeline.extract.runner import run_extract
from pipeline.index.build import IndexConfig, build_index
from tests.conftest import make_image, tiny_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("indexed")
    photos = tmp / "photos"
    photos.mkdir()
    for i in range(6):
        make_image(i).save(photos / f"p{i}.jpg")
    run_extract(tiny_config(tmp / "out", images=str(photos)))
    build_index(IndexConfig(features=str(tmp / "out"), progress=False))
    return tmp


def search(*args: str) -> int:
    with pytest.raises(SystemExit) as info:
        search_job.main(["--index", *args])
    return info.value.code


def test_a_corrupt_query_names_its_reason(indexed, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really")
    assert search(str(indexed / "out"), "--query", str(bad)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: no usable query image in") and "(bad.jpg: OSError)" in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_a_folder_query_with_unreadable_images_lists_each(indexed, tmp_path, capsys, caplog):
    folder = tmp_path / "queries"
    folder.mkdir()
    for i in range(2):
        make_image(i).save(folder / f"q{i}.jpg")
    for i in range(3):
        (folder / f"broken{i}.jpg").write_bytes(b"\xff\xd8 broken")
    with caplog.at_level(logging.WARNING):
        assert search(str(indexed / "out"), "--query", str(folder), "--k", "2") == 0
    skipped = sorted(r.getMessage().split()[1] for r in caplog.records if "skipped" in r.getMessage())
    assert skipped == ["broken0.jpg", "broken1.jpg", "broken2.jpg"]
    out = capsys.readouterr().out
    assert "query: q0.jpg" in out and "query: q1.jpg" in out and "broken" not in out


def test_a_missing_query_is_called_a_missing_query(indexed, tmp_path, capsys):
    assert search(str(indexed / "out"), "--query", str(tmp_path / "nope.jpg")) == 2
    err = capsys.readouterr().err
    assert "error: query '" in err and "nope.jpg' does not exist" in err and "shard '" not in err


def test_search_out_where_a_file_is_in_the_way(indexed, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    query = indexed / "photos" / "p0.jpg"
    assert search(str(indexed / "out"), "--query", str(query), "--out", str(tmp_path / "afile" / "r.csv")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: cannot write") and "afile is a file" in err[-1]


def test_faiss_loader_lines_stay_out_of_normal_output(indexed):
    proc = subprocess.run([sys.executable, "-m", "jobs.index", "--features", str(indexed / "out"), "--out",
                           str(indexed / "index2"), "--no-progress"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "swigfaiss" not in proc.stderr and "ModuleNotFoundError" not in proc.stderr
    assert "Loading faiss" not in proc.stderr

"""A newcomer's mistakes, each one line on stderr and exit 2, and the outputs that need a place (issue 26, items 4,
9, 15, 17, 18, 21)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs import dedup as dedup_job
from jobs import export as export_job
from jobs import report as report_job
from jobs import search as search_job
from pipeline.extract.runner import run_extract
from pipeline.index.build import IndexConfig, build_index
from tests.conftest import clustered_vectors, make_image, tiny_config, write_feature_root


def one_error_line(job, argv: list[str], capsys) -> str:
    """The job's only stderr line, after checking it exits 2 without a traceback."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        job.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2, err
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


# ------------------------------------------------------------------------------------------------- report
def test_report_of_a_missing_root_says_it_does_not_exist(tmp_path, capsys):
    """Item 15: `make report OUT=/nonexistent` printed only its usage line (the Makefile now leaves it to the job)."""
    line = one_error_line(report_job, ["--out", str(tmp_path / "nope")], capsys)
    assert line == f"error: {tmp_path / 'nope'} does not exist: give an extract output root (OUT)"


@pytest.mark.parametrize("case", ["read-only root", "read-only earlier report", "file in the way"])
def test_report_where_it_cannot_write_is_one_line(tmp_path, capsys, monkeypatch, case):
    """Item 4: a read-only root ended in an OSError traceback from _clear_previous (index and dedup: one line)."""
    root = tmp_path / "out"
    root.mkdir()
    folder = root / "report"
    if case == "file in the way":
        folder.write_text("x")
    else:
        if case == "read-only earlier report":
            folder.mkdir()
            (folder / "report.json").write_text("{}")
            (folder / "index.html").write_text("old")
        # the tests may run as root, which writes through permission bits: a read-only mount, as the system says
        real_mkdir, real_unlink, real_access = Path.mkdir, Path.unlink, os.access

        def refuse(path: Path) -> None:
            if root in Path(path).parents or Path(path) == folder:
                raise OSError(errno.EROFS, "Read-only file system", str(path))

        def mkdir(self, *args, **kwargs):
            if not self.is_dir():
                refuse(self)
            return real_mkdir(self, *args, **kwargs)

        def unlink(self, *args, **kwargs):
            refuse(self)
            return real_unlink(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)
        monkeypatch.setattr(Path, "unlink", unlink)
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == folder else real_access(p, mode))
    line = one_error_line(report_job, ["--out", str(root)], capsys)
    why = "a file is in the way" if case == "file in the way" else (
        "Read-only file system" if case == "read-only root" else "not writable")
    assert line.startswith(f"error: cannot write the report into {folder}: {why}")
    assert line.endswith("choose another folder with --report DIR (make: ARGS='--report DIR')")


# ------------------------------------------------------------------------------------------------- export
def test_export_of_a_missing_selection_says_it_does_not_exist(tmp_path, capsys):
    """Item 15: a selection that is not there was "cannot tell which extract output ... belongs to"."""
    line = one_error_line(export_job, ["--selection", str(tmp_path / "nope.parquet"), "--out", str(tmp_path / "x")],
                          capsys)
    assert line == (f"error: selection {tmp_path / 'nope.parquet'} does not exist: give an output root's "
                    f"dedup/groups.parquet or curate/selected.parquet")
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------- search
@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("newcomer")
    (tmp / "photos").mkdir()
    for i in range(4):
        make_image(i).save(tmp / "photos" / f"p{i}.jpg")
    run_extract(tiny_config(tmp / "out", images=str(tmp / "photos")))
    build_index(IndexConfig(features=str(tmp / "out"), progress=False))
    return tmp


@pytest.mark.parametrize("name, said", [
    ("emb.npy", "is a .npy of vectors, not a query image: this index holds features extracted here, which vectors "
                "made elsewhere cannot be compared with"),
    ("notes.pdf", "is not an image (no image format Pillow reads)"),
])
def test_a_query_that_is_no_image_is_named_not_a_temporary_folder(indexed, tmp_path, capsys, name, said):
    """Item 9: QUERY=emb.npy said "no image files found in '.../search-XXXX/query_image'"."""
    query = tmp_path / name
    np.save(query, np.ones((2, 64), np.float32)) if name.endswith(".npy") else query.write_text("hello")
    line = one_error_line(search_job, ["--index", str(indexed / "out"), "--query", str(query)], capsys)
    assert line == (f"error: query {query} {said}; give an image, an image folder, shards or an extract output")
    assert "search-" not in line and "query_image" not in line


def test_a_npy_query_searches_an_index_of_vectors_made_elsewhere(tmp_path, capsys):
    """Item 9, the other way round: for an index built from a .npy, a .npy of the same width is the queries."""
    vectors = clustered_vectors(12, 16, 3)
    np.save(tmp_path / "emb.npy", vectors)
    np.save(tmp_path / "queries.npy", vectors[[5]])
    build_index(IndexConfig(features=str(tmp_path / "emb.npy"), out=str(tmp_path / "index"), progress=False))
    with pytest.raises(SystemExit) as exit_:
        search_job.main(["--index", str(tmp_path / "index"), "--query", str(tmp_path / "queries.npy"), "--k", "1",
                         "--out", str(tmp_path / "r.csv")])
    assert exit_.value.code == 0
    rows = pd.read_csv(tmp_path / "r.csv", dtype={"key": str, "query": str})
    assert rows[["query", "rank", "key"]].values.tolist() == [["0", 1, "5"]]


# -------------------------------------------------------------------------------------------------- dedup
@pytest.fixture
def root(tmp_path) -> Path:
    """10 images, widths 0..9; images 0 and 1 are byte-identical, and so are 2 and 3."""
    keys = [f"img{i:02d}" for i in range(10)]
    sha1 = [hashlib.sha1(k.encode()).digest() for k in keys]
    sha1[1], sha1[3] = sha1[0], sha1[2]
    write_feature_root(tmp_path / "out", clustered_vectors(10, 16, 3), keys, sha1=sha1, pixels=np.arange(10))
    return tmp_path / "out"


def test_reference_made_elsewhere_says_what_reference_needs(root, tmp_path, capsys):
    """Item 17: --reference emb.npy gave ~2,000 characters listing 20 field differences."""
    np.save(tmp_path / "emb.npy", clustered_vectors(5, 16, 3))
    line = one_error_line(dedup_job, ["--features", str(root), "--reference", str(tmp_path / "emb.npy")], capsys)
    assert line == ("error: --reference takes the extract output root of an evaluation set, made with the pool's "
                    "model, weights and preprocessing (make extract IMAGES=eval/ OUT=out/eval): "
                    f"{tmp_path / 'emb.npy'} holds features made elsewhere, without image hashes")
    assert len(line) < 300


def test_a_where_that_matches_nothing_is_refused(root, capsys):
    """Item 18: every image was "excluded" without a word, and the stage line still counted pHash edges."""
    line = one_error_line(dedup_job, ["--features", str(root), "--where", "width > 100000", "--no-embedding"], capsys)
    assert line == (f"error: --where 'width > 100000' matches none of the 10 images of {root}: nothing would be "
                    f"compared; check the expression against the values (make report shows them)")
    assert not (root / "dedup" / "groups.parquet").exists()


def test_edges_that_touch_excluded_images_are_not_counted_as_found(root, capsys):
    """Item 18: the summary counted the exact edge between two excluded images as one the dedup used."""
    with pytest.raises(SystemExit) as exit_:
        dedup_job.main(["--features", str(root), "--where", "width >= 2", "--no-embedding", "--no-progress"])
    assert exit_.value.code == 0
    summary = json.loads((root / "dedup" / "summary.json").read_text())
    assert summary["stages"]["exact"]["edges"] == 1 and summary["stages"]["exact"]["edges_excluded"] == 1
    assert summary["duplicates_removed"] == 1 and summary["where"]["excluded"] == 2
    out = capsys.readouterr().out
    assert "exact 1 edges (+1 touching excluded images, not used)" in out
    assert "--where width >= 2: 2 of 10 images excluded" in out


# ------------------------------------------------------------------------------- nothing in the repository
def test_dedup_images_needs_out(tmp_path, capsys, monkeypatch):
    """Item 21: `python -m jobs.dedup --images DIR` wrote ./out into the current folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    make_image(0).save(tmp_path / "photos" / "a.jpg")
    line = one_error_line(dedup_job, ["--images", "photos", "--weights", "random"], capsys)
    assert line == ("error: --images needs --out: the folder its features, dedup and duplicates.csv go to "
                    "(e.g. --out out/pictures)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


def test_the_demo_writes_to_the_user_cache_not_the_current_folder(tmp_path, monkeypatch):
    """Item 21: the demo's default was demo_out/ in the current folder (the repository, for `make demo`)."""
    from pipeline.extract.demo import DemoConfig

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert DemoConfig().out == str(tmp_path / "cache" / "dinocurate" / "demo")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert DemoConfig().out == str(Path.home() / ".cache" / "dinocurate" / "demo")

"""The Python API as a notebook uses it: typed results from each stage, and the README's example runs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from pipeline import api
from tests.conftest import TINY_KWARGS, TINY_MODEL, TINY_RES, make_image

README = Path(__file__).resolve().parents[1] / "README.md"


def tiny(out: Path, images: Path) -> api.ExtractConfig:
    return api.ExtractConfig(out=str(out), images=str(images), model=TINY_MODEL, model_kwargs=TINY_KWARGS,
                             resolution=TINY_RES, weights="random", workers=0, progress=False)


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):
        make_image(i).save(folder / f"p{i}.jpg", quality=92)
    make_image(0).save(folder / "copy_of_p0.png")  # same pixels, other bytes: a perceptual copy
    (folder / "p1_again.jpg").write_bytes((folder / "p1.jpg").read_bytes())  # byte-identical
    return folder


def test_stages_return_typed_results(tmp_path, photos):
    stats = api.extract(tiny(tmp_path / "out", photos))
    assert isinstance(stats, api.ExtractStats) and stats.images == 8 and stats.failures == 0

    dup = api.dedup(api.DedupConfig(features=str(tmp_path / "out")))
    assert isinstance(dup, api.DedupResult)
    assert (dup.images, dup.kept, dup.duplicates, dup.groups) == (8, 6, 2, 2)
    table = dup.table().to_pydict()
    reason = dict(zip(table["key"], table["reason"]))
    assert reason["p1_again.jpg"] in ("exact", "keep") and reason["p1.jpg"] in ("exact", "keep")
    assert {reason["copy_of_p0.png"], reason["p0.jpg"]} <= {"phash", "keep"}
    assert dup.record["images"] == 8 and dup.groups_path == tmp_path / "out" / "dedup" / "groups.parquet"

    idx = api.index(api.IndexConfig(features=str(tmp_path / "out"), progress=False))
    assert (idx.factory, idx.count, idx.path) == ("Flat", 8, tmp_path / "out" / "index")
    hits = api.search(idx.path, tmp_path / "out", k=2).to_pydict()
    first = {q: k for q, r, k in zip(hits["query"], hits["rank"], hits["key"]) if r == 1}
    assert all(first[q] == q or first[q] in ("p1.jpg", "p1_again.jpg") for q in first)

    sel = api.curate(api.CurateConfig(pool=str(tmp_path / "out"), balanced=4, progress=False))
    assert isinstance(sel, api.CurateResult) and sel.selected == 4 == sel.table().num_rows

    exp = api.export(api.ExportConfig(selection=str(dup.groups_path), out=str(tmp_path / "export"),
                                      progress=False))
    assert exp.samples == dup.kept and exp.shards == ["export-000000.tar"] and exp.rejected == 0


def test_dedup_images_writes_the_csv_and_touches_no_file(tmp_path, photos):
    before = {p.name: p.stat().st_mtime_ns for p in photos.iterdir()}
    done = api.dedup_images(tiny(tmp_path / "out", photos))
    assert done.dedup is not None and done.duplicate_files == 2 == done.dedup.duplicates
    rows = done.csv.read_text().splitlines()
    assert rows[0].startswith("# dinocurate: ") and "with 0 review decisions applied" in rows[0]
    assert rows[1].startswith("duplicate,kept,reason") and len(rows) == 4
    assert {p.name: p.stat().st_mtime_ns for p in photos.iterdir()} == before


def test_user_errors_share_one_base_class(tmp_path):
    with pytest.raises(api.UserError, match="run extract first"):
        api.dedup(api.DedupConfig(features=str(tmp_path / "nothing")))
    with pytest.raises(api.UserError, match="exactly one input"):
        api.ExtractConfig(out=str(tmp_path))


def test_readme_example_runs(tmp_path, photos, monkeypatch):
    """The README's API example, as written, on a small folder (random weights, so it runs anywhere)."""
    text = README.read_text()
    block = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert block, "README has no API example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    assert (tmp_path / "out" / "photos" / "dedup" / "groups.parquet").exists()
    assert isinstance(namespace["dup"], api.DedupResult) and namespace["dup"].images == 8
    assert np.isfinite(namespace["X"]).all() and namespace["X"].shape[0] == 8

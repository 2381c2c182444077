"""duplicates.csv, export, the report and the server derive decisions one way, and the CSV never goes stale."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from pipeline.dedup.config import DedupConfig
from pipeline.dedup.decided import decided_groups, record_decisions, removals
from pipeline.dedup.run import dedup_images, run_dedup
from pipeline.layout import OutputRoot
from pipeline.serve.review import Review
from tests.conftest import tiny_config
from tests.dedup.test_keeper import photo_like, planted_folder


def read_csv(path: Path) -> tuple[str, list[dict]]:
    with open(path) as f:
        header = f.readline()
        return header, list(csv.DictReader(f))


def expected_rows(root: Path, folder: Path) -> list[tuple[str, str]]:
    table, _ = decided_groups(OutputRoot(root).groups_path)
    return [(str(folder / r["key"]), str(folder / k["key"])) for r, k in removals(table)]


@pytest.fixture()
def folder_root(tmp_path):
    folder = tmp_path / "photos"
    planted_folder(folder, [photo_like(i) for i in range(2)])
    root = tmp_path / "out"
    dedup_images(tiny_config(root, images=str(folder)), DedupConfig(features="", progress=False))
    return root, folder


def test_a_rerun_with_another_policy_rewrites_duplicates_csv(folder_root):
    root, folder = folder_root
    header, rows = read_csv(root / "duplicates.csv")
    assert "with 0 review decisions applied" in header and str(OutputRoot(root).groups_path.resolve()) in header
    first = {(r["duplicate"], r["kept"]) for r in rows}
    assert len(first) == 10
    run_dedup(DedupConfig(features=str(root), keep="random", seed=5, progress=False))  # make dedup FEATURES=o
    _, rows = read_csv(root / "duplicates.csv")
    assert [(r["duplicate"], r["kept"]) for r in rows] == expected_rows(root, folder)
    assert {(r["duplicate"], r["kept"]) for r in rows} != first  # the random keepers, not the stale ones
    assert {r["keep_reason"] for r in rows} == {"seeded random pick (--keep random, seed 5)"}


def test_a_review_decision_rewrites_duplicates_csv(folder_root):
    root, folder = folder_root
    groups = pd.read_parquet(OutputRoot(root).groups_path)
    loser = groups[~groups.keep].iloc[0]
    review = Review(root, reviewer="alice")
    review.decide("keeper", int(loser.id))  # the "make keeper" click of make serve
    header, rows = read_csv(root / "duplicates.csv")
    assert "with 1 review decision applied" in header
    assert [(r["duplicate"], r["kept"]) for r in rows] == expected_rows(root, folder)
    kept = {r["kept"]: r["keep_reason"] for r in rows}
    assert kept[str(folder / loser.key)] == "chosen in review by alice"
    # the server shows what the CSV says
    view = review.groups()
    keepers = set(view.table.filter(view.table.column("keeper")).column("key").to_pylist())
    assert {Path(k).relative_to(folder).as_posix() for k in kept} == keepers


def test_record_decisions_on_a_shard_root_writes_no_csv(tmp_path):
    root = tmp_path / "shards_root"
    (root / "features").mkdir(parents=True)
    record_decisions(root, [{"action": "keeper", "key": "k", "shard": "s", "index": 0, "id": 0, "component": 0}])
    assert not (root / "duplicates.csv").exists()

"""dedup's nearest_similarity is at most 1, also for copies whose float16 vectors round above 1."""

from __future__ import annotations

import pyarrow.parquet as pq

from pipeline.dedup.config import DedupConfig
from pipeline.dedup.run import run_dedup
from tests.index.test_similarity_shown import over_one_root


def test_nearest_similarity_of_copies_is_at_most_one(tmp_path):
    over_one_root(tmp_path)
    run_dedup(DedupConfig(features=str(tmp_path), k=4, progress=False))
    groups = pq.read_table(tmp_path / "dedup" / "groups.parquet")
    sims = [s for s in groups.column("nearest_similarity").to_pylist() if s is not None]
    assert max(sims) == 1.0

"""dedup --where: only matching rows are compared; the others stay, each its own group, reason "excluded"."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.dedup.config import DedupConfig
from pipeline.dedup.run import run_dedup
from pipeline.errors import ConfigError
from tests.conftest import write_feature_root

N, D = 200, 128
GROUPS = {"A": [10, 11, 12], "B": [150, 151], "C": [98, 120]}  # C straddles the filter `id < 100`


def vectors() -> np.ndarray:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(N, D))
    for members in GROUPS.values():
        for m in members[1:]:
            x[m] = x[members[0]] + 0.2 * rng.normal(size=D) / np.sqrt(D)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("where_pool")
    write_feature_root(root, vectors(), pixels=np.arange(N) + 100)
    return root


def groups_of(df: pd.DataFrame) -> set[frozenset]:
    return {frozenset(g.id) for _, g in df.groupby("component") if len(g) > 1}


def test_only_matching_rows_are_grouped_the_others_stay(pool, tmp_path):
    full = run_dedup(DedupConfig(features=str(pool), out=str(tmp_path / "full"), progress=False))
    all_rows = pd.read_parquet(tmp_path / "full" / "groups.parquet")
    assert groups_of(all_rows) == {frozenset(g) for g in GROUPS.values()}
    summary = run_dedup(DedupConfig(features=str(pool), out=str(tmp_path / "where"), where="id < 100",
                                    progress=False))
    rows = pd.read_parquet(tmp_path / "where" / "groups.parquet").set_index("id")
    assert groups_of(rows.reset_index()) == {frozenset(GROUPS["A"])}  # B excluded, C cut by the filter
    excluded = rows.loc[100:]
    assert (excluded.reason == "excluded").all() and excluded.keep.all() and (excluded.component_size == 1).all()
    assert excluded.nearest_key.isna().all()
    assert rows.loc[98, "reason"] == "unique" and rows.loc[98, "keep"]  # its copy is excluded: not a duplicate
    assert summary.record["where"] == {"expression": "id < 100", "excluded": 100}
    assert summary.record["reasons"]["excluded"] == 100 and summary.record["kept"] == N - 2
    assert full.record["kept"] == N - 4
    assert summary.record["duplicates_removed"] == 2


def test_excluded_rows_are_never_contaminated(pool, tmp_path):
    ref = tmp_path / "ref"
    x = vectors()
    # copies of a matching and an excluded row (hashes of their own: the default seed would copy rows 0 and 1)
    write_feature_root(ref, x[[20, 160]], keys=["ref_a", "ref_b"], phash=np.array([0, 2**63], np.uint64))
    run_dedup(DedupConfig(features=str(pool), out=str(tmp_path / "d"), reference=str(ref), where="width < 200",
                          progress=False))
    rows = pd.read_parquet(tmp_path / "d" / "groups.parquet").set_index("id")
    assert list(rows.index[rows.reason == "contaminated"]) == [20]
    assert rows.loc[160, "reason"] == "excluded" and rows.loc[160, "keep"]


def test_where_is_checked_before_any_work(pool, tmp_path):
    with pytest.raises(ConfigError, match="cannot parse --where"):
        run_dedup(DedupConfig(features=str(pool), out=str(tmp_path / "x"), where="__import__('os')",
                              progress=False))
    with pytest.raises(ConfigError, match="no column 'sharpness'"):
        run_dedup(DedupConfig(features=str(pool), out=str(tmp_path / "x"), where="sharpness > 50",
                              progress=False))
    assert not (tmp_path / "x" / "groups.parquet").exists()
    with pytest.raises(ConfigError, match="--against"):
        run_dedup(DedupConfig(features=str(pool), against=str(pool), where="id < 3", progress=False))

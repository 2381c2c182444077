"""Index choice, build and search (pipeline/index/build.py): exact against brute force, approximate by recall."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.index.base import choose_factory, ivf_lists
from pipeline.index.build import IndexConfig, build_index, load_index, search
from tests.conftest import clustered_vectors, write_feature_root


def brute_topk(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = q @ x.T
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, ids, 1), ids


def test_flat_search_equals_brute_force(tmp_path):
    x = clustered_vectors(2000, 32, 20, seed=1)
    write_feature_root(tmp_path, x, per_shard=300)
    record = build_index(IndexConfig(features=str(tmp_path), progress=False))
    assert record["factory"] == "Flat" and record["count"] == 2000 and record["dim"] == 32
    loaded = load_index(tmp_path)
    q = clustered_vectors(50, 32, 20, seed=2)
    sims, ids = search(loaded.index, q, 10)
    ref_sims, ref_ids = brute_topk(x, q, 10)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)
    table = pq.read_table(tmp_path / "index" / "ids.parquet")
    assert table.column_names == ["id", "key", "shard", "index"]
    assert table.column("id").to_pylist() == list(range(2000))
    assert table.column("key").to_pylist()[301] == "img000301"
    saved = json.loads((tmp_path / "index" / "index.json").read_text())
    assert saved["provenance"]["model"] == "test" and saved["feature"] == "cls"


@pytest.mark.parametrize("factory", ["HNSW32", "IVF64,Flat", "IVF64,SQ8", "IVF64,PQ16x4fs,RFlat"])
def test_approximate_indexes_reach_recall_at_10(tmp_path, factory):
    x = clustered_vectors(6000, 32, 40, seed=3)
    write_feature_root(tmp_path, x, per_shard=1000)
    build_index(IndexConfig(features=str(tmp_path), factory=factory, progress=False,
                            nprobe=16 if "IVF" in factory else None))
    loaded = load_index(tmp_path / "index")
    q = x[np.random.default_rng(0).choice(6000, 200, replace=False)] + 0.01
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    _, ids = search(loaded.index, q, 10)
    _, ref = brute_topk(x, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, ref)])
    assert recall >= 0.95, f"{factory}: recall@10 {recall:.3f}"


def test_auto_choice_follows_size_and_budget():
    gib = 2**30
    assert choose_factory(50_000, 384, 4 * gib) == "Flat"
    assert choose_factory(1_000_000, 384, 4 * gib) == f"IVF{ivf_lists(1_000_000)},Flat"
    assert choose_factory(3_000_000, 384, 4 * gib) == "IVF6928,SQ8"
    assert choose_factory(20_000_000, 384, 4 * gib) == "IVF17888,PQ192x4fs"
    assert choose_factory(100_000_000, 384, 4 * gib) == "IVF40000,PQ64x4fs"
    assert ivf_lists(1_000_000) == 4000 and ivf_lists(100) == 2
    # ≈ 4√N past 1M too (a brute-force coarse quantizer of 65,536 lists would cost 16× the lists' scan at 10M),
    # at most 65,536, and never fewer than 39 vectors per list
    assert ivf_lists(10_000_000) == 12649 and ivf_lists(10**9) == 65536 and ivf_lists(3900) == 100


def test_a_missing_index_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="make index"):
        load_index(tmp_path)

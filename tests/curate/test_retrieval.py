"""Retrieval (pipeline/curate/retrieval.py): sample-based = brute-force k-NN union, cluster caps, balancing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.curate.retrieval import CurateConfig, choose_mode, parse_queries, run_curate
from tests.conftest import clustered_vectors, write_feature_root


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_sample_based_equals_brute_force_knn_union(tmp_path):
    pool = clustered_vectors(1500, 32, 30, spread=0.5, seed=1)
    queries = clustered_vectors(40, 32, 30, spread=0.5, seed=2)
    write_feature_root(tmp_path / "pool", pool, per_shard=400)
    write_feature_root(tmp_path / "seeds", queries, keys=[f"q{i}" for i in range(40)])
    summary = run_curate(CurateConfig(pool=str(tmp_path / "pool"), queries=(("seeds", str(tmp_path / "seeds")),),
                                      mode="sample", k=5, min_similarity=0.5, progress=False))
    sel = pd.read_parquet(tmp_path / "pool" / "curate" / "selected.parquet")
    sims = queries @ pool.T
    top = np.argsort(-sims, axis=1)[:, :5]
    expected = {int(i) for q in range(40) for i in top[q] if sims[q, i] >= 0.5}
    assert set(sel.id) == expected and sel.id.is_unique
    assert (sel.similarity >= 0.5).all() and set(sel["mode"]) == {"sample"}
    best = {i: sims[:, i][[q for q in range(40) if i in top[q]]].max() for i in expected}
    np.testing.assert_allclose(sel.set_index("id").similarity.loc[sorted(expected)],
                               [best[i] for i in sorted(expected)], atol=1e-5)
    assert summary.record["sources"]["seeds"]["selected"] == len(expected) == summary.record["selected"]
    assert list(sel.columns) == ["key", "shard", "index", "id", "source", "mode", "query", "cluster", "similarity"]


def test_cluster_based_uses_only_clusters_with_enough_queries_and_respects_caps(tmp_path):
    rng = np.random.default_rng(0)
    centres = unit(rng.normal(size=(6, 32)))
    sizes = [200] * 6
    pool = unit(np.vstack([centres[c] + 0.05 * rng.normal(size=(n, 32)) for c, n in enumerate(sizes)]))
    # queries: 6 in cluster 0, 4 in cluster 1, 3 in cluster 2 (not more than 3: excluded), 1 in cluster 3
    counts = [6, 4, 3, 1, 0, 0]
    queries = unit(np.vstack([centres[c] + 0.1 * rng.normal(size=(n, 32)) for c, n in enumerate(counts) if n]))
    write_feature_root(tmp_path / "pool", pool, per_shard=300)
    write_feature_root(tmp_path / "seeds", queries, keys=[f"q{i}" for i in range(len(queries))])
    cfg = CurateConfig(pool=str(tmp_path / "pool"), queries=(("s", str(tmp_path / "seeds")),), mode="cluster",
                       clusters=6, min_queries=3, per_cluster=120, max_per_source=200, progress=False)
    summary = run_curate(cfg)
    sel = pd.read_parquet(tmp_path / "pool" / "curate" / "selected.parquet")
    truth = np.repeat(np.arange(6), sizes)
    per_cluster_queries = summary.record["sources"]["s"]["queries_per_cluster"]
    assert sorted(per_cluster_queries.values()) == [1, 3, 4, 6]  # k-means found the planted clusters
    assert {per_cluster_queries[str(c)] for c in sel.cluster} == {6, 4}  # only clusters with > 3 queries
    assert set(truth[sel.id]) == {0, 1}
    assert len(sel) == 200  # max_per_source, exactly
    per = pd.Series(truth[sel.id]).value_counts()
    assert per[0] == 120 and per[1] == 80  # per_cluster cap on the query-richest cluster, the rest from the next
    assert summary.record["sources"]["s"]["clusters_used"] == 2 and summary.record["clusters"] == 6
    again = run_curate(cfg)
    assert list(pd.read_parquet(tmp_path / "pool" / "curate" / "selected.parquet").id) == list(sel.id)
    assert again.record["selected"] == 200


def test_auto_mode_and_several_named_seed_sets(tmp_path):
    pool = clustered_vectors(600, 16, 6, spread=0.2, seed=4)
    write_feature_root(tmp_path / "pool", pool, per_shard=300)
    write_feature_root(tmp_path / "a", pool[:8] + 0.001, keys=[f"a{i}" for i in range(8)])
    write_feature_root(tmp_path / "b", pool[4:12] + 0.001, keys=[f"b{i}" for i in range(8)])
    cfg = CurateConfig(pool=str(tmp_path / "pool"), queries=parse_queries([f"a={tmp_path/'a'},b={tmp_path/'b'}"]),
                       k=1, auto_threshold=5, progress=False)
    summary = run_curate(cfg)
    assert summary.record["sources"]["a"]["mode"] == "sample" and ">= 5" in summary.record["sources"]["a"]["why"]
    assert summary.record["sources"]["a"]["selected"] == 8 and summary.record["sources"]["a"]["unique"] == 4
    assert summary.record["selected"] == 12
    assert choose_mode(CurateConfig(pool="p", queries=(("x", "y"),)), 10)[0] == "cluster"
    assert parse_queries(["/d/imagenet"]) == (("imagenet", "/d/imagenet"),)
    with pytest.raises(ValueError, match="unique"):
        CurateConfig(pool="p", queries=(("x", "a"), ("x", "b")))


def test_balanced_sampling_flattens_a_long_tail(tmp_path):
    rng = np.random.default_rng(1)
    centres = unit(rng.normal(size=(8, 32)))
    sizes = [1600, 800, 400, 200, 100, 50, 30, 20]
    pool = unit(np.vstack([centres[c] + 0.05 * rng.normal(size=(n, 32)) for c, n in enumerate(sizes)]))
    truth = np.repeat(np.arange(8), sizes)
    write_feature_root(tmp_path / "pool", pool, per_shard=1000)
    summary = run_curate(CurateConfig(pool=str(tmp_path / "pool"), balanced=400, levels=2, progress=False))
    sel = pd.read_parquet(tmp_path / "pool" / "curate" / "selected.parquet")
    assert len(sel) == 400 and sel.id.is_unique
    counts = np.bincount(truth[sel.id], minlength=8)
    assert counts.max() / counts.min() <= 10  # pool: 1600 / 20 = 80
    assert counts[:4].sum() < 0.85 * 400  # the four big modes hold 94 % of the pool
    assert summary.record["balanced"]["selected"] == 400

"""Hierarchical k-means with resampling (pipeline/curate/hkmeans.py, vectors.py): each step against a brute-force
recomputation, streamed rows against in-memory ones, the default levels, and the long-tail ordering."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.long_tail import long_tail_pool, score
from pipeline.curate.cluster import hierarchical_sample
from pipeline.curate.hkmeans import (
    HierarchyPlan,
    cluster_sizes,
    hierarchical_kmeans,
    resample,
    resampling_kmeans,
    resolve_plan,
)
from pipeline.curate.vectors import ArraySource, FeatureSource
from pipeline.errors import ConfigError
from pipeline.index.kmeans import kmeans
from pipeline.roots.features import open_features, read_matrix
from tests.conftest import clustered_vectors, write_feature_root


def test_resample_keeps_the_s_closest_or_s_random_members_of_each_cluster():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, 200)
    labels[labels == 5] = 4  # cluster 5 empty
    labels[:2] = 5  # ... but for two members: fewer than s, both kept
    sims = rng.random(200).astype(np.float32)
    closest = resample(labels, sims, 7, "closest", rng)
    expected = np.concatenate([np.flatnonzero(labels == c)[np.argsort(-sims[labels == c])[:7]] for c in range(6)])
    np.testing.assert_array_equal(closest, np.sort(expected))
    random = resample(labels, sims, 7, "random", np.random.default_rng(1))
    assert (np.diff(random) > 0).all() and np.bincount(labels[random]).tolist() == [7, 7, 7, 7, 7, 2]
    assert not np.array_equal(random, closest)
    np.testing.assert_array_equal(random, resample(labels, sims, 7, "random", np.random.default_rng(1)))
    with pytest.raises(ConfigError, match="resampling strategy"):
        resample(labels, sims, 7, "farthest", rng)


def test_a_level_is_faiss_kmeans_then_resampling_steps_recomputed_by_hand():
    x = clustered_vectors(600, 16, 5, spread=0.3, seed=3)
    plain = resampling_kmeans(ArraySource(x), 8, steps=0, seed=4)
    centroids, _ = kmeans(x, 8, seed=4)  # 600 rows <= 8 × 256: nothing subsampled
    np.testing.assert_array_equal(plain.centroids, centroids)
    cos = x @ plain.centroids.T
    np.testing.assert_array_equal(plain.labels, cos.argmax(1))
    np.testing.assert_allclose(plain.sims, cos.max(1), atol=1e-5)
    stepped = resampling_kmeans(ArraySource(x), 8, steps=2, size=10, seed=4)
    level = plain
    for step in (1, 2):  # the paper's step: k-means on the s rows nearest each centroid, then reassign all
        kept = resample(level.labels, level.sims, 10, "closest", np.random.default_rng(0))
        assert len(kept) <= 8 * 10
        c, _ = kmeans(x[kept], 8, seed=4 + step)
        cos = x @ c.T
        level = type(level)(c, cos.argmax(1), cos.max(1))
    np.testing.assert_array_equal(stepped.centroids, level.centroids)
    np.testing.assert_array_equal(stepped.labels, level.labels)
    np.testing.assert_allclose(np.linalg.norm(stepped.centroids, axis=1), 1, atol=1e-5)  # spherical


def test_each_level_clusters_the_centroids_below_and_is_seeded():
    x = clustered_vectors(800, 16, 6, spread=0.3, seed=1)
    plan = HierarchyPlan((40, 8, 3), (2, 2, 2), (5, 3, 2))
    levels = hierarchical_kmeans(x, plan, seed=2)
    assert [lv.k for lv in levels] == [40, 8, 3]
    assert [len(lv.labels) for lv in levels] == [800, 40, 8]
    for below, level in zip(levels, levels[1:]):
        np.testing.assert_array_equal(level.labels, (below.centroids @ level.centroids.T).argmax(1))
    sizes = cluster_sizes(levels)
    assert [s.sum() for s in sizes] == [800, 800, 800]
    np.testing.assert_array_equal(sizes[1], np.bincount(levels[1].labels[levels[0].labels], minlength=8))
    again = hierarchical_kmeans(x, plan, seed=2)
    for a, b in zip(levels, again):
        np.testing.assert_array_equal(a.labels, b.labels)


def test_streamed_feature_files_cluster_as_the_array_does(tmp_path):
    x = clustered_vectors(500, 16, 4, spread=0.3, seed=7)
    write_feature_root(tmp_path, x, per_shard=90)
    fs = open_features(tmp_path)
    streamed = FeatureSource(fs, chunk_rows=64)
    memory = ArraySource(read_matrix(fs, "cls"), chunk_rows=64)
    ids = np.array([499, 0, 250, 89, 90, 91])
    np.testing.assert_array_equal(streamed.take(ids), memory.take(ids))
    plan = HierarchyPlan((20, 4), (2, 1), (6, 3))
    for a, b in zip(hierarchical_kmeans(streamed, plan), hierarchical_kmeans(memory, plan)):
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.centroids, b.centroids)
    subset = np.flatnonzero(np.arange(500) % 3 != 1)  # e.g. the rows --where keeps
    part = FeatureSource(fs, subset=subset, chunk_rows=64)
    assert part.count == len(subset)
    np.testing.assert_array_equal(np.vstack([rows for _, rows in part.chunks()]), memory.take(subset))
    np.testing.assert_array_equal(part.take([0, 5, len(subset) - 1]), memory.take(subset[[0, 5, -1]]))


def test_default_levels_by_pool_size_and_given_ones():
    assert resolve_plan(1_000_000) == HierarchyPlan((2048, 204, 40), (10, 0, 0), (245, 6, 3))
    assert resolve_plan(10_000_000) == HierarchyPlan((11067, 553, 55, 11), (3, 0, 0, 0), (452, 11, 6, 3))
    assert resolve_plan(100_000_000) == HierarchyPlan((35000, 1750, 175, 35), (3, 0, 0, 0), (1429, 10, 5, 3))
    assert resolve_plan(1_000_000, levels=2).ks == (2048, 409)
    assert resolve_plan(5000, ks=(100, 10), steps=(0,), sizes=(4, 2)) == HierarchyPlan((100, 10), (0, 0), (4, 2))
    assert resolve_plan(5000, ks=(100, 10)).sizes == (25, 5)  # half the mean cluster size
    with pytest.raises(ConfigError, match="finest to the coarsest"):
        resolve_plan(5000, ks=(10, 100))
    with pytest.raises(ConfigError, match="for each of the 2 levels"):
        resolve_plan(5000, ks=(100, 10), steps=(1, 2, 3))


def test_resampling_covers_more_rare_concepts_than_plain_hierarchical_and_random():
    """benchmarks/long_tail.py at 6,000 × 32: 300 power-law concepts (5 to ~900 images), more than the 271 leaves,
    3 images per concept for every method; the default plan against the same levels without resampling."""
    for seed in (1, 2, 3):
        x, truth, sizes = long_tail_pool(6000, 300, dim=32, seed=seed)
        plan = resolve_plan(len(x))
        assert plan.steps == (10, 0, 0)
        budget = 900
        got = {name: score(hierarchical_sample(hierarchical_kmeans(x, p, seed=seed), budget, seed=seed), truth, sizes)
               for name, p in (("plain", HierarchyPlan(plan.ks, (0, 0, 0), plan.sizes)), ("resampling", plan))}
        got["random"] = score(np.random.default_rng(seed).choice(len(x), budget, replace=False), truth, sizes)
        rare = {name: m["rare_coverage"] for name, m in got.items()}
        assert rare["resampling"] > rare["plain"] + 0.03 and rare["plain"] > rare["random"] + 0.03, (seed, rare)
        entropy = {name: m["entropy"] for name, m in got.items()}
        assert entropy["resampling"] > entropy["plain"] > entropy["random"], (seed, entropy)


def test_curate_balanced_in_memory_or_streamed(tmp_path):
    """run_curate --balanced: the plan given on the command line, float16 in memory within --memory-budget and
    streamed from the feature files beyond it, the leaf cluster recorded per row."""
    import argparse

    import pandas as pd

    from jobs._args import config_from
    from jobs.curate import add_arguments
    from pipeline.curate.retrieval import CurateConfig, run_curate

    write_feature_root(tmp_path / "pool", clustered_vectors(900, 16, 6, spread=0.3, seed=2), per_shard=200)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--pool", str(tmp_path / "pool"), "--balanced", "120", "--levels-k", "30,6",
                              "--resample-steps", "2,0", "--resample-size", "8", "--sampling", "closest",
                              "--no-progress"])
    cfg = config_from(CurateConfig, args, queries=())
    assert (cfg.levels_k, cfg.resample_steps, cfg.resample_size, cfg.sampling) == ((30, 6), (2, 0), (8,), "closest")
    for name, budget in (("memory", 4.0), ("streamed", 1e-6)):
        summary = run_curate(CurateConfig(**{**cfg.__dict__, "out": str(tmp_path / name), "memory_budget_gb": budget}))
        b = summary.record["balanced"]
        assert (b["levels"], b["resample_steps"], b["resample_sizes"], b["selected"]) == ([30, 6], [2, 0], [8, 8], 120)
        assert b["vectors"].startswith("float16 in memory" if name == "memory" else "streamed")
        assert sum(b["top_cluster_sizes_pool"]) == 900 and sum(b["top_cluster_sizes_selected"]) == 120
        sel = pd.read_parquet(tmp_path / name / "selected.parquet")
        assert len(sel) == 120 and sel.id.is_unique and (sel["mode"] == "balanced").all()
        assert sel.cluster.between(0, 29).all() and sel.similarity.isna().all()
    for bad, match in (({"levels": 0}, "at least 1"), ({"levels": 3, "levels_k": (30, 6)}, "give one"),
                       ({"sampling": "first"}, "--sampling must be"), ({"levels_k": (6, 30)}, "finest to the"),
                       ({"levels_k": (30, 6), "resample_steps": (1, 2, 3)}, "for each of the 2 levels")):
        with pytest.raises(ConfigError, match=match):
            CurateConfig(pool="p", balanced=10, **bad)

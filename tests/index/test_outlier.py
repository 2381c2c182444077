"""Outlier score (index/outlier.py) and rows of a --where (index/rows.py), checked against brute force."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.index.build import IndexConfig, build_index
from pipeline.index.knn import KnnConfig, run_knn
from pipeline.index.outlier import find_graph, outlier_scores, read_outlier
from pipeline.index.rows import search_within, where_mask
from pipeline.roots.features import open_features
from tests.conftest import clustered_vectors, write_feature_root

N, K = 240, 6


def brute_outlier(x: np.ndarray, k: int) -> np.ndarray:
    sims = x.astype(np.float64) @ x.T.astype(np.float64)
    np.fill_diagonal(sims, -np.inf)
    top = -np.sort(-sims, axis=1)[:, :min(k, len(x) - 1)]
    return top.mean(axis=1) if top.shape[1] else np.full(len(x), np.nan)


@pytest.fixture(scope="module")
def graphed(tmp_path_factory):
    """A root of clustered vectors plus a few far-off ones, with a Flat index and a k = 6 graph."""
    root = tmp_path_factory.mktemp("outlier")
    x = clustered_vectors(N, 24, 6, spread=0.25, seed=5)
    rng = np.random.default_rng(9)
    far = rng.normal(size=(5, 24))
    x[-5:] = far / np.linalg.norm(far, axis=1, keepdims=True)  # planted outliers
    write_feature_root(root, x, per_shard=100, pixels=np.arange(N) * 3)
    fs = open_features(root)
    assert find_graph(fs) is None and read_outlier(fs) is None
    build_index(IndexConfig(features=str(root), progress=False))
    run_knn(KnnConfig(features=str(root), k=K, part_rows=100, progress=False))
    return root, x


def test_outlier_is_the_mean_similarity_to_the_k_nearest(graphed):
    root, x = graphed
    fs = open_features(root)
    assert find_graph(fs) == root / "knn"
    got = read_outlier(fs)
    np.testing.assert_allclose(got, brute_outlier(x, K), atol=1e-5)
    assert set(np.argsort(got)[:5]) == set(range(N - 5, N))  # the planted outliers score lowest


def test_padding_and_missing_neighbours_are_left_out(tmp_path):
    x = clustered_vectors(3, 8, 1, seed=2)
    write_feature_root(tmp_path, x)
    build_index(IndexConfig(features=str(tmp_path), progress=False))
    graph = run_knn(KnnConfig(features=str(tmp_path), k=8, progress=False)).graph  # 2 neighbours, 6 padded
    np.testing.assert_allclose(outlier_scores(graph, 3), brute_outlier(x, 8), atol=1e-5)
    write_feature_root(tmp_path / "one", x[:1])
    build_index(IndexConfig(features=str(tmp_path / "one"), progress=False))
    graph = run_knn(KnnConfig(features=str(tmp_path / "one"), k=4, progress=False)).graph
    assert np.isnan(outlier_scores(graph, 1)).all()  # nobody to be near: no score


def test_where_mask_reads_columns_and_the_outlier_score(graphed):
    root, x = graphed
    fs = open_features(root)
    mask = where_mask(fs, "outlier > 0.5 and width >= 90 or id == 3")
    ids, score = np.arange(N), brute_outlier(x, K)
    np.testing.assert_array_equal(mask, ((score > 0.5) & (ids * 3 >= 90)) | (ids == 3))
    assert 0 < mask.sum() < N


def test_outlier_without_a_graph_says_to_build_one(tmp_path):
    write_feature_root(tmp_path, clustered_vectors(20, 8, 2))
    fs = open_features(tmp_path)
    with pytest.raises(ConfigError, match="needs a finished k-NN graph .* run make knn"):
        where_mask(fs, "outlier < 0.2")
    with pytest.raises(ConfigError, match="no column 'blur'; available: key, shard, index, width"):
        where_mask(fs, "blur < 0.2")
    assert where_mask(fs, "width > 0").all()


@pytest.mark.parametrize("share,k", [(1.0, 5), (0.3, 5), (0.03, 5), (0.005, 5)])
def test_search_within_gives_the_k_nearest_among_the_allowed_rows(share, k):
    rng = np.random.default_rng(int(share * 100))
    x = clustered_vectors(600, 16, 8, seed=1)
    allowed = rng.random(600) < share
    q = clustered_vectors(40, 16, 8, seed=2)
    index = faiss.IndexFlatIP(16)
    index.add(x)
    sims, ids = search_within(index, q, k, allowed)
    brute = q @ x.T
    brute[:, ~allowed] = -np.inf
    want = np.argsort(-brute, axis=1, kind="stable")[:, :k]
    n = int(allowed.sum())
    np.testing.assert_array_equal(ids[:, :min(k, n)], want[:, :min(k, n)])
    np.testing.assert_allclose(sims[:, :min(k, n)], np.take_along_axis(brute, want, 1)[:, :min(k, n)], atol=1e-5)
    assert (ids[:, n:] == -1).all() and np.isneginf(sims[:, n:]).all()  # fewer allowed than k: padded

"""k-NN graphs and dedup over fewer images than k: N = 0, 1, 2, 3 with k = 64 (issue 12, item 4)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.dedup.config import DedupConfig
from pipeline.dedup.run import run_dedup
from pipeline.extract.runner import run_extract
from pipeline.index.build import IndexConfig, build_index
from pipeline.index.knn import KnnConfig, iter_parts, run_knn
from tests.conftest import clustered_vectors, tiny_config, write_feature_root


@pytest.mark.parametrize("n", [1, 2, 3])
def test_knn_with_fewer_images_than_k(tmp_path, n):
    x = clustered_vectors(n, 16, 1, seed=n)
    write_feature_root(tmp_path, x)
    build_index(IndexConfig(features=str(tmp_path), progress=False))
    result = run_knn(KnnConfig(features=str(tmp_path), k=64, progress=False))
    (ids, nb, sm), = list(iter_parts(result.graph))
    assert nb.shape == (n, 64) and ids.tolist() == list(range(n))
    sims = x @ x.T
    for i in range(n):
        others = [j for j in range(n) if j != i]
        expect = sorted(others, key=lambda j: -sims[i, j])
        assert nb[i, :n - 1].tolist() == expect  # every other image, best first
        assert np.allclose(sm[i, :n - 1], sims[i, expect], atol=1e-5)
        assert (nb[i, n - 1:] == -1).all() and np.isneginf(sm[i, n - 1:]).all()


@pytest.mark.parametrize("n", [1, 2])
def test_dedup_with_embedding_stage_on_one_or_two_images(tmp_path, n):
    x = clustered_vectors(n, 16, 1, spread=0.01, seed=3)  # two images: near-identical vectors
    write_feature_root(tmp_path, x)
    summary = run_dedup(DedupConfig(features=str(tmp_path), embedding=True, progress=False))
    groups = pq.read_table(tmp_path / "dedup" / "groups.parquet").to_pydict()
    assert summary.record["images"] == n and len(groups["key"]) == n
    if n == 1:
        assert groups["reason"] == ["unique"] and groups["keep"] == [True]
    else:
        assert sorted(groups["reason"]) == ["embedding", "keep"] and sum(groups["keep"]) == 1


def test_index_knn_and_dedup_of_a_root_whose_every_image_failed(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    stats = run_extract(tiny_config(tmp_path / "out", images=str(photos)))
    assert (stats.images, stats.failures) == (0, 1)
    build_index(IndexConfig(features=str(tmp_path / "out"), progress=False))
    result = run_knn(KnnConfig(features=str(tmp_path / "out"), k=8, progress=False))
    assert list(iter_parts(result.graph)) == []
    summary = run_dedup(DedupConfig(features=str(tmp_path / "out"), embedding=True, progress=False))
    assert (summary.record["images"], summary.record["kept"], summary.record["groups"]) == (0, 0, 0)

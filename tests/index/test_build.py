"""Index choice, build and search: exact against brute force, approximate by recall, provenance checks."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.errors import MixedProvenanceError
from pipeline.io.features import open_features, read_matrix
from pipeline.index.build import IndexConfig, build_index, choose_factory, ivf_lists, load_index, search
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


def test_concat_and_patch_mean_features(tmp_path):
    x = clustered_vectors(100, 8, 5)
    write_feature_root(tmp_path, x)
    fs = open_features(tmp_path)
    concat = read_matrix(fs, "concat")
    assert concat.shape == (100, 16)
    np.testing.assert_allclose(np.linalg.norm(concat, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(read_matrix(fs, "patch_mean"), x[:, ::-1], atol=1e-6)
    record = build_index(IndexConfig(features=str(tmp_path), feature="concat", progress=False))
    assert record["dim"] == 16


def test_mixed_provenance_is_refused(tmp_path):
    write_feature_root(tmp_path / "a", clustered_vectors(60, 8, 3), per_shard=60)
    other = {"model": "other", "weights": {"source": "random", "sha256": "random"}, "input_size": [3, 56, 56],
             "resize_mode": "fixed"}
    write_feature_root(tmp_path / "b", clustered_vectors(60, 8, 3), per_shard=60, provenance=other)
    (tmp_path / "b" / "features" / "part-0000.parquet").rename(tmp_path / "a" / "features" / "zz.parquet")
    with pytest.raises(MixedProvenanceError, match="model=other"):
        open_features(tmp_path / "a")


def test_auto_choice_follows_size_and_budget():
    gib = 2**30
    assert choose_factory(50_000, 384, 4 * gib) == "Flat"
    assert choose_factory(1_000_000, 384, 4 * gib) == f"IVF{ivf_lists(1_000_000)},Flat"
    assert choose_factory(3_000_000, 384, 4 * gib) == "IVF16384,SQ8"
    assert choose_factory(20_000_000, 384, 4 * gib) == "IVF65536,PQ192x4fs"
    assert choose_factory(100_000_000, 384, 4 * gib) == "IVF65536,PQ64x4fs"
    assert ivf_lists(1_000_000) == 4000 and ivf_lists(100) == 2


def test_missing_features_and_index_say_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run extract first"):
        open_features(tmp_path)
    with pytest.raises(FileNotFoundError, match="make index"):
        load_index(tmp_path)


@pytest.mark.parametrize("factory", ["IVF32,Flat", "IVF32,PQ8x4fs"])
def test_parallel_parts_merge_to_the_single_process_index(tmp_path, factory):
    from pipeline.index.parts import build_index_parts

    x = clustered_vectors(3000, 32, 30, seed=7)
    write_feature_root(tmp_path, x, per_shard=400)  # 8 files → 3 parts
    single = build_index(IndexConfig(features=str(tmp_path), out=str(tmp_path / "single"), factory=factory,
                                     progress=False))
    merged = build_index_parts(IndexConfig(features=str(tmp_path), out=str(tmp_path / "merged"), factory=factory,
                                           progress=False), parts=3)
    assert merged["count"] == single["count"] == 3000 and merged["parts"] == 3
    assert sum(merged["part_counts"]) == 3000
    q = clustered_vectors(100, 32, 30, seed=8)
    s1, i1 = search(load_index(tmp_path / "single").index, q, 10)
    s2, i2 = search(load_index(tmp_path / "merged").index, q, 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)
    assert not (tmp_path / "merged" / "parts" / "trained.faiss").exists()


def test_parallel_parts_refuse_non_ivf(tmp_path):
    from pipeline.index.parts import build_index_parts

    write_feature_root(tmp_path, clustered_vectors(200, 8, 4))
    with pytest.raises(ValueError, match="not an IVF"):
        build_index_parts(IndexConfig(features=str(tmp_path), factory="Flat", progress=False))


def test_knn_graph_in_parallel_parts_equals_one_process(tmp_path):
    from pipeline.index.knn import build_graph, build_graph_parallel

    x = clustered_vectors(900, 16, 9, seed=9)
    write_feature_root(tmp_path, x, per_shard=300)
    build_index(IndexConfig(features=str(tmp_path), progress=False))
    fs = open_features(tmp_path)
    build_graph(fs, load_index(tmp_path).index, "cls", tmp_path / "one", k=8, part_rows=200, progress=False)
    build_graph_parallel(str(tmp_path), str(tmp_path / "index"), tmp_path / "two", k=8, workers=2, part_rows=200)
    one = pq.read_table(tmp_path / "one" / "part-00003.parquet")
    assert sorted(p.name for p in (tmp_path / "two").glob("part-*.parquet")) == [f"part-0000{i}.parquet"
                                                                              for i in range(5)]
    assert pq.read_table(tmp_path / "two" / "part-00003.parquet").equals(one)
    ref = np.argsort(-(x @ x.T), axis=1)[:, 1:9]
    got = np.concatenate([np.stack(pq.read_table(p).column("neighbours").to_pylist())
                          for p in sorted((tmp_path / "two").glob("part-*.parquet"))])
    assert np.mean([len(set(a) & set(b)) / 8 for a, b in zip(got, ref)]) > 0.99

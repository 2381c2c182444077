"""The all-vs-all k-NN graph (pipeline/index/knn.py): parallel parts equal one process, recall vs brute force."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from pipeline.index.build import IndexConfig, build_index, load_index
from pipeline.index.knn import build_graph, build_graph_parallel
from pipeline.roots.features import open_features
from tests.conftest import clustered_vectors, write_feature_root


def test_knn_graph_in_parallel_parts_equals_one_process(tmp_path):
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

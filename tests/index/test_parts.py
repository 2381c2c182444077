"""Index parts (pipeline/index/parts.py): IVF filled in parallel parts, merged into the single-process index."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.index.build import IndexConfig, build_index, load_index, search
from pipeline.index.parts import build_index_parts
from tests.conftest import clustered_vectors, write_feature_root


@pytest.mark.parametrize("factory", ["IVF32,Flat", "IVF32,PQ8x4fs"])
def test_parallel_parts_merge_to_the_single_process_index(tmp_path, factory):
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
    write_feature_root(tmp_path, clustered_vectors(200, 8, 4))
    with pytest.raises(ValueError, match="not an IVF"):
        build_index_parts(IndexConfig(features=str(tmp_path), factory="Flat", progress=False))

"""`make index --update` (issue 14): shards extracted since the index was built are added without retraining,
ids stay the §7 ids, and an update that would move ids or mix models is refused."""

from __future__ import annotations

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.errors import ConfigMismatchError, InputError, MissingInputError
from pipeline.index.build import IndexConfig, load_index, run_index
from tests.conftest import clustered_vectors, write_feature_root

X = clustered_vectors(300, 16, 8, seed=4)


def search(root, q: np.ndarray, k: int = 5):
    loaded = load_index(root / "index")
    return loaded.index.search(q, k)


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat"])
def test_new_shards_are_added_and_search_as_a_fresh_build(tmp_path, factory):
    root, fresh = tmp_path / "grown", tmp_path / "fresh"
    write_feature_root(root, X[:200], per_shard=100)  # part-0000, part-0001
    first = run_index(IndexConfig(features=str(root), factory=factory, progress=False))
    trained = load_index(root / "index").index
    write_feature_root(root, X, per_shard=100)  # the same two shards, and part-0002
    record = run_index(IndexConfig(features=str(root), factory=factory, update=True, progress=False))
    assert record.record["count"] == 300 and record.record["factory"] == first.record["factory"]
    assert record.record["updates"][-1]["added"] == 100 and record.record["updates"][-1]["shards"] == ["part-0002"]
    write_feature_root(fresh, X, per_shard=100)
    run_index(IndexConfig(features=str(fresh), factory=factory, progress=False))
    ids = pq.read_table(root / "index" / "ids.parquet")
    assert ids.equals(pq.read_table(fresh / "index" / "ids.parquet"))  # the §7 ids, as a rebuild gives them
    q = X[::37]
    d_grown, l_grown = search(root, q)
    if factory == "Flat":
        d_fresh, l_fresh = search(fresh, q)
        assert np.array_equal(l_grown, l_fresh) and np.allclose(d_grown, d_fresh)
    else:  # the quantiser trained on the first 200 rows, not retrained: every vector still finds itself
        grown = load_index(root / "index").index
        before, after = (faiss.extract_index_ivf(i).quantizer.reconstruct_n(0, 4) for i in (trained, grown))
        assert np.array_equal(before, after)
        assert list(l_grown[:, 0]) == list(range(0, 300, 37))
    again = run_index(IndexConfig(features=str(root), factory=factory, update=True, progress=False))
    assert again.record["count"] == 300 and len(again.record["updates"]) == 1  # nothing new: unchanged


def test_an_update_that_would_move_ids_or_mix_models_is_refused(tmp_path):
    root = tmp_path / "root"
    write_feature_root(root, X, per_shard=100)
    moved = root / "features" / "part-0000.parquet"
    kept = moved.read_bytes()
    moved.unlink()  # index part-0001, part-0002 only ...
    run_index(IndexConfig(features=str(root), factory="Flat", progress=False))
    moved.write_bytes(kept)  # ... then part-0000 appears before them
    with pytest.raises(InputError, match="ids would move"):
        run_index(IndexConfig(features=str(root), factory="Flat", update=True, progress=False))
    other = {"model": "another", "weights": {"source": "file", "sha256": "cd" * 32, "path": None},
             "input_size": [3, 56, 56], "resize_mode": "fixed"}
    write_feature_root(root, X, per_shard=100, provenance=other)
    with pytest.raises(ConfigMismatchError, match="quantiser"):
        run_index(IndexConfig(features=str(root), factory="Flat", update=True, progress=False))
    write_feature_root(tmp_path / "new", X[:10])
    with pytest.raises(MissingInputError, match="no index .* to update: build it first"):
        run_index(IndexConfig(features=str(tmp_path / "new"), update=True, progress=False))
